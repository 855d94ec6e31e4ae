"""The compiled core's kernel interest set: what it costs, and what it must not break.

test_interest.py proves, on both cores and against 3.11, that every way a
channel's interest can change is seen by the next pass.  This file checks
the compiled core's side of the bargain with its introspection hook
(``_asyncore_core.interest_info``): that a pass over a long-lived map asks
only the channels that may have changed (idle channels of our own classes
cost nothing), that channels overriding a predicate are still asked every
pass, and that the set follows the map, a fork and descriptors closed
behind the loop's back.
"""

import errno
import gc
import os
import socket
import time
import weakref

import pytest

import asynchat
import asyncore
from support import DEADLINE, connected_pair, wait_until_blocked

pytestmark = pytest.mark.cyasyncore_only

PASS_TIMEOUT = 0.05
IDLE = 300


@pytest.fixture
def kernel(core):
    """The compiled core with its kernel set on; skips where there is none.

    The kernel interest set belongs to the compiled core: a test taking this
    fixture is marked ``compiled_only``, so it is collected under that core alone.
    """
    assert core == "compiled", "a test of the kernel set must be marked compiled_only"
    import _asyncore_core

    if not _asyncore_core.use_kernel_set(True):
        _asyncore_core.use_kernel_set(False)
        pytest.skip("no epoll or kqueue here")
    return _asyncore_core


class Chan(asyncore.dispatcher_with_send):
    reads = 0

    def handle_read(self):
        data = self.recv(65536)
        if data:
            type(self).reads += 1
            self.received = getattr(self, "received", b"") + data


class Chat(asynchat.async_chat):
    def __init__(self, sock, map):
        super().__init__(sock, map)
        self.set_terminator(b"\n")
        self.lines = []
        self.buf = []

    def collect_incoming_data(self, data):
        self.buf.append(data)

    def found_terminator(self):
        self.lines.append(b"".join(self.buf))
        self.buf = []
        self.push(b"pong\n")


class Listener(asyncore.dispatcher):
    def handle_accept(self):
        pair = self.accept()
        if pair:
            pair[0].close()


class Overrider(Chan):
    asked = 0

    def writable(self):
        type(self).asked += 1
        return False


def run(map, use_poll, passes=1):
    for _ in range(passes):
        asyncore.loop(timeout=PASS_TIMEOUT, use_poll=use_poll, map=map, count=1)


def run_until_received(map, use_poll, chan, expected, passes=20):
    """Run passes until ``chan`` has received exactly ``expected``; whether it did."""
    for _ in range(passes):
        run(map, use_poll)
        if getattr(chan, "received", b"") == expected:
            return True
    return False


class World:
    """A private map of idle channels of every kind we own, plus one busy pair."""

    def __init__(self, kernel, use_poll, idle=IDLE):
        self.kernel = kernel
        self.use_poll = use_poll
        self.map = {}
        self.sockets = []
        self.idle = []
        kinds = [Chan, lambda s, m: Chat(s, m)]
        for i in range(idle):
            a, b = socket.socketpair()
            self.sockets += [a, b]
            self.idle.append(kinds[i % 2](b, self.map))
        self.listener = Listener(map=self.map)
        self.listener.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(5)
        self.peer, ours = connected_pair()
        self.sockets += [self.peer, ours]
        self.busy = Chat(ours, self.map)

    def info(self):
        return self.kernel.interest_info(self.map)

    def ping(self):
        self.peer.sendall(b"ping\n")
        end = 100
        while not self.peer_has_pong() and end:
            run(self.map, self.use_poll)
            end -= 1
        assert end, "no pong"

    def peer_has_pong(self):
        self.peer.settimeout(0)
        try:
            got = self.peer.recv(5)
        except BlockingIOError:
            return False
        finally:
            self.peer.settimeout(DEADLINE)
        assert got == b"pong\n"
        return True

    def close(self):
        asyncore.close_all(map=self.map, ignore_all=True)
        for s in self.sockets:
            s.close()


@pytest.fixture
def world(kernel, use_poll):
    w = World(kernel, use_poll)
    try:
        yield w
    finally:
        w.close()


def settle(world):
    # The first pass over a new map takes a snapshot; the next builds the set.
    run(world.map, world.use_poll, 3)
    info = world.info()
    assert info["active"], info
    return info


@pytest.mark.compiled_only
def test_idle_channels_are_not_asked(world):
    info = settle(world)
    assert info["channels"] == IDLE + 2
    assert info["volatile"] == 0
    for _ in range(5):
        run(world.map, world.use_poll)
        assert world.info()["asked_last_pass"] == 0
    # A busy channel among them: only it is asked, after each of its events.
    for _ in range(5):
        world.ping()
        assert world.info()["asked_last_pass"] <= 1
    assert world.busy.lines == [b"ping"] * 5


@pytest.mark.compiled_only
def test_only_a_wait_that_found_nothing_checks_registrations(world):
    # Reuse of a number behind an idle channel is looked for after quiet
    # waits only (README): a pass with an event costs no check at all.
    settle(world)
    before = world.info()["audited"]
    world.peer.sendall(b"ping\n")
    run(world.map, world.use_poll)
    assert world.busy.lines == [b"ping"]
    assert world.info()["audited"] == before
    world.peer.recv(5)
    run(world.map, world.use_poll)
    # A 50 ms wait checks up to 16 + 32 * 50 registrations: all of these.
    info = world.info()
    assert info["audited"] - before == info["in_kernel"] > IDLE


@pytest.mark.compiled_only
def test_backend_names_the_kernel_set(kernel):
    expected = "epoll" if os.uname().sysname == "Linux" else "kqueue"
    assert asyncore.BACKEND == kernel.backend() == expected
    previous = kernel.use_kernel_set(False)
    try:
        assert kernel.backend() == "poll"
    finally:
        kernel.use_kernel_set(previous)


@pytest.mark.compiled_only
def test_overriding_channels_are_asked_every_pass(kernel, use_poll):
    m = {}
    socks = []
    try:
        for _ in range(20):
            a, b = socket.socketpair()
            socks += [a, b]
            Overrider(b, m)
        run(m, use_poll, 3)
        Overrider.asked = 0
        run(m, use_poll, 4)
        assert Overrider.asked == 20 * 4
        info = kernel.interest_info(m)
        assert info["volatile"] == 20 and info["asked_last_pass"] == 20
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        for s in socks:
            s.close()


def _set_connected(chan):
    chan.connected = False


def _set_accepting(chan):
    chan.accepting = True


def _queue(chan):
    if isinstance(chan, asynchat.async_chat):
        chan.producer_fifo.append(b"x")
    else:
        chan.out_buffer += b"x"


def _override(chan):
    chan.writable = lambda: False


def _swap_class(chan):
    chan.__class__ = type("Swapped", (type(chan),), {})


@pytest.mark.compiled_only
@pytest.mark.parametrize("kind", [0, 1], ids=["dispatcher_with_send", "async_chat"])
@pytest.mark.parametrize("change", [_set_connected, _set_accepting, _queue, _override, _swap_class])
def test_a_state_change_asks_that_channel_only(world, change, kind):
    settle(world)
    run(world.map, world.use_poll)
    target = world.idle[IDLE // 2 + kind]
    change(target)
    run(world.map, world.use_poll)
    assert world.info()["asked_last_pass"] == 1


@pytest.mark.compiled_only
def test_class_patch_asks_its_channels_only(world):
    class Patched(Chan):
        pass

    a, b = socket.socketpair()
    world.sockets += [a, b]
    patched = Patched(b, world.map)
    settle(world)
    run(world.map, world.use_poll)
    Patched.writable = lambda self: True
    try:
        run(world.map, world.use_poll)
        info = world.info()
        assert info["asked_last_pass"] == 1 and info["volatile"] == 1
        assert patched.writable()
    finally:
        del Patched.writable


@pytest.mark.compiled_only
def test_fresh_dict_each_pass_builds_no_set(kernel, use_poll):
    a, b = socket.socketpair()
    try:
        chan = Chan(b, map={})
        for _ in range(5):
            m = {b.fileno(): chan}
            run(m, use_poll)
            assert not kernel.interest_info(m)["active"]
        fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
        del m
        gc.collect()
        if fds is not None:
            assert len(os.listdir("/proc/self/fd")) <= fds
    finally:
        a.close()
        b.close()


@pytest.mark.compiled_only
def test_an_abandoned_map_is_collected_with_its_channels(kernel, use_poll):
    a, b = socket.socketpair()
    m = {}
    chan = Chan(b, m)
    ref = weakref.ref(chan)
    run(m, use_poll, 3)
    assert kernel.interest_info(m)["active"]
    # The channel refers to its map and the map to the channel: a cycle the
    # collector must still be able to free, as with 3.11.
    chan.socket = None
    del chan, m
    gc.collect()
    assert ref() is None
    a.close()
    b.close()


@pytest.mark.compiled_only
def test_keys_that_are_not_descriptor_numbers_take_the_snapshot_path(kernel, use_poll):
    a, b = socket.socketpair()
    m = {}
    try:
        chan = Chan(b, m)
        run(m, use_poll, 3)
        assert kernel.interest_info(m)["active"]
        # A socket as key: select() took any object with fileno().  (poll()
        # reported the number, which then found nothing in the map.)
        m[b] = m.pop(b.fileno())
        a.sendall(b"by socket")
        for _ in range(3):
            run(m, use_poll)
        assert getattr(chan, "received", b"") == (b"" if use_poll else b"by socket")
        assert not kernel.interest_info(m)["active"]
    finally:
        m.clear()
        a.close()
        b.close()


@pytest.mark.compiled_only
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_leaves_the_parents_set_alone(kernel, use_poll):
    peer, ours = connected_pair()
    m = {}
    chan = Chan(ours, m)
    try:
        run(m, use_poll, 3)
        assert kernel.interest_info(m)["active"]
        pid = os.fork()
        if pid == 0:
            # The child closes its copy of the channel and loops on: with a
            # shared epoll set this would remove the parent's registration.
            status = 1
            try:
                chan.close()
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        peer.sendall(b"after fork")
        assert run_until_received(m, use_poll, chan, b"after fork")
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        peer.close()


@pytest.mark.compiled_only
def test_registration_outliving_its_descriptor_is_discarded(kernel, use_poll):
    # A pipe read through a duplicate: the duplicate is closed behind the
    # loop's back (the pipe stays open through the original), then removed
    # from the map.  epoll keeps the old registration; the number goes to a
    # new channel; readiness of the old pipe must never reach it.
    r, w = os.pipe()
    m = {}
    try:
        reader = asyncore.file_dispatcher(r, map=m)
        run(m, use_poll, 3)
        dup_fd = reader.socket.fd
        os.close(dup_fd)
        reader.socket.fd = -1
        del m[dup_fd]
        peer, ours = connected_pair()
        os.dup2(ours.fileno(), dup_fd, inheritable=False)
        ours.close()
        reused = socket.socket(fileno=dup_fd)
        chan = Chan(reused, m)
        os.write(w, b"old pipe")
        run(m, use_poll, 3)
        assert getattr(chan, "received", b"") == b""
        peer.sendall(b"mine")
        assert run_until_received(m, use_poll, chan, b"mine")
        peer.close()
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        os.close(r)
        os.close(w)


# --------------------------------------------------------------------------
# Found in review: each of these broke an earlier version of the kernel set
# --------------------------------------------------------------------------


@pytest.mark.compiled_only
def test_a_predicate_editing_the_map_never_reaches_a_freed_channel(kernel, use_poll):
    # A predicate adds a key that is not a descriptor number (the set must
    # be rebuilt) and then deletes another channel later in the same pass.
    m = {}
    log = []
    socks = []

    class Victim(asyncore.dispatcher):
        gone = False

        def readable(self):
            log.append(Victim.gone)
            return True

        def writable(self):
            return False

        def handle_read(self):
            self.recv(10)

    class Saboteur(Victim):
        victim_fd = None

        def readable(self):
            if Saboteur.victim_fd is not None:
                fd, Saboteur.victim_fd = Saboteur.victim_fd, None
                m["junk"] = None
                del m["junk"]
                weak = weakref.ref(m.pop(fd))
                Victim.gone = weak() is None
            return True

    try:
        for cls in (Saboteur, Victim):
            a, b = socket.socketpair()
            socks += [a, b]
            cls(a, map=m)
        run(m, use_poll, 2)
        Saboteur.victim_fd = socks[2].fileno()
        run(m, use_poll, 2)
        assert Victim.gone, "the victim should have been freed by now"
        assert True not in log, "a freed channel was asked"
    finally:
        m.clear()
        for s in socks:
            s.close()


def test_a_socket_closed_behind_the_loops_back(core, use_poll):
    # 3.11: poll() flags it POLLNVAL (handle_close), select() raises EBADF.
    m = {}
    a, b = socket.socketpair()

    class Careless(asyncore.dispatcher):
        closes = 0

        def handle_read(self):
            self.recv(100)
            self.socket.close()     # without leaving the map

        def handle_close(self):
            Careless.closes += 1
            self.close()

    try:
        Careless(a, map=m)
        b.send(b"hi")
        if use_poll:
            run(m, use_poll, 4)
            assert Careless.closes == 1 and not m
        else:
            with pytest.raises(OSError) as info:
                run(m, use_poll, 4)
            assert info.value.errno == errno.EBADF
    finally:
        m.clear()
        a.close()
        b.close()


@pytest.mark.compiled_only
def test_a_registration_nothing_owns_does_not_cut_the_wait_short(kernel, use_poll):
    # The number is closed behind the loop's back while a duplicate keeps
    # the pipe open, then leaves the map: epoll keeps reporting the pipe.
    r, w = os.pipe()
    m = {}
    a, b = socket.socketpair()
    try:
        Chan(a, map=m)
        reader = asyncore.file_dispatcher(r, map=m)
        run(m, use_poll, 3)
        dup_fd = reader.socket.fd
        os.close(dup_fd)
        reader.socket.fd = -1
        del m[dup_fd]
        os.write(w, b"x")
        start = time.monotonic()
        asyncore.loop(timeout=0.2, use_poll=use_poll, map=m, count=2)
        # Each pass waits out its timeout, as select() and poll() would.
        assert time.monotonic() - start >= 0.35
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        b.close()
        os.close(r)
        os.close(w)


def test_output_left_by_a_failed_send_is_still_sent(core, use_poll):
    class Flaky:
        def __init__(self, sock):
            self.sock = sock
            self.fail = True

        def send(self, data):
            if self.fail:
                self.fail = False
                raise OSError(errno.ENOBUFS, "No buffer space available")
            return self.sock.send(data)

        def __getattr__(self, name):
            return getattr(self.sock, name)

    m = {}
    a, b = socket.socketpair()
    b.settimeout(DEADLINE)
    try:
        chan = Chan(a, map=m)
        run(m, use_poll, 3)
        chan.socket = Flaky(chan.socket)
        with pytest.raises(OSError):
            chan.send(b"reply")
        run(m, use_poll, 3)
        assert b.recv(100) == b"reply"
    finally:
        m.clear()
        a.close()
        b.close()


@pytest.mark.compiled_only
def test_channels_asked_in_two_threads_keep_their_notices(kernel):
    # Thread X asks P while thread Y asks Q, and X finishes first: P's later
    # state changes (made in X) must still reach the loop.  Events order the
    # threads: X is inside P's readable() when Y starts asking Q, and Y's
    # asking ends only after X's pass has.
    import threading

    x_asking = threading.Event()
    y_asking = threading.Event()
    x_done = threading.Event()

    class P(asyncore.dispatcher):
        writes = 0

        def handle_write(self):
            P.writes += 1

        def handle_read(self):
            pass

    class Q(asyncore.dispatcher):
        gated = False

        def readable(self):
            if Q.gated:
                Q.gated = False
                y_asking.set()
                assert x_done.wait(DEADLINE)
            return False

        def writable(self):
            return False

    ma, mb = {}, {}
    a, a2 = socket.socketpair()
    b, b2 = socket.socketpair()
    try:
        p = P(a, map=ma)
        p.accepting = True
        Q(b, map=mb)
        for m in (ma, mb):
            run(m, False, 2)

        def slow_readable():
            x_asking.set()
            assert y_asking.wait(DEADLINE)
            return True

        p.readable = slow_readable
        Q.gated = True

        def thread_y():
            assert x_asking.wait(DEADLINE)
            asyncore.loop(timeout=0, count=1, map=mb)

        y = threading.Thread(target=thread_y)
        y.start()
        try:
            asyncore.loop(timeout=0, count=1, map=ma)
        finally:
            x_done.set()
            y.join(DEADLINE)
        assert y_asking.is_set() and not y.is_alive()
        del p.readable
        run(ma, False)
        p.accepting = False
        run(ma, False, 3)
        assert P.writes >= 2
    finally:
        for m in (ma, mb):
            asyncore.close_all(map=m, ignore_all=True)
        for s in (a, a2, b, b2):
            s.close()


@pytest.mark.compiled_only
@pytest.mark.parametrize("timeout", [None, 2.0], ids=["no-timeout", "timeout"])
def test_a_pass_in_another_thread_waits_for_channels_being_asked(kernel, timeout):
    # Thread A asks a new channel; thread B's pass meanwhile has nothing
    # asked to wait for, yet must wait on the set, not sleep.  A's asking
    # ends only once B is blocked in its wait (or its pass is over).
    import threading

    asking = threading.Event()
    main = threading.main_thread()

    class Slow(asyncore.dispatcher):
        reads = 0

        def readable(self):
            if threading.current_thread() is not main:
                asking.set()
                wait_until_blocked(main)
            return True

        def writable(self):
            return False

        def handle_read(self):
            # Only the waiting thread takes the data: the other one's pass
            # must leave it for this test's pass to find.
            if threading.current_thread() is main:
                Slow.reads += 1
                self.recv(10)

    class Quiet(asyncore.dispatcher):
        def readable(self):
            return False

        def writable(self):
            return False

    m = {}
    x1, x2 = socket.socketpair()
    a, b = socket.socketpair()
    errors = []

    def other_pass():
        try:
            asyncore.loop(timeout=0, count=1, map=m)
        except BaseException as exc:
            errors.append(exc)

    try:
        Quiet(x1, map=m)
        run(m, False, 2)
        Slow(a, map=m)
        b.send(b"data")
        other = threading.Thread(target=other_pass)
        other.start()
        try:
            assert asking.wait(DEADLINE)
            asyncore.loop(timeout=timeout, count=1, map=m)
        finally:
            other.join(DEADLINE)
        assert errors == [] and not other.is_alive()
        assert Slow.reads == 1
    finally:
        asyncore.close_all(map=m, ignore_all=True)
        for s in (x1, x2, a, b):
            s.close()
