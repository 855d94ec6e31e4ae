"""A small key-value server on asynchat, and a blocking client for it.

The protocol is line based; every request and every reply line ends in
CRLF (a bare LF is accepted from clients too):

    SET <key> <value>     store a value given on the line   -> OK
    PUT <key> <length>    store the next <length> raw bytes  -> OK
    GET <key>                                               -> VALUE <length>, the bytes, CRLF
                                                               or NOT_FOUND
    DEL <key>                                               -> DELETED or NOT_FOUND
    QUIT                                                    -> BYE, then the server closes

Anything else is answered with ``ERROR <reason>``.  Keys are bytes without
spaces.  PUT shows the other side of async_chat: after the request line the
channel switches to a numeric terminator and collects exactly the announced
number of bytes, whatever they contain.

Run a server:   python kv_server.py --port 7379
Try it:         printf 'SET greeting hello\\r\\nGET greeting\\r\\nQUIT\\r\\n' | nc 127.0.0.1 7379
"""

import argparse
import socket
import sys
from collections.abc import Callable
from typing import Any, Self

import asynchat
import asyncore

# A request line longer than this is refused and the connection dropped, so
# a client cannot make the server buffer without bound.
MAX_LINE = 64 * 1024
MAX_VALUE = 16 * 1024 * 1024

CRLF = b"\r\n"


class KVChannel(asynchat.async_chat):
    """One client connection."""

    def __init__(
        self, sock: socket.socket, server: "KVServer", map: dict[int, Any] | None = None
    ) -> None:
        super().__init__(sock, map)
        self.server = server
        self.store = server.store
        self.set_terminator(b"\n")
        self._line_length = 0
        self._pending_put: bytes | None = None  # the key whose PUT body is being read
        self._closing = False
        self._commands: dict[bytes, Callable[[bytes], None]] = {
            b"SET": self._set,
            b"PUT": self._put,
            b"GET": self._get,
            b"DEL": self._delete,
            b"QUIT": self._quit,
        }

    # -- input ------------------------------------------------------------

    def collect_incoming_data(self, data: bytes) -> None:
        if self._closing:
            return
        if self._pending_put is None:
            self._line_length += len(data)
            if self._line_length > MAX_LINE:
                del self.incoming[:]
                self._finish(b"ERROR line too long")
                return
        self._collect_incoming_data(data)

    def found_terminator(self) -> None:
        if self._closing:
            return
        data = self._get_data()
        if self._pending_put is not None:
            key, self._pending_put = self._pending_put, None
            self.store[key] = data
            self.set_terminator(b"\n")
            self._reply(b"OK")
            return
        self._line_length = 0
        command, _, arguments = data.rstrip(b"\r").partition(b" ")
        handler = self._commands.get(command.upper())
        if handler is None:
            self._reply(b"ERROR unknown command")
        else:
            handler(arguments)

    # -- commands ---------------------------------------------------------

    def _set(self, arguments: bytes) -> None:
        key, space, value = arguments.partition(b" ")
        if not key or not space:
            self._reply(b"ERROR usage: SET <key> <value>")
            return
        self.store[key] = value
        self._reply(b"OK")

    def _put(self, arguments: bytes) -> None:
        key, _, length = arguments.partition(b" ")
        if not key or not length.isdigit():
            self._reply(b"ERROR usage: PUT <key> <length>")
            return
        size = int(length)
        if size > MAX_VALUE:
            self._finish(b"ERROR value too large")
        elif size == 0:
            # A terminator of 0 would mean "collect everything" to
            # async_chat, not "collect nothing": an empty body is stored
            # here and now.
            self.store[key] = b""
            self._reply(b"OK")
        else:
            self._pending_put = key
            self.set_terminator(size)

    def _get(self, key: bytes) -> None:
        if not _valid_key(key):
            self._reply(b"ERROR usage: GET <key>")
            return
        value = self.store.get(key)
        if value is None:
            self._reply(b"NOT_FOUND")
            return
        # One push for header and value: two small writes in a row would
        # meet Nagle's algorithm and wait for the client's delayed ACK.
        # push() itself splits a large value into ac_out_buffer_size pieces.
        self.push(b"VALUE %d" % len(value) + CRLF + value + CRLF)

    def _delete(self, key: bytes) -> None:
        if not _valid_key(key):
            self._reply(b"ERROR usage: DEL <key>")
        elif self.store.pop(key, None) is None:
            self._reply(b"NOT_FOUND")
        else:
            self._reply(b"DELETED")

    def _quit(self, arguments: bytes) -> None:
        self._finish(b"BYE")

    # -- output and shutdown ------------------------------------------------

    def _reply(self, line: bytes) -> None:
        self.push(line + CRLF)

    def _finish(self, line: bytes) -> None:
        """Send a last line, ignore further input, close once it is sent."""
        self._closing = True
        self.set_terminator(None)
        self._reply(line)
        self.close_when_done()

    def close(self) -> None:
        was_open = self.socket is not None and self.socket.fileno() != -1
        super().close()
        if was_open:
            self.server.connection_closed(self)


def _valid_key(key: bytes) -> bool:
    return bool(key) and b" " not in key


class KVServer(asyncore.dispatcher):
    """Listens on ``address`` and serves every connection from one store."""

    channel_class = KVChannel

    def __init__(
        self,
        address: tuple[str, int] = ("127.0.0.1", 0),
        store: dict[bytes, bytes] | None = None,
        map: dict[int, Any] | None = None,
    ) -> None:
        super().__init__(map=map)
        self.store: dict[bytes, bytes] = {} if store is None else store
        self.connections_closed = 0
        family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][0]
        self.create_socket(family, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(address)
        self.listen(128)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually bound; useful after binding port 0."""
        # getsockname() is typed Any; the annotation pins what this returns.
        bound: tuple[str, int] = self.socket.getsockname()[:2]
        return bound

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.channel_class(sock, self, self._map)

    def connection_closed(self, channel: KVChannel) -> None:
        """Called once per client connection when it closes."""
        self.connections_closed += 1


# --------------------------------------------------------------------------
# A blocking client
# --------------------------------------------------------------------------


class KVError(Exception):
    """The server answered ERROR, or something the protocol does not allow."""


# Keys, values and request lines may be given as text (sent as UTF-8) or bytes.
_Bytesish = str | bytes | bytearray | memoryview


def _as_bytes(value: _Bytesish) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class KVClient:
    """A blocking client: one connection, one request at a time.

    ``with KVClient(address) as kv: kv.set("k", "v"); kv.get("k")``
    """

    def __init__(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self._reader = self.sock.makefile("rb")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()
        self.sock.close()

    def request(self, line: _Bytesish) -> bytes:
        """Send one request line and return the reply line (without CRLF)."""
        self.sock.sendall(_as_bytes(line) + CRLF)
        return self.read_reply()

    def read_reply(self) -> bytes:
        line = self._reader.readline(MAX_LINE + 2)
        if not line.endswith(CRLF):
            raise ConnectionError(f"connection closed mid-reply: {line!r}")
        return line[:-2]

    def set(self, key: _Bytesish, value: _Bytesish) -> None:
        self._expect(self.request(b"SET " + _as_bytes(key) + b" " + _as_bytes(value)), b"OK")

    def put(self, key: _Bytesish, value: _Bytesish) -> None:
        value = _as_bytes(value)
        self.sock.sendall(b"PUT %s %d" % (_as_bytes(key), len(value)) + CRLF + value)
        self._expect(self.read_reply(), b"OK")

    def get(self, key: _Bytesish) -> bytes | None:
        """The stored bytes, or None when the key is absent."""
        reply = self.request(b"GET " + _as_bytes(key))
        if reply == b"NOT_FOUND":
            return None
        word, _, length = reply.partition(b" ")
        if word != b"VALUE" or not length.isdigit():
            raise KVError(reply.decode("utf-8", "replace"))
        size = int(length)
        data = self._reader.read(size + 2)
        if len(data) != size + 2 or not data.endswith(CRLF):
            raise ConnectionError("connection closed mid-value")
        return data[:-2]

    def delete(self, key: _Bytesish) -> bool:
        """True when the key existed."""
        reply = self.request(b"DEL " + _as_bytes(key))
        if reply == b"NOT_FOUND":
            return False
        self._expect(reply, b"DELETED")
        return True

    def quit(self) -> None:
        """Say goodbye and wait until the server has closed its side."""
        self._expect(self.request(b"QUIT"), b"BYE")
        rest = self._reader.read()
        if rest:
            raise KVError(f"data after BYE: {rest!r}")
        self.close()

    @staticmethod
    def _expect(reply: bytes, wanted: bytes) -> None:
        if reply != wanted:
            raise KVError(reply.decode("utf-8", "replace"))


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A line-protocol key-value server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7379, help="0 picks a free port")
    parser.add_argument("--use-poll", action="store_true", help="poll() instead of select()")
    parser.add_argument(
        "--connections",
        type=int,
        default=0,
        metavar="N",
        help="exit after N client connections have closed (default: run until interrupted)",
    )
    args = parser.parse_args(argv)

    channels: dict[int, Any] = {}
    server = KVServer((args.host, args.port), map=channels)
    host, port = server.address
    print(f"listening on {host}:{port}", flush=True)
    try:
        while not args.connections or server.connections_closed < args.connections:
            asyncore.loop(timeout=1.0, use_poll=args.use_poll, map=channels, count=1)
    except KeyboardInterrupt:
        pass
    finally:
        asyncore.close_all(map=channels)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
