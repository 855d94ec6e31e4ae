"""What the bench measures: implementations, scenarios and result records.

Kept free of process handling and rendering so that the matrix can be read
(and changed) in one place.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
SERVERS = BENCH / "servers"
VENV_CY = BENCH / ".venv-cy" / "bin" / "python"
VENV_PYASYNCORE = BENCH / ".venv-pyasyncore" / "bin" / "python"

ALL_MODES = frozenset({"echo", "lines", "bulk", "slowsend"})
# The timers group's servers (issue 14): echo with a 60 s idle timeout per
# connection, on cyasyncore's timers or asyncio's call_later ("echo-timer"),
# or 3.11's idiom of a sweep over the map once a second ("echo-sweep").
TIMER_MODES = frozenset({"echo-timer", "echo-sweep"})
# Every measured run of the timers group lasts at least this, whatever the
# settings: one run then holds a sweep (the quick bench's 150 ms runs would
# hold one now and then, so its sweep row said little).
SWEEP_PHASE_MS = 1000


@dataclass(frozen=True)
class Implementation:
    name: str
    description: str
    # argv of the server for a protocol mode (see bench/c/echo_server.c)
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    modes: frozenset[str] = ALL_MODES
    # scenario groups this implementation takes part in; None means all
    groups: frozenset[str] | None = None
    # asyncore.CORE the server must report ("compiled"/"pure"), checked
    # before running so that a missing extension can't pass for the real one
    expect_core: str | None = None

    def argv(self, mode: str) -> list[str]:
        return [part.format(mode=mode) for part in self.command]

    def environ(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("ASYNCORE_NO_EXTENSIONS", None)
        env.update(self.env)
        return env

    def runs(self, scenario: Scenario) -> bool:
        if scenario.server_mode not in self.modes:
            return False
        return self.groups is None or scenario.group in self.groups


def _asyncore(python: Path, *flags: str) -> tuple[str, ...]:
    return (str(python), "-P", str(SERVERS / "asyncore_server.py"), "{mode}", *flags)


IMPLEMENTATIONS = (
    Implementation("c", "C epoll server: what this machine can do",
                   (str(BUILD / "echo_server"), "{mode}")),
    Implementation("compiled", "cyasyncore, compiled core, select loop (use_poll=False)",
                   _asyncore(VENV_CY), expect_core="compiled", modes=ALL_MODES | TIMER_MODES),
    Implementation("compiled-poll", "cyasyncore, compiled core, poll loop (use_poll=True)",
                   _asyncore(VENV_CY, "--use-poll"), expect_core="compiled",
                   modes=ALL_MODES | TIMER_MODES),
    Implementation("pure", "cyasyncore, pure core (ASYNCORE_NO_EXTENSIONS=1), select loop",
                   _asyncore(VENV_CY), env=(("ASYNCORE_NO_EXTENSIONS", "1"),),
                   expect_core="pure"),
    # The select loop cannot hold 10,000 descriptors, so the idle table has
    # the pure core's poll loop as well, as the baseline it can be compared to.
    Implementation("pure-poll", "cyasyncore, pure core, poll loop (use_poll=True)",
                   _asyncore(VENV_CY, "--use-poll"), env=(("ASYNCORE_NO_EXTENSIONS", "1"),),
                   groups=frozenset({"idle", "timers"}), expect_core="pure",
                   modes=ALL_MODES | TIMER_MODES),
    Implementation("pyasyncore", "PyPI pyasyncore/pyasynchat (3.11's code), select loop",
                   _asyncore(VENV_PYASYNCORE)),
    # The asyncio rows place the asyncore figures among today's alternatives;
    # the asynchat- and dispatcher_with_send-specific scenarios (bulk through a
    # numeric terminator, slow send) compare asyncore implementations and C.
    Implementation("asyncio", "asyncio Protocol",
                   (str(VENV_CY), "-P", str(SERVERS / "asyncio_protocol_server.py"), "{mode}"),
                   groups=frozenset({"echo", "idle", "lines", "churn"})),
    Implementation("asyncio-streams", "asyncio streams (StreamReader/StreamWriter)",
                   (str(VENV_CY), "-P", str(SERVERS / "asyncio_streams_server.py"), "{mode}"),
                   groups=frozenset({"echo", "idle", "churn"})),
    Implementation("uvloop", "uvloop, asyncio Protocol",
                   (str(VENV_CY), "-P", str(SERVERS / "asyncio_protocol_server.py"), "{mode}",
                    "--uvloop"),
                   groups=frozenset({"echo", "idle", "lines", "churn", "timers"}),
                   modes=ALL_MODES | {"echo-timer"}),
)
IMPL_BY_NAME = {impl.name: impl for impl in IMPLEMENTATIONS}
REFERENCE = "c"
# 3.11's code, the figure users compare a drop-in with.
BASELINE = "pyasyncore"
# What the tables' ratios are taken against, besides C.
COMPARED_WITH = (BASELINE, "uvloop", REFERENCE)

# The names the plots print: ours say cyasyncore.
LABELS = {
    "c": "C epoll (reference)",
    "compiled": "cyasyncore compiled",
    "compiled-poll": "cyasyncore compiled, use_poll",
    "pure": "cyasyncore pure",
    "pure-poll": "cyasyncore pure, use_poll",
    "pyasyncore": "pyasyncore (3.11's code)",
    "asyncio": "asyncio Protocol",
    "asyncio-streams": "asyncio streams",
    "uvloop": "uvloop",
}


def ours(name: str) -> bool:
    """Whether the implementation is cyasyncore (either core)."""
    impl = IMPL_BY_NAME.get(name)
    return impl is not None and impl.expect_core is not None


def label(name: str) -> str:
    return LABELS.get(name, name)


def baseline_for(scenario: Scenario) -> tuple[str, ...]:
    """Names of the rows a scenario's first ratio is taken against, in order
    of preference (the first one that has a figure wins): 3.11's code."""
    return (BASELINE,)


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str              # echo, idle, lines, bulk, slowsend, churn
    title: str
    server_mode: str
    conns: int = 1
    size: int = 64
    idle: int = 0
    rcvbuf: int = 0
    phase_arg: int = 0      # slowsend: bytes per transfer
    # Shortest measured run: the timers group's sweep happens once a second,
    # so a shorter run would mostly miss it (and its cost).
    min_phase_ms: int = 0
    unit: str = "op"        # what one counted unit is ("rt", "line", "MB", ...)
    rate_unit: str = "op/s"
    per_mb: bool = False    # units are megabytes moved rather than operations
    has_latency: bool = False

    def loadgen_args(self) -> list[str]:
        # The timers group's servers speak echo.
        mode = "echo" if self.group == "timers" else self.server_mode
        args = ["--mode", "churn" if self.group == "churn" else mode,
                "--conns", str(self.conns), "--size", str(self.size)]
        if self.idle:
            args += ["--idle", str(self.idle)]
        if self.rcvbuf:
            args += ["--rcvbuf", str(self.rcvbuf)]
        return args

    def fds_needed(self) -> int:
        # Each end holds every connection; a few more for stdio, the listener,
        # the poller and what the interpreter opens.
        return self.idle + self.conns + 32


def _size_label(size: int) -> str:
    if size >= 1 << 20:
        return f"{size >> 20}M"
    if size >= 1 << 10:
        return f"{size >> 10}K"
    return str(size)


def scenarios(full: bool) -> list[Scenario]:
    out = []
    for conns in (1, 100):
        for size in (64, 16384):
            out.append(Scenario(
                f"echo-{conns}x{_size_label(size)}", "echo",
                f"ping-pong echo, {conns} connection{'s' * (conns > 1)}, {_size_label(size)}B",
                "echo", conns=conns, size=size, unit="rt", rate_unit="rt/s", has_latency=True))
    for idle in (0, 1000, 10000, 20000):
        out.append(Scenario(
            f"idle-{idle}", "idle", f"1 active 64 B ping-pong + {idle:,} idle connections",
            "echo", idle=idle, unit="rt", rate_unit="rt/s", has_latency=True))
    # Timers (issue 14): the idle-10000 run again with a 60 s idle timer per
    # connection, reset on every message of the active one; and with 3.11's
    # sweep of the map once a second instead of timers.
    for mode, what in (("echo", "no timers"), ("echo-timer", "a 60 s idle timer each"),
                       ("echo-sweep", "3.11 idiom: the map swept once a second")):
        out.append(Scenario(
            f"timers-10000-{mode.partition('-')[2] or 'none'}", "timers",
            f"1 active 64 B ping-pong + 10,000 idle connections, {what}",
            mode, idle=10000, unit="rt", rate_unit="rt/s", has_latency=True,
            min_phase_ms=SWEEP_PHASE_MS))
    out.append(Scenario("lines", "lines", "pipelined 16 B lines, one reply per line",
                        "lines", unit="line", rate_unit="lines/s"))
    out.append(Scenario("bulk", "bulk", "1 MiB bodies behind a numeric terminator",
                        "bulk", size=1 << 20, unit="MB", rate_unit="MB/s", per_mb=True))
    sizes = (4, 16, 64) if full else (4, 8, 16)
    for mb in sizes:
        out.append(Scenario(
            f"slowsend-{mb}M", "slowsend",
            f"one send() of {mb} MiB to a reader with a 16 KiB receive buffer",
            "slowsend", rcvbuf=16384, phase_arg=mb << 20, unit="MB", rate_unit="MB/s",
            per_mb=True))
    out.append(Scenario("churn", "churn", "connect, one 64 B echo, close; 4 at a time",
                        "echo", conns=4, unit="conn", rate_unit="conn/s", has_latency=True))
    return out


GROUP_TITLES = {
    "echo": "Ping-pong echo",
    "idle": "Idle scaling: one active connection among idle ones",
    "lines": "asynchat: pipelined short lines",
    "bulk": "asynchat: bulk transfer through a numeric terminator",
    "slowsend": "dispatcher_with_send: one large send() to a slow reader",
    "churn": "Connection churn",
    "timers": "Idle timeouts: 10,000 idle connections with and without timers",
}


@dataclass
class Sample:
    """One measured phase."""

    ops: int
    bytes: int
    elapsed: float          # seconds, from the load generator's clock
    p50_us: float | None
    p99_us: float | None
    server_cpu: float       # seconds of CPU the server process used in the phase
    client_cpu: float       # seconds of CPU the load generator used
    other_share: float      # worst share of a bench core that other processes took


@dataclass
class Record:
    impl: str
    scenario: Scenario
    status: str = "ok"      # ok | n/a | failed
    reason: str = ""
    samples: list[Sample] = field(default_factory=list)
    rss_kib: int | None = None   # server's resident set after the last phase
    seconds: float = 0.0         # wall time the whole cell took, set-up included

    def units(self, s: Sample) -> float:
        return s.bytes / 1e6 if self.scenario.per_mb else s.ops

    def _median(self, values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.samples)

    @property
    def rate(self) -> float | None:
        return self._median(self.units(s) / s.elapsed for s in self.samples if s.elapsed > 0)

    @property
    def p50_us(self) -> float | None:
        return self._median(s.p50_us for s in self.samples)

    @property
    def p99_us(self) -> float | None:
        return self._median(s.p99_us for s in self.samples)

    @property
    def cpu_per_unit_us(self) -> float | None:
        """Server CPU per counted unit, in microseconds."""
        return self._median(s.server_cpu / self.units(s) * 1e6
                            for s in self.samples if self.units(s) > 0)

    @property
    def client_load(self) -> float | None:
        """Share of its core the load generator used (near 1.0 would make it
        the bottleneck)."""
        return self._median(s.client_cpu / s.elapsed for s in self.samples if s.elapsed > 0)

    @property
    def other_share(self) -> float:
        return max((s.other_share for s in self.samples), default=0.0)
