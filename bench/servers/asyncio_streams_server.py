"""The bench server written with asyncio streams (StreamReader/StreamWriter).

    python asyncio_streams_server.py MODE

Same protocols and start-up line as asyncore_server.py.
"""

import argparse
import asyncio
import sys


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def lines(reader, writer):
    while await reader.readline():
        writer.write(b"+\n")
        # drain() only waits when the buffer is past its high-water mark.
        await writer.drain()
    writer.close()


async def bulk(reader, writer):
    while head := await reader.readline():
        length = int(head)
        if length:
            await reader.readexactly(length)
        writer.write(b"OK\n")
        await writer.drain()
    writer.close()


async def slowsend(reader, writer):
    while head := await reader.readline():
        writer.write(b"x" * int(head))
        await writer.drain()
    writer.close()


HANDLERS = {"echo": echo, "lines": lines, "bulk": bulk, "slowsend": slowsend}


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, backlog=4096)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(HANDLERS))
    args = parser.parse_args()
    asyncio.run(serve(HANDLERS[args.mode]))


if __name__ == "__main__":
    sys.exit(main())
