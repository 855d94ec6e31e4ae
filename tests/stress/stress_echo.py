"""A million echo round trips through the loop, checked end to end.

The server side is this process: a ``dispatcher`` echo and an ``async_chat``
line echo, each behind its own listener.  The client is a separate process
(``echo_client.py``, plain sockets and selectors, on the machine's second
core) that pipelines sequence-numbered records over many connections and
checks every echoed record is the next one expected, byte for byte.

After a warm-up run of the same shape (so first-use allocations do not
count), descriptors, RSS and traced memory must come back to where they
were, and every handler must be collectable.
"""

import gc
import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
import weakref

import _measure

import asynchat
import asyncore
from support import HOST4

ROUND_TRIPS = int(os.environ.get("ASYNCORE_STRESS_ROUND_TRIPS", "1000000"))
CONNS_PER_KIND = 32
WINDOW = 256
DEADLINE = 600.0
CLIENT = os.path.join(os.path.dirname(__file__), "echo_client.py")

# Growth allowed across the measured run.  A leak of one small object per
# round trip would be tens of MiB; these only absorb allocator noise.
TRACED_SLACK = 512 * 1024
RSS_SLACK = 16 * _measure.MiB


class Echo(asyncore.dispatcher):
    """Echoes bytes as they come; stops reading while it has 1 MiB unsent."""

    def __init__(self, sock, map):
        asyncore.dispatcher.__init__(self, sock, map)
        self.pending = bytearray()

    def readable(self):
        return len(self.pending) < (1 << 20)

    def writable(self):
        return bool(self.pending)

    def handle_read(self):
        self.pending += self.recv(1 << 16)

    def handle_write(self):
        del self.pending[: self.send(self.pending)]

    def handle_close(self):
        self.close()


class LineEcho(asynchat.async_chat):
    """Echoes each newline-terminated record through async_chat's queue."""

    def __init__(self, sock, map):
        asynchat.async_chat.__init__(self, sock, map)
        self.set_terminator(b"\n")
        self.parts = []

    def collect_incoming_data(self, data):
        self.parts.append(data)

    def found_terminator(self):
        self.parts.append(b"\n")
        self.push(b"".join(self.parts))
        self.parts = []


class Listener(asyncore.dispatcher):
    def __init__(self, handler_class, map, handlers):
        asyncore.dispatcher.__init__(self, map=map)
        self.handler_class = handler_class
        self.handlers = handlers
        self.create_socket()
        self.set_reuse_addr()
        self.bind((HOST4, 0))
        self.listen(128)

    def handle_accepted(self, sock, addr):
        self.handlers.append(weakref.ref(self.handler_class(sock, self._map)))


def run_echo(rounds_per_conn, use_poll):
    """One client process against both echo servers; returns (client report, handler refs)."""
    m = {}
    handlers = []
    listeners = [Listener(Echo, m, handlers), Listener(LineEcho, m, handlers)]
    ports = ",".join(str(lst.socket.getsockname()[1]) for lst in listeners)
    args = [
        sys.executable,
        CLIENT,
        HOST4,
        ports,
        str(CONNS_PER_KIND),
        str(rounds_per_conn),
        str(WINDOW),
        str(DEADLINE),
    ]
    client = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    end = time.monotonic() + DEADLINE + 30
    try:
        while client.poll() is None or len(m) > len(listeners):
            if time.monotonic() > end:
                raise AssertionError("echo run did not finish in time")
            asyncore.loop(0.1, use_poll, m, 1)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for lst in listeners:
            lst.close()
        asyncore.close_all(map=m)
    assert client.returncode == 0, f"client failed: {out!r} {err!r}"
    return json.loads(out), handlers


def test_echo_round_trips(use_poll, core):
    conns = 2 * CONNS_PER_KIND
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    try:
        run_echo(200, use_poll)  # warm-up
        before = _measure.Figures.now()
        start = time.monotonic()
        report, handlers = run_echo(math.ceil(ROUND_TRIPS / conns), use_poll)
        elapsed = time.monotonic() - start
        gc.collect()
        alive = sum(1 for ref in handlers if ref() is not None)
        handler_count = len(handlers)
        del handlers
        after = _measure.Figures.now()
    finally:
        if started_tracing:
            tracemalloc.stop()
    _measure.report(
        f"echo stress, core {core}, {'poll' if use_poll else 'select'} mode",
        {
            "round trips (16-byte records, all verified in order)": report["round_trips"],
            "connections": report["connections"],
            "server handlers created": handler_count,
            "server handlers still alive after close": alive,
            "wall seconds (with tracemalloc on)": round(elapsed, 1),
        },
        before,
        after,
    )
    assert report["error"] is None
    assert report["round_trips"] >= ROUND_TRIPS
    assert handler_count == conns
    assert alive == 0
    assert after.fds == before.fds
    assert after.traced - before.traced < TRACED_SLACK
    assert after.rss - before.rss < RSS_SLACK
