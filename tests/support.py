"""Loopback helpers for the tests: bounded in time, never sleeping to synchronise."""

import contextlib
import importlib.util
import os
import pathlib
import socket
import threading
import time

import asyncore

# Every wait in the suite is bounded by this; a hang becomes a clear failure.
DEADLINE = 10.0

HOST4 = "127.0.0.1"
HOST6 = "::1"


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((HOST6, 0))
    except OSError:
        return False
    return True


HAS_IPV6 = has_ipv6()
HAS_POLL = hasattr(__import__("select"), "poll")
HAS_UNIX = hasattr(socket, "AF_UNIX")

# The two loop modes, the values of asyncore.loop's use_poll (conftest.py's
# use_poll fixture runs a test in each); poll only where select has it.
LOOP_MODES = [False] + ([True] if HAS_POLL else [])
LOOP_MODE_IDS = ["select", "poll"][: len(LOOP_MODES)]

# (family, host) pairs to parametrize over; IPv6 only where this machine has it.
FAMILIES = [(socket.AF_INET, HOST4)] + ([(socket.AF_INET6, HOST6)] if HAS_IPV6 else [])
FAMILY_IDS = ["ipv4"] + (["ipv6"] if HAS_IPV6 else [])


def loop_until(predicate, map=None, use_poll=False, timeout=DEADLINE, step=0.01):
    """Run asyncore passes until predicate() is true; fail after ``timeout`` seconds."""
    if map is None:
        map = asyncore.socket_map
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"condition not reached within {timeout}s")
        if map:
            asyncore.loop(timeout=step, use_poll=use_poll, map=map, count=1)
        else:
            time.sleep(step)
    return True


def listening_socket(family=socket.AF_INET, host=HOST4, backlog=128):
    """A bound, listening blocking socket on an ephemeral loopback port."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(DEADLINE)
    s.bind((host, 0))
    s.listen(backlog)
    return s


def connected_pair(family=socket.AF_INET, host=HOST4):
    """Two connected TCP sockets over loopback (client, server side), blocking, with a timeout."""
    with listening_socket(family, host) as srv:
        c = socket.create_connection(srv.getsockname()[:2], timeout=DEADLINE)
        s, _ = srv.accept()
    s.settimeout(DEADLINE)
    return c, s


def recv_exactly(sock, n):
    """Read exactly n bytes from a blocking socket (with a timeout)."""
    chunks = []
    while n:
        data = sock.recv(n)
        if not data:
            raise AssertionError(f"peer closed with {n} bytes still expected")
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def recv_until_closed(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


# System calls that wait for descriptors (select, poll, epoll, and their
# p* variants), by machine; see wait_until_blocked.
_WAIT_SYSCALLS = {
    "x86_64": {7, 23, 232, 270, 271, 281, 441},
    "aarch64": {22, 72, 73, 441},
}


def wait_until_blocked(thread, timeout=DEADLINE):
    """Return once ``thread`` sleeps in a wait for descriptors (select, poll, epoll...).

    Read from /proc/self/task/<tid>/syscall, which names the system call a
    thread is blocked in: what happens after this returns happens during
    that thread's wait, without guessing with sleeps.  Skips the test where
    /proc cannot tell (not Linux, or an unknown machine).
    """
    import pytest

    calls = _WAIT_SYSCALLS.get(os.uname().machine)
    path = f"/proc/self/task/{thread.native_id}/syscall"
    if calls is None or not os.path.exists(path):
        pytest.skip("cannot see which system call a thread waits in here")
    end = time.monotonic() + timeout
    while True:
        with open(path) as f:
            fields = f.read().split()
        if fields and fields[0].isdigit() and int(fields[0]) in calls:
            return
        if not thread.is_alive() or time.monotonic() > end:
            raise AssertionError(f"{thread.name} never waited for descriptors ({fields[:1]})")


class LoopThread:
    """Run asyncore.loop(count=1) passes in a thread until stopped.

    The loop runs with a short timeout so stop() takes effect within one
    pass; the thread is always joined, so the leak guard stays quiet.
    """

    def __init__(self, map=None, use_poll=False, timeout=0.01):
        self.map = asyncore.socket_map if map is None else map
        self.use_poll = use_poll
        self.timeout = timeout
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            while not self._stop.is_set():
                if self.map:
                    asyncore.loop(self.timeout, self.use_poll, self.map, 1)
                else:
                    self._stop.wait(self.timeout)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(DEADLINE)
        if self._thread.is_alive():
            raise AssertionError("loop thread did not stop")
        if self.error is not None:
            raise self.error

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def using_core(name):
    """Make ``name`` the active core for the block, then restore the previous one."""
    from asyncore import _core

    previous = _core.active()
    _core.use(name)
    try:
        yield name
    finally:
        _core.use(previous)


@contextlib.contextmanager
def private_map():
    """A fresh map that is closed at the end, whatever the test did."""
    m = {}
    try:
        yield m
    finally:
        asyncore.close_all(map=m, ignore_all=True)


class RaisingBool:
    """A predicate result whose truth cannot be told."""

    def __bool__(self):
        raise RuntimeError("no truth value")


EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    """Import examples/<name>.py as a module of its own (the examples are no package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PipeReader(asyncore.file_dispatcher):
    """Reads a pipe, recording ``("read", data)`` and ``"close"`` in ``events``.

    Pass ``events`` to share one list between several channels.
    """

    def __init__(self, fd, map=None, events=None):
        self.events = [] if events is None else events
        super().__init__(fd, map)

    def writable(self):
        return False

    def handle_read(self):
        self.events.append(("read", self.recv(4096)))

    def handle_close(self):
        self.events.append("close")
        self.close()


class PipeWriter(asyncore.file_dispatcher):
    """Writes ``pending`` to a pipe while there is some, recording ``("write", sent)``."""

    def __init__(self, fd, map=None, events=None, pending=b""):
        self.events = [] if events is None else events
        self.pending = pending
        super().__init__(fd, map)

    def readable(self):
        return False

    def writable(self):
        return bool(self.pending)

    def handle_write(self):
        sent = self.send(self.pending)
        self.events.append(("write", sent))
        self.pending = self.pending[sent:]

    def handle_close(self):
        self.events.append("close")
        self.close()
