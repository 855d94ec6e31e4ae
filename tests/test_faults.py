"""Faults at the socket and handler level, in both loop modes.

Each test records the callbacks a channel receives as a list and compares it
with the sequence CPython 3.11 produces (the suite runs on the 3.11 oracle
too).  The sequences are not always pretty: in poll mode 3.11 keeps
dispatching the remaining flags to a channel that closed itself earlier in
the same ``readwrite()`` call, and programs are written against that.

Resets, refusals and pipe ends are provoked synchronously on loopback before
the loop runs, so the kernel state each pass sees is fixed.
"""

import errno
import os
import select
import signal
import socket
import struct
import sys
import threading

import pytest

import asynchat
import asyncore
from support import (
    DEADLINE,
    HAS_POLL,
    HOST4,
    PipeReader,
    PipeWriter,
    connected_pair,
    listening_socket,
    loop_until,
    private_map,
    recv_exactly,
    recv_until_closed,
)


class Boom(Exception):
    """The failure a test handler raises on purpose."""


def reset(sock):
    """Close ``sock`` so that the peer receives RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def run_passes(map, use_poll, passes, timeout=0.05):
    for _ in range(passes):
        if not map:
            return
        asyncore.loop(timeout, use_poll, map, 1)


class Recorder(asyncore.dispatcher):
    """A dispatcher that appends the name of every callback it gets to ``events``.

    ``handle_error`` records the exception being handled and closes the
    channel, so the event list ends where 3.11 would have closed it.
    """

    def __init__(self, sock=None, map=None, events=None):
        self.events = [] if events is None else events
        asyncore.dispatcher.__init__(self, sock, map)

    def handle_read(self):
        self.events.append("read")

    def handle_write(self):
        self.events.append("write")

    def handle_expt(self):
        self.events.append("expt")

    def handle_connect(self):
        self.events.append("connect")

    def handle_accepted(self, sock, addr):
        sock.close()
        self.events.append("accepted")

    def handle_close(self):
        self.events.append("close")
        self.close()

    def handle_error(self):
        exc = sys.exc_info()[1]
        self.events.append(("error", type(exc), getattr(exc, "errno", None)))
        self.close()

    def log_info(self, message, type="info"):
        self.events.append(("log", type))


# ---------------------------------------------------------------- peer resets


class ResetWhileSending(asyncore.dispatcher_with_send):
    def __init__(self, sock, map, events):
        self.events = events
        asyncore.dispatcher_with_send.__init__(self, sock, map)

    def handle_read(self):
        self.events.append("read")
        self.events.append(("recv", self.recv(4096)))

    def handle_write(self):
        self.events.append("write")
        asyncore.dispatcher_with_send.handle_write(self)

    def handle_close(self):
        self.events.append("close")
        self.close()

    def handle_error(self):
        self.events.append(("error", sys.exc_info()[0]))
        self.close()


# In poll mode the RST sets POLLIN|POLLOUT|POLLERR|POLLHUP at once: the read
# closes the channel, then 3.11 still delivers the write (whose send on the
# closed socket fails with EBADF, a "disconnected" errno, so handle_close
# again) and the hang-up (handle_close a third time).
RESET_WHILE_SENDING = {
    False: ["read", "close", ("recv", b"")],
    True: ["read", "close", ("recv", b""), "write", "close", "close"],
}


def test_peer_reset_while_sending(use_poll):
    events = []
    ours, peer = connected_pair()
    with private_map() as m:
        chan = ResetWhileSending(ours, m, events)
        # Far more than loopback buffers hold, so the send is still under way.
        chan.send(b"x" * (16 << 20))
        run_passes(m, use_poll, 3, timeout=0)
        assert peer.recv(65536)
        assert chan.out_buffer, "the whole payload went out; the test needs a send in progress"
        events.clear()
        reset(peer)
        run_passes(m, use_poll, 5)
        assert events == RESET_WHILE_SENDING[use_poll]
        assert not m


class ChatRecorder(asynchat.async_chat):
    def __init__(self, sock, map, events):
        self.events = events
        asynchat.async_chat.__init__(self, sock, map)

    def collect_incoming_data(self, data):
        self.events.append(("collect", data))

    def found_terminator(self):
        self.events.append("terminator")

    def handle_close(self):
        self.events.append("close")
        self.close()

    def handle_error(self):
        self.events.append(("error", sys.exc_info()[0]))
        self.close()


# Data that arrived before the RST is still delivered.  select() then sees the
# reset on the next pass (recv fails with ECONNRESET, a "disconnected" errno:
# handle_close); poll() reports POLLHUP in the same pass as the data.
RESET_WHILE_RECEIVING = {
    False: [("collect", b"abc"), ("collect", b"def"), "close"],
    True: [("collect", b"abc"), ("collect", b"def"), "close"],
}


def test_peer_reset_while_receiving(use_poll):
    events = []
    ours, peer = connected_pair()
    with private_map() as m:
        chan = ChatRecorder(ours, m, events)
        chan.set_terminator(b"\r\n")
        peer.sendall(b"abc")
        loop_until(lambda: events, map=m, use_poll=use_poll)
        peer.sendall(b"def")
        reset(peer)
        run_passes(m, use_poll, 5)
        assert events == RESET_WHILE_RECEIVING[use_poll]
        assert chan.ac_in_buffer == b""
        assert not m


# ----------------------------------------------------------------- half-close


class HalfCloseServer(asyncore.dispatcher):
    """Reads a request until the peer's EOF, then answers and shuts down its side."""

    def __init__(self, sock, map, events):
        self.events = events
        self.request = b""
        asyncore.dispatcher.__init__(self, sock, map)

    def writable(self):
        return False

    def handle_read(self):
        data = self.recv(4096)
        self.events.append(("data", data))
        self.request += data

    def handle_close(self):
        self.events.append("close")
        # The peer only shut down its sending side: it can still read our
        # answer, which fits in the socket buffer of an idle connection.
        self.socket.sendall(b"answer to " + self.request)
        self.socket.shutdown(socket.SHUT_WR)
        self.close()


def test_peer_half_close_then_we_answer_and_close(use_poll):
    events = []
    ours, peer = connected_pair()
    with peer, private_map() as m:
        HalfCloseServer(ours, m, events)
        peer.sendall(b"request")
        peer.shutdown(socket.SHUT_WR)
        loop_until(lambda: not m, map=m, use_poll=use_poll)
        assert events == [("data", b"request"), "close", ("data", b"")]
        assert recv_until_closed(peer) == b"answer to request"


class HalfCloseClient(asyncore.dispatcher):
    """Sends everything, shuts down its sending side, then reads until EOF."""

    def __init__(self, sock, map, events, payload):
        self.events = events
        self.pending = payload
        self.received = b""
        asyncore.dispatcher.__init__(self, sock, map)

    def writable(self):
        return bool(self.pending)

    def handle_write(self):
        sent = self.send(self.pending)
        self.pending = self.pending[sent:]
        if not self.pending:
            self.events.append("shutdown")
            self.socket.shutdown(socket.SHUT_WR)

    def handle_read(self):
        data = self.recv(4096)
        self.received += data
        if data:
            self.events.append("data")

    def handle_close(self):
        self.events.append("close")
        self.close()


def test_we_half_close_and_still_read_the_answer(use_poll):
    events = []
    ours, peer = connected_pair()
    with peer, private_map() as m:
        chan = HalfCloseClient(ours, m, events, b"question")
        loop_until(lambda: "shutdown" in events, map=m, use_poll=use_poll)
        assert recv_until_closed(peer) == b"question"
        peer.sendall(b"reply")
        peer.close()
        loop_until(lambda: not m, map=m, use_poll=use_poll)
        assert chan.received == b"reply"
        assert events[0] == "shutdown"
        assert events[-1] == "close"
        assert events.count("close") == 1


# -------------------------------------------------------------------- connect


def test_connect_refused(use_poll):
    # Bound but not listening: loopback answers the SYN with RST at once.
    with socket.socket() as closed_port, private_map() as m:
        closed_port.bind((HOST4, 0))
        chan = Recorder(map=m)
        # Let the default handle_error run: it logs (recorded by log_info)
        # and calls handle_close.
        chan.handle_error = lambda: (
            chan.events.append(("error", sys.exc_info()[0], sys.exc_info()[1].errno)),
            asyncore.dispatcher.handle_error(chan),
        )
        chan.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        chan.connect(closed_port.getsockname())
        assert chan.connecting and not chan.connected
        loop_until(lambda: not m, map=m, use_poll=use_poll)
        assert chan.events == [
            ("error", ConnectionRefusedError, errno.ECONNREFUSED),
            ("log", "error"),
            "close",
        ]
        assert not chan.connected and not chan.connecting


def test_connect_to_a_listener_that_does_not_answer_yet(use_poll):
    # A listener whose accept queue is full drops new SYNs; the client stays
    # in SYN_SENT, retransmitting, until there is room again.
    with listening_socket(backlog=0) as srv, private_map() as m:
        fillers = []
        try:
            # Fill the queue: connections that complete at once take the room.
            while True:
                f = socket.socket()
                fillers.append(f)
                f.setblocking(False)
                f.connect_ex(srv.getsockname())
                if f.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    raise AssertionError("filler connection failed")
                if not select.select([], [f], [], 0.5)[1]:
                    break
                assert len(fillers) < 64, "the listener never stopped accepting"
            chan = Recorder(map=m)
            chan.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            chan.connect(srv.getsockname())
            run_passes(m, use_poll, 5, timeout=0.01)
            assert chan.events == []
            assert chan.connecting and not chan.connected
            assert m == {chan._fileno: chan}
            # Room for everyone: the retransmitted SYN now gets its answer.
            srv.listen(128)
            loop_until(lambda: chan.events, map=m, use_poll=use_poll)
            assert chan.events[0] == "connect"
            assert chan.connected and not chan.connecting
            chan.close()
        finally:
            for f in fillers:
                f.close()


# ------------------------------------------------------- a handler that raises


def _raising(name):
    def handler(self, *args):
        for a in args:
            if isinstance(a, socket.socket):
                self.leftovers.append(a)
        self.events.append(name)
        raise Boom(name)

    return handler


class Echo(asyncore.dispatcher):
    """The bystander: echoes what it reads, to show the loop keeps serving it."""

    def __init__(self, sock, map):
        self.received = b""
        asyncore.dispatcher.__init__(self, sock, map)

    def writable(self):
        return False

    def handle_read(self):
        data = self.recv(4096)
        self.received += data
        self.send(data)


def _scenario(name, m, events, stack):
    """Make a channel whose ``name`` handler raises Boom, and the event that triggers it."""
    body = {name: _raising(name), "leftovers": None}
    if name == "handle_close":
        # EOF only reaches handle_close through recv().
        body["handle_read"] = lambda self: self.recv(16)
    cls = type("Raising", (Recorder,), body)

    def track(s):
        stack.append(s)
        return s

    if name in ("handle_read", "handle_close", "handle_expt", "handle_write"):
        ours, peer = connected_pair()
        track(peer)
        chan = cls(ours, m, events)
        chan.writable = lambda: name == "handle_write"
        if name == "handle_read":
            peer.sendall(b"data")
        elif name == "handle_close":
            peer.close()
        elif name == "handle_expt":
            peer.send(b"!", socket.MSG_OOB)
        return chan
    if name == "handle_connect":
        srv = track(listening_socket())
        chan = cls(map=m, events=events)
        chan.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        chan.connect(srv.getsockname())
        return chan
    if name in ("handle_accept", "handle_accepted"):
        chan = cls(map=m, events=events)
        chan.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        chan.bind((HOST4, 0))
        chan.listen(5)
        track(socket.create_connection(chan.socket.getsockname(), timeout=DEADLINE))
        return chan
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    [
        "handle_read",
        "handle_write",
        "handle_expt",
        "handle_connect",
        "handle_accept",
        "handle_accepted",
        "handle_close",
    ],
)
def test_raising_handler_goes_to_handle_error_and_loop_serves_others(name, use_poll):
    events = []
    peers = []
    with private_map() as m:
        try:
            chan = _scenario(name, m, events, peers)
            chan.leftovers = peers
            echo_ours, echo_peer = connected_pair()
            peers.append(echo_peer)
            echo = Echo(echo_ours, m)
            echo_peer.sendall(b"ping")
            loop_until(lambda: events and echo.received, map=m, use_poll=use_poll)
            loop_until(lambda: chan._fileno is None, map=m, use_poll=use_poll)
            assert events == [name, ("error", Boom, None)]
            assert chan not in m.values()
            assert recv_exactly(echo_peer, 4) == b"ping"
            # Still served on later passes.
            echo_peer.sendall(b"pong")
            loop_until(lambda: echo.received == b"pingpong", map=m, use_poll=use_poll)
            assert recv_exactly(echo_peer, 4) == b"pong"
        finally:
            for s in peers:
                s.close()


def test_default_handle_error_logs_and_closes(use_poll, capsys):
    ours, peer = connected_pair()
    with peer, private_map() as m:

        class Failing(asyncore.dispatcher):
            def writable(self):
                return False

            def handle_read(self):
                raise Boom("no good")

        chan = Failing(ours, m)
        peer.sendall(b"x")
        loop_until(lambda: not m, map=m, use_poll=use_poll)
        out = capsys.readouterr().out
        # The default handle_close logs at 'warning', ignored by default.
        assert out.startswith("error: uncaptured python exception, closing channel <")
        assert "Boom" in out and "no good" in out
        assert "[" in out and "|handle_read|" in out
        assert out.count("\n") == 1
        assert chan.socket.fileno() == -1


def test_raising_handle_close_inside_default_handle_error_escapes_loop(use_poll):
    # 3.11 calls handle_close from its default handle_error; when that raises
    # too, nothing catches it any more and loop() fails with it.
    ours, peer = connected_pair()
    with peer, private_map() as m:

        class Stubborn(asyncore.dispatcher):
            closes = 0

            def writable(self):
                return False

            def handle_read(self):
                raise Boom("read")

            def handle_close(self):
                self.closes += 1
                raise Boom("close")

            def log_info(self, message, type="info"):
                pass

        chan = Stubborn(ours, m)
        peer.sendall(b"x")
        with pytest.raises(Boom, match="close") as info:
            loop_until(lambda: False, map=m, use_poll=use_poll)
        assert isinstance(info.value.__context__, Boom)
        assert str(info.value.__context__) == "read"
        assert chan.closes == 1
        assert list(m.values()) == [chan]
        chan.close()


# ------------------------------------------------ exceptions that leave loop()


class RaisesOnce(Recorder):
    """Raises ``exc`` from ``where`` the first time, then behaves."""

    def __init__(self, sock, map, events, exc, where):
        self.exc = exc
        self.where = where
        self.received = b""
        Recorder.__init__(self, sock, map, events)

    def writable(self):
        return self.where == "handle_write"

    def _maybe_raise(self, name):
        self.events.append(name)
        if name == self.where and self.exc is not None:
            exc, self.exc = self.exc, None
            raise exc("on purpose")

    def handle_read(self):
        self._maybe_raise("handle_read")
        self.received += self.recv(4096)

    def handle_write(self):
        self._maybe_raise("handle_write")


@pytest.mark.parametrize("exc", [asyncore.ExitNow, KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("where", ["handle_read", "handle_write"])
def test_reraised_exceptions_leave_loop_with_map_intact(exc, where, use_poll):
    events = []
    ours, peer = connected_pair()
    with peer, private_map() as m:
        chan = RaisesOnce(ours, m, events, exc, where)
        other_ours, other_peer = connected_pair()
        with other_peer:
            other = Echo(other_ours, m)
            peer.sendall(b"data")
            before = dict(m)
            with pytest.raises(exc, match="on purpose"):
                asyncore.loop(DEADLINE, use_poll, m)
            assert m == before
            # A channel that is both readable and writable is read first.
            assert events == (["handle_read", where] if where == "handle_write" else [where])
            assert chan.connected
            # The loop resumes where it stopped: the channel and its
            # neighbour are served normally.
            other_peer.sendall(b"hi")
            chan.writable = lambda: False
            loop_until(
                lambda: chan.received == b"data" and other.received == b"hi",
                map=m,
                use_poll=use_poll,
            )
            assert recv_exactly(other_peer, 2) == b"hi"
            assert ("error", exc, None) not in events


def test_reraised_exception_from_hangup_in_poll_mode():
    # readwrite() re-raises from handle_close (POLLHUP) just the same.
    if not HAS_POLL:
        pytest.skip("no poll()")
    r, w = os.pipe()
    os.close(w)
    with private_map() as m:

        class Quitter(asyncore.file_dispatcher):
            def writable(self):
                return False

            def handle_read(self):
                pass

            def handle_close(self):
                raise asyncore.ExitNow("hang-up")

        chan = Quitter(r, m)
        os.close(r)
        with pytest.raises(asyncore.ExitNow, match="hang-up"):
            asyncore.loop(DEADLINE, True, m, 1)
        assert list(m.values()) == [chan]
        chan.close()


# -------------------------------------------------------------------- signals


class SignalProbe:
    """Installs a SIGUSR1 handler and signals the main thread from a helper.

    The helper re-sends the signal until the handler acknowledges it: a
    signal that lands just before the loop enters its wait is handled
    without interrupting anything, and the next one then does.
    """

    def __init__(self, on_signal):
        self.on_signal = on_signal
        self.acknowledged = threading.Event()
        self.main_ident = threading.main_thread().ident

    def _handler(self, signum, frame):
        self.on_signal(self)

    def _signaller(self, after):
        while not self.acknowledged.wait(0.02):
            signal.pthread_kill(self.main_ident, signal.SIGUSR1)
            if self.stop.is_set():
                return
        if after is not None:
            after()

    def __enter__(self):
        assert threading.current_thread() is threading.main_thread()
        self.previous = signal.signal(signal.SIGUSR1, self._handler)
        self.stop = threading.Event()
        return self

    def start(self, after=None):
        self.thread = threading.Thread(target=self._signaller, args=(after,), daemon=True)
        self.thread.start()

    def __exit__(self, *exc):
        self.stop.set()
        self.acknowledged.set()
        self.thread.join(DEADLINE)
        signal.signal(signal.SIGUSR1, self.previous)


def test_signal_handler_runs_while_loop_waits(use_poll):
    ours, peer = connected_pair()
    with peer, private_map() as m:
        events = []
        chan = Recorder(ours, m, events)
        chan.writable = lambda: False
        chan.handle_read = lambda: events.append(("read", chan.recv(16)))
        handled = []

        def on_signal(probe):
            handled.append(probe.acknowledged.is_set())
            probe.acknowledged.set()

        def wake():
            # Only sent once the handler has run, so the pass can only see
            # this byte if the handler ran while the loop was waiting.
            peer.sendall(b"!")

        with SignalProbe(on_signal) as probe:
            probe.start(after=wake)
            asyncore.loop(DEADLINE, use_poll, m, 1)
        assert handled and handled[0] is False
        assert events == [("read", b"!")]


class FromSignal(Exception):
    pass


def test_exception_in_signal_handler_leaves_loop(use_poll):
    ours, peer = connected_pair()
    with peer, private_map() as m:
        waiting = []

        class Idle(Recorder):
            def readable(self):
                # Called by loop() itself: from here on we are inside it.
                waiting.append(True)
                return True

            def writable(self):
                return False

        chan = Idle(ours, m)

        def on_signal(probe):
            if waiting:
                probe.acknowledged.set()
                raise FromSignal("from the handler")

        with SignalProbe(on_signal) as probe:
            probe.start()
            with pytest.raises(FromSignal, match="from the handler"):
                asyncore.loop(DEADLINE, use_poll, m)
        assert list(m.values()) == [chan]
        assert chan.events == []
        # And the loop runs again afterwards.
        peer.sendall(b"x")
        loop_until(lambda: chan.events, map=m, use_poll=use_poll)
        assert chan.events == ["read"]


# ------------------------------------------- channels closing channels mid-pass


def _ready_pair(m, events, tag):
    ours, peer = connected_pair()
    chan = Recorder(ours, m, events)
    chan.tag = tag
    chan.writable = lambda: False
    peer.sendall(b"ready")
    return chan, peer


def test_handler_closes_another_ready_channel(use_poll):
    events = []
    with private_map() as m:
        a, pa = _ready_pair(m, events, "a")
        b, pb = _ready_pair(m, events, "b")
        with pa, pb:
            a.handle_read = lambda: (events.append("a read"), b.close())
            b.handle_read = lambda: events.append("b read")
            asyncore.loop(0, use_poll, m, 1)
            assert events == ["a read"]
            assert list(m.values()) == [a]
            a.close()


def test_handler_closes_itself(use_poll):
    events = []
    with private_map() as m:
        a, pa = _ready_pair(m, events, "a")
        with pa:
            a.writable = lambda: True
            a.handle_read = lambda: (events.append("read"), a.close())
            asyncore.loop(0, use_poll, m, 1)
            # poll mode: readwrite() goes on with POLLOUT for the closed
            # channel; select mode finds it gone from the map.
            assert events == (["read", "write"] if use_poll else ["read"])
            assert not m


def test_handler_closes_every_channel(use_poll):
    events = []
    with private_map() as m:
        a, pa = _ready_pair(m, events, "a")
        b, pb = _ready_pair(m, events, "b")
        with pa, pb:
            a.handle_read = lambda: (events.append("a read"), asyncore.close_all(m))
            b.handle_read = lambda: events.append("b read")
            asyncore.loop(DEADLINE, use_poll, m)  # returns: the map is empty
            assert events == ["a read"]
            assert not m


def test_descriptor_closed_and_reused_within_one_pass(use_poll):
    # A closes B and opens a new channel C that gets B's descriptor number.
    # The pass goes on with B's readiness and dispatches it by number, to C.
    events = []
    extra = []
    with private_map() as m:
        a, pa = _ready_pair(m, events, "a")
        b, pb = _ready_pair(m, events, "b")
        with pa, pb:
            b.handle_read = lambda: events.append("b read")
            b_fd = b._fileno

            def replace_b():
                events.append("a read")
                b.close()
                one, two = socket.socketpair()
                if two.fileno() == b_fd:
                    one, two = two, one
                extra.append(two)
                if one.fileno() != b_fd:
                    # A lower descriptor was free: move ours onto B's number.
                    moved = os.dup2(one.fileno(), b_fd)
                    one.close()
                    one = socket.socket(fileno=moved)
                c = Recorder(one, m, events)
                c.writable = lambda: False
                c.handle_read = lambda: events.append(("c read", _recv_or_error(c)))
                extra.append(c)

            a.handle_read = replace_b
            asyncore.loop(0, use_poll, m, 1)
            c = extra[1]
            assert c._fileno == b_fd
            # C is not readable at all: 3.11's dispatch by number hands it
            # B's event and its recv() finds nothing.
            assert events == ["a read", ("c read", "BlockingIOError")]
            assert list(m.values()) == [a, c]
            a.close()
            c.close()
            extra[0].close()


def _recv_or_error(chan):
    try:
        return chan.recv(16)
    except OSError as exc:
        return type(exc).__name__


def test_channel_added_during_a_pass_waits_for_the_next(use_poll):
    events = []
    with private_map() as m:
        a, pa = _ready_pair(m, events, "a")
        late = []
        with pa:

            def add_one():
                events.append("a read")
                a.recv(16)
                if not late:
                    c, pc = _ready_pair(m, events, "c")
                    c.handle_read = lambda: (events.append("c read"), c.recv(16))
                    late.extend([c, pc])

            a.handle_read = add_one
            asyncore.loop(0, use_poll, m, 1)
            assert events == ["a read"]
            asyncore.loop(0, use_poll, m, 1)
            assert events == ["a read", "c read"]
            late[0].close()
            late[1].close()
            a.close()


# ---------------------------------------------------------------------- pipes


# The writer closed: select() reports the data, then EOF on the next pass
# (recv returns b'' after calling handle_close).  poll() reports POLLIN|POLLHUP
# while data remains, so the hang-up closes the channel right after the data.
PIPE_EOF = {
    False: [("read", b"last words"), "close", ("read", b"")],
    True: [("read", b"last words"), "close"],
}


def test_file_dispatcher_reads_pipe_to_eof(use_poll):
    events = []
    r, w = os.pipe()
    with private_map() as m:
        chan = PipeReader(r, m, events)
        os.close(r)  # file_dispatcher works on its own duplicate
        os.write(w, b"last words")
        os.close(w)
        loop_until(lambda: not m, map=m, use_poll=use_poll)
        assert events == PIPE_EOF[use_poll]
        assert chan.socket.fd == -1


# Writing to a pipe nobody reads fails with EPIPE, which send() turns into
# handle_close; poll() adds POLLERR, so 3.11 calls handle_close once more.
PIPE_BROKEN = {
    False: ["close", ("write", 0)],
    True: ["close", ("write", 0), "close"],
}


def test_file_dispatcher_writing_to_a_pipe_without_reader(use_poll):
    events = []
    r, w = os.pipe()
    os.close(r)
    with private_map() as m:
        chan = PipeWriter(w, m, events, pending=b"hello")
        os.close(w)
        loop_until(lambda: not m, map=m, use_poll=use_poll)
        assert events == PIPE_BROKEN[use_poll]
        assert chan.socket.fd == -1
