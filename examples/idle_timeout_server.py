"""An echo server that closes connections idle for too long, with asyncore's timers.

Each connection holds one ``asyncore.call_later`` timer; every message it
receives calls ``reset()`` on it, and when a connection stays silent for
``idle`` seconds the timer closes it.  No sweep over the map, no thread:
idle connections cost nothing until their timer is due.

    python examples/idle_timeout_server.py 127.0.0.1 8080 --idle 60
"""

import argparse
import socket
import sys
from typing import Any

import asyncore


class IdleEchoHandler(asyncore.dispatcher_with_send):
    """Echo what arrives; close after ``idle`` seconds without a message."""

    def __init__(self, sock: socket.socket, idle: float, map: dict[int, Any] | None = None) -> None:
        super().__init__(sock, map=map)
        self.timer = asyncore.call_later(idle, self.idle_timeout, map=map)

    def handle_read(self) -> None:
        data = self.recv(8192)
        if data:
            self.timer.reset()
            self.send(data)

    def idle_timeout(self) -> None:
        print(f"Closing idle connection from {self.addr!r}", flush=True)
        self.close()

    def close(self) -> None:
        self.timer.cancel()
        super().close()


class IdleEchoServer(asyncore.dispatcher):
    """Listen on ``host:port``; each connection gets an IdleEchoHandler."""

    def __init__(
        self, host: str, port: int, idle: float, map: dict[int, Any] | None = None
    ) -> None:
        super().__init__(map=map)
        self.idle = idle
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(128)

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        print(f"Incoming connection from {addr!r}", flush=True)
        IdleEchoHandler(sock, self.idle, map=self._map)


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; ``argv`` holds the arguments without the program name."""
    parser = argparse.ArgumentParser(description="An asyncore echo server with idle timeouts.")
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument("port", nargs="?", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of silence allowed")
    args = parser.parse_args(argv)
    server = IdleEchoServer(args.host, args.port, args.idle)
    host, port = server.socket.getsockname()[:2]
    print(f"Serving on {host}:{port}", flush=True)
    try:
        asyncore.loop()
    except KeyboardInterrupt:
        pass
    finally:
        asyncore.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
