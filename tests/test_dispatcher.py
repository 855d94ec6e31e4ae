"""asyncore.dispatcher and dispatcher_with_send: every method, attribute and log line.

Unit tests drive a dispatcher whose socket is a ``FakeSocket`` (to inject
errnos deterministically); the connection tests use real loopback sockets
and are written once as mixins, bound to each address family and to both
polling functions.  Callback order is recorded as a list of event names and
compared as data.
"""

import errno
import os
import re
import select
import socket
import sys

import pytest

import asyncore
from support import (
    DEADLINE,
    HAS_IPV6,
    HAS_UNIX,
    HOST4,
    HOST6,
    connected_pair,
    listening_socket,
    loop_until,
    private_map,
    recv_exactly,
)

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class FakeSocket:
    """A stand-in socket: each method returns or raises what the test configured.

    ``fileno()`` returns a non-integer by default, as mock sockets in real
    test suites do; the dispatcher must use it as the map key all the same.
    """

    def __init__(self, key="fake-fd", so_error=0, **behaviour):
        self.key = key
        self.so_error = so_error
        self.behaviour = behaviour
        self.calls = []
        self.closed = False

    def _act(self, name, *args, default=None):
        self.calls.append((name, *args))
        outcome = self.behaviour.get(name, default)
        if isinstance(outcome, BaseException):
            raise outcome
        if callable(outcome):
            return outcome(*args)
        return outcome

    def fileno(self):
        return self.key

    def setblocking(self, flag):
        return self._act("setblocking", flag)

    def getpeername(self):
        return self._act("getpeername", default=("10.0.0.1", 4242))

    def connect_ex(self, address):
        return self._act("connect_ex", address, default=errno.EINPROGRESS)

    def accept(self):
        return self._act("accept")

    def send(self, data):
        return self._act("send", bytes(data), default=len(data))

    def recv(self, size):
        return self._act("recv", size, default=b"data")

    def listen(self, num):
        return self._act("listen", num)

    def bind(self, addr):
        return self._act("bind", addr)

    def getsockopt(self, level, optname, *rest):
        self.calls.append(("getsockopt", level, optname, *rest))
        if (level, optname) == (socket.SOL_SOCKET, socket.SO_ERROR):
            return self.so_error
        return self._act("getsockopt_other", default=0)

    def setsockopt(self, level, optname, value):
        return self._act("setsockopt", level, optname, value)

    def close(self):
        self.closed = True
        return self._act("close")


class Recorder(asyncore.dispatcher):
    """A dispatcher whose handlers record their calls in ``self.events``.

    Handlers named in ``passthrough`` also run the default implementation
    after recording (so handle_error still logs and closes, for example).
    """

    passthrough = ()

    def __init__(self, sock=None, map=None):
        self.events = []
        super().__init__(sock, map)

    def _record(self, name, *extra):
        self.events.append((name, *extra) if extra else name)
        if name in self.passthrough:
            return getattr(super(), name)
        return None

    def handle_read(self):
        self._record("handle_read")

    def handle_write(self):
        self._record("handle_write")

    def handle_expt(self):
        self._record("handle_expt")

    def handle_connect(self):
        # Record the state the connect callback sees: 3.11 flips the flags afterwards.
        self._record("handle_connect")
        self.state_in_connect = (self.connected, self.connecting)

    def handle_accept(self):
        self._record("handle_accept")

    def handle_accepted(self, sock, addr):
        self.events.append(("handle_accepted", addr))
        self.accepted = sock

    def handle_close(self):
        default = self._record("handle_close")
        if default:
            default()

    def handle_error(self):
        exc = sys.exc_info()[1]
        default = self._record("handle_error", type(exc))
        if default:
            default()


def fake_dispatcher(cls=Recorder, **state):
    """A dispatcher on a FakeSocket, outside any map, with the given flags set."""
    d = cls(map={})
    d.socket = FakeSocket(so_error=state.pop("so_error", 0))
    for name, value in state.items():
        setattr(d, name, value)
    return d


def hex_id(obj):
    return "%#x" % id(obj)


def wait_readable(sock):
    r, _, _ = select.select([sock], [], [], DEADLINE)
    assert r, "socket did not become readable"


def reset_by_peer(peer):
    """Close ``peer`` so that it sends RST instead of FIN."""
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.close()


# --------------------------------------------------------------------------
# class attributes and construction
# --------------------------------------------------------------------------


def test_class_attribute_defaults():
    d = asyncore.dispatcher
    assert d.debug is False
    assert d.connected is False
    assert d.accepting is False
    assert d.connecting is False
    assert d.closing is False
    assert d.addr is None
    assert d.ignore_log_types == frozenset({"warning"})
    assert type(d.ignore_log_types) is frozenset


def test_socket_attributes_are_not_delegated():
    # Old asyncore forwarded unknown attributes to the socket; 3.11 does not.
    client, server = connected_pair()
    with client:
        d = asyncore.dispatcher(server)
        try:
            for name in ("fileno", "getsockname", "setsockopt", "family"):
                assert not hasattr(d, name)
        finally:
            d.close()


def test_new_dispatcher_without_socket():
    d = asyncore.dispatcher()
    assert d.socket is None
    assert d._fileno is None
    assert d._map is asyncore.socket_map
    assert asyncore.socket_map == {}
    assert (d.connected, d.accepting, d.connecting, d.closing, d.addr) == (
        False,
        False,
        False,
        False,
        None,
    )


def test_dispatcher_with_private_map():
    m = {}
    d = asyncore.dispatcher(map=m)
    assert d._map is m


def test_socket_map_is_looked_up_at_construction(monkeypatch):
    replacement = {}
    monkeypatch.setattr(asyncore, "socket_map", replacement)
    d = asyncore.dispatcher()
    assert d._map is replacement
    d.create_socket()
    try:
        assert replacement == {d.socket.fileno(): d}
    finally:
        d.close()
    assert replacement == {}


def test_dispatcher_from_connected_socket():
    client, server = connected_pair()
    with client:
        assert server.getblocking()
        d = asyncore.dispatcher(server)
        try:
            assert d.socket is server
            assert server.gettimeout() == 0.0
            assert d.connected is True
            assert d.addr == server.getpeername() == client.getsockname()
            assert asyncore.socket_map == {server.fileno(): d}
            assert d._fileno == server.fileno()
        finally:
            d.close()
    assert asyncore.socket_map == {}


def test_dispatcher_from_unconnected_socket():
    sock = socket.socket()
    d = asyncore.dispatcher(sock)
    try:
        assert d.connected is False
        assert d.addr is None
        assert sock.gettimeout() == 0.0
        assert asyncore.socket_map == {sock.fileno(): d}
    finally:
        d.close()


def test_dispatcher_from_socket_with_private_map():
    with private_map() as m:
        client, server = connected_pair()
        with client:
            d = asyncore.dispatcher(server, map=m)
            assert m == {server.fileno(): d}
            assert asyncore.socket_map == {}
            assert d._map is m
            d.close()
            assert m == {}


@pytest.mark.parametrize("code", [errno.ENOTCONN, errno.EINVAL])
def test_dispatcher_from_socket_whose_getpeername_says_unconnected(code):
    sock = FakeSocket(getpeername=OSError(code, os.strerror(code)))
    m = {}
    d = asyncore.dispatcher(sock, map=m)
    assert d.connected is False
    assert d.addr is None
    assert m == {"fake-fd": d}
    assert ("setblocking", False) in sock.calls


def test_dispatcher_from_broken_socket_is_removed_and_raises():
    sock = FakeSocket(getpeername=OSError(errno.EPERM, "broken"))
    m = {}
    with pytest.raises(OSError) as info:
        asyncore.dispatcher(sock, map=m)
    assert info.value.errno == errno.EPERM
    assert m == {}


def test_dispatcher_from_broken_socket_uses_global_map_by_default(monkeypatch):
    replacement = {}
    monkeypatch.setattr(asyncore, "socket_map", replacement)
    with pytest.raises(OSError):
        asyncore.dispatcher(FakeSocket(getpeername=OSError(errno.EPERM, "broken")))
    assert replacement == {}


def test_dispatcher_from_fake_socket_records_peer():
    sock = FakeSocket()
    d = asyncore.dispatcher(sock, map={})
    assert d.connected is True
    assert d.addr == ("10.0.0.1", 4242)
    assert sock.calls[:2] == [("setblocking", False), ("getpeername",)]


# --------------------------------------------------------------------------
# channels and sockets
# --------------------------------------------------------------------------


def test_add_and_del_channel():
    m, other = {}, {}
    d = asyncore.dispatcher(map=m)
    d._fileno = 12345
    assert d.add_channel() is None
    assert m == {12345: d}
    d.add_channel(other)
    assert other == {12345: d}
    assert d.del_channel(other) is None
    assert other == {}
    assert d._fileno is None
    # The fd is forgotten, so the default map's entry is no longer found.
    d.del_channel()
    assert m == {12345: d}


def test_del_channel_default_map_and_absent_entry():
    m = {}
    d = asyncore.dispatcher(map=m)
    d._fileno = 777
    d.add_channel()
    d.del_channel()
    assert m == {}
    d.del_channel()
    assert m == {}


def test_create_socket_defaults():
    with private_map() as m:
        d = asyncore.dispatcher(map=m)
        assert d.create_socket() is None
        assert d.family_and_type == (socket.AF_INET, socket.SOCK_STREAM)
        assert d.socket.family == socket.AF_INET
        assert d.socket.type == socket.SOCK_STREAM
        assert d.socket.gettimeout() == 0.0
        assert m == {d.socket.fileno(): d}
        assert d._fileno == d.socket.fileno()


@pytest.mark.parametrize(
    "family,type_",
    [(socket.AF_INET, socket.SOCK_DGRAM)]
    + ([(socket.AF_INET6, socket.SOCK_STREAM)] if HAS_IPV6 else [])
    + ([(socket.AF_UNIX, socket.SOCK_STREAM)] if HAS_UNIX else []),
)
def test_create_socket_family_and_type(family, type_):
    with private_map() as m:
        d = asyncore.dispatcher(map=m)
        d.create_socket(family, type_)
        assert d.family_and_type == (family, type_)
        assert (d.socket.family, d.socket.type) == (family, type_)
        assert d.socket.gettimeout() == 0.0


def test_create_socket_uses_the_current_socket_module(monkeypatch):
    made = []

    class FakeSocketModule:
        @staticmethod
        def socket(*args, **kwargs):
            sock = FakeSocket(key="from-fake-module")
            made.append((args, kwargs, sock))
            return sock

    monkeypatch.setattr(asyncore, "socket", FakeSocketModule)
    m = {}
    d = asyncore.dispatcher(map=m)
    d.create_socket(socket.AF_INET6, socket.SOCK_DGRAM)
    assert len(made) == 1
    args, kwargs, sock = made[0]
    assert list(args) + list(kwargs.values()) == [socket.AF_INET6, socket.SOCK_DGRAM]
    assert d.socket is sock
    assert ("setblocking", False) in sock.calls
    assert m == {"from-fake-module": d}


def test_set_socket_with_non_integer_fileno():
    m = {}
    d = asyncore.dispatcher(map=m)
    sock = FakeSocket(key="mock-fd")
    assert d.set_socket(sock) is None
    assert d.socket is sock
    assert d._fileno == "mock-fd"
    assert m == {"mock-fd": d}
    d.del_channel()
    assert m == {}
    # close() of a dispatcher on a mock socket goes through the same path.
    d.set_socket(sock)
    d.close()
    assert m == {}
    assert sock.closed


def test_set_socket_into_explicit_map():
    m, other = {}, {}
    d = asyncore.dispatcher(map=m)
    d.set_socket(FakeSocket(key=("tuple", "key")), other)
    assert other == {("tuple", "key"): d}
    assert m == {}


def test_set_reuse_addr():
    with private_map() as m:
        d = asyncore.dispatcher(map=m)
        d.create_socket()
        assert d.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        assert d.set_reuse_addr() is None
        assert d.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0


def test_set_reuse_addr_swallows_oserror():
    d = fake_dispatcher(cls=asyncore.dispatcher)
    d.socket.behaviour["setsockopt"] = OSError(errno.ENOPROTOOPT, "nope")
    assert d.set_reuse_addr() is None
    assert ("setsockopt", socket.SOL_SOCKET, socket.SO_REUSEADDR, 1) in d.socket.calls


def test_set_reuse_addr_ors_in_the_current_value():
    d = fake_dispatcher(cls=asyncore.dispatcher)
    d.socket.behaviour["getsockopt_other"] = 4
    d.set_reuse_addr()
    assert ("setsockopt", socket.SOL_SOCKET, socket.SO_REUSEADDR, 5) in d.socket.calls


def test_readable_and_writable_default_true():
    d = asyncore.dispatcher()
    assert d.readable() is True
    assert d.writable() is True


def test_listen_and_bind():
    with private_map() as m:
        d = asyncore.dispatcher(map=m)
        d.create_socket()
        assert d.bind((HOST4, 0)) is None
        assert d.addr == (HOST4, 0)
        assert d.accepting is False
        assert d.listen(5) is None
        assert d.accepting is True
        port = d.socket.getsockname()[1]
        # The socket really listens: a blocking client gets in.
        with socket.create_connection((HOST4, port), timeout=DEADLINE):
            pass


def test_listen_passes_backlog():
    d = fake_dispatcher(cls=asyncore.dispatcher)
    d.listen(17)
    assert ("listen", 17) in d.socket.calls
    assert d.accepting is True


# --------------------------------------------------------------------------
# connect / accept / send / recv / close on fake sockets
# --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK])
def test_connect_in_progress(code):
    d = fake_dispatcher(connected=True)
    d.socket.behaviour["connect_ex"] = code
    assert d.connect(("10.0.0.2", 80)) is None
    assert (d.connected, d.connecting) == (False, True)
    assert d.addr == ("10.0.0.2", 80)
    assert d.events == []


@pytest.mark.parametrize("code", [0, errno.EISCONN])
def test_connect_immediate(code):
    d = fake_dispatcher()
    d.socket.behaviour["connect_ex"] = code
    d.connect(("10.0.0.2", 80))
    assert d.events == ["handle_connect"]
    assert d.state_in_connect == (False, True)
    assert (d.connected, d.connecting) == (True, False)
    assert d.addr == ("10.0.0.2", 80)


@pytest.mark.parametrize("code", [errno.ECONNREFUSED, errno.ENETUNREACH, errno.EINVAL])
def test_connect_failure_raises(code):
    d = fake_dispatcher()
    d.socket.behaviour["connect_ex"] = code
    with pytest.raises(OSError) as info:
        d.connect(("10.0.0.2", 80))
    # The message is the errno's symbolic name, not its description.
    assert info.value.args == (code, errno.errorcode[code])
    assert (d.connected, d.connecting) == (False, True)
    assert d.addr is None
    assert d.events == []


def test_accept_returns_pair():
    d = fake_dispatcher()
    d.socket.behaviour["accept"] = ("conn", ("10.0.0.3", 5))
    assert d.accept() == ("conn", ("10.0.0.3", 5))


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EWOULDBLOCK, "would block"),
        OSError(errno.EAGAIN, "again"),
        OSError(errno.ECONNABORTED, "aborted"),
        TypeError("accept returned None"),
    ],
    ids=["EWOULDBLOCK", "EAGAIN", "ECONNABORTED", "TypeError"],
)
def test_accept_returns_none(exc):
    d = fake_dispatcher()
    d.socket.behaviour["accept"] = exc
    assert d.accept() is None


@pytest.mark.parametrize("code", [errno.EMFILE, errno.EINVAL, errno.EBADF])
def test_accept_raises_other_errors(code):
    d = fake_dispatcher()
    d.socket.behaviour["accept"] = OSError(code, os.strerror(code))
    with pytest.raises(OSError) as info:
        d.accept()
    assert info.value.errno == code


def test_send_returns_count():
    d = fake_dispatcher()
    d.socket.behaviour["send"] = lambda data: 3
    assert d.send(b"abcdef") == 3
    assert d.socket.calls == [("send", b"abcdef")]


def test_send_would_block_returns_zero():
    d = fake_dispatcher()
    d.socket.behaviour["send"] = BlockingIOError(errno.EWOULDBLOCK, "would block")
    assert d.send(b"x") == 0
    assert d.events == []


@pytest.mark.parametrize("code", sorted(asyncore._DISCONNECTED), ids=errno.errorcode.get)
def test_send_disconnect_closes(code):
    d = fake_dispatcher()
    d.socket.behaviour["send"] = OSError(code, os.strerror(code))
    assert d.send(b"x") == 0
    assert d.events == ["handle_close"]


def test_send_other_error_raises():
    d = fake_dispatcher()
    d.socket.behaviour["send"] = OSError(errno.EMSGSIZE, "too big")
    with pytest.raises(OSError) as info:
        d.send(b"x")
    assert info.value.errno == errno.EMSGSIZE
    assert d.events == []


def test_recv_returns_data():
    d = fake_dispatcher()
    assert d.recv(100) == b"data"
    assert d.socket.calls == [("recv", 100)]
    assert d.events == []


def test_recv_eof_closes():
    d = fake_dispatcher()
    d.socket.behaviour["recv"] = b""
    assert d.recv(100) == b""
    assert d.events == ["handle_close"]


@pytest.mark.parametrize("code", sorted(asyncore._DISCONNECTED), ids=errno.errorcode.get)
def test_recv_disconnect_closes(code):
    d = fake_dispatcher()
    d.socket.behaviour["recv"] = OSError(code, os.strerror(code))
    assert d.recv(100) == b""
    assert d.events == ["handle_close"]


@pytest.mark.parametrize("code", [errno.EWOULDBLOCK, errno.EINVAL])
def test_recv_other_error_raises(code):
    # Unlike send(), recv() does not turn EWOULDBLOCK into an empty result.
    d = fake_dispatcher()
    d.socket.behaviour["recv"] = OSError(code, os.strerror(code))
    with pytest.raises(OSError) as info:
        d.recv(100)
    assert info.value.errno == code
    assert d.events == []


def test_close_resets_flags_and_removes_channel():
    m = {}
    d = asyncore.dispatcher(map=m)
    sock = FakeSocket()
    d.set_socket(sock)
    d.connected = d.accepting = d.connecting = True
    d.closing = True
    assert d.close() is None
    assert (d.connected, d.accepting, d.connecting) == (False, False, False)
    assert d.closing is True  # close() leaves this user flag alone
    assert m == {}
    assert sock.closed
    assert d.socket is sock


def test_close_without_socket():
    d = asyncore.dispatcher()
    d.close()
    assert d.socket is None


def test_close_twice_on_real_socket():
    with private_map() as m:
        d = asyncore.dispatcher(map=m)
        d.create_socket()
        d.close()
        d.close()
        assert m == {}
        assert d.socket.fileno() == -1


@pytest.mark.parametrize("code", [errno.ENOTCONN, errno.EBADF])
def test_close_ignores_some_errors(code):
    d = asyncore.dispatcher(map={})
    d.set_socket(FakeSocket(close=OSError(code, "x")))
    d.close()


def test_close_raises_other_errors_after_removing_channel():
    m = {}
    d = asyncore.dispatcher(map=m)
    d.set_socket(FakeSocket(close=OSError(errno.EIO, "io")))
    d.connected = True
    with pytest.raises(OSError):
        d.close()
    assert m == {}
    assert d.connected is False


# --------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------


def test_log_writes_to_stderr(capsys):
    d = asyncore.dispatcher()
    assert d.log("hello") is None
    d.log(42)
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "log: hello\nlog: 42\n"


def test_log_info(capsys):
    d = asyncore.dispatcher()
    assert d.log_info("plain") is None
    d.log_info("bad", "error")
    d.log_info("ignored", "warning")
    d.log_info(3.5, type="custom")
    out, err = capsys.readouterr()
    assert out == "info: plain\nerror: bad\ncustom: 3.5\n"
    assert err == ""


def test_log_info_respects_instance_ignore_types(capsys):
    d = asyncore.dispatcher()
    d.ignore_log_types = {"info", "error"}
    d.log_info("a")
    d.log_info("b", "error")
    d.log_info("c", "warning")
    assert capsys.readouterr().out == "warning: c\n"


def test_log_info_respects_subclass_ignore_types(capsys):
    class Quiet(asyncore.dispatcher):
        ignore_log_types = frozenset({"info"})

    Quiet().log_info("nothing")
    Quiet().log_info("shown", "warning")
    assert capsys.readouterr().out == "warning: shown\n"


# --------------------------------------------------------------------------
# the handle_*_event methods
# --------------------------------------------------------------------------

# (method, initial state, expected events, expected (connected, connecting) after)
EVENT_CASES = [
    ("handle_read_event", dict(accepting=True), ["handle_accept"], (False, False)),
    (
        "handle_read_event",
        dict(accepting=True, connected=True, connecting=True),
        ["handle_accept"],
        (True, True),
    ),
    ("handle_read_event", dict(connecting=True), ["handle_connect", "handle_read"], (True, False)),
    ("handle_read_event", dict(), ["handle_read"], (False, False)),
    ("handle_read_event", dict(connected=True), ["handle_read"], (True, False)),
    ("handle_read_event", dict(connected=True, connecting=True), ["handle_read"], (True, True)),
    ("handle_write_event", dict(accepting=True), [], (False, False)),
    ("handle_write_event", dict(accepting=True, connecting=True), [], (False, True)),
    (
        "handle_write_event",
        dict(connecting=True),
        ["handle_connect", "handle_write"],
        (True, False),
    ),
    ("handle_write_event", dict(), ["handle_write"], (False, False)),
    ("handle_write_event", dict(connected=True), ["handle_write"], (True, False)),
    ("handle_write_event", dict(connected=True, connecting=True), ["handle_write"], (True, True)),
    ("handle_expt_event", dict(), ["handle_expt"], (False, False)),
    ("handle_expt_event", dict(connected=True), ["handle_expt"], (True, False)),
    ("handle_expt_event", dict(so_error=errno.ECONNRESET), ["handle_close"], (False, False)),
    ("handle_connect_event", dict(connecting=True), ["handle_connect"], (True, False)),
    ("handle_connect_event", dict(), ["handle_connect"], (True, False)),
]


@pytest.mark.parametrize(
    "method,state,expected,after",
    EVENT_CASES,
    ids=[f"{c[0]}-{'-'.join(c[1]) or 'idle'}" for c in EVENT_CASES],
)
def test_event_dispatch(method, state, expected, after):
    d = fake_dispatcher(**state)
    assert getattr(d, method)() is None
    assert d.events == expected
    assert (d.connected, d.connecting) == after


def test_connect_callback_sees_the_state_before_connection():
    d = fake_dispatcher(connecting=True)
    d.handle_connect_event()
    assert d.state_in_connect == (False, True)
    assert ("getsockopt", socket.SOL_SOCKET, socket.SO_ERROR) in d.socket.calls


@pytest.mark.parametrize(
    "method", ["handle_connect_event", "handle_read_event", "handle_write_event"]
)
def test_connect_event_with_socket_error_raises(method):
    d = fake_dispatcher(connecting=True, so_error=errno.ECONNREFUSED)
    with pytest.raises(OSError) as info:
        getattr(d, method)()
    assert type(info.value) is ConnectionRefusedError
    assert info.value.args == (errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))
    assert d.events == []
    assert (d.connected, d.connecting) == (False, True)


def test_expt_event_with_socket_error_uses_default_close():
    m = {}
    d = asyncore.dispatcher(map=m)
    d.set_socket(FakeSocket(so_error=errno.EPIPE))
    d.handle_expt_event()
    assert m == {}
    assert d.socket.closed


def test_overridden_connect_event_is_used_by_read_event():
    class Custom(Recorder):
        def handle_connect_event(self):
            self.events.append("custom_connect_event")

    d = fake_dispatcher(cls=Custom, connecting=True)
    d.handle_read_event()
    d.handle_write_event()
    assert d.events == [
        "custom_connect_event",
        "handle_read",
        "custom_connect_event",
        "handle_write",
    ]


# --------------------------------------------------------------------------
# default handlers and their log lines
# --------------------------------------------------------------------------

DEFAULT_LINES = [
    ("handle_expt", "unhandled incoming priority event"),
    ("handle_read", "unhandled read event"),
    ("handle_write", "unhandled write event"),
    ("handle_connect", "unhandled connect event"),
]


@pytest.mark.parametrize("method,message", DEFAULT_LINES)
def test_default_handler_logs_a_warning(method, message, capsys):
    d = asyncore.dispatcher()
    d.ignore_log_types = frozenset()
    assert getattr(d, method)() is None
    assert capsys.readouterr().out == f"warning: {message}\n"


@pytest.mark.parametrize("method,message", DEFAULT_LINES)
def test_default_handler_is_quiet_by_default(method, message, capsys):
    getattr(asyncore.dispatcher(), method)()
    assert capsys.readouterr() == ("", "")


def test_default_handle_close_logs_and_closes(capsys):
    m = {}
    d = asyncore.dispatcher(map=m)
    d.set_socket(FakeSocket())
    d.connected = True
    d.ignore_log_types = frozenset()
    d.handle_close()
    assert capsys.readouterr().out == "warning: unhandled close event\n"
    assert m == {}
    assert d.connected is False
    assert d.socket.closed


def test_default_handle_accepted_closes_the_socket(capsys):
    d = asyncore.dispatcher()
    d.ignore_log_types = frozenset()
    sock = FakeSocket()
    d.handle_accepted(sock, ("10.0.0.4", 1))
    assert sock.closed
    assert capsys.readouterr().out == "warning: unhandled accepted event\n"


def test_default_handle_accept_hands_the_pair_on():
    class Acceptor(asyncore.dispatcher):
        def handle_accepted(self, sock, addr):
            self.got = (sock, addr)

    d = fake_dispatcher(cls=Acceptor)
    d.socket.behaviour["accept"] = ("conn", ("10.0.0.5", 6))
    d.handle_accept()
    assert d.got == ("conn", ("10.0.0.5", 6))


def test_default_handle_accept_with_nothing_pending():
    class Acceptor(asyncore.dispatcher):
        def handle_accepted(self, sock, addr):
            raise AssertionError("no connection was pending")

    d = fake_dispatcher(cls=Acceptor)
    d.socket.behaviour["accept"] = BlockingIOError(errno.EWOULDBLOCK, "none")
    d.handle_accept()


def test_default_handle_accept_uses_overridden_accept():
    class Acceptor(asyncore.dispatcher):
        def accept(self):
            return "sock", "addr"

        def handle_accepted(self, sock, addr):
            self.got = (sock, addr)

    d = Acceptor()
    d.handle_accept()
    assert d.got == ("sock", "addr")


# --------------------------------------------------------------------------
# handle_error
# --------------------------------------------------------------------------


def _fail():
    raise ValueError("boom")


def _tbinfo(exc):
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append("[%s|%s|%s]" % (code.co_filename, code.co_name, tb.tb_lineno))
        tb = tb.tb_next
    return " ".join(frames)


def test_handle_error_log_line_and_close(capsys):
    m = {}
    d = asyncore.dispatcher(map=m)
    d.set_socket(FakeSocket())
    d.ignore_log_types = frozenset()
    shown = repr(d)
    try:
        _fail()
    except ValueError as exc:
        assert d.handle_error() is None
        caught = exc
    out = capsys.readouterr().out
    assert out == (
        f"error: uncaptured python exception, closing channel {shown} "
        f"({ValueError}:boom {_tbinfo(caught)})\n"
        "warning: unhandled close event\n"
    )
    assert m == {}
    assert d.socket.closed


def test_handle_error_calls_handle_close(capsys):
    d = fake_dispatcher()
    d.passthrough = ("handle_error",)
    try:
        _fail()
    except ValueError:
        d.handle_error()
    assert d.events == [("handle_error", ValueError), "handle_close"]
    assert capsys.readouterr().out.startswith("error: uncaptured python exception")


def test_handle_error_with_failing_repr(capsys):
    class BadRepr(asyncore.dispatcher):
        def __repr__(self):
            raise RuntimeError("no repr")

    d = BadRepr()
    try:
        _fail()
    except ValueError as exc:
        d.handle_error()
        caught = exc
    out = capsys.readouterr().out
    assert out == (
        "error: uncaptured python exception, closing channel "
        f"<__repr__(self) failed for object at {id(d):x}> "
        f"({ValueError}:boom {_tbinfo(caught)})\n"
    )


def test_handle_error_uses_log_info_override():
    class Collecting(asyncore.dispatcher):
        def log_info(self, message, type="info"):
            self.logged.append((type, message))

    d = Collecting()
    d.logged = []
    try:
        _fail()
    except ValueError:
        d.handle_error()
    assert [t for t, _ in d.logged] == ["error", "warning"]
    assert d.logged[0][1].startswith("uncaptured python exception, closing channel <")
    assert d.logged[1][1] == "unhandled close event"


# --------------------------------------------------------------------------
# __repr__
# --------------------------------------------------------------------------

REPR_CASES = [
    (dict(), ""),
    (dict(addr=("127.0.0.1", 80)), " 127.0.0.1:80"),
    (dict(accepting=True), ""),
    (dict(accepting=True, addr=("127.0.0.1", 8080)), " listening 127.0.0.1:8080"),
    (dict(accepting=True, connected=True, addr=("0.0.0.0", 1)), " listening 0.0.0.0:1"),
    (dict(accepting=True, connected=True), " connected"),
    (dict(connected=True), " connected"),
    (dict(connected=True, addr=("10.1.2.3", 4)), " connected 10.1.2.3:4"),
    (dict(connected=True, addr=("::1", 80, 0, 0)), " connected ('::1', 80, 0, 0)"),
    (dict(addr="/tmp/some.sock"), " '/tmp/some.sock'"),
    (dict(addr=("host", "port")), " ('host', 'port')"),
    (dict(addr=("host", 7.9)), " host:7"),
    (dict(addr=b"\x00abstract"), " b'\\x00abstract'"),
]


@pytest.mark.parametrize("state,middle", REPR_CASES, ids=[repr(c[0]) for c in REPR_CASES])
def test_repr(state, middle):
    d = asyncore.dispatcher()
    for name, value in state.items():
        setattr(d, name, value)
    assert repr(d) == f"<asyncore.dispatcher{middle} at {hex_id(d)}>"


def test_repr_default_matches_pattern():
    assert re.fullmatch(r"<asyncore\.dispatcher at 0x[0-9a-f]+>", repr(asyncore.dispatcher()))


def test_repr_of_subclasses_uses_module_and_qualname():
    class Inner(asyncore.dispatcher):
        pass

    d = Inner()
    assert repr(d) == f"<{__name__}.{Inner.__qualname__} at {hex_id(d)}>"
    assert "<locals>.Inner" in repr(d)
    s = asyncore.dispatcher_with_send()
    assert repr(s) == f"<asyncore.dispatcher_with_send at {hex_id(s)}>"


# --------------------------------------------------------------------------
# dispatcher_with_send on a fake socket
# --------------------------------------------------------------------------


class SendRecorder(asyncore.dispatcher_with_send):
    def handle_close(self):
        self.closed_by_send = True


def fake_sender(**behaviour):
    d = SendRecorder(map={})
    d.socket = FakeSocket(**behaviour)
    d.connected = True
    return d


def test_with_send_initial_state():
    d = asyncore.dispatcher_with_send()
    assert d.out_buffer == b""
    assert d.writable()  # not connected yet: writable so the connect completes
    d.connected = True
    assert not d.writable()
    d.out_buffer = b"x"
    assert d.writable()


def test_with_send_sends_immediately():
    d = fake_sender()
    assert d.send(b"hello") is None
    assert d.socket.calls == [("send", b"hello")]
    assert d.out_buffer == b""


def test_with_send_keeps_what_was_not_sent():
    d = fake_sender(send=lambda data: 3)
    d.send(b"abcdefgh")
    assert d.out_buffer == b"defgh"
    assert d.writable()
    d.send(b"ij")
    assert d.socket.calls == [("send", b"abcdefgh"), ("send", b"defghij")]
    assert d.out_buffer == b"ghij"
    assert d.handle_write() is None
    assert d.out_buffer == b"j"
    d.initiate_send()
    assert d.out_buffer == b""
    assert not d.writable()


def test_with_send_sends_at_most_64k_at_a_time():
    d = fake_sender()
    data = bytes(range(256)) * 400  # 102400 bytes
    d.send(data)
    assert d.socket.calls == [("send", data[:65536])]
    assert d.out_buffer == data[65536:]
    d.handle_write()
    assert d.socket.calls[-1] == ("send", data[65536:])
    assert d.out_buffer == b""


def test_with_send_would_block_keeps_buffer():
    d = fake_sender(send=BlockingIOError(errno.EWOULDBLOCK, "full"))
    d.send(b"abc")
    assert d.out_buffer == b"abc"
    assert not hasattr(d, "closed_by_send")


def test_with_send_disconnect_closes():
    d = fake_sender(send=BrokenPipeError(errno.EPIPE, "pipe"))
    d.send(b"abc")
    assert d.closed_by_send
    assert d.out_buffer == b"abc"


def test_with_send_debug_logs(capsys):
    d = fake_sender()
    d.debug = True
    d.send(b"hi\n")
    assert capsys.readouterr().out == "info: sending b'hi\\n'\n"
    d.debug = False
    d.send(b"quiet")
    assert capsys.readouterr().out == ""


def test_with_send_from_socket():
    client, server = connected_pair()
    with client:
        d = asyncore.dispatcher_with_send(server)
        try:
            assert d.connected and d.out_buffer == b""
            d.send(b"direct")
            assert recv_exactly(client, 6) == b"direct"
        finally:
            d.close()


# --------------------------------------------------------------------------
# real connections: one mixin, bound to each family, run in each loop mode
# --------------------------------------------------------------------------


class _ConnectionTests:
    family = None
    host = None

    @pytest.fixture(autouse=True)
    def _loop_mode(self, use_poll):
        self.use_poll = use_poll

    def loop_until(self, predicate, map=None):
        return loop_until(predicate, map=map, use_poll=self.use_poll)

    def make_client(self):
        d = Recorder()
        d.create_socket(self.family)
        return d

    def test_connect_then_first_write_event(self):
        with listening_socket(self.family, self.host) as srv:
            d = self.make_client()
            address = srv.getsockname()[:2]
            assert d.connect(address) is None
            assert (d.connected, d.connecting) == (False, True)
            assert d.addr == address
            assert d.events == []
            try:
                self.loop_until(lambda: d.events)
                # Connection completion shows up as writability; 3.11 then
                # delivers handle_connect followed by the write itself.
                assert d.events == ["handle_connect", "handle_write"]
                assert d.state_in_connect == (False, True)
                assert (d.connected, d.connecting) == (True, False)
                peer, _ = srv.accept()
                peer.close()
            finally:
                d.close()

    def test_connect_refused(self, capsys):
        # A bound socket that does not listen answers with a reset.
        with socket.socket(self.family) as closed_port:
            closed_port.bind((self.host, 0))
            d = self.make_client()
            d.passthrough = ("handle_error", "handle_close")
            d.connect(closed_port.getsockname()[:2])
            try:
                self.loop_until(lambda: d.events)
            finally:
                d.close()
        assert d.events == [("handle_error", ConnectionRefusedError), "handle_close"]
        assert asyncore.socket_map == {}
        out = capsys.readouterr().out
        assert out.startswith("error: uncaptured python exception, closing channel <")
        assert f"({ConnectionRefusedError}:[Errno {errno.ECONNREFUSED}] " in out

    def test_accept_and_wrap(self):
        server = Recorder()
        server.create_socket(self.family)
        server.set_reuse_addr()
        server.bind((self.host, 0))
        server.listen(5)
        try:
            assert server.accepting
            assert server.accept() is None  # nothing pending: EWOULDBLOCK
            address = server.socket.getsockname()[:2]
            with socket.create_connection(address, timeout=DEADLINE) as client:
                wait_readable(server.socket)
                pair = server.accept()
                assert pair is not None
                sock, addr = pair
                assert addr == client.getsockname()
                assert isinstance(sock, socket.socket)
                # accept() hands over what socket.accept() made (blocking, the
                # default timeout); wrapping it in a dispatcher makes it non-blocking.
                assert sock.gettimeout() == socket.getdefaulttimeout()
                handler = asyncore.dispatcher(sock)
                try:
                    assert sock.gettimeout() == 0.0
                    assert handler.connected
                    assert handler.addr == client.getsockname()
                finally:
                    handler.close()
        finally:
            server.close()

    def test_listening_dispatcher_gets_handle_accept(self):
        class Listener(Recorder):
            def handle_accept(self):
                self.events.append("handle_accept")
                pair = self.accept()
                if pair is not None:
                    pair[0].close()

        server = Listener()
        server.create_socket(self.family)
        server.bind((self.host, 0))
        server.listen(5)
        try:
            with socket.create_connection(server.socket.getsockname()[:2], timeout=DEADLINE):
                self.loop_until(lambda: server.events)
            assert server.events == ["handle_accept"]
        finally:
            server.close()

    def test_default_accept_path_calls_handle_accepted(self):
        class Listener(asyncore.dispatcher):
            def handle_accepted(self, sock, addr):
                self.accepted = (sock, addr)

        server = Listener()
        server.create_socket(self.family)
        server.bind((self.host, 0))
        server.listen(5)
        try:
            with socket.create_connection(server.socket.getsockname()[:2], timeout=DEADLINE) as c:
                self.loop_until(lambda: hasattr(server, "accepted"))
                sock, addr = server.accepted
                sock.close()
                assert addr == c.getsockname()
        finally:
            server.close()

    def test_recv_data_then_eof(self):
        client, peer = connected_pair(self.family, self.host)
        with peer:
            d = Recorder(client)
            try:
                peer.sendall(b"hello")
                wait_readable(client)
                assert d.recv(100) == b"hello"
                # Nothing pending: 3.11 lets BlockingIOError through from recv().
                with pytest.raises(BlockingIOError):
                    d.recv(100)
                peer.shutdown(socket.SHUT_WR)
                wait_readable(client)
                assert d.recv(100) == b""
                assert d.events == ["handle_close"]
            finally:
                d.close()

    def test_recv_after_reset(self):
        client, peer = connected_pair(self.family, self.host)
        d = Recorder(client)
        try:
            reset_by_peer(peer)
            wait_readable(client)
            assert d.recv(100) == b""
            assert d.events == ["handle_close"]
        finally:
            d.close()

    def test_send_after_reset(self):
        client, peer = connected_pair(self.family, self.host)
        d = Recorder(client)
        try:
            reset_by_peer(peer)
            wait_readable(client)
            assert d.send(b"late") == 0
            assert d.events == ["handle_close"]
        finally:
            d.close()

    def test_send_until_would_block(self):
        client, peer = connected_pair(self.family, self.host)
        with peer:
            # Default buffers: shrunken ones make the drain below crawl
            # through tiny TCP windows.
            d = Recorder(client)
            try:
                chunk = b"x" * 65536
                total = 0
                while True:
                    sent = d.send(chunk)
                    if sent == 0:
                        break
                    total += sent
                assert total > 0
                assert d.events == []
                assert recv_exactly(peer, total) == b"x" * total
            finally:
                d.close()

    def test_handle_read_through_loop(self):
        class Reader(Recorder):
            def handle_read(self):
                self.events.append(("handle_read", self.recv(100)))

            def writable(self):
                return False

        client, peer = connected_pair(self.family, self.host)
        with peer:
            d = Reader(client)
            try:
                peer.sendall(b"ping")
                self.loop_until(lambda: d.events)
                assert d.events == [("handle_read", b"ping")]
                peer.shutdown(socket.SHUT_WR)
                self.loop_until(lambda: len(d.events) > 1)
                # recv() calls handle_close before handle_read gets its b"".
                assert d.events[1:] == ["handle_close", ("handle_read", b"")]
            finally:
                d.close()

    def test_handle_error_through_loop(self, capsys):
        class Failing(asyncore.dispatcher):
            def writable(self):
                return False

            def handle_read(self):
                self.recv(100)
                raise ValueError("handler failed")

        client, peer = connected_pair(self.family, self.host)
        with peer:
            d = Failing(client)
            d.ignore_log_types = frozenset()
            shown = repr(d)
            try:
                peer.sendall(b"x")
                self.loop_until(lambda: not d.connected)
            finally:
                d.close()
        out = capsys.readouterr().out
        lines = out.splitlines()
        assert lines[1:] == ["warning: unhandled close event"]
        prefix = (
            f"error: uncaptured python exception, closing channel {shown} "
            f"({ValueError}:handler failed "
        )
        assert lines[0].startswith(prefix)
        frames = re.findall(r"\[([^|\]]*)\|([^|\]]*)\|(\d+)\]", lines[0][len(prefix) :])
        # Innermost the handler, then the dispatcher method that called it; any
        # outer frames belong to the loop and differ between implementations.
        assert frames[-1][:2] == (__file__, "handle_read")
        assert frames[-2][1] == "handle_read_event"
        assert lines[0].endswith(")")
        assert asyncore.socket_map == {}

    def test_with_send_delivers_a_large_payload(self):
        client, peer = connected_pair(self.family, self.host)
        with peer:
            peer.setblocking(False)
            sender = asyncore.dispatcher_with_send(client)
            payload = os.urandom(64 * 1024) * 16  # 1 MiB, several partial sends
            received = bytearray()

            def drained():
                try:
                    while True:
                        data = peer.recv(262144)
                        if not data:
                            break
                        received.extend(data)
                except BlockingIOError:
                    pass
                return len(received) == len(payload)

            try:
                sender.send(payload)
                self.loop_until(drained)
                assert bytes(received) == payload
                assert not sender.writable()
            finally:
                sender.close()

    def test_repr_of_real_channels(self):
        server = asyncore.dispatcher()
        server.create_socket(self.family)
        server.bind((self.host, 0))
        server.listen(5)
        try:
            # addr is what bind() was given, not the bound port.
            assert (
                repr(server) == f"<asyncore.dispatcher listening {self.host}:0 at {hex_id(server)}>"
            )
        finally:
            server.close()


def _bind(family, host, name):
    attrs = {"family": family, "host": host}
    if family == socket.AF_INET6 and not HAS_IPV6:
        attrs["pytestmark"] = [pytest.mark.skip(reason="no IPv6 on this machine")]
    return type(name, (_ConnectionTests,), attrs)


TestConnectionIPv4 = _bind(socket.AF_INET, HOST4, "TestConnectionIPv4")
TestConnectionIPv6 = _bind(socket.AF_INET6, HOST6, "TestConnectionIPv6")


# --------------------------------------------------------------------------
# Unix sockets: the one place a non-blocking connect completes at once
# --------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
def test_unix_connect_completes_immediately(tmp_path):
    path = str(tmp_path / "sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen(1)
        d = Recorder()
        d.create_socket(socket.AF_UNIX)
        try:
            d.connect(path)
            # connect_ex returned 0: handle_connect ran inside connect().
            assert d.events == ["handle_connect"]
            assert (d.connected, d.connecting) == (True, False)
            assert d.addr == path
            assert repr(d) == f"<{__name__}.Recorder connected {path!r} at {hex_id(d)}>"
            peer, _ = srv.accept()
            peer.close()
        finally:
            d.close()


@pytest.mark.skipif(not HAS_UNIX, reason="no AF_UNIX")
def test_send_on_socketpair_after_peer_closed():
    a, b = socket.socketpair()
    b.close()
    d = Recorder(a)
    try:
        # socketpair() sockets have no peer name on some systems, but Linux gives ''.
        assert d.send(b"x") == 0
        assert d.events == ["handle_close"]
    finally:
        d.close()


class TestSocketMethodsReplaced:
    """A test double that replaces socket.socket's recv/send is called, as in 3.11.

    (The compiled core reaches a plain socket's descriptor directly; that
    must never bypass a replacement.)
    """

    def test_replaced_recv_and_send_are_called(self, monkeypatch):
        calls = []
        real_recv, real_send = socket.socket.recv, socket.socket.send

        def recv(sock, n, *args):
            calls.append(("recv", n))
            return real_recv(sock, n, *args)

        def send(sock, data, *args):
            calls.append(("send", bytes(data)))
            return real_send(sock, data, *args)

        class Echo(asyncore.dispatcher_with_send):
            def handle_read(self):
                data = self.recv(100)
                if data:
                    self.send(data)

        ours, peer = socket.socketpair()
        with peer:
            peer.settimeout(DEADLINE)
            monkeypatch.setattr(socket.socket, "recv", recv)
            monkeypatch.setattr(socket.socket, "send", send)
            chan = Echo(ours)
            try:
                peer.sendall(b"ping")
                loop_until(lambda: ("send", b"ping") in calls)
            finally:
                chan.close()
                monkeypatch.undo()
            assert peer.recv(4) == b"ping"
        assert ("recv", 100) in calls
