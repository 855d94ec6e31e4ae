"""Differential testing: random programs run on the compiled and the pure core.

Each hypothesis example describes a small world (map entries with odd keys,
odd predicate results and handlers that raise, close channels or add new
ones) and a sequence of calls into the core (``loop``, ``poll``, ``poll2``,
``read``, ``write``, ``_exception``, ``readwrite``).  The world is built
afresh for each core, the program runs, and everything observable goes into
a log: every callback, every return value, every exception's type, message
and context, the map at the end.  The two logs must be equal.

A second program feeds random byte streams through ``async_chat`` while its
handlers change terminators, replace the input buffer or raise.

The pure core is the readable specification; a difference is a bug in one
of the two (usually the compiled one).  Nothing here can block: timeouts are
0 or invalid, and counts are bounded.

The test drives both cores itself, so it runs once: it is marked
``compiled_only``, which collects it under the ``compiled`` core alone.  Examples are
derandomized, so a run is repeatable; ``ASYNCORE_DIFFERENTIAL_EXAMPLES=N``
asks for N per program instead of 150.
"""

import errno
import os
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import asynchat
import asyncore
from support import HAS_POLL, LOOP_MODES, RaisingBool

pytestmark = [pytest.mark.cyasyncore_only, pytest.mark.compiled_only]

EXAMPLES = int(os.environ.get("ASYNCORE_DIFFERENTIAL_EXAMPLES", "150"))

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # The core and leak-guard fixtures are per test; each example cleans up
    # after itself, so sharing them across examples is fine.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def cores(core):
    assert core == "compiled", "collected once, under the compiled core (compiled_only)"
    from asyncore import _core

    names = list(_core.CORE_NAMES)
    assert names == ["compiled", "pure"]
    return _core


def run_on_each_core(cores, program):
    """Run ``program()`` under each core; return {core name: log}."""
    previous = cores.active()
    logs = {}
    try:
        for name in cores.CORE_NAMES:
            cores.use(name)
            logs[name] = program()
    finally:
        cores.use(previous)
    return logs


def describe(exc):
    context = exc.__context__
    return (
        "raised",
        type(exc).__name__,
        str(exc),
        getattr(exc, "errno", None),
        None if context is None else (type(context).__name__, str(context)),
    )


# ------------------------------------------------------------ the loop program


class Unprintable:
    """A truthy predicate result with no repr worth logging."""

    def __bool__(self):
        return True


PREDICATE_RESULTS = {
    "true": lambda: True,
    "false": lambda: False,
    "zero": lambda: 0,
    "two": lambda: 2,
    "empty": lambda: "",
    "text": lambda: "x",
    "none": lambda: None,
    "emptylist": lambda: [],
    "list": lambda: [0],
    "object": Unprintable,
    "badbool": RaisingBool,
}
PREDICATES = sorted(PREDICATE_RESULTS) + ["raise"]

HANDLER_BEHAVIOURS = [
    "record",
    "record",
    "valueerror",
    "reset",
    "einval",
    "exitnow",
    "keyboard",
    "systemexit",
    "close_self",
    "close_next",
    "add_channel",
    "missing",
]
HANDLERS = [
    "handle_read_event",
    "handle_write_event",
    "handle_expt_event",
    "handle_close",
    "handle_error",
]
KEY_KINDS = [
    "ready",
    "ready",
    "idle",
    "closed",
    "negative",
    "text",
    "fileno_ready",
    "fileno_idle",
    "big",
]

SAFE_TIMEOUTS = [0, 0.0, "x", [], float("nan"), 1e300]
COUNTS = [1, 1, 2, 0, -1, 1.5, True, "x"]


def _raise_for(behaviour):
    if behaviour == "valueerror":
        raise ValueError("from a handler")
    if behaviour == "reset":
        raise OSError(errno.ECONNRESET, "reset by the test")
    if behaviour == "einval":
        raise OSError(errno.EINVAL, "invalid by the test")
    if behaviour == "exitnow":
        raise asyncore.ExitNow("leave")
    if behaviour == "keyboard":
        raise KeyboardInterrupt("interrupted")
    if behaviour == "systemexit":
        raise SystemExit("exit")


def _make_handler(name, behaviour):
    def handler(self, *args):
        world = self.world
        world.log.append((self.label, name) + tuple(args))
        if behaviour == "close_self":
            world.remove(self)
        elif behaviour == "close_next":
            world.remove_next(self)
        elif behaviour == "add_channel":
            world.add_ready_channel()
        else:
            _raise_for(behaviour)

    return handler


def _make_predicate(name, result):
    def predicate(self):
        self.world.log.append((self.label, name))
        if result == "raise":
            raise ZeroDivisionError(name)
        return PREDICATE_RESULTS[result]()

    return predicate


channel_specs = st.fixed_dictionaries(
    {
        "key": st.sampled_from(KEY_KINDS),
        "readable": st.sampled_from(PREDICATES),
        "writable": st.sampled_from(PREDICATES),
        "accepting": st.sampled_from(["false", "false", "true", "missing"]),
        "handlers": st.fixed_dictionaries(
            {h: st.sampled_from(HANDLER_BEHAVIOURS) for h in HANDLERS}
        ),
    }
)

loop_modes = st.sampled_from(LOOP_MODES)

operations = st.one_of(
    st.tuples(st.just("loop"), st.sampled_from(SAFE_TIMEOUTS), loop_modes, st.sampled_from(COUNTS)),
    st.tuples(st.just("poll"), st.sampled_from(SAFE_TIMEOUTS)),
    st.tuples(st.just("poll2"), st.sampled_from(SAFE_TIMEOUTS)),
    st.tuples(st.sampled_from(["read", "write", "_exception"]), st.integers(0, 5)),
    st.tuples(st.just("readwrite"), st.integers(0, 5), st.integers(0, 127)),
)


def _closed_high_descriptor():
    # Opened once and closed, so it lies inside the descriptor table (Linux's
    # select() ignores numbers beyond it) and nothing else will get it.
    for fd in range(900, 1000):
        try:
            os.fstat(fd)
        except OSError:
            with socket.socket() as s:
                os.dup2(s.fileno(), fd)
            os.close(fd)
            return fd
    raise AssertionError("no free descriptor number")


class FilenoKey:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


class World:
    """The map, its channels and sockets for one run of a program on one core."""

    def __init__(self, specs):
        self.log = []
        self.map = {}
        self.sockets = []
        self.added = 0
        self.channels = []
        for i, spec in enumerate(specs):
            self._add(f"c{i}", spec)

    def _socket_pair(self, ready):
        a, b = socket.socketpair()
        self.sockets += [a, b]
        if ready:
            b.send(b"!")
        return a.fileno()

    def _key(self, kind):
        if kind in ("ready", "idle"):
            return self._socket_pair(kind == "ready")
        if kind in ("fileno_ready", "fileno_idle"):
            return FilenoKey(self._socket_pair(kind == "fileno_ready"))
        if kind == "closed":
            return _closed_high_descriptor()
        if kind == "negative":
            return -3
        if kind == "text":
            return "seven"
        if kind == "big":
            return 2**40
        raise AssertionError(kind)

    def _add(self, label, spec):
        body = {
            "readable": _make_predicate("readable", spec["readable"]),
            "writable": _make_predicate("writable", spec["writable"]),
        }
        if spec["accepting"] != "missing":
            body["accepting"] = spec["accepting"] == "true"
        for name, behaviour in spec["handlers"].items():
            if behaviour != "missing":
                body[name] = _make_handler(name, behaviour)
        # One class name for every channel: it appears in AttributeError messages.
        chan = type("Channel", (), body)()
        chan.world = self
        chan.label = label
        chan.key = self._key(spec["key"])
        self.map[chan.key] = chan
        self.channels.append(chan)

    def add_ready_channel(self):
        self.added += 1
        handlers = dict.fromkeys(HANDLERS, "record")
        spec = {
            "key": "ready",
            "readable": "true",
            "writable": "false",
            "accepting": "false",
            "handlers": handlers,
        }
        self._add(f"new{self.added}", spec)

    def remove(self, chan):
        self.map.pop(chan.key, None)

    def remove_next(self, chan):
        keys = list(self.map)
        if chan.key in keys:
            i = keys.index(chan.key)
            if i + 1 < len(keys):
                del self.map[keys[i + 1]]

    def channel(self, index):
        return self.channels[index % len(self.channels)]

    def close(self):
        for s in self.sockets:
            s.close()


def run_loop_program(specs, ops):
    world = World(specs)
    log = world.log
    try:
        for op in ops:
            log.append(("call",) + tuple(repr(x) for x in op))
            name = op[0]
            try:
                if name == "loop":
                    result = asyncore.loop(op[1], op[2], world.map, op[3])
                elif name == "poll":
                    result = asyncore.poll(op[1], world.map)
                elif name == "poll2":
                    result = asyncore.poll2(op[1], world.map)
                elif name == "readwrite":
                    result = asyncore.readwrite(world.channel(op[1]), op[2])
                else:
                    result = getattr(asyncore, name)(world.channel(op[1]))
            except BaseException as exc:  # KeyboardInterrupt and SystemExit are ours
                log.append(describe(exc))
            else:
                log.append(("returned", repr(result)))
        log.append(("map", [chan.label for chan in world.map.values()]))
    finally:
        world.close()
    return log


@SETTINGS
@given(
    specs=st.lists(channel_specs, min_size=1, max_size=4),
    ops=st.lists(operations, min_size=1, max_size=6),
)
def test_loop_programs_agree(cores, specs, ops):
    if not HAS_POLL:
        ops = [op for op in ops if op[0] != "poll2"]
    logs = run_on_each_core(cores, lambda: run_loop_program(specs, ops))
    assert logs["compiled"] == logs["pure"]


# ------------------------------------------------------------ the chat program

TERMINATORS = [b"\r\n", b"\n", b"ab", b"aba", b"xyz", b"", 0, 1, 3, 7, None, "ab"]

chat_actions = st.one_of(
    st.tuples(st.just("none")),
    st.tuples(st.just("terminator"), st.sampled_from(TERMINATORS)),
    st.tuples(st.just("buffer"), st.binary(max_size=6)),
    st.tuples(st.just("raise")),
)

chunks = st.lists(
    st.lists(st.sampled_from([b"a", b"b", b"\r", b"\n", b"x", b"yz"]), max_size=10).map(b"".join),
    min_size=1,
    max_size=8,
)


class ScriptedChat(asynchat.async_chat):
    """An async_chat without a socket whose recv() returns scripted chunks."""

    def __init__(self, incoming, on_collect, on_found, log):
        asynchat.async_chat.__init__(self)
        self.incoming = list(incoming)
        self.on_collect = list(on_collect)
        self.on_found = list(on_found)
        self.log = log

    def recv(self, size):
        return self.incoming.pop(0)

    def _act(self, actions):
        if not actions:
            return
        action = actions.pop(0)
        if action[0] == "terminator":
            self.set_terminator(action[1])
        elif action[0] == "buffer":
            self.ac_in_buffer = action[1]
        elif action[0] == "raise":
            raise ValueError("from a chat handler")

    def collect_incoming_data(self, data):
        self.log.append(("collect", bytes(data), self.ac_in_buffer))
        self._act(self.on_collect)

    def found_terminator(self):
        self.log.append(("found", self.ac_in_buffer, self.get_terminator()))
        self._act(self.on_found)


def run_chat_program(first_terminator, incoming, on_collect, on_found):
    log = []
    chat = ScriptedChat(incoming, on_collect, on_found, log)
    try:
        chat.set_terminator(first_terminator)
        while chat.incoming:
            try:
                chat.handle_read()
            except BaseException as exc:
                log.append(describe(exc))
            log.append(("state", chat.ac_in_buffer, chat.get_terminator()))
    finally:
        chat.close()
    return log


@SETTINGS
@given(
    first_terminator=st.sampled_from(TERMINATORS),
    incoming=chunks,
    on_collect=st.lists(chat_actions, max_size=4),
    on_found=st.lists(chat_actions, max_size=6),
)
def test_chat_programs_agree(cores, first_terminator, incoming, on_collect, on_found):
    logs = run_on_each_core(
        cores, lambda: run_chat_program(first_terminator, incoming, on_collect, on_found)
    )
    assert logs["compiled"] == logs["pure"]
