"""Differential testing of the kernel interest set against the snapshot passes.

test_differential.py compares the two cores on objects of any class, which
the kernel set asks every pass.  Here the channels are of our own classes,
whose answers the kernel set caches, and a random program changes their
state every way a program can: peers send and hang up, channels send, push
and queue output directly, ``connected`` and ``accepting`` are set by hand,
channels close and new ones arrive, passes run in both loop modes.  The
same program runs on the compiled core with its kernel set, on the compiled
core with the kernel set off (the poll(2) snapshot of every pass, as 3.11
asked every channel) and on the pure core.  Every handler call, every byte
a channel receives and every byte its peer receives go into a log; the three
logs must be equal.

Timeouts are 0 and sockets are Unix stream pairs, whose data is readable
the moment send() returns, so every pass sees the same readiness.
"""

import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import asynchat
import asyncore
from support import HAS_POLL, LOOP_MODES

pytestmark = [pytest.mark.cyasyncore_only, pytest.mark.compiled_only]

EXAMPLES = int(os.environ.get("ASYNCORE_DIFFERENTIAL_EXAMPLES", "150"))

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def variants(core):
    # Drives every variant itself, so it runs once (compiled_only).
    assert core == "compiled"
    import _asyncore_core
    from asyncore import _core

    def run(program):
        logs = {}
        previous_core = _core.active()
        previous_set = _asyncore_core.use_kernel_set(True)
        try:
            for name, core_name, kernel_set in (
                ("kernel-set", "compiled", True),
                ("snapshot", "compiled", False),
                ("pure", "pure", False),
            ):
                _core.use(core_name)
                _asyncore_core.use_kernel_set(kernel_set)
                logs[name] = program()
        finally:
            _asyncore_core.use_kernel_set(previous_set)
            _core.use(previous_core)
        return logs

    return run


class Logged:
    """The handlers both channel kinds share: each call goes into the world's log."""

    def handle_write(self):
        self.world.log.append((self.label, "write"))
        super().handle_write()

    def handle_connect(self):
        self.world.log.append((self.label, "connect"))

    def handle_close(self):
        self.world.log.append((self.label, "close"))
        self.close()

    def handle_expt(self):
        self.world.log.append((self.label, "expt"))

    def handle_accept(self):
        self.world.log.append((self.label, "accept"))

    def handle_error(self):
        self.world.log.append((self.label, "error"))
        self.close()


class Sender(Logged, asyncore.dispatcher_with_send):
    def handle_read(self):
        data = self.recv(4096)
        self.world.log.append((self.label, "read", len(data)))


class Chatter(Logged, asynchat.async_chat):
    def __init__(self, sock, map):
        super().__init__(sock, map)
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        self.world.log.append((self.label, "data", len(data)))

    def found_terminator(self):
        self.world.log.append((self.label, "line"))


KINDS = {"send": Sender, "chat": Chatter}


class World:
    def __init__(self, kinds):
        self.log = []
        self.map = {}
        self.channels = []
        self.peers = []
        for kind in kinds:
            self.add(kind)

    def add(self, kind):
        ours, peer = socket.socketpair()
        peer.setblocking(False)
        chan = KINDS[kind](ours, self.map)
        chan.world = self
        chan.label = f"{kind}{len(self.channels)}"
        self.channels.append(chan)
        self.peers.append(peer)

    def drain_peers(self):
        for i, peer in enumerate(self.peers):
            if peer.fileno() < 0:
                continue
            try:
                got = len(peer.recv(1 << 20))
            except BlockingIOError:
                continue
            except OSError as exc:
                got = exc.errno
            self.log.append(("peer", i, got))

    def close(self):
        asyncore.close_all(map=self.map, ignore_all=True)
        for chan in self.channels:
            if chan.socket is not None:
                chan.socket.close()
        for peer in self.peers:
            peer.close()


def _op(world, op):
    name, i = op[0], op[1] % len(world.channels)
    chan, peer = world.channels[i], world.peers[i]
    if name == "pass":
        asyncore.loop(0, world.use_poll, world.map, op[2])
    elif name == "switch":
        # The other loop mode from now on: every channel is asked again.
        world.use_poll = HAS_POLL and not world.use_poll
    elif name == "peer_send":
        if peer.fileno() >= 0:
            peer.send(b"ab\ncd"[: op[2]] * op[3])
    elif name == "peer_close":
        peer.close()
    elif name == "send":
        if isinstance(chan, Chatter):
            chan.push(b"x" * op[2])
        else:
            chan.send(b"x" * op[2])
    elif name == "queue":
        if isinstance(chan, Chatter):
            chan.producer_fifo.append(b"q" * op[2])
        else:
            chan.out_buffer += b"q" * op[2]
    elif name == "connected":
        chan.connected = op[2]
    elif name == "accepting":
        chan.accepting = op[2]
    elif name == "close":
        chan.close()
    elif name == "add":
        world.add(op[2])
    else:
        raise AssertionError(name)


modes = st.sampled_from(LOOP_MODES)
index = st.integers(0, 7)
operations = st.one_of(
    st.tuples(st.just("pass"), index, st.integers(1, 3)),
    st.tuples(st.just("pass"), index, st.integers(1, 3)),
    st.tuples(st.just("switch"), index),
    st.tuples(st.just("peer_send"), index, st.integers(1, 5), st.integers(1, 3)),
    st.tuples(st.just("peer_close"), index),
    st.tuples(st.just("send"), index, st.integers(0, 300_000)),
    st.tuples(st.just("queue"), index, st.integers(0, 50)),
    st.tuples(st.just("connected"), index, st.booleans()),
    st.tuples(st.just("accepting"), index, st.booleans()),
    st.tuples(st.just("close"), index),
    st.tuples(st.just("add"), index, st.sampled_from(sorted(KINDS))),
)


def run_program(kinds, use_poll, ops):
    world = World(kinds)
    world.use_poll = use_poll
    try:
        # Settled: the map has its kernel set before the program starts.
        asyncore.loop(0, use_poll, world.map, 2)
        for op in ops:
            world.log.append(op)
            try:
                _op(world, op)
            except OSError as exc:
                world.log.append(("raised", type(exc).__name__, exc.errno))
            world.drain_peers()
        # Let everything queued go out, then record what is left.  (A mode
        # switch asks every channel again: the marker keeps it from hiding
        # a change the passes above missed.)
        for use_poll in LOOP_MODES:
            world.log.append(("flush", use_poll))
            asyncore.loop(0, use_poll, world.map, 4)
            world.drain_peers()
        world.log.append(("map", sorted(chan.label for chan in world.map.values())))
    finally:
        world.close()
    return world.log


@SETTINGS
@given(
    kinds=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=4),
    use_poll=modes,
    ops=st.lists(operations, min_size=1, max_size=25),
)
def test_kernel_set_agrees_with_snapshot_passes(variants, kinds, use_poll, ops):
    logs = variants(lambda: run_program(kinds, use_poll, ops))
    assert logs["kernel-set"] == logs["snapshot"]
    assert logs["kernel-set"] == logs["pure"]
