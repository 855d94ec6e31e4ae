"""A hundred thousand connect/close cycles, both ends on the loop.

Each cycle is a client dispatcher that connects without blocking, sends one
sequence-numbered record once connected and closes; the server accepts it,
reads the record (checking it is the one that client sent) and closes on
EOF.  Many cycles are in flight at once, spread over several listening
ports so the clients' ports in TIME_WAIT never run out.

After a warm-up, descriptors, RSS and traced memory must come back to where
they were, and a sample of the closed dispatchers must have been collected.
"""

import gc
import os
import time
import tracemalloc
import weakref

import _measure

import asyncore
from support import HOST4

CYCLES = int(os.environ.get("ASYNCORE_STRESS_CYCLES", "100000"))
IN_FLIGHT = 64
LISTENERS = 8
DEADLINE = 600.0
SAMPLE_EVERY = 97  # weakrefs to every 97th dispatcher of each side

TRACED_SLACK = 512 * 1024
RSS_SLACK = 16 * _measure.MiB


class Tally:
    def __init__(self):
        self.started = 0
        self.connected = 0
        self.served = 0
        self.seq_sum = 0
        # Records seen, to tell a record delivered twice from a channel
        # closed twice (3.11's readwrite() calls handle_close() again when
        # POLLHUP comes with the EOF that already closed the channel).
        self.seen = set()
        self.repeated_closes = 0
        self.errors = []
        self.refs = []


class Client(asyncore.dispatcher):
    def __init__(self, addr, map, tally):
        asyncore.dispatcher.__init__(self, map=map)
        self.tally = tally
        self.seq = tally.started
        tally.started += 1
        if self.seq % SAMPLE_EVERY == 0:
            tally.refs.append(weakref.ref(self))
        self.create_socket()
        self.connect(addr)

    def readable(self):
        return False

    def writable(self):
        return not self.connected

    def handle_connect(self):
        self.tally.connected += 1
        self.socket.sendall(b"%09d\n" % self.seq)
        self.close()

    def handle_close(self):
        self.tally.errors.append(f"client {self.seq}: closed before connecting")
        self.close()

    def handle_error(self):
        self.tally.errors.append(f"client {self.seq}: {asyncore.compact_traceback()[1:3]}")
        self.close()


class Served(asyncore.dispatcher):
    def __init__(self, sock, map, tally):
        asyncore.dispatcher.__init__(self, sock, map)
        self.tally = tally
        self.data = b""
        self.counted = False
        if tally.served % SAMPLE_EVERY == 0:
            tally.refs.append(weakref.ref(self))

    def writable(self):
        return False

    def handle_read(self):
        self.data += self.recv(64)

    def handle_close(self):
        if self.counted:
            self.tally.repeated_closes += 1
            self.close()
            return
        self.counted = True
        if len(self.data) != 10 or not self.data.endswith(b"\n") or not self.data[:9].isdigit():
            self.tally.errors.append(f"server got {self.data!r}")
        elif int(self.data) in self.tally.seen:
            self.tally.errors.append(f"record {int(self.data)} arrived on two channels")
        else:
            self.tally.seen.add(int(self.data))
            self.tally.seq_sum += int(self.data)
        self.tally.served += 1
        self.close()

    def handle_error(self):
        self.tally.errors.append(f"server: {asyncore.compact_traceback()[1:3]}")
        self.close()


class Listener(asyncore.dispatcher):
    def __init__(self, map, tally):
        asyncore.dispatcher.__init__(self, map=map)
        self.tally = tally
        self.create_socket()
        self.bind((HOST4, 0))
        self.listen(1024)

    def handle_accepted(self, sock, addr):
        Served(sock, self._map, self.tally)


def run_cycles(count, use_poll):
    m = {}
    tally = Tally()
    listeners = [Listener(m, tally) for _ in range(LISTENERS)]
    addrs = [lst.socket.getsockname() for lst in listeners]
    clients_open = 0
    end = time.monotonic() + DEADLINE
    try:
        while tally.served < count:
            if time.monotonic() > end:
                raise AssertionError(f"only {tally.served} of {count} cycles in {DEADLINE}s")
            if tally.errors:
                raise AssertionError(tally.errors[:5])
            clients_open = tally.started - tally.connected
            for _ in range(min(IN_FLIGHT - clients_open, count - tally.started)):
                Client(addrs[tally.started % LISTENERS], m, tally)
            asyncore.loop(0.1, use_poll, m, 1)
    finally:
        for lst in listeners:
            lst.close()
        asyncore.close_all(map=m)
    assert not tally.errors, tally.errors[:5]
    # Every client's record arrived, each exactly once.
    assert len(tally.seen) == count
    assert tally.seq_sum == count * (count - 1) // 2
    return tally


def test_connect_close_cycles(use_poll, core):
    started_tracing = not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    try:
        run_cycles(2000, use_poll)  # warm-up
        before = _measure.Figures.now()
        start = time.monotonic()
        tally = run_cycles(CYCLES, use_poll)
        elapsed = time.monotonic() - start
        gc.collect()
        alive = sum(1 for ref in tally.refs if ref() is not None)
        sampled = len(tally.refs)
        connected, served = tally.connected, tally.served
        repeated = tally.repeated_closes
        del tally
        after = _measure.Figures.now()
    finally:
        if started_tracing:
            tracemalloc.stop()
    _measure.report(
        f"connect/close stress, core {core}, {'poll' if use_poll else 'select'} mode",
        {
            "cycles (connected, sent, served, closed)": served,
            "clients connected": connected,
            "channels closed twice (POLLHUP after EOF, as in 3.11)": repeated,
            "dispatchers sampled by weakref": sampled,
            "sampled dispatchers still alive": alive,
            "wall seconds (with tracemalloc on)": round(elapsed, 1),
        },
        before,
        after,
    )
    assert served == CYCLES and connected == CYCLES
    assert alive == 0
    assert after.fds == before.fds
    assert after.traced - before.traced < TRACED_SLACK
    assert after.rss - before.rss < RSS_SLACK
