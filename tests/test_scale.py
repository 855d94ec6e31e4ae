"""Thousands of concurrent connections, served correctly in both loop modes.

Descriptors above 1023: 3.11's select mode hands every descriptor to
select.select(), which raises ValueError ("filedescriptor out of range in
select()") for any of them, so the select-mode tests here are
``cyasyncore_only``.  We deliberately keep no oracle-only test asserting that
ValueError: the suite encodes behaviour the drop-in keeps, and this is the
one 3.11 limitation cyasyncore lifts on purpose; such a test would only ever
exercise CPython.  The poll-mode tests cross the same descriptor numbers and
do run on the oracle.

Nothing here measures speed; each test only checks that every byte arrives
intact and that idle channels see no callbacks.
"""

import contextlib
import errno
import os
import selectors
import socket
import subprocess
import sys
import threading
import time

import pytest

import asynchat
import asyncore
from support import DEADLINE, HAS_POLL, HOST4

resource = pytest.importorskip("resource", reason="RLIMIT_NOFILE needs the resource module")

# More than 2,000 connections, so that descriptors go well past 1023.
CONNECTIONS = 2100
IDLE_CONNECTIONS = 10_000
ROUND_TRIPS = 50
# A loop in pure Python over thousands of channels is slow; these bound a
# hang, they do not measure anything.
SCALE_DEADLINE = 60.0
PASS_TIMEOUT = 0.05
# Descriptors the test process may hold besides the connections themselves.
FD_MARGIN = 64

select_mode = pytest.param(False, id="select", marks=pytest.mark.cyasyncore_only)
poll_mode = pytest.param(
    True, id="poll", marks=pytest.mark.skipif(not HAS_POLL, reason="no select.poll")
)


def highest_open_fd():
    try:
        return max(int(fd) for fd in os.listdir("/proc/self/fd"))
    except OSError:
        # Without /proc, assume a small process: the margin absorbs it.
        return 64


@contextlib.contextmanager
def descriptor_budget(extra):
    """Make room for ``extra`` more descriptors, restoring the soft limit afterwards."""
    needed = highest_open_fd() + extra + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} descriptors; RLIMIT_NOFILE hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def run_loop_until(predicate, map, use_poll, what, deadline=SCALE_DEADLINE):
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not reached within {deadline}s")
        asyncore.loop(timeout=PASS_TIMEOUT, use_poll=use_poll, map=map, count=1)


def payload_for(index):
    """Unique bytes per connection, of varying length (some need several recv calls)."""
    head = b"<%06d>" % index
    return head * (1 + (index * 37) % 700)


# --------------------------------------------------------------------------
# Server side: all in the loop under test
# --------------------------------------------------------------------------


class EchoHandler(asyncore.dispatcher_with_send):
    def handle_read(self):
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self):
        self.close()


class EchoServer(asyncore.dispatcher):
    def __init__(self, map):
        super().__init__(map=map)
        self.channel_map = map
        self.accepted = 0
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.bind((HOST4, 0))
        self.listen(4096)
        self.address = self.socket.getsockname()

    def handle_accept(self):
        # Take every pending connection: 3.11's default takes one per event,
        # which with thousands queued would mean thousands of passes.
        while True:
            pair = self.accept()
            if pair is None:
                return
            EchoHandler(pair[0], map=self.channel_map)
            self.accepted += 1


# --------------------------------------------------------------------------
# Client side: plain sockets driven by the stdlib selectors in a thread, so
# that the loop under test is only on one side of every connection.
# --------------------------------------------------------------------------


class ClientSwarm:
    """Opens ``count`` connections, sends each its payload, checks the echo.

    All connections stay open until every echo has arrived and the test
    calls release(), so the server provably holds all of them at once.
    """

    def __init__(self, address, count):
        self.address = address
        self.count = count
        self.echoed = threading.Event()
        self.failure = None
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client-swarm", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def release(self):
        self._release.set()

    def join(self):
        self._release.set()
        self._thread.join(SCALE_DEADLINE)
        if self._thread.is_alive():
            raise AssertionError("client swarm did not finish")
        if self.failure is not None:
            raise AssertionError(f"client swarm failed: {self.failure}")

    def _run(self):
        sockets = []
        try:
            with selectors.DefaultSelector() as selector:
                self._exchange(selector, sockets)
            self.echoed.set()
            if not self._release.wait(SCALE_DEADLINE):
                raise AssertionError("never released")
        except BaseException as exc:  # reported by join()
            self.failure = exc
            self.echoed.set()
        finally:
            for sock in sockets:
                sock.close()

    def _exchange(self, selector, sockets):
        outgoing = {}
        expected = {}
        received = {}
        for index in range(self.count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setblocking(False)
            err = sock.connect_ex(self.address)
            if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                raise OSError(err, os.strerror(err))
            expected[sock] = payload_for(index)
            outgoing[sock] = memoryview(expected[sock])
            received[sock] = bytearray()
            selector.register(sock, selectors.EVENT_WRITE)
        pending = self.count
        end = time.monotonic() + SCALE_DEADLINE
        while pending:
            if time.monotonic() > end:
                raise AssertionError(f"{pending} connections unfinished")
            for key, events in selector.select(1.0):
                sock = key.fileobj
                if events & selectors.EVENT_WRITE:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    out = outgoing[sock]
                    try:
                        sent = sock.send(out)
                    except BlockingIOError:
                        continue
                    outgoing[sock] = out = out[sent:]
                    if not out:
                        selector.modify(sock, selectors.EVENT_READ)
                else:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise AssertionError("server closed a connection before echoing")
                    got = received[sock]
                    got += data
                    want = expected[sock]
                    if got != want[: len(got)]:
                        raise AssertionError(f"echo corrupted for {want[:8]!r}")
                    if len(got) == len(want):
                        selector.unregister(sock)
                        pending -= 1


@pytest.mark.parametrize("use_poll", [select_mode, poll_mode])
def test_thousands_of_concurrent_echo_connections(use_poll):
    with descriptor_budget(2 * CONNECTIONS):
        chan_map = {}
        try:
            server = EchoServer(chan_map)
            swarm = ClientSwarm(server.address, CONNECTIONS).start()
            try:
                run_loop_until(swarm.echoed.is_set, chan_map, use_poll, "every echo")
                assert swarm.failure is None, swarm.failure
                # Nothing has closed yet: all connections are open at once.
                assert server.accepted == CONNECTIONS
                assert len(chan_map) == CONNECTIONS + 1
                assert max(chan_map) >= 1024
                swarm.release()
                run_loop_until(lambda: len(chan_map) == 1, chan_map, use_poll, "every close")
            finally:
                swarm.join()
        finally:
            asyncore.close_all(map=chan_map, ignore_all=True)


# --------------------------------------------------------------------------
# Ten thousand idle connections and one busy one
# --------------------------------------------------------------------------

# Holds the far ends of the idle connections in another process, so that
# this process needs one descriptor per connection, not two.
HOLDER = r"""
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = [socket.create_connection((host, port), timeout=60) for _ in range(count)]
sys.stdout.write("connected\n")
sys.stdout.flush()
sys.stdin.read()
"""


class IdleChannel(asyncore.dispatcher_with_send):
    """Nobody talks to it: any read or close is a bug; writes are counted."""

    unexpected = 0
    writes = 0

    def handle_read(self):
        IdleChannel.unexpected += 1

    def handle_write(self):
        IdleChannel.writes += 1
        super().handle_write()

    def handle_close(self):
        IdleChannel.unexpected += 1
        self.close()


class Pinger(asynchat.async_chat):
    def __init__(self, sock, map, rounds):
        super().__init__(sock, map)
        self.set_terminator(b"\n")
        self.rounds = rounds
        self.completed = 0
        self.line = bytearray()
        self.error = None
        self.push(b"ping 0\n")

    def collect_incoming_data(self, data):
        self.line += data

    def found_terminator(self):
        line = bytes(self.line)
        self.line.clear()
        if line != b"pong %d" % self.completed:
            self.error = f"round {self.completed}: got {line!r}"
            self.close()
            return
        self.completed += 1
        if self.completed < self.rounds:
            self.push(b"ping %d\n" % self.completed)


class Ponger(asynchat.async_chat):
    def __init__(self, sock, map):
        super().__init__(sock, map)
        self.set_terminator(b"\n")
        self.line = bytearray()

    def collect_incoming_data(self, data):
        self.line += data

    def found_terminator(self):
        line = bytes(self.line)
        self.line.clear()
        self.push(line.replace(b"ping", b"pong", 1) + b"\n")


def accept_idle_connections(listener, count, holder):
    accepted = []
    try:
        while len(accepted) < count:
            if holder.poll() is not None:
                raise AssertionError(f"holder process exited with {holder.returncode}")
            sock, _ = listener.accept()
            accepted.append(sock)
    except BaseException:
        for sock in accepted:
            sock.close()
        raise
    return accepted


def assert_idle_channels_not_asked(chan_map, use_poll):
    """With the compiled core's kernel set, a pass asks no idle channel."""
    # 3.11's module (the oracle) has neither CORE nor BACKEND.
    if getattr(asyncore, "CORE", None) != "compiled" or asyncore.BACKEND not in ("epoll", "kqueue"):
        return
    import _asyncore_core

    for _ in range(3):
        asyncore.loop(timeout=0, use_poll=use_poll, map=chan_map, count=1)
        info = _asyncore_core.interest_info(chan_map)
        assert info["active"] and info["volatile"] == 0, info
        assert info["asked_last_pass"] <= 2, info


@pytest.mark.parametrize("use_poll", [select_mode, poll_mode])
def test_one_busy_connection_among_ten_thousand_idle(use_poll):
    with descriptor_budget(IDLE_CONNECTIONS + 8):
        chan_map = {}
        IdleChannel.unexpected = IdleChannel.writes = 0
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw = [listener]
        try:
            listener.settimeout(SCALE_DEADLINE)
            listener.bind((HOST4, 0))
            listener.listen(4096)
            host, port = listener.getsockname()
            with subprocess.Popen(
                [sys.executable, "-c", HOLDER, host, str(port), str(IDLE_CONNECTIONS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            ) as holder:
                try:
                    raw += accept_idle_connections(listener, IDLE_CONNECTIONS, holder)
                    assert holder.stdout.readline() == b"connected\n"
                    idle = [IdleChannel(sock, map=chan_map) for sock in raw[1:]]
                    client = socket.create_connection((host, port), timeout=DEADLINE)
                    raw.append(client)
                    server_side, _ = listener.accept()
                    raw.append(server_side)
                    ponger = Ponger(server_side, chan_map)
                    pinger = Pinger(client, chan_map, ROUND_TRIPS)
                    run_loop_until(
                        lambda: pinger.completed == ROUND_TRIPS or pinger.error,
                        chan_map,
                        use_poll,
                        f"{ROUND_TRIPS} round trips",
                    )
                    assert pinger.error is None, pinger.error
                    assert IdleChannel.unexpected == IdleChannel.writes == 0
                    assert len(chan_map) == IDLE_CONNECTIONS + 2
                    assert ponger.connected and pinger.connected
                    assert_idle_channels_not_asked(chan_map, use_poll)
                    # Output queued directly on idle channels, scattered
                    # through the map, goes out on the very next pass.
                    woken = idle[::97]
                    for chan in woken:
                        chan.out_buffer = b"wake up"
                    asyncore.loop(timeout=PASS_TIMEOUT, use_poll=use_poll, map=chan_map, count=1)
                    assert [c for c in woken if c.out_buffer] == []
                    assert IdleChannel.writes == len(woken)
                    assert IdleChannel.unexpected == 0
                finally:
                    asyncore.close_all(map=chan_map, ignore_all=True)
                    holder.stdin.close()
                    holder.wait(DEADLINE)
        finally:
            for sock in raw:
                sock.close()
