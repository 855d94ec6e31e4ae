"""A minimal HTTP client on top of asyncore, after the example in the 3.11 docs.

It opens one connection, sends a bare HTTP/1.0 GET request, prints every
chunk of the response as it arrives and stops when the server closes the
connection (HTTP/1.0 servers do that after the response).

    python examples/http_client.py http://127.0.0.1:8000/index.html
"""

import argparse
import socket
import sys
from typing import Any
from urllib.parse import urlsplit

import asyncore


class HTTPClient(asyncore.dispatcher):
    """Fetch ``path`` from ``host:port`` and print the raw response chunks."""

    def __init__(
        self, host: str, path: str, port: int = 80, map: dict[int, Any] | None = None
    ) -> None:
        super().__init__(map=map)
        # A literal IPv6 address is the only host form that contains a colon.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family)
        self.connect((host, port))
        host_header = f"[{host}]" if family == socket.AF_INET6 else host
        if port != 80:
            host_header += f":{port}"
        self.buffer = f"GET {path} HTTP/1.0\r\nHost: {host_header}\r\n\r\n".encode("ascii")
        self.response = bytearray()

    def handle_connect(self) -> None:
        # Nothing to do yet: the request goes out from handle_write.
        pass

    def handle_close(self) -> None:
        self.close()

    def handle_read(self) -> None:
        chunk = self.recv(8192)
        self.response += chunk
        if chunk:
            print(chunk)

    def writable(self) -> bool:
        # Only ask for write events while part of the request is unsent.
        return len(self.buffer) > 0

    def handle_write(self) -> None:
        sent = self.send(self.buffer)
        self.buffer = self.buffer[sent:]


def main(argv: list[str] | None = None) -> int:
    """Fetch the URL given in ``argv`` (arguments without the program name)."""
    parser = argparse.ArgumentParser(description="Fetch a URL with asyncore.")
    parser.add_argument("url", help="an http:// URL")
    args = parser.parse_args(argv)
    parts = urlsplit(args.url)
    if parts.scheme != "http" or not parts.hostname:
        parser.error("only http://host[:port]/path URLs are supported")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    client = HTTPClient(parts.hostname, path, parts.port or 80)
    asyncore.loop()
    return 0 if client.response else 1


if __name__ == "__main__":
    sys.exit(main())
