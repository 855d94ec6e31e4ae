"""The asyncore/asynchat bench server, written against CPython 3.11's API.

The same file runs on cyasyncore's compiled core, its pure core and the PyPI
backports: which one it gets is decided by the interpreter (virtual
environment) and ASYNCORE_NO_EXTENSIONS that the driver starts it with.

    python asyncore_server.py MODE [--use-poll]

MODE is one of echo, lines, bulk, slowsend (see bench/c/echo_server.c for the
protocols).  Prints "PORT <n>" once it is listening, then serves until killed.
"""

import argparse
import socket
import sys
import time

import asynchat
import asyncore


class EchoHandler(asyncore.dispatcher_with_send):
    # The echo server of the asyncore documentation.
    def handle_read(self):
        data = self.recv(65536)
        if data:
            self.send(data)


class LineHandler(asynchat.async_chat):
    """Answers every line with "+\\n", as line protocols (SMTP, POP3) do."""

    def __init__(self, sock):
        super().__init__(sock)
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        self._get_data()
        self.push(b"+\n")


class BulkHandler(asynchat.async_chat):
    """Reads "<len>\\n", then a <len>-byte body through a numeric terminator."""

    def __init__(self, sock):
        super().__init__(sock)
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        data = self._get_data()
        if isinstance(self.get_terminator(), bytes):
            length = int(data)
            if length:
                self.set_terminator(length)
                return
        else:
            self.set_terminator(b"\n")
        self.push(b"OK\n")


class SlowSendHandler(asyncore.dispatcher_with_send):
    """Reads "<len>\\n" and hands the whole <len>-byte answer to one send().

    dispatcher_with_send then trickles it out as the reader makes room: the
    cost of that buffer management is what the slow-send scenario measures.
    """

    def __init__(self, sock):
        super().__init__(sock)
        self.request = b""

    def handle_read(self):
        self.request += self.recv(4096)
        while b"\n" in self.request:
            head, _, self.request = self.request.partition(b"\n")
            self.send(b"x" * int(head))


# Seconds of silence after which a connection is closed (the timers group).
IDLE_TIMEOUT = 60.0


class EchoIdleTimer(EchoHandler):
    """Echo with an idle timeout on cyasyncore's timers: one Timer, reset per message."""

    def __init__(self, sock):
        super().__init__(sock)
        self.timer = asyncore.call_later(IDLE_TIMEOUT, self.close)

    def handle_read(self):
        self.timer.reset()
        EchoHandler.handle_read(self)


class EchoIdleSweep(EchoHandler):
    """Echo with an idle timeout the 3.11 way: a time stamp, swept once a second."""

    def __init__(self, sock):
        super().__init__(sock)
        self.last = time.monotonic()

    def handle_read(self):
        self.last = time.monotonic()
        EchoHandler.handle_read(self)


def sweep_loop(use_poll):
    # What servers wrote without timers: wake at least once a second and
    # look at every channel's time stamp.
    next_sweep = time.monotonic() + 1.0
    while asyncore.socket_map:
        asyncore.loop(timeout=1.0, use_poll=use_poll, count=1)
        now = time.monotonic()
        if now >= next_sweep:
            next_sweep = now + 1.0
            for chan in list(asyncore.socket_map.values()):
                if isinstance(chan, EchoIdleSweep) and now - chan.last > IDLE_TIMEOUT:
                    chan.close()


HANDLERS = {
    "echo-timer": EchoIdleTimer,
    "echo-sweep": EchoIdleSweep,
    "echo": EchoHandler,
    "lines": LineHandler,
    "bulk": BulkHandler,
    "slowsend": SlowSendHandler,
}


class Server(asyncore.dispatcher):
    def __init__(self, handler):
        super().__init__()
        self.handler = handler
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(("127.0.0.1", 0))
        self.listen(4096)

    def handle_accepted(self, sock, addr):
        # Every server in the bench (C, asyncio, uvloop) disables Nagle's
        # algorithm; asyncio does it by default.  Same treatment here.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handler(sock)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(HANDLERS))
    parser.add_argument("--use-poll", action="store_true")
    args = parser.parse_args()
    server = Server(HANDLERS[args.mode])
    print("PORT", server.socket.getsockname()[1], flush=True)
    if args.mode == "echo-sweep":
        sweep_loop(args.use_poll)
    else:
        asyncore.loop(timeout=30.0, use_poll=args.use_poll)


if __name__ == "__main__":
    sys.exit(main())
