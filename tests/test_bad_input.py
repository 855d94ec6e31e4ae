"""Bad input to the loop and to async_chat: 3.11's exception, never a crash or hang.

Maps are duck-typed in 3.11, so the errors come from wherever the bad value
is first used: attribute lookups on map values, truth tests on what
``readable()``/``writable()`` return, ``select``/``poll`` rejecting a key,
arithmetic on ``timeout`` and comparisons on ``count``.  A compiled core must
fail the same way, at the same moment (before or after the predicates ran,
with or without dispatching), so the tests record what was called.

Where 3.11 itself blocks forever the test is ``cyasyncore_only`` and asks for
a clear exception instead; a watchdog keeps it bounded either way.
"""

import errno
import math
import os
import re
import signal
import socket
import sys
import threading
import time

import pytest

import asynchat
import asyncore
from support import DEADLINE, HAS_POLL, RaisingBool


@pytest.fixture
def ready():
    """A socket with a byte waiting to be read (and room to write); yields its descriptor."""
    ours, peer = socket.socketpair()
    peer.send(b"!")
    try:
        yield ours.fileno()
    finally:
        ours.close()
        peer.close()


class Duck:
    """The least a map value needs in 3.11; every call is recorded in ``calls``."""

    accepting = False

    def __init__(self, readable=True, writable=False, calls=None):
        self._readable = readable
        self._writable = writable
        self.calls = [] if calls is None else calls

    def readable(self):
        self.calls.append("readable")
        return self._readable

    def writable(self):
        self.calls.append("writable")
        return self._writable

    def handle_read_event(self):
        self.calls.append("read")

    def handle_write_event(self):
        self.calls.append("write")

    def handle_expt_event(self):
        self.calls.append("expt")

    def handle_close(self):
        self.calls.append("close")

    def handle_error(self):
        self.calls.append("error")


def closed_descriptor():
    """A descriptor number that is not open, yet inside the process's descriptor table.

    Linux's select() silently ignores numbers beyond the table, so the number
    is opened once (growing the table) and closed again.  It is high enough
    that nothing the test or the loop opens meanwhile will take it.
    """
    for fd in range(900, 1000):
        try:
            os.fstat(fd)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                with socket.socket() as s:
                    os.dup2(s.fileno(), fd)
                os.close(fd)
                return fd
    raise AssertionError("no free descriptor number between 900 and 1000")


# ------------------------------------------------------------- map values


@pytest.mark.parametrize("value", [object(), None, 42], ids=["object", "None", "int"])
def test_map_value_without_readable(value, use_poll, ready):
    m = {ready: value}
    with pytest.raises(AttributeError, match=r"object has no attribute 'readable'$"):
        asyncore.loop(0, use_poll, m, 1)
    assert m == {ready: value}


def test_map_value_without_accepting_is_fine_until_writable(use_poll, ready):
    class NoAccepting:
        def __init__(self, writable):
            self.calls = []
            self._writable = writable

        def readable(self):
            self.calls.append("readable")
            return True

        def writable(self):
            self.calls.append("writable")
            return self._writable

        def handle_read_event(self):
            self.calls.append("read")

    quiet = NoAccepting(writable=False)
    asyncore.loop(0, use_poll, {ready: quiet}, 1)
    assert quiet.calls == ["readable", "writable", "read"]
    loud = NoAccepting(writable=True)
    with pytest.raises(AttributeError, match="'NoAccepting' object has no attribute 'accepting'$"):
        asyncore.loop(0, use_poll, {ready: loud}, 1)
    assert loud.calls == ["readable", "writable"]


def test_ready_map_value_without_any_handler(use_poll, ready):
    class Bare:
        accepting = False

        def readable(self):
            return True

        def writable(self):
            return False

    m = {ready: Bare()}
    # The missing event handler is caught like any handler error, and then
    # the missing handle_error escapes, chained to it.
    with pytest.raises(AttributeError, match="no attribute 'handle_error'") as info:
        asyncore.loop(0, use_poll, m, 1)
    assert isinstance(info.value.__context__, AttributeError)
    assert "handle_read_event" in str(info.value.__context__)
    assert len(m) == 1


def test_ready_map_value_with_only_handle_error(use_poll, ready):
    seen = []

    class OnlyErrors:
        accepting = False

        def readable(self):
            return True

        def writable(self):
            return False

        def handle_error(self):
            seen.append(sys.exc_info()[1])

    asyncore.loop(0, use_poll, {ready: OnlyErrors()}, 1)
    assert len(seen) == 1
    assert isinstance(seen[0], AttributeError)
    assert "handle_read_event" in str(seen[0])


# ------------------------------------------------------------- predicates


def test_readable_raising_leaves_loop_before_any_dispatch(use_poll, ready):
    calls = []

    class Raising(Duck):
        def readable(self):
            calls.append("raising readable")
            raise ZeroDivisionError("readable")

    first = Duck(calls=calls)
    second_fd = os.dup(ready)
    try:
        m = {ready: first, second_fd: Raising(calls=calls)}
        with pytest.raises(ZeroDivisionError, match="^readable$"):
            asyncore.loop(0, use_poll, m, 1)
        # The first channel was ready but the pass never got to dispatching.
        assert calls == ["readable", "writable", "raising readable"]
        assert len(m) == 2
    finally:
        os.close(second_fd)


@pytest.mark.parametrize(
    "value, polled",
    [
        (0, False),
        ("", False),
        (None, False),
        ([], False),
        (0.0, False),
        ([1], True),
        (2, True),
        ("x", True),
        (math.nan, True),
    ],
    ids=["0", "empty-str", "None", "empty-list", "0.0", "list", "2", "str", "nan"],
)
def test_readable_odd_values_are_truth_tested(value, polled, use_poll, ready):
    duck = Duck(readable=value)
    asyncore.loop(0, use_poll, {ready: duck}, 1)
    assert duck.calls == ["readable", "writable"] + (["read"] if polled else [])


def test_readable_result_with_raising_bool(use_poll, ready):
    duck = Duck(readable=RaisingBool())
    with pytest.raises(RuntimeError, match="^no truth value$"):
        asyncore.loop(0, use_poll, {ready: duck}, 1)
    # select mode asks both predicates before testing either; poll mode
    # tests readable() before it asks writable().
    assert duck.calls == (["readable"] if use_poll else ["readable", "writable"])


def test_writable_result_with_raising_bool(use_poll, ready):
    duck = Duck(readable=False, writable=RaisingBool())
    with pytest.raises(RuntimeError, match="^no truth value$"):
        asyncore.loop(0, use_poll, {ready: duck}, 1)
    assert duck.calls == ["readable", "writable"]


# ------------------------------------------------------------------ keys


def test_key_with_fileno(use_poll, ready):
    class Key:
        def fileno(self):
            return ready

    duck = Duck()
    asyncore.loop(0, use_poll, {Key(): duck}, 1)
    # select() hands the key object back, so the lookup finds the channel;
    # poll() reports the number, which is not a key: no dispatch at all.
    assert duck.calls == (
        ["readable", "writable"] if use_poll else ["readable", "writable", "read"]
    )


@pytest.mark.parametrize("key", ["3", 3.0, b"3"], ids=["str", "float", "bytes"])
def test_key_that_is_not_a_descriptor(key, use_poll):
    duck = Duck()
    with pytest.raises(
        TypeError, match=r"^argument must be an int, or have a fileno\(\) method\.$"
    ):
        asyncore.loop(0, use_poll, {key: duck}, 1)
    assert duck.calls == ["readable", "writable"]


@pytest.mark.parametrize("key", [-1, -5])
def test_negative_key(key, use_poll):
    duck = Duck()
    message = rf"^file descriptor cannot be a negative integer \({key}\)$"
    with pytest.raises(ValueError, match=message):
        asyncore.loop(0, use_poll, {key: duck}, 1)
    assert duck.calls == ["readable", "writable"]


def test_key_beyond_c_int(use_poll):
    with pytest.raises(OverflowError, match="^Python int too large to convert to C int$"):
        asyncore.loop(0, use_poll, {2**40: Duck()}, 1)


@pytest.mark.skipif(not HAS_POLL, reason="no poll()")
def test_key_beyond_select_limit_in_poll_mode():
    # poll() flags a number that is not open with POLLNVAL: handle_close.
    duck = Duck()
    asyncore.loop(0, True, {100000: duck}, 1)
    assert duck.calls == ["readable", "writable", "close"]


@pytest.mark.cyasyncore_only
def test_key_beyond_fd_setsize_in_select_mode():
    # 3.11's select() refuses any number past FD_SETSIZE with ValueError;
    # cyasyncore's select-style pass has no such limit (see _core_py), so a
    # number that is not open fails like any closed descriptor.
    duck = Duck()
    with pytest.raises(OSError) as info:
        asyncore.loop(0, False, {100000: duck}, 1)
    assert info.value.errno == errno.EBADF
    assert duck.calls == ["readable", "writable"]


def test_closed_descriptor_key(use_poll):
    fd = closed_descriptor()
    duck = Duck()
    if use_poll:
        asyncore.loop(0, use_poll, {fd: duck}, 1)
        assert duck.calls == ["readable", "writable", "close"]
    else:
        with pytest.raises(OSError) as info:
            asyncore.loop(0, use_poll, {fd: duck}, 1)
        assert info.value.errno == errno.EBADF
        assert duck.calls == ["readable", "writable"]


def test_closed_descriptor_key_not_asked_for_is_ignored(use_poll):
    duck = Duck(readable=False, writable=False)
    asyncore.loop(0, use_poll, {closed_descriptor(): duck}, 1)
    assert duck.calls == ["readable", "writable"]


# ------------------------------------------------------------ timeout


def _message_of(fn):
    try:
        fn()
    except Exception as exc:
        return type(exc), str(exc)
    raise AssertionError("expected an exception")


# What select mode does with each timeout when a channel is ready: either
# "dispatched" or (exception type, message pattern).
SELECT_WITH_A_READY_CHANNEL = {
    "str": ("x", (TypeError, "^timeout must be a float or None$")),
    "list": ([], (TypeError, "^timeout must be a float or None$")),
    "complex": (1j, (TypeError, "^timeout must be a float or None$")),
    "-1": (-1, (ValueError, "^timeout must be non-negative$")),
    "-0.5": (-0.5, (ValueError, "^timeout must be non-negative$")),
    "None": (None, "dispatched"),
    "nan": (math.nan, (ValueError, r"^Invalid value NaN \(not a number\)$")),
    # Past poll()'s int of milliseconds, still fine for select().
    "large": (1e7, "dispatched"),
    "huge": (1e300, (OverflowError, "^timestamp out of range for platform time_t$")),
}


def _poll_expectation(timeout):
    """What poll mode gives, and whether it fails before asking any channel.

    3.11 computes int(timeout * 1000) first; poll() itself then rejects what
    does not fit its int of milliseconds, after the predicates ran.
    """
    if timeout is None or (isinstance(timeout, (int, float)) and timeout < 0):
        return "dispatched", False
    if timeout == 1e7:
        return (OverflowError, "^timeout is too large$"), False
    if timeout == 1e300:
        return (OverflowError, "^timestamp too large to convert to C _?PyTime_t$"), False
    exc_type, message = _message_of(lambda: int(timeout * 1000))
    return (exc_type, "^" + re.escape(message) + "$"), True


@pytest.mark.parametrize(
    "timeout, select_expected",
    list(SELECT_WITH_A_READY_CHANNEL.values()),
    ids=list(SELECT_WITH_A_READY_CHANNEL),
)
def test_bad_timeout_with_a_ready_channel(timeout, select_expected, use_poll, ready):
    if use_poll:
        expected, fails_first = _poll_expectation(timeout)
    else:
        expected, fails_first = select_expected, False
    duck = Duck()
    if expected == "dispatched":
        asyncore.loop(timeout, use_poll, {ready: duck}, 1)
        assert duck.calls == ["readable", "writable", "read"]
        return
    exc_type, pattern = expected
    with pytest.raises(exc_type, match=pattern):
        asyncore.loop(timeout, use_poll, {ready: duck}, 1)
    assert duck.calls == ([] if fails_first else ["readable", "writable"])


@pytest.mark.parametrize("timeout", ["x", []], ids=["str", "list"])
def test_bad_timeout_with_nothing_to_wait_for(timeout, use_poll):
    # Nothing readable or writable: select mode sleeps for the timeout,
    # poll mode still converts it first.
    if use_poll:
        exc_type, message = _message_of(lambda: int(timeout * 1000))
    else:
        exc_type, message = _message_of(lambda: time.sleep(timeout))
    duck = Duck(readable=False, writable=False)
    with pytest.raises(exc_type) as info:
        asyncore.loop(timeout, use_poll, {5: duck}, 1)
    assert str(info.value) == message


@pytest.mark.parametrize("timeout", [-1, None], ids=["negative", "None"])
def test_select_mode_with_nothing_to_wait_for_and_no_timeout(timeout):
    exc_type, message = _message_of(lambda: time.sleep(timeout))
    duck = Duck(readable=False, writable=False)
    with pytest.raises(exc_type) as info:
        asyncore.loop(timeout, False, {5: duck}, 1)
    assert str(info.value) == message


class Watchdog:
    """Raise ``Hung`` in the main thread if the block takes longer than DEADLINE."""

    class Hung(Exception):
        pass

    def _fire(self, signum, frame):
        raise self.Hung("the loop blocked with nothing to wait for")

    def _watch(self):
        if not self.done.wait(DEADLINE):
            signal.pthread_kill(self.main, signal.SIGUSR1)

    def __enter__(self):
        self.main = threading.main_thread().ident
        self.done = threading.Event()
        self.previous = signal.signal(signal.SIGUSR1, self._fire)
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join(DEADLINE)
        signal.signal(signal.SIGUSR1, self.previous)


@pytest.mark.cyasyncore_only
@pytest.mark.skipif(not HAS_POLL, reason="no poll()")
@pytest.mark.parametrize(
    "timeout, exc_type",
    [(None, TypeError), (-1, ValueError), (-0.5, ValueError)],
    ids=["None", "-1", "-0.5"],
)
def test_poll_mode_with_nothing_to_wait_for_and_no_timeout_does_not_hang(timeout, exc_type):
    # 3.11's poll mode waits forever here (poll() with no descriptors and an
    # infinite timeout); select mode fails in time.sleep().  cyasyncore fails
    # in both modes.
    duck = Duck(readable=False, writable=False)
    with Watchdog(), pytest.raises(exc_type):
        asyncore.loop(timeout, True, {5: duck}, 1)


# --------------------------------------------------------------- count


@pytest.mark.parametrize(
    "count, passes",
    [(-1, 0), (0, 0), (1, 1), (True, 1), (False, 0), (1.5, 2), (2.0, 2), (0.1, 1)],
    ids=["-1", "0", "1", "True", "False", "1.5", "2.0", "0.1"],
)
def test_count_values(count, passes, use_poll):
    duck = Duck(readable=False, writable=False)
    asyncore.loop(0, use_poll, {5: duck}, count)
    assert duck.calls == ["readable", "writable"] * passes


@pytest.mark.parametrize("count", ["1", [], object()], ids=["str", "list", "object"])
def test_count_of_wrong_type(count, use_poll):
    duck = Duck(readable=False, writable=False)
    with pytest.raises(TypeError, match="^'>' not supported between instances of '"):
        asyncore.loop(0, use_poll, {5: duck}, count)
    assert duck.calls == []


def test_empty_map_never_looks_at_timeout_or_count(use_poll):
    assert asyncore.loop("not a timeout", use_poll, {}, "not a count") is None


def test_use_poll_is_truth_tested_first():
    with pytest.raises(RuntimeError, match="^no truth value$"):
        asyncore.loop(0, RaisingBool(), {}, 1)


@pytest.mark.parametrize(
    "bad_map, exc_type",
    [([1], AttributeError), ("abc", AttributeError), (5, AttributeError)],
    ids=["list", "str", "int"],
)
def test_map_of_wrong_type(bad_map, exc_type, use_poll):
    with pytest.raises(exc_type, match=r"object has no attribute 'items'$"):
        asyncore.loop(0, use_poll, bad_map, 1)


def test_falsy_map_of_wrong_type_is_an_empty_map(use_poll):
    assert asyncore.loop(0, use_poll, [], 1) is None
    assert asyncore.loop(0, use_poll, "", None) is None


# ------------------------------------------------------------ async_chat


@pytest.mark.parametrize("term", [-1, -(2**70)], ids=["-1", "huge"])
def test_set_terminator_negative(term):
    chat = asynchat.async_chat()
    with pytest.raises(ValueError, match="^the number of received bytes must be positive$"):
        chat.set_terminator(term)
    assert not hasattr(chat, "terminator") or chat.terminator != term
    chat.close()


@pytest.mark.parametrize("term", [0, -0.5, None, b"", b"\r\n", 10, "abc"])
def test_set_terminator_accepts_what_311_accepts(term):
    chat = asynchat.async_chat()
    chat.set_terminator(term)
    assert chat.get_terminator() == term
    chat.close()


@pytest.mark.parametrize(
    "data", ["text", None, 1, ["a"], 1.5], ids=["str", "None", "int", "list", "float"]
)
def test_push_of_non_bytes(data):
    chat = asynchat.async_chat()
    with pytest.raises(TypeError) as info:
        chat.push(data)
    # 3.11 passes the format string and the type as two arguments.
    assert info.value.args == ("data argument must be byte-ish (%r)", type(data))
    assert len(chat.producer_fifo) == 0
    chat.close()
