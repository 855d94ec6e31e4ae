"""Typical asyncore/asynchat code, fully annotated: `make typecheck` runs
mypy --strict over it to prove the stubs carry ordinary programs.

Never run; it only has to type check.  Each pattern is one that programs
written against 3.11 use: a listening dispatcher handing accepted sockets to
handlers on its own map, a buffered sender, a line protocol on async_chat
with a producer, and a hand-written loop built from the module functions.
"""

import socket

import asynchat
import asyncore


class LineHandler(asynchat.async_chat):
    def __init__(self, sock: socket.socket, map: dict[int, asyncore.dispatcher]) -> None:
        super().__init__(sock, map)
        self.lines: list[bytes] = []
        self.set_terminator(b"\r\n")

    def collect_incoming_data(self, data: bytes) -> None:
        self._collect_incoming_data(data)

    def found_terminator(self) -> None:
        line = self._get_data()
        self.lines.append(line)
        if line == b"QUIT":
            self.push(b"bye\r\n")
            self.close_when_done()
        elif line == b"BULK":
            self.push_with_producer(asynchat.simple_producer(b"x" * 4096, buffer_size=1024))
            self.set_terminator(16)
        else:
            self.push(line + b"\r\n")


class Server(asyncore.dispatcher):
    def __init__(self, host: str, map: dict[int, asyncore.dispatcher]) -> None:
        super().__init__(map=map)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, 0))
        self.listen(5)
        self.port: int = self.socket.getsockname()[1]

    def handle_accepted(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        LineHandler(sock, self._map)


class Sender(asyncore.dispatcher_with_send):
    def handle_connect(self) -> None:
        self.send(b"hello\r\n")

    def handle_read(self) -> None:
        data = self.recv(8192)
        if data.endswith(b"bye\r\n"):
            self.close()

    def writable(self) -> bool:
        return bool(self.out_buffer) or not self.connected


def run(count: int) -> int:
    channels: dict[int, asyncore.dispatcher] = {}
    server = Server("127.0.0.1", channels)
    client = Sender(map=channels)
    client.create_socket(socket.AF_INET, socket.SOCK_STREAM)
    client.connect(("127.0.0.1", server.port))
    try:
        asyncore.loop(timeout=0.1, use_poll=True, map=channels, count=count)
    except asyncore.ExitNow:
        pass
    # A program's own pass, from the module-level helpers it bound at import.
    for fd, obj in list(channels.items()):
        if obj.readable():
            asyncore.read(obj)
        asyncore.readwrite(obj, 0)
        print(fd, repr(obj), asyncore.CORE)
    (filename, function, line), exc_type, exc, info = _traceback_of_error()
    print(filename, function, line, exc_type.__name__, exc, info)
    asyncore.close_all(map=channels, ignore_all=True)
    return asynchat.find_prefix_at_end(b"abc\r", b"\r\n")


def _traceback_of_error() -> tuple[tuple[str, str, str], type[BaseException], BaseException, str]:
    try:
        raise ValueError("example")
    except ValueError:
        return asyncore.compact_traceback()
