"""User-space instructions per round trip in the server, counted by callgrind.

    python bench/profile.py                      # what `make profile` runs
    python bench/profile.py --only echo-100x64 --impl pure --impl pyasyncore
    python bench/profile.py --jobs 1 --keep      # keep callgrind's dump files

Each cell runs one server (the asyncore documentation's echo server, or an
async_chat line echo) under ``valgrind --tool=callgrind`` with this script as
the client.  Instruction counts do not depend on what else the machine runs,
and three things make them repeat exactly from run to run:

- The counted part is bracketed inside the server: the client sends it
  SIGUSR1 to zero callgrind's counters and SIGUSR2 to dump them (through the
  client requests of bench/c/cgctl.c), each only while the server is blocked
  in its wait.  Start-up, imports and accepting the connections run
  uninstrumented and are never counted.
- Two windows of different lengths are counted in the same server and the
  figure is their difference divided by the extra round trips, so whatever a
  window costs at its edges (the signal handlers, the interrupted wait)
  cancels out.
- Every round starts when the server is blocked in its wait (read from
  /proc), so the wait always blocks.  With several connections the round is
  then written while the server is stopped (SIGSTOP), so each pass of the
  loop finds every connection's request waiting: how many channels one pass
  serves never depends on scheduling.

The figures therefore include the loop's own per-pass work amortised over
the channels the pass serves, and the interpreter's garbage collection (the
set-up's objects are frozen first, so a collection looks only at what the
measured traffic allocates).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import gc
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BUILD = BENCH / "build"
CGCTL_SOURCE = BENCH / "c" / "cgctl.c"
CGCTL = BUILD / "cgctl.so"
VENV_CY = BENCH / ".venv-cy" / "bin" / "python"
VENV_PYASYNCORE = BENCH / ".venv-pyasyncore" / "bin" / "python"
OUT = BENCH / "out"

# Generous: a server under callgrind runs some fifty times slower than native.
STEP_TIMEOUT = 300.0


# ------------------------------------------------------------------ server
#
# Runs under valgrind in the interpreter of the implementation measured: only
# the standard library and asyncore/asynchat are imported there.


def serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="profile.py serve")
    parser.add_argument("mode", choices=("echo", "lines"))
    parser.add_argument("--use-poll", action="store_true")
    parser.add_argument("--core", help="switch cyasyncore to this core after import")
    parser.add_argument("--cgctl", required=True)
    args = parser.parse_args(argv)

    import asynchat
    import asyncore

    if args.core:
        from asyncore import _core

        _core.use(args.core)
    core = getattr(asyncore, "CORE", "3.11")
    cg = ctypes.CDLL(args.cgctl)
    cg.cgctl_grow_stack()

    class EchoHandler(asyncore.dispatcher_with_send):
        # The echo server of the asyncore documentation, letter for letter.
        def handle_read(self):
            data = self.recv(8192)
            if data:
                self.send(data)

    class LineHandler(asynchat.async_chat):
        # Answers every line with itself.
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock)
            self.set_terminator(b"\n")

        def collect_incoming_data(self, data):
            self._collect_incoming_data(data)

        def found_terminator(self):
            self.push(self._get_data() + b"\n")

    handler = EchoHandler if args.mode == "echo" else LineHandler

    class Server(asyncore.dispatcher):
        def __init__(self):
            asyncore.dispatcher.__init__(self)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(4096)

        def handle_accept(self):
            # Set-up only (never counted): everything waiting in one pass, so
            # that a thousand idle connections do not take a thousand passes.
            while True:
                pair = self.accept()
                if pair is None:
                    return
                sock = pair[0]
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                handler(sock)

    started = False

    def zero(signum, frame):
        nonlocal started
        if not started:
            started = True
            # What the set-up made is never collected again: collections in
            # the windows look at the traffic's objects only, the same in
            # every window whatever the set-up left behind.
            gc.collect()
            gc.freeze()
            cg.cgctl_start()
        cg.cgctl_zero()
        os.write(1, b"Z\n")

    def dump(signum, frame):
        cg.cgctl_dump()
        os.write(1, b"D\n")

    signal.signal(signal.SIGUSR1, zero)
    signal.signal(signal.SIGUSR2, dump)
    server = Server()
    os.write(1, f"PORT {server.socket.getsockname()[1]} CORE {core}\n".encode())
    asyncore.loop(timeout=3600.0, use_poll=args.use_poll)
    return 0


# ------------------------------------------------------------------ driver


@dataclass(frozen=True)
class Impl:
    name: str
    description: str
    python: Path
    env: tuple[tuple[str, str], ...] = ()
    core_flag: str | None = None
    expect_core: str = ""


IMPLS = (
    Impl("pyasyncore", "PyPI pyasyncore/pyasynchat 1.0.5: 3.11's code", VENV_PYASYNCORE,
         expect_core="3.11"),
    Impl("compiled", "cyasyncore, compiled core", VENV_CY, expect_core="compiled"),
    Impl("pure", "cyasyncore, pure core (ASYNCORE_NO_EXTENSIONS=1)", VENV_CY,
         env=(("ASYNCORE_NO_EXTENSIONS", "1"),), expect_core="pure"),
    # The classes carry the compiled core's descriptors whenever the
    # extension imports, whichever core runs: the pure core then pays for them.
    Impl("pure-ext", "cyasyncore, pure core chosen at run time, extension importable",
         VENV_CY, core_flag="pure", expect_core="pure"),
)
IMPL_BY_NAME = {i.name: i for i in IMPLS}
BASELINE = "pyasyncore"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    mode: str           # echo | lines
    conns: int
    size: int
    idle: int = 0
    use_poll: bool = False
    warmup: int = 10    # rounds before the first window
    short: int = 10     # rounds in the first window
    long: int = 40      # rounds in the second window

    @property
    def loop(self) -> str:
        return "poll" if self.use_poll else "select"

    @property
    def key(self) -> str:
        return f"{self.name}/{self.loop}"


def scenarios() -> list[Scenario]:
    out = []
    for use_poll in (False, True):
        out += [
            Scenario("echo-1x64", "echo, 1 conn × 64 B", "echo", 1, 64,
                     use_poll=use_poll, warmup=50, short=50, long=250),
            Scenario("echo-100x64", "echo, 100 conn × 64 B", "echo", 100, 64,
                     use_poll=use_poll, warmup=5, short=5, long=25),
            Scenario("echo-100x16K", "echo, 100 conn × 16 KiB", "echo", 100, 16384,
                     use_poll=use_poll, warmup=5, short=5, long=25),
            Scenario("lines-100x64", "async_chat lines, 100 conn × 64 B", "lines", 100, 64,
                     use_poll=use_poll, warmup=5, short=5, long=25),
            # One round trip is one pass over every channel.
            Scenario("idle-1000", "1 active + 1,000 idle, per pass", "echo", 1, 64, idle=1000,
                     use_poll=use_poll, warmup=3, short=2, long=8),
        ]
    return out


class CellError(Exception):
    pass


def _task_states(pid: int) -> list[str]:
    states = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                # The state follows the command name, which is in parentheses.
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:
            pass
    return states


def _wait_state(proc: subprocess.Popen, wanted: str) -> None:
    """Until every thread of the server is in ``wanted`` (S: blocked, T: stopped)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise CellError(f"server exited with status {proc.returncode}")
        states = _task_states(proc.pid)
        if states and all(s == wanted for s in states):
            return
        if time.monotonic() > deadline:
            raise CellError(f"server never reached state {wanted} (states {states})")
        time.sleep(0.0005)


def _readline(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    if not line:
        raise CellError(f"server closed its output (status {proc.wait()})")
    return line.decode().strip()


def _recv_exactly(sock: socket.socket, n: int) -> None:
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise CellError("server closed a connection")
        n -= len(chunk)


class Client:
    def __init__(self, scen: Scenario, proc: subprocess.Popen, port: int):
        self.scen = scen
        self.proc = proc
        self.idle = []
        for _ in range(scen.idle):
            self.idle.append(socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT))
        self.active = []
        for _ in range(scen.conns):
            sock = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.active.append(sock)
        self.message = b"x" * (scen.size - 1) + b"\n"

    def rounds(self, n: int) -> None:
        # Every round starts with the server blocked in its wait: whether a
        # request is already there when the loop comes to wait changes what
        # a core does (the compiled one releases the GIL only to block), and
        # that must not depend on how the client and server were scheduled.
        size = len(self.message)
        if len(self.active) == 1:
            sock = self.active[0]
            for _ in range(n):
                _wait_state(self.proc, "S")
                sock.sendall(self.message)
                _recv_exactly(sock, size)
            return
        for _ in range(n):
            # Every request of the round is waiting before the server looks.
            _wait_state(self.proc, "S")
            os.kill(self.proc.pid, signal.SIGSTOP)
            _wait_state(self.proc, "T")
            for sock in self.active:
                sock.sendall(self.message)
            os.kill(self.proc.pid, signal.SIGCONT)
            for sock in self.active:
                _recv_exactly(sock, size)

    def window(self, n: int, dump_dir: Path) -> int:
        """Instructions the server spent on ``n`` rounds plus the window's edges."""
        before = set(dump_dir.iterdir())
        self._signal(signal.SIGUSR1, "Z")
        self.rounds(n)
        self._signal(signal.SIGUSR2, "D")
        new = sorted(set(dump_dir.iterdir()) - before)
        if len(new) != 1:
            raise CellError(f"expected one new callgrind dump, found {len(new)}")
        return _dump_total(new[0])

    def _signal(self, signum: int, ack: str) -> None:
        _wait_state(self.proc, "S")
        os.kill(self.proc.pid, signum)
        got = _readline(self.proc)
        if got != ack:
            raise CellError(f"server answered {got!r} to signal {signum}, not {ack!r}")

    def close(self) -> None:
        for sock in self.idle + self.active:
            sock.close()


def _dump_total(path: Path) -> int:
    text = path.read_text(errors="replace")
    found = re.search(r"^(?:totals|summary):\s*(\d+)", text, re.M)
    if not found:
        raise CellError(f"no totals in {path}")
    return int(found.group(1))


@dataclass
class Result:
    impl: str
    scen: Scenario
    per_rt: float | None = None
    error: str = ""
    seconds: float = 0.0
    windows: tuple[int, int] = (0, 0)


def run_cell(impl: Impl, scen: Scenario, keep: bool) -> Result:
    started = time.monotonic()
    dump_dir = Path(tempfile.mkdtemp(prefix=f"profile-{impl.name}-{scen.name}-{scen.loop}-"))
    env = dict(os.environ)
    env.pop("ASYNCORE_NO_EXTENSIONS", None)
    env.update(impl.env)
    # The same hashes, hence the same dict and set layouts, in every run.
    env["PYTHONHASHSEED"] = "0"
    argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={dump_dir}/callgrind.out",
            f"--log-file={dump_dir}/valgrind.log",
            str(impl.python), "-P", str(Path(__file__).resolve()), "serve", scen.mode,
            "--cgctl", str(CGCTL)]
    if scen.use_poll:
        argv.append("--use-poll")
    if impl.core_flag:
        argv += ["--core", impl.core_flag]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env,
                            preexec_fn=_raise_nofile)
    client = None
    result = Result(impl.name, scen)
    try:
        words = _readline(proc).split()
        if len(words) != 4 or words[0] != "PORT":
            raise CellError(f"unexpected first line from the server: {' '.join(words)!r}")
        if words[3] != impl.expect_core:
            raise CellError(f"server runs core {words[3]!r}, not {impl.expect_core!r}")
        client = Client(scen, proc, int(words[1]))
        client.rounds(scen.warmup)
        short = client.window(scen.short, dump_dir)
        long = client.window(scen.long, dump_dir)
        result.windows = (short, long)
        result.per_rt = (long - short) / ((scen.long - scen.short) * scen.conns)
    except (CellError, OSError) as exc:
        result.error = str(exc)
        log = dump_dir / "valgrind.log"
        if log.exists():
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            result.error += "".join(f"\n    {line}" for line in tail)
    finally:
        if client is not None:
            client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        if keep:
            print(f"kept {dump_dir}", file=sys.stderr)
        else:
            shutil.rmtree(dump_dir, ignore_errors=True)
    result.seconds = time.monotonic() - started
    return result


def _raise_nofile() -> None:
    # A thousand idle connections need more than the usual 1,024 descriptors
    # of the soft limit (valgrind keeps some of its own at the top of it).
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_cgctl() -> None:
    BUILD.mkdir(exist_ok=True)
    if CGCTL.exists() and CGCTL.stat().st_mtime >= CGCTL_SOURCE.stat().st_mtime:
        return
    subprocess.run(["cc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(CGCTL),
                    str(CGCTL_SOURCE)], check=True)


# --------------------------------------------------------------- rendering


def fmt(n: float | None) -> str:
    if n is None:
        return "–"
    if abs(n) >= 1e6:
        return f"{n / 1e6:.2f}M"
    if abs(n) >= 1e3:
        return f"{n / 1e3:.1f}k"
    # An idle channel the compiled core never asks costs nothing; the
    # difference of two counts can then come out a few instructions either way.
    return f"{max(n, 0):.0f}"


def table(results: list[Result], impls: list[Impl]) -> tuple[list[str], list[list[str]]]:
    by = {(r.impl, r.scen.key): r for r in results}
    header = ["scenario", "loop"] + [i.name for i in impls]
    rows = []
    keys = []
    for r in results:
        if r.scen.key not in keys:
            keys.append(r.scen.key)
    scen_by_key = {r.scen.key: r.scen for r in results}

    def cells(values: dict[str, float | None]) -> list[str]:
        base = values.get(BASELINE)
        out = []
        for impl in impls:
            v = values.get(impl.name)
            text = fmt(v)
            if v is not None and base and impl.name != BASELINE and v >= 1:
                text += f" ({v / base:.2f}×)"
            out.append(text)
        return out

    for key in keys:
        scen = scen_by_key[key]
        values = {}
        for impl in impls:
            r = by.get((impl.name, key))
            values[impl.name] = r.per_rt if r else None
        rows.append([scen.title, scen.loop] + cells(values))
        if scen.idle:
            # What one idle channel adds to a pass: against the same loop's
            # single-connection echo, which is this scenario without them.
            alone = next((k for k in keys if scen_by_key[k].name == "echo-1x64"
                          and scen_by_key[k].loop == scen.loop), None)
            per = {}
            for impl in impls:
                r, a = by.get((impl.name, key)), by.get((impl.name, alone))
                per[impl.name] = ((r.per_rt - a.per_rt) / scen.idle
                                  if r and a and r.per_rt is not None
                                  and a.per_rt is not None else None)
            rows.append([f"per idle channel per pass ({scen.idle:,} idle)", scen.loop]
                        + cells(per))
    return header, rows


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _version(python: Path, code: str) -> str:
    out = subprocess.run([str(python), "-P", "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def markdown_section(header, rows, impls: list[Impl], wall: float) -> str:
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True,
                              text=True).stdout.strip()
    python = _version(VENV_CY, "import sys; print(sys.version.split()[0])")
    described = "; ".join(f"`{i.name}`: {i.description}" for i in impls)
    return "\n".join([
        "## Instructions per round trip (`make profile`)",
        "",
        f"Written by `bench/profile.py` on {date} ({wall:.0f} s; Python {python}, {valgrind}). "
        "User-space instructions the server process executes per round trip, counted by "
        "callgrind; in parentheses the ratio to pyasyncore's. The counts do not depend on the "
        "machine's load: two windows of different lengths are counted inside one server and "
        "differenced, and with 100 connections every pass finds every request waiting "
        "(see the docstring of bench/profile.py). Servers: the asyncore documentation's echo "
        "server (`dispatcher_with_send`, `recv(8192)`, `send`) and an `async_chat` line echo; "
        "the idle rows are one pass of the loop over 1 active and 1,000 idle connections, "
        "and what each idle connection adds to it.",
        "",
        described + ".",
        "",
        markdown_table(header, rows),
        "",
    ])


def splice(text: str, section: str) -> str:
    """``text`` with its profile section replaced by ``section`` (or added)."""
    from report import PROFILE_BEGIN, PROFILE_END

    block = f"{PROFILE_BEGIN}\n{section}{PROFILE_END}\n"
    start, end = text.find(PROFILE_BEGIN), text.find(PROFILE_END)
    if start != -1 and end != -1:
        return text[:start] + block + text[end + len(PROFILE_END):].lstrip("\n")
    return text.rstrip("\n") + "\n\n" + block


# -------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", metavar="SCENARIO",
                        help="scenario name (echo-1x64, echo-100x64, echo-100x16K, "
                             "lines-100x64, idle-1000); repeatable")
    parser.add_argument("--loop", choices=("select", "poll"), action="append",
                        help="only this loop (default both); repeatable")
    parser.add_argument("--impl", action="append", metavar="NAME",
                        help=f"implementation, repeatable: {', '.join(IMPL_BY_NAME)}")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="servers profiled at once (counts do not depend on it)")
    parser.add_argument("--keep", action="store_true", help="keep callgrind's dump files")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave bench/RESULTS.md alone")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for name in args.impl or ():
        if name not in IMPL_BY_NAME:
            sys.exit(f"unknown implementation {name!r}; known: {', '.join(IMPL_BY_NAME)}")
    impls = [i for i in IMPLS if not args.impl or i.name in args.impl]
    chosen = [s for s in scenarios()
              if (not args.only or s.name in args.only) and (not args.loop or s.loop in args.loop)]
    if not chosen:
        sys.exit(f"no scenario matches {args.only} {args.loop}")
    if shutil.which("valgrind") is None:
        sys.exit("error: valgrind is not installed (apt-get install valgrind)")
    build_cgctl()
    cells = [(i, s) for s in chosen for i in impls]
    # Long cells first, so that the pool never waits on one at the end.
    cells.sort(key=lambda c: (c[1].idle == 0, c[0].name == "compiled"))
    started = time.monotonic()
    results = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(run_cell, i, s, args.keep): (i, s) for i, s in cells}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            r = future.result()
            results.append(r)
            status = fmt(r.per_rt) if r.error == "" else "FAILED"
            print(f"[{done}/{len(cells)}] {r.impl:10} {r.scen.key:20} {status:>8} "
                  f"({r.seconds:.0f} s)", file=sys.stderr, flush=True)
    wall = time.monotonic() - started
    order = {(i.name, s.key): n for n, (i, s) in enumerate((i, s) for s in chosen for i in impls)}
    results.sort(key=lambda r: order[(r.impl, r.scen.key)])
    header, rows = table(results, impls)
    print(text_table(header, rows))
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"FAILED {r.impl} {r.scen.key}: {r.error}", file=sys.stderr)
    OUT.mkdir(exist_ok=True)
    (OUT / "profile.json").write_text(json.dumps(
        [{"impl": r.impl, "scenario": r.scen.key, "per_rt": r.per_rt, "windows": r.windows,
          "rounds": (r.scen.short, r.scen.long), "conns": r.scen.conns, "error": r.error}
         for r in results], indent=1))
    complete = not (args.only or args.loop or args.impl or failed)
    if complete and not args.no_write:
        results_md = BENCH / "RESULTS.md"
        old = results_md.read_text() if results_md.exists() else "# Benchmark results\n"
        results_md.write_text(splice(old, markdown_section(header, rows, impls, wall)))
        print(f"\nwrote the profile section of {results_md}")
    print(f"{wall:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(serve(sys.argv[2:]))
    sys.exit(main())
