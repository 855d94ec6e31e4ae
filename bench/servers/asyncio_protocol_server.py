"""The bench server as an asyncio Protocol; with --uvloop, on uvloop's loop.

    python asyncio_protocol_server.py MODE [--uvloop]

Same protocols and start-up line as asyncore_server.py.
"""

import argparse
import asyncio
import sys


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Lines(Echo):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.partial = b""

    def data_received(self, data):
        *lines, self.partial = (self.partial + data).split(b"\n")
        # One reply per line, like the async_chat server's push per line.
        for _ in lines:
            self.transport.write(b"+\n")


class Bulk(Echo):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.partial = b""
        self.body_left = 0

    def data_received(self, data):
        while data:
            if self.body_left:
                taken = min(self.body_left, len(data))
                self.body_left -= taken
                data = data[taken:]
                if not self.body_left:
                    self.transport.write(b"OK\n")
                continue
            head, newline, data = (self.partial + data).partition(b"\n")
            if not newline:
                self.partial = head
                return
            self.partial = b""
            self.body_left = int(head)
            if not self.body_left:
                self.transport.write(b"OK\n")


class SlowSend(Echo):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.partial = b""

    def data_received(self, data):
        *heads, self.partial = (self.partial + data).split(b"\n")
        for head in heads:
            self.transport.write(b"x" * int(head))


# Seconds of silence after which a connection is closed (the timers group).
IDLE_TIMEOUT = 60.0


class EchoIdleTimer(Echo):
    """Echo with an idle timeout: asyncio's idiom, a fresh call_later per message."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(IDLE_TIMEOUT, transport.close)

    def data_received(self, data):
        # TimerHandle has no reset(): cancel and schedule again.
        self.timer.cancel()
        self.timer = self.loop.call_later(IDLE_TIMEOUT, self.transport.close)
        self.transport.write(data)


PROTOCOLS = {"echo": Echo, "lines": Lines, "bulk": Bulk, "slowsend": SlowSend,
             "echo-timer": EchoIdleTimer}


async def serve(protocol):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", 0, backlog=4096)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(PROTOCOLS))
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.run(serve(PROTOCOLS[args.mode]))
    else:
        asyncio.run(serve(PROTOCOLS[args.mode]))


if __name__ == "__main__":
    sys.exit(main())
