"""Running one implementation through one scenario: processes and counters.

The server runs pinned to one core, the load generator (and this driver) to
the other.  The load generator is steered phase by phase over its stdin, and
the server's CPU time is read from the kernel's accounting right before and
right after each phase, when nothing is in flight.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from model import BUILD, Implementation, Record, Sample, Scenario

CPUS = sorted(os.sched_getaffinity(0))
LOADGEN_CPU = CPUS[0]
SERVER_CPU = CPUS[-1]
NOFILE_HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
START_TIMEOUT = 20.0      # seconds for a server to print its port
PHASE_SLACK = 60.0        # seconds a phase may overrun its nominal duration

# Every child still running; killed on any way out of the driver.
_children: list[subprocess.Popen] = []


class BenchError(Exception):
    """A run that could not be completed; the message says why."""


def kill_children() -> None:
    for proc in _children:
        if proc.poll() is None:
            proc.kill()
    for proc in _children:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    _children.clear()


def _pinned(cpu: int):
    def setup() -> None:
        os.sched_setaffinity(0, {cpu})
        # Idle scaling needs one descriptor per connection at both ends.
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_HARD, NOFILE_HARD))
    return setup


def _spawn(argv, cpu, env=None, stdin=None, stderr=None) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=stderr,
                            env=env, preexec_fn=_pinned(cpu))
    _children.append(proc)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        if stream:
            stream.close()
    if proc in _children:
        _children.remove(proc)


class LineReader:
    """Reads a child's stdout line by line, never waiting past a deadline."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.buffer = b""
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ)

    def readline(self, timeout: float) -> str | None:
        """The next line, or None when the child closed its stdout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"timed out after {timeout:.0f}s")
            if not self.selector.select(left):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def drain_in_background(self) -> None:
        """Keep reading (and dropping) the child's output, so that a server
        that logs to stdout can never block on a full pipe.  Only started once
        no more children will be spawned: preexec_fn and threads don't mix."""
        def drain():
            try:
                while os.read(self.proc.stdout.fileno(), 65536):
                    pass
            except (OSError, ValueError):
                pass
        threading.Thread(target=drain, daemon=True).start()

    def close(self) -> None:
        self.selector.close()


def task_cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process, in ns, from the scheduler's own
    accounting (finer than the clock-tick utime/stime in /proc/<pid>/stat)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
    except FileNotFoundError:
        pass
    return total


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return None


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds() -> dict[int, float]:
    """Busy time of each CPU (everything but idle and iowait), from /proc/stat."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *fields = line.split()
                values = [int(v) for v in fields[:8]]
                # user nice system idle iowait irq softirq steal
                busy[int(name[3:])] = (sum(values) - values[3] - values[4]) / _TICK
    return busy


@dataclass
class _Counters:
    wall: float
    server_ns: int
    loadgen_ns: int
    driver: float
    busy: dict[int, float]

    @classmethod
    def read(cls, server: int, loadgen: int) -> _Counters:
        return cls(time.monotonic(), task_cpu_ns(server), task_cpu_ns(loadgen),
                   time.process_time(), cpu_busy_seconds())


def _other_share(before: _Counters, after: _Counters) -> float:
    """The larger share of the server's or the load generator's core that
    went to processes other than the bench's own."""
    wall = after.wall - before.wall
    if wall <= 0:
        return 0.0
    server = (after.server_ns - before.server_ns) / 1e9
    loadgen = (after.loadgen_ns - before.loadgen_ns) / 1e9 + after.driver - before.driver
    ours = {SERVER_CPU: server, LOADGEN_CPU: loadgen}
    if SERVER_CPU == LOADGEN_CPU:
        ours = {SERVER_CPU: sum(ours.values())}
    worst = 0.0
    for cpu, own in ours.items():
        busy = after.busy.get(cpu, 0.0) - before.busy.get(cpu, 0.0)
        worst = max(worst, (busy - own) / wall)
    return min(max(worst, 0.0), 1.0)


def _tail(path: str, lines: int = 1) -> str:
    try:
        with open(path, errors="replace") as f:
            text = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return ""
    return " | ".join(text[-lines:])


def run(impl: Implementation, scenario: Scenario, warmups: int, runs: int,
        phase_ms: int, warmup_ms: int, setup_budget: float) -> Record:
    record = Record(impl.name, scenario)
    needed = scenario.fds_needed()
    if needed > NOFILE_HARD:
        record.status = "n/a"
        record.reason = (f"needs ~{needed:,} descriptors per process; the RLIMIT_NOFILE hard "
                         f"limit here is {NOFILE_HARD:,} and raising it needs CAP_SYS_RESOURCE")
        return record

    with tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".err", delete=False) as err:
        err_path = err.name
    server = loadgen = None
    readers = []
    try:
        with open(err_path, "wb") as err_file:
            server = _spawn(impl.argv(scenario.server_mode), SERVER_CPU, env=impl.environ(),
                            stdin=subprocess.DEVNULL, stderr=err_file)
        server_out = LineReader(server)
        readers.append(server_out)
        line = server_out.readline(START_TIMEOUT)
        if not line or not line.startswith("PORT "):
            raise BenchError(f"server did not start: {_tail(err_path) or line}")
        port = line.split()[1]

        loadgen = _spawn([str(BUILD / "loadgen"), "--port", port, *scenario.loadgen_args()],
                         LOADGEN_CPU, stdin=subprocess.PIPE)
        gen_out = LineReader(loadgen)
        readers.append(gen_out)
        server_out.drain_in_background()

        def expect_result(what: str, timeout: float) -> str:
            line = gen_out.readline(timeout)
            if line is None or line.startswith("{\"error\""):
                detail = json.loads(line)["error"] if line else "load generator exited"
                if server.poll() is not None:
                    detail = f"server exited: {_tail(err_path) or server.returncode}"
                raise BenchError(f"{what}: {detail}")
            return line

        # Set-up is bounded as a whole: a loop that pays for every open
        # descriptor on each pass accepts the idle connections ever slower.
        setup_start = time.monotonic()
        setup_deadline = setup_start + setup_budget
        opened, last_batch = 0, setup_start

        def too_slow(extra: str = "") -> BenchError:
            return BenchError(
                f"set-up too slow: {opened:,} of {scenario.idle:,} idle connections accepted "
                f"and answered in {time.monotonic() - setup_start:.1f}s{extra} "
                f"(budget {setup_budget:.0f}s)")

        while True:
            left = setup_deadline - time.monotonic()
            try:
                line = expect_result("set-up", max(left, 0.001))
            except BenchError as exc:
                if "timed out" not in str(exc):
                    raise
                raise too_slow() from None
            if line == "READY":
                break
            if line.startswith("IDLE "):
                now, done = time.monotonic(), int(line.split()[1])
                batch_rate = (done - opened) / max(now - last_batch, 1e-6)
                opened, last_batch = done, now
                # A loop that pays for every open descriptor on each pass only
                # slows down as connections pile up: give up as soon as even
                # the latest batch's rate cannot finish within the budget.
                eta = (scenario.idle - opened) / batch_rate
                if opened >= 1024 and now + eta > setup_deadline:
                    raise too_slow(f"; at the latest rate the rest needs {eta:.0f}s more")
        for phase in range(warmups + runs):
            before = _Counters.read(server.pid, loadgen.pid)
            duration = warmup_ms if phase < warmups else phase_ms
            loadgen.stdin.write(f"go {duration} {scenario.phase_arg}\n".encode())
            loadgen.stdin.flush()
            result = json.loads(expect_result("run", phase_ms / 1000 + PHASE_SLACK))
            after = _Counters.read(server.pid, loadgen.pid)
            if phase < warmups:
                continue
            record.samples.append(Sample(
                ops=result["ops"], bytes=result["bytes"], elapsed=result["elapsed_s"],
                p50_us=result["p50_us"] if result["p50_us"] >= 0 else None,
                p99_us=result["p99_us"] if result["p99_us"] >= 0 else None,
                server_cpu=(after.server_ns - before.server_ns) / 1e9,
                client_cpu=result["client_cpu_s"],
                other_share=_other_share(before, after)))
        record.rss_kib = rss_kib(server.pid)
        loadgen.stdin.write(b"quit\n")
        loadgen.stdin.flush()
    except (BenchError, BrokenPipeError) as exc:
        record.status = "failed"
        record.reason = str(exc)
        # A reset seen by the load generator usually means the server died;
        # give it a moment to finish writing why.
        if server is not None:
            try:
                server.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            if server.poll() is not None and _tail(err_path):
                record.reason = f"server exited: {_tail(err_path)}"
    finally:
        for reader in readers:
            reader.close()
        for proc in (loadgen, server):
            if proc is not None:
                _stop(proc)
        os.unlink(err_path)
    return record


def install_signal_cleanup() -> None:
    """Turn SIGTERM/SIGHUP into an exception so the finally blocks run."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
