"""The module-level surface of asyncore: names, constants and the helper functions.

The dispatch helpers (``read``, ``write``, ``_exception``, ``readwrite``) are
exercised with plain objects that are not dispatchers, because real programs
call them that way (COMPAT-NOTES, "Duck typing everywhere").
"""

import errno
import inspect
import os
import pickle
import pydoc
import select
import socket
import subprocess
import sys
import traceback

import pytest

import asyncore

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class CustomBaseException(BaseException):
    """Not an Exception and not re-raised by asyncore: 3.11 hands it to handle_error."""


class Duck:
    """A plain object with the event methods asyncore calls, recording each call.

    ``failures`` maps a method name to the exception that method raises.
    handle_error records the exception type being handled at the time, which
    proves it was called from inside the ``except`` block.
    """

    def __init__(self, **failures):
        self.calls = []
        self.failures = failures

    def _event(self, name):
        self.calls.append(name)
        exc = self.failures.get(name)
        if exc is not None:
            raise exc

    def handle_read_event(self):
        self._event("read")

    def handle_write_event(self):
        self._event("write")

    def handle_expt_event(self):
        self._event("expt")

    def handle_close(self):
        self._event("close")

    def handle_error(self):
        self.calls.append(("error", sys.exc_info()[0]))


class Closable:
    """A map entry for close_all: close() records itself and may raise."""

    def __init__(self, log, name, exc=None):
        self.log = log
        self.name = name
        self.exc = exc

    def close(self):
        self.log.append(self.name)
        if self.exc is not None:
            raise self.exc


def run_in_subprocess(code, core):
    """Run ``code`` in a fresh interpreter using the same install and core."""
    env = dict(os.environ)
    env.pop("ASYNCORE_NO_EXTENSIONS", None)
    if core == "pure":
        env["ASYNCORE_NO_EXTENSIONS"] = "1"
    return subprocess.run(
        [sys.executable, "-P", "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --------------------------------------------------------------------------
# names and constants
# --------------------------------------------------------------------------

ERRNO_NAMES = [
    "EALREADY",
    "EINPROGRESS",
    "EWOULDBLOCK",
    "ECONNRESET",
    "EINVAL",
    "ENOTCONN",
    "ESHUTDOWN",
    "EISCONN",
    "EBADF",
    "ECONNABORTED",
    "EPIPE",
    "EAGAIN",
]


@pytest.mark.parametrize("name", ERRNO_NAMES)
def test_errno_names_are_exposed(name):
    assert getattr(asyncore, name) == getattr(errno, name)


def test_errorcode_is_the_errno_table():
    assert asyncore.errorcode is errno.errorcode


PUBLIC_NAMES = [
    "loop",
    "poll",
    "poll2",
    "poll3",
    "readwrite",
    "read",
    "write",
    "_exception",
    "compact_traceback",
    "close_all",
    "ExitNow",
    "socket_map",
    "_DISCONNECTED",
    "_reraised_exceptions",
    "_strerror",
    "dispatcher",
    "dispatcher_with_send",
    "file_wrapper",
    "file_dispatcher",
]


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_name_exists(name):
    assert hasattr(asyncore, name)


def test_socket_module_is_reachable_as_attribute():
    # Test suites monkeypatch asyncore.socket, so the attribute must exist.
    assert asyncore.socket is socket


@pytest.mark.parametrize("name", ["os", "select", "socket", "sys", "time", "warnings"])
def test_modules_3_11_imported_are_attributes(name):
    # Programs reach them through asyncore (asyncore.socket.error and the like).
    assert getattr(asyncore, name) is sys.modules[name]


def test_poll3_is_poll2():
    assert asyncore.poll3 is asyncore.poll2


def test_socket_map_is_a_dict():
    assert type(asyncore.socket_map) is dict


def test_exitnow_is_an_exception():
    assert issubclass(asyncore.ExitNow, Exception)
    assert asyncore.ExitNow.__name__ == "ExitNow"


def test_exitnow_pickles():
    # Pickling resolves the class through __module__ and __qualname__.
    exc = pickle.loads(pickle.dumps(asyncore.ExitNow("bye")))
    assert type(exc) is asyncore.ExitNow
    assert exc.args == ("bye",)


def test_reraised_exceptions():
    assert asyncore._reraised_exceptions == (
        asyncore.ExitNow,
        KeyboardInterrupt,
        SystemExit,
    )


def test_disconnected_errnos():
    assert asyncore._DISCONNECTED == frozenset(
        {
            errno.ECONNRESET,
            errno.ENOTCONN,
            errno.ESHUTDOWN,
            errno.ECONNABORTED,
            errno.EPIPE,
            errno.EBADF,
        }
    )
    assert type(asyncore._DISCONNECTED) is frozenset


@pytest.mark.parametrize(
    "cls", ["dispatcher", "dispatcher_with_send", "file_wrapper", "file_dispatcher", "ExitNow"]
)
def test_class_module_and_qualname(cls):
    obj = getattr(asyncore, cls)
    assert obj.__module__ == "asyncore"
    assert obj.__qualname__ == cls


def test_class_hierarchy():
    assert issubclass(asyncore.dispatcher_with_send, asyncore.dispatcher)
    assert issubclass(asyncore.file_dispatcher, asyncore.dispatcher)


SIGNATURES = {
    "loop": "(timeout=30.0, use_poll=False, map=None, count=None)",
    "poll": "(timeout=0.0, map=None)",
    "poll2": "(timeout=0.0, map=None)",
    "close_all": "(map=None, ignore_all=False)",
    "readwrite": "(obj, flags)",
    "read": "(obj)",
    "write": "(obj)",
    "_exception": "(obj)",
    "compact_traceback": "()",
    "_strerror": "(err)",
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_function_signature(name):
    assert str(inspect.signature(getattr(asyncore, name))) == SIGNATURES[name]


def test_method_signatures():
    d = asyncore.dispatcher
    assert str(inspect.signature(d.__init__)) == "(self, sock=None, map=None)"
    params = inspect.signature(d.create_socket).parameters
    assert list(params) == ["self", "family", "type"]
    assert params["family"].default == socket.AF_INET
    assert params["type"].default == socket.SOCK_STREAM
    assert str(inspect.signature(d.log_info)) == "(self, message, type='info')"
    assert str(inspect.signature(d.add_channel)) == "(self, map=None)"
    assert str(inspect.signature(d.del_channel)) == "(self, map=None)"
    assert str(inspect.signature(d.set_socket)) == "(self, sock, map=None)"
    assert str(inspect.signature(asyncore.file_dispatcher.__init__)) == "(self, fd, map=None)"
    assert (
        str(inspect.signature(asyncore.file_wrapper.getsockopt))
        == "(self, level, optname, buflen=None)"
    )


# help() of 3.11's classes lists no __class__: it is object's own, which pydoc
# leaves out.  Ours carry the compiled core's ClassSlot in the class dict (so
# that assigning obj.__class__ tells the loop), and pydoc lists whatever a
# class dict holds, as "__class__ = <class 'type'>" (the metaclass's
# descriptor answers the class-level lookup, never ours).  Known, not fixed:
# see issue 16; a fix turns these into strict-xfail failures to remove.
CLASS_SLOT_INSTALLED = getattr(asyncore, "_hooks", None) is not None


@pytest.mark.xfail(
    CLASS_SLOT_INSTALLED,
    reason="ClassSlot sits in the class dict, and pydoc lists every entry there",
)
@pytest.mark.parametrize("name", ["dispatcher", "dispatcher_with_send", "async_chat"])
def test_help_lists_no_class_entry(name):
    import asynchat

    cls = getattr(asynchat if name == "async_chat" else asyncore, name)
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "__class__" not in text


# --------------------------------------------------------------------------
# cyasyncore's own additions
# --------------------------------------------------------------------------


@pytest.mark.cyasyncore_only
def test_core_attribute_matches_fixture(core):
    assert asyncore.CORE in ("compiled", "pure")
    assert asyncore.CORE == core


@pytest.mark.cyasyncore_only
def test_import_emits_no_deprecation_warning(core):
    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "import asyncore, asynchat\n"
        "print(asyncore.CORE)\n"
    )
    result = run_in_subprocess(code, core)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == f"{core}\n"


# --------------------------------------------------------------------------
# _strerror
# --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ECONNREFUSED, errno.EPIPE, errno.EBADF, 0, -1, 99999])
def test_strerror_matches_os_strerror(code):
    assert asyncore._strerror(code) == os.strerror(code)


def test_strerror_of_an_unrepresentable_code():
    # os.strerror raises OverflowError for codes that do not fit a C int.
    huge = 2**100
    assert asyncore._strerror(huge) == f"Unknown error {huge}"


# --------------------------------------------------------------------------
# read / write / _exception
# --------------------------------------------------------------------------

HELPERS = [
    ("read", "read"),
    ("write", "write"),
    ("_exception", "expt"),
]


@pytest.mark.parametrize("func,event", HELPERS)
def test_helper_calls_its_event(func, event):
    obj = Duck()
    assert getattr(asyncore, func)(obj) is None
    assert obj.calls == [event]


@pytest.mark.parametrize("func,event", HELPERS)
@pytest.mark.parametrize(
    "exc",
    [
        ValueError("boom"),
        OSError(errno.EINVAL, "bad"),
        # read() and friends do not single out disconnects: handle_error it is.
        ConnectionResetError(errno.ECONNRESET, "reset"),
        CustomBaseException(),
    ],
    ids=["ValueError", "OSError", "ConnectionResetError", "BaseException"],
)
def test_helper_routes_errors_to_handle_error(func, event, exc):
    obj = Duck(**{event: exc})
    getattr(asyncore, func)(obj)
    assert obj.calls == [event, ("error", type(exc))]


@pytest.mark.parametrize("func,event", HELPERS)
@pytest.mark.parametrize("exc_type", [asyncore.ExitNow, KeyboardInterrupt, SystemExit])
def test_helper_reraises(func, event, exc_type):
    obj = Duck(**{event: exc_type()})
    with pytest.raises(exc_type):
        getattr(asyncore, func)(obj)
    assert obj.calls == [event]


@pytest.mark.parametrize("func,event", HELPERS)
def test_helper_reraises_exitnow_subclass(func, event):
    class Stop(asyncore.ExitNow):
        pass

    obj = Duck(**{event: Stop()})
    with pytest.raises(Stop):
        getattr(asyncore, func)(obj)


@pytest.mark.parametrize("func", ["read", "write", "_exception"])
def test_helper_needs_only_the_methods_it_calls(func):
    """An object with a single method is enough."""
    seen = []

    class Minimal:
        def handle_read_event(self):
            seen.append("read")

        def handle_write_event(self):
            seen.append("write")

        def handle_expt_event(self):
            seen.append("expt")

    getattr(asyncore, func)(Minimal())
    assert len(seen) == 1


def test_error_inside_handle_error_propagates():
    class Broken(Duck):
        def handle_error(self):
            raise RuntimeError("handle_error failed")

    with pytest.raises(RuntimeError, match="handle_error failed"):
        asyncore.read(Broken(read=ValueError()))


# --------------------------------------------------------------------------
# readwrite
# --------------------------------------------------------------------------

FLAG_CASES = [
    ("POLLIN", ["read"]),
    ("POLLOUT", ["write"]),
    ("POLLPRI", ["expt"]),
    ("POLLHUP", ["close"]),
    ("POLLERR", ["close"]),
    ("POLLNVAL", ["close"]),
    ("POLLHUP|POLLERR|POLLNVAL", ["close"]),
    ("POLLIN|POLLOUT", ["read", "write"]),
    ("POLLIN|POLLOUT|POLLPRI|POLLHUP", ["read", "write", "expt", "close"]),
    ("POLLOUT|POLLERR", ["write", "close"]),
    ("POLLIN|POLLHUP", ["read", "close"]),
]


def _flags(spec):
    value = 0
    for name in spec.split("|"):
        value |= getattr(select, name)
    return value


@pytest.mark.parametrize("spec,expected", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_readwrite_flags(spec, expected):
    obj = Duck()
    assert asyncore.readwrite(obj, _flags(spec)) is None
    assert obj.calls == expected


def test_readwrite_no_flags():
    obj = Duck()
    asyncore.readwrite(obj, 0)
    assert obj.calls == []


@pytest.mark.skipif(not hasattr(select, "POLLRDNORM"), reason="no POLLRDNORM")
def test_readwrite_ignores_unknown_flags():
    obj = Duck()
    asyncore.readwrite(obj, select.POLLRDNORM | select.POLLWRNORM)
    assert obj.calls == []


@pytest.mark.parametrize("code", sorted(asyncore._DISCONNECTED), ids=errno.errorcode.get)
def test_readwrite_disconnect_oserror_closes(code):
    obj = Duck(read=OSError(code, os.strerror(code)))
    asyncore.readwrite(obj, select.POLLIN | select.POLLOUT)
    # The exception stops the pass: no write event after the failed read.
    assert obj.calls == ["read", "close"]


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ECONNREFUSED, errno.EAGAIN])
def test_readwrite_other_oserror_goes_to_handle_error(code):
    obj = Duck(write=OSError(code, os.strerror(code)))
    asyncore.readwrite(obj, select.POLLOUT | select.POLLPRI)
    assert obj.calls == ["write", ("error", type(OSError(code, "")))]


def test_readwrite_oserror_without_errno_goes_to_handle_error():
    obj = Duck(read=OSError("no errno"))
    asyncore.readwrite(obj, select.POLLIN)
    assert obj.calls == ["read", ("error", OSError)]


def test_readwrite_other_exception_goes_to_handle_error():
    obj = Duck(expt=ValueError("boom"))
    asyncore.readwrite(obj, select.POLLPRI | select.POLLHUP)
    assert obj.calls == ["expt", ("error", ValueError)]


def test_readwrite_base_exception_goes_to_handle_error():
    obj = Duck(read=CustomBaseException())
    asyncore.readwrite(obj, select.POLLIN)
    assert obj.calls == ["read", ("error", CustomBaseException)]


def test_readwrite_disconnect_raised_by_handle_close_calls_it_again():
    obj = Duck(close=ConnectionResetError(errno.ECONNRESET, "reset"))
    # The second handle_close raises too, and nothing catches that one.
    with pytest.raises(ConnectionResetError):
        asyncore.readwrite(obj, select.POLLHUP)
    assert obj.calls == ["close", "close"]


@pytest.mark.parametrize("exc_type", [asyncore.ExitNow, KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize(
    "event,flag",
    [("read", "POLLIN"), ("write", "POLLOUT"), ("expt", "POLLPRI"), ("close", "POLLHUP")],
)
def test_readwrite_reraises(exc_type, event, flag):
    obj = Duck(**{event: exc_type()})
    with pytest.raises(exc_type):
        asyncore.readwrite(obj, _flags(flag))
    assert obj.calls == [event]


# --------------------------------------------------------------------------
# compact_traceback
# --------------------------------------------------------------------------


def _raise_value_error():
    raise ValueError("deep")


def _call_raiser():
    _raise_value_error()


def _expected_tbinfo(exc):
    return [
        (fs.filename, fs.name, str(fs.lineno)) for fs in traceback.extract_tb(exc.__traceback__)
    ]


def test_compact_traceback_shape_and_content():
    try:
        _call_raiser()
    except ValueError as exc:
        result = asyncore.compact_traceback()
        caught = exc
    frames = _expected_tbinfo(caught)
    assert len(frames) == 3
    assert frames[0][1] == "test_compact_traceback_shape_and_content"
    assert type(result) is tuple and len(result) == 4
    last, t, v, info = result
    assert last == frames[-1]
    assert last[0] == __file__
    assert last[1] == "_raise_value_error"
    assert type(last[2]) is str
    assert t is ValueError
    assert v is caught
    assert info == " ".join("[%s|%s|%s]" % f for f in frames)


def test_compact_traceback_single_frame():
    try:
        raise KeyError("k")
    except KeyError as exc:
        (file, func, line), t, v, info = asyncore.compact_traceback()
        caught = exc
    assert (file, func) == (__file__, "test_compact_traceback_single_frame")
    assert line == str(caught.__traceback__.tb_lineno)
    assert t is KeyError and v is caught
    assert info == f"[{file}|{func}|{line}]"


def test_compact_traceback_from_a_helper_uses_the_handled_exception():
    def describe():
        return asyncore.compact_traceback()

    try:
        _raise_value_error()
    except ValueError as exc:
        result = describe()
        caught = exc
    frames = _expected_tbinfo(caught)
    assert result[0] == frames[-1]
    assert result[3] == " ".join("[%s|%s|%s]" % f for f in frames)
    # The helper's own frame is not part of the traceback.
    assert "describe" not in result[3]


def test_compact_traceback_without_exception():
    with pytest.raises(AssertionError):
        asyncore.compact_traceback()


# --------------------------------------------------------------------------
# close_all
# --------------------------------------------------------------------------


def test_close_all_closes_everything_and_clears():
    log = []
    m = {1: Closable(log, "a"), 2: Closable(log, "b"), 3: Closable(log, "c")}
    assert asyncore.close_all(map=m) is None
    assert sorted(log) == ["a", "b", "c"]
    assert m == {}


def test_close_all_ignores_ebadf():
    log = []
    m = {1: Closable(log, "a", OSError(errno.EBADF, "bad fd")), 2: Closable(log, "b")}
    asyncore.close_all(map=m)
    assert sorted(log) == ["a", "b"]
    assert m == {}


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.EINVAL, "invalid"), ValueError("boom"), CustomBaseException()],
    ids=["OSError", "ValueError", "BaseException"],
)
def test_close_all_raises_other_errors(exc):
    log = []
    failing = Closable(log, "a", exc)
    m = {1: failing}
    with pytest.raises(type(exc)):
        asyncore.close_all(map=m)
    # The map is only cleared when every close() went through.
    assert m == {1: failing}


@pytest.mark.parametrize(
    "exc",
    [OSError(errno.EINVAL, "invalid"), ValueError("boom"), CustomBaseException()],
    ids=["OSError", "ValueError", "BaseException"],
)
def test_close_all_ignore_all(exc):
    log = []
    m = {1: Closable(log, "a", exc), 2: Closable(log, "b", exc)}
    asyncore.close_all(map=m, ignore_all=True)
    assert sorted(log) == ["a", "b"]
    assert m == {}


@pytest.mark.parametrize("exc_type", [asyncore.ExitNow, KeyboardInterrupt, SystemExit])
def test_close_all_reraises_even_with_ignore_all(exc_type):
    log = []
    m = {1: Closable(log, "a", exc_type())}
    with pytest.raises(exc_type):
        asyncore.close_all(map=m, ignore_all=True)
    assert log == ["a"]


def test_close_all_defaults_to_the_current_socket_map(monkeypatch):
    log = []
    replacement = {7: Closable(log, "x")}
    monkeypatch.setattr(asyncore, "socket_map", replacement)
    asyncore.close_all()
    assert log == ["x"]
    assert replacement == {}


def test_close_all_on_real_dispatchers():
    m = {}
    d1 = asyncore.dispatcher(map=m)
    d1.create_socket()
    d2 = asyncore.dispatcher(map=m)
    d2.create_socket()
    socks = [d1.socket, d2.socket]
    asyncore.close_all(map=m)
    assert m == {}
    assert all(s.fileno() == -1 for s in socks)


def test_close_all_tolerates_a_map_mutated_by_close():
    # Each dispatcher's close() removes it from the very map being emptied.
    m = {}
    for _ in range(3):
        d = asyncore.dispatcher(map=m)
        d.create_socket()
    asyncore.close_all(map=m)
    assert m == {}
