"""Every way a channel's readiness interest can change is seen by the next pass.

3.11 asks each channel ``readable()`` and ``writable()`` (and reads
``accepting``) on every pass, so any change a program makes -- through an
attribute, a buffer mutated in place, the map edited by hand, a method
patched on the instance or the class -- takes effect on the very next pass.
A core that keeps its interest set between passes must notice each of these,
or the change only shows up when something else wakes the loop (with the
default 30 s timeout: a stall).

The tests count passes, not seconds: a pass that misses a change simply
times out, so each expectation is "within N passes" with a short per-pass
timeout, and a missed change fails in well under a second.
"""

import collections
import os
import socket

import pytest

import asynchat
import asyncore
from support import DEADLINE, HAS_POLL, LoopThread, connected_pair, recv_exactly

# Long enough that a ready descriptor is always reported within the pass,
# short enough that a missed change fails fast.
PASS_TIMEOUT = 0.05
# Passes run while asserting that nothing happens.
QUIET_PASSES = 2
# Passes of no progress at all after which a bulk transfer is declared stalled.
STALL_PASSES = 10


# --------------------------------------------------------------------------
# The loop under test, driven one pass at a time
# --------------------------------------------------------------------------


class PassDriver:
    """Runs single passes of asyncore.loop() over one map and owns the test's resources."""

    def __init__(self, use_poll, private_map):
        self.use_poll = use_poll
        # None exercises the "map defaults to asyncore.socket_map" path.
        self.map_arg = {} if private_map else None
        self.channels = []
        self.sockets = []
        self.fds = []
        # Passes run, and of those how many ran over a kernel interest set.
        self.passes = 0
        self.kernel_passes = 0

    @property
    def map(self):
        return asyncore.socket_map if self.map_arg is None else self.map_arg

    def run_pass(self, map=None):
        target = self.map if map is None else map
        asyncore.loop(
            timeout=PASS_TIMEOUT,
            use_poll=self.use_poll,
            map=self.map_arg if map is None else map,
            count=1,
        )
        self.passes += 1
        info = kernel_set_info(target)
        if info and info["active"]:
            self.kernel_passes += 1

    def within(self, passes, predicate, what):
        """Run passes until predicate() holds; fail if it takes more than ``passes``."""
        for done in range(1, passes + 1):
            self.run_pass()
            if predicate():
                return done
        raise AssertionError(f"{what}: not within {passes} pass(es)")

    def quiet(self, passes=QUIET_PASSES):
        for _ in range(passes):
            self.run_pass()

    def channel(self, cls, sock, **kwargs):
        chan = cls(sock, map=self.map_arg, **kwargs)
        self.channels.append(chan)
        return chan

    def pair(self, kind="tcp"):
        """A connected (peer, ours) stream pair; ``ours`` is meant for a channel."""
        if kind == "tcp":
            peer, ours = connected_pair()
        else:
            peer, ours = socket.socketpair()
            peer.settimeout(DEADLINE)
        self.sockets += [peer, ours]
        return peer, ours

    def close(self):
        asyncore.close_all(map=self.map, ignore_all=True)
        for chan in self.channels:
            chan.close()
        for sock in self.sockets:
            sock.close()
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass


def kernel_set_info(map):
    """The compiled core's view of ``map`` when its kernel set is on, else None."""
    if getattr(asyncore, "CORE", None) != "compiled" or asyncore.BACKEND not in ("epoll", "kqueue"):
        return None
    import _asyncore_core

    return _asyncore_core.interest_info(map)


@pytest.fixture(params=[False, True], ids=["global-map", "private-map"])
def driver(request, use_poll):
    d = PassDriver(use_poll, request.param)
    try:
        yield d
    finally:
        d.close()
    if d.passes >= 3 and kernel_set_info(d.map) is not None:
        # These tests are about the kernel set in the compiled core: make
        # sure they exercised it, not only the first pass's snapshot.
        assert d.kernel_passes > 0, "no pass ran over the kernel interest set"


def drain(sock):
    """Everything a non-blocking read can take from sock right now."""
    chunks = []
    sock.setblocking(False)
    try:
        while True:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        sock.settimeout(DEADLINE)
    return b"".join(chunks)


def pump_until_delivered(driver, expected):
    """Run passes, draining every peer between them, until each got its bytes.

    ``expected`` maps a peer socket to the bytes it must receive.  A pass that
    moves no byte to any peer counts towards a stall; a channel whose write
    interest was lost stalls for good, and the test fails after STALL_PASSES.
    """
    got = {peer: bytearray() for peer in expected}
    idle = 0
    while any(len(got[p]) < len(expected[p]) for p in expected):
        driver.run_pass()
        moved = 0
        for peer in expected:
            data = drain(peer)
            got[peer] += data
            moved += len(data)
        idle = 0 if moved else idle + 1
        if idle >= STALL_PASSES:
            behind = [len(expected[p]) - len(got[p]) for p in expected]
            raise AssertionError(
                f"transfer stalled for {STALL_PASSES} passes; bytes still owed per peer: {behind}"
            )
    for peer in expected:
        assert bytes(got[peer]) == expected[peer]


# --------------------------------------------------------------------------
# Channels that record what the loop did to them.  None of them overrides
# readable() or writable() unless the test is about such an override: the
# base classes' own predicates are what a core may optimise.
# --------------------------------------------------------------------------


class SendChannel(asyncore.dispatcher_with_send):
    def __init__(self, sock=None, map=None):
        super().__init__(sock, map)
        self.received = bytearray()
        self.reads = 0
        self.writes = 0
        self.connects = 0
        self.errors = []

    def handle_read(self):
        self.reads += 1
        self.received += self.recv(65536)

    def handle_write(self):
        self.writes += 1
        super().handle_write()

    def handle_connect(self):
        self.connects += 1

    def handle_close(self):
        self.close()

    def handle_error(self):
        self.errors.append(asyncore.compact_traceback())
        self.close()


class ChatChannel(asynchat.async_chat):
    def __init__(self, sock=None, map=None):
        super().__init__(sock, map)
        self.set_terminator(None)
        self.received = bytearray()
        self.reads = 0
        self.writes = 0
        self.connects = 0
        self.errors = []

    def collect_incoming_data(self, data):
        self.received += data

    def found_terminator(self):
        pass

    def handle_read(self):
        self.reads += 1
        super().handle_read()

    def handle_write(self):
        self.writes += 1
        super().handle_write()

    def handle_connect(self):
        self.connects += 1

    def handle_error(self):
        self.errors.append(asyncore.compact_traceback())
        self.close()


class PlainChannel(asyncore.dispatcher):
    """The bare dispatcher: readable and writable always; counts write events."""

    def __init__(self, sock=None, map=None):
        super().__init__(sock, map)
        self.write_events = 0
        self.accepts = 0
        self.errors = []

    def handle_write_event(self):
        self.write_events += 1
        super().handle_write_event()

    def handle_write(self):
        pass

    def handle_accept(self):
        self.accepts += 1

    def handle_error(self):
        self.errors.append(asyncore.compact_traceback())
        self.close()


class Duck:
    """Not a dispatcher: only what the loop itself touches."""

    accepting = False

    def __init__(self, sock, want_write=False):
        self.sock = sock
        self.want_write = want_write
        self.received = bytearray()
        self.reads = 0
        self.writes = 0

    def readable(self):
        return True

    def writable(self):
        return self.want_write

    def handle_read_event(self):
        self.reads += 1
        self.received += self.sock.recv(65536)

    def handle_write_event(self):
        self.writes += 1

    def handle_expt_event(self):
        raise AssertionError("unexpected priority event")

    def handle_close(self):
        raise AssertionError("unexpected close")

    def handle_error(self):
        raise


BUFFERED = [SendChannel, ChatChannel]
BUFFERED_IDS = ["dispatcher_with_send", "async_chat"]


def queue_output(chan, data):
    """Queue data on a buffered channel without going through send()/push()."""
    if isinstance(chan, asynchat.async_chat):
        chan.producer_fifo.append(data)
    else:
        chan.out_buffer += data


def pending_output(chan):
    if isinstance(chan, asynchat.async_chat):
        return bool(chan.producer_fifo)
    return bool(chan.out_buffer)


def settled(driver, chan):
    """Let a fresh channel go idle, proving it asks for no write in the meantime."""
    writes = chan.writes
    driver.quiet()
    assert chan.writes == writes, "an idle channel with nothing to send got write events"


# --------------------------------------------------------------------------
# connected
# --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", BUFFERED, ids=BUFFERED_IDS)
def test_connecting_channel_is_writable_until_connected(driver, cls):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        chan = cls(map=driver.map_arg)
        driver.channels.append(chan)
        chan.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        chan.connect(listener.getsockname())
        # Unconnected means writable for both classes: the write event completes the connect.
        driver.within(1, lambda: chan.connected, "connect completed")
        assert chan.connects == 1
        listener.settimeout(DEADLINE)
        peer, _ = listener.accept()
    driver.sockets.append(peer)
    peer.settimeout(DEADLINE)
    # Connected with nothing queued: the write interest must be gone.
    settled(driver, chan)
    queue_output(chan, b"after connect")
    driver.within(1, lambda: not pending_output(chan), "queued output sent")
    assert recv_exactly(peer, 13) == b"after connect"
    peer.sendall(b"ping")
    driver.within(1, lambda: chan.received == b"ping", "input read")


@pytest.mark.parametrize("how", ["assigned", "deleted"])
@pytest.mark.parametrize("cls", BUFFERED, ids=BUFFERED_IDS)
def test_connected_made_false_directly_arms_write_interest(driver, cls, how):
    peer, ours = driver.pair()
    chan = driver.channel(cls, ours)
    settled(driver, chan)
    if how == "assigned":
        chan.connected = False
    else:
        # The class attribute, False, shows through again.
        del chan.connected
    driver.within(1, lambda: chan.writes >= 1, "write event once not connected")
    chan.connected = True
    writes = chan.writes
    driver.quiet()
    assert chan.writes == writes, "write events continued after connected=True"
    assert not chan.errors


# --------------------------------------------------------------------------
# accepting
# --------------------------------------------------------------------------


def test_accepting_set_directly_removes_write_interest(driver):
    peer, ours = driver.pair()
    chan = driver.channel(PlainChannel, ours)
    # The bare dispatcher is always writable, and a connected socket is ready.
    driver.within(1, lambda: chan.write_events >= 1, "write event on a connected dispatcher")
    chan.accepting = True
    events = chan.write_events
    driver.quiet()
    assert chan.write_events == events, "an accepting channel was polled for writing"
    chan.accepting = False
    driver.within(1, lambda: chan.write_events > events, "write event after accepting=False")
    assert chan.accepts == 0
    assert not chan.errors


def test_accepting_holds_back_queued_output_until_unset(driver):
    peer, ours = driver.pair()
    chan = driver.channel(SendChannel, ours)
    settled(driver, chan)
    chan.accepting = True
    chan.out_buffer = b"held back"
    driver.quiet()
    assert chan.writes == 0 and chan.out_buffer == b"held back"
    chan.accepting = False
    driver.within(1, lambda: not chan.out_buffer, "output sent after accepting=False")
    assert recv_exactly(peer, 9) == b"held back"


def test_accepting_patched_on_the_class(driver):
    class Patched(PlainChannel):
        pass

    peer, ours = driver.pair()
    chan = driver.channel(Patched, ours)
    driver.within(1, lambda: chan.write_events >= 1, "write event on a connected dispatcher")
    Patched.accepting = True
    events = chan.write_events
    driver.quiet()
    assert chan.write_events == events, "a channel of an accepting class was polled for writing"
    del Patched.accepting
    driver.within(1, lambda: chan.write_events > events, "write event after the class reverted")
    assert not chan.errors


# --------------------------------------------------------------------------
# dispatcher_with_send.out_buffer touched directly
# --------------------------------------------------------------------------


def test_out_buffer_assigned_directly(driver):
    peer, ours = driver.pair()
    chan = driver.channel(SendChannel, ours)
    settled(driver, chan)
    chan.out_buffer = b"assigned"
    driver.within(1, lambda: not chan.out_buffer, "assigned out_buffer sent")
    assert recv_exactly(peer, 8) == b"assigned"
    settled(driver, chan)


def test_out_buffer_extended_directly(driver):
    peer, ours = driver.pair()
    chan = driver.channel(SendChannel, ours)
    settled(driver, chan)
    chan.out_buffer += b"extended"
    driver.within(1, lambda: not chan.out_buffer, "extended out_buffer sent")
    chan.out_buffer += b" twice"
    driver.within(1, lambda: not chan.out_buffer, "extended out_buffer sent again")
    assert recv_exactly(peer, 14) == b"extended twice"


def test_out_buffer_bytearray_mutated_in_place(driver):
    # 3.11 keeps whatever object is assigned to out_buffer and only ever asks
    # its length: a bytearray grown in place, with no attribute assignment
    # at all, is pending output just the same.
    peer, ours = driver.pair()
    chan = driver.channel(SendChannel, ours)
    buffer = bytearray()
    chan.out_buffer = buffer
    settled(driver, chan)
    buffer.extend(b"in place")
    driver.within(
        1, lambda: chan.writes == 1 and not chan.out_buffer, "bytearray grown in place sent"
    )
    assert recv_exactly(peer, 8) == b"in place"
    settled(driver, chan)


def test_out_buffer_left_after_a_send_grown_in_place(driver):
    # 3.11 replaces out_buffer after a send by a slice of itself: a program
    # that assigned a bytearray keeps getting a bytearray, which it may grow
    # in place like the first one.
    peer, ours = driver.pair()
    chan = driver.channel(SendChannel, ours)
    chan.out_buffer = bytearray(b"first")
    driver.within(1, lambda: chan.writes == 1 and not chan.out_buffer, "first bytes sent")
    assert isinstance(chan.out_buffer, bytearray)
    settled(driver, chan)
    chan.out_buffer.extend(b" again")
    driver.within(1, lambda: chan.writes == 2 and not chan.out_buffer, "grown again and sent")
    assert recv_exactly(peer, 11) == b"first again"


@pytest.mark.parametrize("cls", BUFFERED, ids=BUFFERED_IDS)
def test_output_queued_from_another_thread(cls, use_poll):
    # The loop runs in a thread, as in test servers; the main thread queues
    # output behind its back.  3.11 sends it on the loop's next pass.
    peer, ours = connected_pair()
    chan_map = {}
    try:
        chan = cls(ours, map=chan_map)
        with LoopThread(map=chan_map, use_poll=use_poll, timeout=PASS_TIMEOUT):
            # Only once: a second update could race the loop thread's own
            # update of out_buffer after a send, in 3.11 as here.
            queue_output(chan, b"from the main thread")
            assert recv_exactly(peer, 20) == b"from the main thread"
    finally:
        asyncore.close_all(map=chan_map, ignore_all=True)
        peer.close()
        ours.close()


class Relay(SendChannel):
    """Queues what it reads on another channel, bypassing send() and push()."""

    target = None

    def handle_read(self):
        data = self.recv(65536)
        self.reads += 1
        queue_output(self.target, data)


@pytest.mark.parametrize("cls", BUFFERED, ids=BUFFERED_IDS)
def test_output_queued_from_another_channels_handler(driver, cls):
    peer_a, ours_a = driver.pair()
    peer_b, ours_b = driver.pair()
    relay = driver.channel(Relay, ours_a)
    target = driver.channel(cls, ours_b)
    relay.target = target
    settled(driver, target)
    peer_a.sendall(b"relayed")
    driver.within(1, lambda: relay.reads == 1, "relay read its input")
    assert pending_output(target)
    driver.within(1, lambda: not pending_output(target), "relayed bytes sent")
    assert recv_exactly(peer_b, 7) == b"relayed"


# --------------------------------------------------------------------------
# async_chat.producer_fifo touched directly
# --------------------------------------------------------------------------


def _append(chan):
    chan.producer_fifo.append(b"appended")
    return b"appended"


def _appendleft(chan):
    chan.producer_fifo.appendleft(b"appendleft")
    return b"appendleft"


def _extend(chan):
    chan.producer_fifo.extend([b"one ", b"two ", b"three"])
    return b"one two three"


def _replace(chan):
    chan.producer_fifo = collections.deque([b"new deque"])
    return b"new deque"


def _replace_then_append(driver, chan):
    chan.producer_fifo = collections.deque()
    settled(driver, chan)
    chan.producer_fifo.append(b"into the new deque")
    return b"into the new deque"


def _producer(chan):
    chan.producer_fifo.append(asynchat.simple_producer(b"from a producer", buffer_size=4))
    return b"from a producer"


FIFO_CHANGES = {
    "append": _append,
    "appendleft": _appendleft,
    "extend": _extend,
    "replace": _replace,
    "replace-then-append": _replace_then_append,
    "producer": _producer,
}


@pytest.mark.parametrize("change", list(FIFO_CHANGES))
def test_producer_fifo_mutated_directly(driver, change):
    peer, ours = driver.pair()
    chan = driver.channel(ChatChannel, ours)
    settled(driver, chan)
    mutate = FIFO_CHANGES[change]
    expected = mutate(driver, chan) if change == "replace-then-append" else mutate(chan)
    driver.within(1, lambda: chan.writes >= 1, "write event for the queued output")
    # async_chat sends one fifo entry per write event; a producer takes one
    # more to report that it is exhausted.
    driver.within(len(expected) + 2, lambda: not chan.producer_fifo, "fifo drained")
    assert recv_exactly(peer, len(expected)) == expected
    settled(driver, chan)
    assert not chan.errors


def test_close_when_done_on_an_idle_channel(driver):
    # close_when_done() only queues a marker; the next pass must act on it.
    peer, ours = driver.pair()
    chan = driver.channel(ChatChannel, ours)
    settled(driver, chan)
    chan.producer_fifo.append(b"last words")
    chan.close_when_done()
    driver.within(3, lambda: chan.socket.fileno() == -1, "channel closed")
    assert chan not in driver.map.values()
    assert recv_exactly(peer, 10) == b"last words"
    assert peer.recv(1) == b""


# --------------------------------------------------------------------------
# Output larger than the socket buffer: partial sends
# --------------------------------------------------------------------------


class BroadcastListener(ChatChannel):
    # One fifo entry per broadcast, so that what remains after a partial
    # send is the same entry cut short.
    ac_out_buffer_size = 1 << 21


class Broadcaster(ChatChannel):
    """On each line it reads, pushes a large message to every listener."""

    listeners = ()

    def __init__(self, sock=None, map=None):
        super().__init__(sock, map)
        self.set_terminator(b"\n")
        self.line = bytearray()

    def collect_incoming_data(self, data):
        self.line += data

    def found_terminator(self):
        word = bytes(self.line)
        self.line.clear()
        for index, listener in enumerate(self.listeners):
            listener.push(broadcast_payload(word, index))


def broadcast_payload(word, index):
    head = b"%s to listener %d:" % (word, index)
    return head + bytes(range(256)) * (4096 - index) + b"end"


def limit_tcp_buffers(peer, ours):
    # Fixed buffers keep the amount the kernel absorbs well below the 1 MB
    # messages, so every push is a partial send.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_broadcast_to_peers_that_do_not_read_yet(driver, kind):
    if kind == "unix" and not hasattr(socket, "AF_UNIX"):
        pytest.skip("no AF_UNIX")
    peer_a, ours_a = driver.pair(kind)
    sender = driver.channel(Broadcaster, ours_a)
    listeners, peers = [], []
    for _ in range(8):
        peer, ours = driver.pair(kind)
        if kind == "tcp":
            limit_tcp_buffers(peer, ours)
        listeners.append(driver.channel(BroadcastListener, ours))
        peers.append(peer)
    sender.listeners = listeners
    driver.quiet()
    assert not any(c.writes for c in listeners)
    peer_a.sendall(b"hello\n")
    driver.within(1, lambda: all(pending_output(c) for c in listeners), "broadcast queued")
    # The peers have read nothing: the push could only be sent in part.
    assert all(len(c.producer_fifo) == 1 for c in listeners)
    expected = {peer: broadcast_payload(b"hello", i) for i, peer in enumerate(peers)}
    pump_until_delivered(driver, expected)
    writes = [c.writes for c in listeners]
    driver.quiet()
    assert [c.writes for c in listeners] == writes
    assert not any(c.errors for c in listeners + [sender])


@pytest.mark.parametrize("cls", BUFFERED, ids=BUFFERED_IDS)
@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_output_larger_than_socket_buffer(driver, cls, kind):
    if kind == "unix" and not hasattr(socket, "AF_UNIX"):
        pytest.skip("no AF_UNIX")
    peer, ours = driver.pair(kind)
    if kind == "tcp":
        limit_tcp_buffers(peer, ours)
    chan = driver.channel(cls, ours)
    settled(driver, chan)
    payload = bytes(range(251)) * (4 << 12)  # about 4 MB
    if cls is ChatChannel:
        chan.push(payload)
    else:
        chan.send(payload)
    assert pending_output(chan)
    # The peer reads nothing for a while: the socket buffer fills up.
    driver.quiet()
    assert pending_output(chan)
    pump_until_delivered(driver, {peer: payload})
    settled(driver, chan)


# --------------------------------------------------------------------------
# The map edited by hand
# --------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["dispatcher", "plain-object"])
def test_channel_inserted_into_the_map_directly(driver, what):
    peer_other, ours_other = driver.pair()
    other = driver.channel(SendChannel, ours_other)
    settled(driver, other)
    peer, ours = driver.pair()
    if what == "dispatcher":
        chan = SendChannel(ours, map={})
        driver.channels.append(chan)
    else:
        chan = Duck(ours)
        ours.setblocking(False)
    driver.map[ours.fileno()] = chan
    peer.sendall(b"inserted")
    driver.within(1, lambda: chan.received == b"inserted", "inserted channel read")
    del driver.map[ours.fileno()]


def test_map_entry_deleted_directly_gets_no_events(driver):
    peer_a, ours_a = driver.pair()
    peer_b, ours_b = driver.pair()
    a = driver.channel(SendChannel, ours_a)
    b = driver.channel(SendChannel, ours_b)
    settled(driver, a)
    fd = ours_a.fileno()
    del driver.map[fd]
    peer_a.sendall(b"nobody listens")
    driver.quiet()
    assert a.reads == 0
    # Still served: the loop must not have lost the other channel.
    peer_b.sendall(b"b")
    driver.within(1, lambda: b.received == b"b", "remaining channel read")
    driver.map[fd] = a
    driver.within(1, lambda: a.received == b"nobody listens", "re-inserted channel read")


def test_map_cleared_directly(driver):
    peer_a, ours_a = driver.pair()
    peer_b, ours_b = driver.pair()
    a = driver.channel(SendChannel, ours_a)
    b = driver.channel(SendChannel, ours_b)
    settled(driver, a)
    driver.map.clear()
    peer_a.sendall(b"a")
    peer_b.sendall(b"b")
    driver.quiet()
    assert a.reads == b.reads == 0
    driver.map[ours_b.fileno()] = b
    driver.within(1, lambda: b.received == b"b", "re-inserted channel read")
    driver.quiet()
    assert a.reads == 0
    b.out_buffer = b"out"
    driver.within(1, lambda: not b.out_buffer, "re-inserted channel wrote")
    assert recv_exactly(peer_b, 3) == b"out"


def test_map_entry_replaced_by_another_object(driver):
    peer, ours = driver.pair()
    old = driver.channel(SendChannel, ours)
    settled(driver, old)
    # The same descriptor, a new owner that wants to write: the interest
    # must come from the new object, not from what was known of the old one.
    new = Duck(ours, want_write=True)
    driver.map[ours.fileno()] = new
    driver.within(1, lambda: new.writes >= 1, "write event for the new object")
    peer.sendall(b"for the new one")
    driver.within(1, lambda: new.received == b"for the new one", "new object read")
    assert old.reads == old.writes == 0
    del driver.map[ours.fileno()]


def test_channel_moved_to_another_socket(driver):
    peer_old, ours_old = driver.pair()
    peer_new, ours_new = driver.pair()
    chan = driver.channel(SendChannel, ours_old)
    settled(driver, chan)
    chan.del_channel()
    chan.set_socket(ours_new, driver.map_arg)
    ours_new.setblocking(False)
    peer_old.sendall(b"old")
    peer_new.sendall(b"new")
    driver.within(1, lambda: chan.received == b"new", "read from the new socket")
    driver.quiet()
    assert chan.received == b"new"
    chan.out_buffer = b"out"
    driver.within(1, lambda: not chan.out_buffer, "wrote to the new socket")
    assert recv_exactly(peer_new, 3) == b"out"


def socket_at(fd, source):
    """Move ``source`` onto the (free) descriptor number ``fd``."""
    os.dup2(source.fileno(), fd, inheritable=False)
    source.close()
    return socket.socket(fileno=fd)


def test_descriptor_number_reused_by_a_new_channel(driver):
    peer_old, ours_old = driver.pair()
    old = driver.channel(SendChannel, ours_old)
    settled(driver, old)
    fd = ours_old.fileno()
    peer_new, ours_new = driver.pair()
    old.close()
    reused = socket_at(fd, ours_new)
    driver.sockets.append(reused)
    new = driver.channel(SendChannel, reused)
    peer_new.sendall(b"same number")
    driver.within(1, lambda: new.received == b"same number", "new channel on a reused fd read")
    new.out_buffer = b"reply"
    driver.within(1, lambda: not new.out_buffer, "new channel on a reused fd wrote")
    assert recv_exactly(peer_new, 5) == b"reply"
    assert not new.errors


@pytest.mark.skipif(not hasattr(asyncore, "file_dispatcher"), reason="POSIX only")
def test_closed_duplicate_descriptor_leaves_no_trace(driver):
    # file_dispatcher works on a dup of the descriptor it is given.  Closing
    # it closes the dup only; the pipe stays open through the original.
    # Readiness of that old pipe must never reach whoever takes the number next.
    r, w = os.pipe()
    driver.fds += [r, w]
    reader = asyncore.file_dispatcher(r, map=driver.map_arg)
    driver.channels.append(reader)
    driver.quiet()
    fd = reader.socket.fd
    peer, ours = driver.pair()
    reader.close()
    reused = socket_at(fd, ours)
    driver.sockets.append(reused)
    chan = driver.channel(SendChannel, reused)
    os.write(w, b"old pipe")
    driver.quiet()
    assert chan.reads == 0 and not chan.errors, "event of a closed descriptor reached its successor"
    peer.sendall(b"mine")
    driver.within(1, lambda: chan.received == b"mine", "successor read its own input")


def test_fresh_dict_each_pass(use_poll):
    peer_a, ours_a = connected_pair()
    peer_b, ours_b = connected_pair()
    holding = {}
    try:
        a = SendChannel(ours_a, map=holding)
        b = SendChannel(ours_b, map=holding)
        only_a = {ours_a.fileno(): a}
        only_b = {ours_b.fileno(): b}

        def run(entries):
            # A new dict object every call, as some programs build one per pass.
            asyncore.loop(timeout=PASS_TIMEOUT, use_poll=use_poll, map=dict(entries), count=1)

        peer_a.sendall(b"a1")
        peer_b.sendall(b"b1")
        run(only_a)
        assert (a.received, b.received) == (b"a1", b"")
        run(only_b)
        assert (a.received, b.received) == (b"a1", b"b1")
        a.out_buffer = b"x"
        for _ in range(QUIET_PASSES):
            run(only_b)
        assert a.out_buffer == b"x"
        run(only_a)
        assert a.out_buffer == b""
        assert recv_exactly(peer_a, 1) == b"x"
        peer_a.sendall(b"a2")
        peer_b.sendall(b"b2")
        run({**only_a, **only_b})
        assert (a.received, b.received) == (b"a1a2", b"b1b2")
    finally:
        asyncore.close_all(map=holding, ignore_all=True)
        for s in (peer_a, ours_a, peer_b, ours_b):
            s.close()


# --------------------------------------------------------------------------
# readable() / writable() overridden, on the class or the instance
# --------------------------------------------------------------------------


class Gated(SendChannel):
    """Readable and writable only when told; counts how often it is asked."""

    def __init__(self, sock=None, map=None):
        super().__init__(sock, map)
        self.open_for_reading = False
        self.open_for_writing = False
        self.readable_calls = 0
        self.writable_calls = 0

    def readable(self):
        self.readable_calls += 1
        return self.open_for_reading

    def writable(self):
        self.writable_calls += 1
        return self.open_for_writing


class Opener(SendChannel):
    """Opens the gate of another channel when it reads 'r' or 'w'."""

    gate = None

    def handle_read(self):
        data = self.recv(65536)
        if b"r" in data:
            self.gate.open_for_reading = True
        if b"w" in data:
            self.gate.open_for_writing = True


def test_state_dependent_predicates_are_asked_every_pass(driver):
    peer_g, ours_g = driver.pair()
    peer_o, ours_o = driver.pair()
    gated = driver.channel(Gated, ours_g)
    opener = driver.channel(Opener, ours_o)
    opener.gate = gated
    peer_g.sendall(b"waiting")
    for _ in range(QUIET_PASSES):
        asked = gated.readable_calls, gated.writable_calls
        driver.run_pass()
        assert (gated.readable_calls - asked[0], gated.writable_calls - asked[1]) == (1, 1)
    assert gated.reads == 0 and gated.writes == 0, "a channel that said no got events"
    peer_o.sendall(b"r")
    driver.within(2, lambda: gated.received == b"waiting", "read after readable() turned true")
    assert gated.writes == 0
    peer_o.sendall(b"w")
    driver.within(2, lambda: gated.writes >= 1, "write event after writable() turned true")
    gated.open_for_reading = gated.open_for_writing = False
    peer_g.sendall(b"more")
    reads, writes = gated.reads, gated.writes
    driver.quiet()
    assert (gated.reads, gated.writes) == (reads, writes)


def test_readable_false_holds_back_pending_input(driver):
    peer, ours = driver.pair()
    chan = driver.channel(Gated, ours)
    peer.sendall(b"pending")
    driver.quiet()
    assert chan.reads == 0
    chan.open_for_reading = True
    driver.within(1, lambda: chan.received == b"pending", "pending input read")


def test_instance_attribute_overrides(driver):
    peer, ours = driver.pair()
    chan = driver.channel(SendChannel, ours)
    settled(driver, chan)
    chan.writable = lambda: True
    driver.within(1, lambda: chan.writes >= 1, "write event after instance writable override")
    del chan.writable
    settled(driver, chan)
    chan.readable = lambda: False
    peer.sendall(b"held")
    driver.quiet()
    assert chan.reads == 0
    del chan.readable
    driver.within(1, lambda: chan.received == b"held", "read after instance override removed")


def test_class_attribute_patched_after_creation(driver):
    class Patched(SendChannel):
        pass

    peer, ours = driver.pair()
    chan = driver.channel(Patched, ours)
    settled(driver, chan)
    Patched.writable = lambda self: True
    driver.within(1, lambda: chan.writes >= 1, "write event after class writable patch")
    del Patched.writable
    settled(driver, chan)
    Patched.readable = lambda self: False
    peer.sendall(b"held")
    driver.quiet()
    assert chan.reads == 0
    del Patched.readable
    driver.within(1, lambda: chan.received == b"held", "read after class patch removed")


@pytest.mark.parametrize("cls", BUFFERED, ids=BUFFERED_IDS)
def test_base_class_predicate_patched(driver, cls, monkeypatch):
    # mock.patch.object(asyncore.dispatcher_with_send, "writable", ...) in a
    # program's tests reaches every existing channel of every subclass.
    base = asynchat.async_chat if cls is ChatChannel else asyncore.dispatcher_with_send
    peer, ours = driver.pair()
    chan = driver.channel(cls, ours)
    settled(driver, chan)
    monkeypatch.setattr(base, "writable", lambda self: True)
    driver.within(1, lambda: chan.writes >= 1, "write event after base writable patch")
    monkeypatch.setattr(base, "readable", lambda self: False)
    monkeypatch.setattr(base, "writable", lambda self: False)
    peer.sendall(b"held")
    writes = chan.writes
    driver.quiet()
    assert chan.reads == 0 and chan.writes == writes
    monkeypatch.undo()
    driver.within(1, lambda: chan.received == b"held", "read after base patch undone")


def test_class_swapped_on_the_instance(driver):
    class AlwaysWritable(SendChannel):
        def writable(self):
            return True

    peer, ours = driver.pair()
    chan = driver.channel(SendChannel, ours)
    settled(driver, chan)
    chan.__class__ = AlwaysWritable
    driver.within(1, lambda: chan.writes >= 1, "write event after __class__ swap")
    chan.__class__ = SendChannel
    settled(driver, chan)


@pytest.mark.skipif(not HAS_POLL, reason="no select.poll")
def test_loop_mode_switched_between_passes():
    # Both modes over one map, alternating: neither may keep stale interest
    # from the passes the other one ran.
    peer, ours = connected_pair()
    chan_map = {}
    try:
        chan = SendChannel(ours, map=chan_map)
        modes = iter([False, True] * 8)

        def run_pass():
            asyncore.loop(timeout=PASS_TIMEOUT, use_poll=next(modes), map=chan_map, count=1)

        for _ in range(QUIET_PASSES):
            run_pass()
        chan.out_buffer = b"first"
        run_pass()
        assert chan.out_buffer == b"" and chan.writes == 1
        run_pass()
        chan.out_buffer = b"second"
        run_pass()
        assert chan.out_buffer == b"" and chan.writes == 2
        assert recv_exactly(peer, 11) == b"firstsecond"
        peer.sendall(b"in")
        run_pass()
        assert chan.received == b"in"
        for _ in range(QUIET_PASSES):
            run_pass()
        assert chan.writes == 2 and chan.reads == 1
    finally:
        asyncore.close_all(map=chan_map, ignore_all=True)
        peer.close()
        ours.close()
