"""An echo server on top of asyncore, after the example in the 3.11 docs.

The listening dispatcher hands each accepted connection to an
``EchoHandler``; ``dispatcher_with_send`` buffers whatever the client's
socket cannot take at once, so the handler only has to read and send.

    python examples/echo_server.py 127.0.0.1 8080
"""

import argparse
import socket
import sys
from typing import Any

import asyncore


class EchoHandler(asyncore.dispatcher_with_send):
    """Send every byte received straight back to the client."""

    def handle_read(self) -> None:
        data = self.recv(8192)
        if data:
            self.send(data)


class EchoServer(asyncore.dispatcher):
    """Listen on ``host:port`` and start an EchoHandler per connection."""

    def __init__(self, host: str, port: int, map: dict[int, Any] | None = None) -> None:
        super().__init__(map=map)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(5)

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        print(f"Incoming connection from {addr!r}", flush=True)
        # Handlers live in the server's map, so a private map works too.
        EchoHandler(sock, map=self._map)


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; ``argv`` holds the arguments without the program name."""
    parser = argparse.ArgumentParser(description="An asyncore echo server.")
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument("port", nargs="?", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args(argv)
    server = EchoServer(args.host, args.port)
    host, port = server.socket.getsockname()[:2]
    # An IPv6 address needs brackets to be read back as host and port.
    shown = f"[{host}]" if server.socket.family == socket.AF_INET6 else host
    print(f"Serving on {shown}:{port}", flush=True)
    try:
        asyncore.loop()
    except KeyboardInterrupt:
        pass
    finally:
        asyncore.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
