"""Benchmark driver: every implementation through every scenario, one run.

    python bench/run.py --quick            # what `make bench` runs
    python bench/run.py --full             # `make bench-full`: more and longer runs
    python bench/run.py --only echo-1x64 --impl compiled --impl c
    python bench/run.py --from-json bench/out/results.json   # re-render only
    python bench/run.py --full --record    # `make bench-record`

Needs the set-up of bench/setup.sh (virtual environments, C programs).  A run
writes RESULTS.md, the PNG plots and results.json under bench/out/, which git
ignores.  Only --record (a whole matrix, measured now or read back with
--from-json) rewrites the committed copies: bench/RESULTS.md, the plots
beside it and the table in README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import measure
import plots
import report
from model import (
    BENCH,
    IMPL_BY_NAME,
    IMPLEMENTATIONS,
    SWEEP_PHASE_MS,
    VENV_CY,
    VENV_PYASYNCORE,
    Record,
    Sample,
    Scenario,
    scenarios,
)

OUT = BENCH / "out"
README = BENCH.parent / "README.md"


@dataclasses.dataclass(frozen=True)
class Settings:
    name: str
    warmups: int
    warmup_ms: int
    runs: int
    phase_ms: int
    setup_budget: float   # seconds a server gets to accept its idle connections

    def describe(self) -> str:
        return (f"{self.name}: {self.warmups} warm-up run of {self.warmup_ms} ms + "
                f"{self.runs} measured runs of {self.phase_ms} ms per cell, in a fresh server "
                f"(slow send: one transfer per run; timers: runs of at least "
                f"{SWEEP_PHASE_MS} ms, so that each holds one sweep of the map); at most "
                f"{self.setup_budget:.0f} s to open the idle connections")


QUICK = Settings("quick", warmups=1, warmup_ms=100, runs=3, phase_ms=150, setup_budget=8)
FULL = Settings("full", warmups=1, warmup_ms=500, runs=5, phase_ms=1000, setup_budget=120)


class Progress:
    """A one-line progress bar on a terminal, a line per step otherwise."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        elapsed = time.monotonic() - self.start
        width = 30
        filled = width * self.done // max(self.total, 1)
        bar = "█" * filled + "░" * (width - filled)
        text = f"[{bar}] {self.done}/{self.total} {elapsed:5.0f}s  {label}"
        if self.tty:
            sys.stderr.write("\r\033[K" + text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        self.done = self.total
        self.step("done")
        if self.tty:
            sys.stderr.write("\n")


def core_check(impl) -> str | None:
    """None when the implementation's server imports the core it claims to
    run, else the reason it doesn't."""
    if impl.expect_core is None:
        return None
    python = impl.argv("echo")[0]
    try:
        out = subprocess.run([python, "-P", "-c", "import asyncore; print(asyncore.CORE)"],
                             env=impl.environ(), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {python}: {exc}"
    core = out.stdout.strip()
    if out.returncode or core != impl.expect_core:
        detail = (out.stderr.strip().splitlines() or [core])[-1]
        return f"asyncore.CORE is not {impl.expect_core!r}: {detail}"
    return None


def _version(python: Path, code: str) -> str:
    try:
        out = subprocess.run([str(python), "-P", "-c", code], capture_output=True, text=True,
                             timeout=30)
        return out.stdout.strip() or out.stderr.strip().splitlines()[-1]
    except (OSError, subprocess.TimeoutExpired, IndexError) as exc:
        return f"unknown ({exc})"


def machine_info() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    meta_version = "import importlib.metadata as m; print(m.version({!r}))"
    cc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "commit": git_commit(),
        "machine": (f"{model}, {os.cpu_count()} cores; server pinned to CPU "
                    f"{measure.SERVER_CPU}, load generator to CPU {measure.LOADGEN_CPU}"),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": _version(VENV_CY, "import sys; print(sys.version.split()[0])"),
        "cyasyncore": _version(VENV_CY, "import importlib.metadata as m, asyncore; "
                                        "print(m.version('cyasyncore'), 'core:', asyncore.CORE)"),
        "pyasyncore / pyasynchat": " / ".join(
            _version(VENV_PYASYNCORE, meta_version.format(p)) for p in ("pyasyncore",
                                                                        "pyasynchat")),
        "uvloop": importlib.metadata.version("uvloop"),
        "C compiler": (cc.splitlines() or ["unknown"])[0],
        "RLIMIT_NOFILE": f"{measure.NOFILE_HARD:,} (hard limit, raised to in every process)",
    }


def git_commit() -> str:
    """The commit the bench's build came from, and whether the tree differed."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BENCH.parent, capture_output=True,
                              text=True, timeout=30).stdout.strip()
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        # What is measured: the package and the servers, not the reporting.
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "setup.py",
                    "pyproject.toml", "bench/c", "bench/servers")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head and dirty:
        return f"{head} (measured code had uncommitted changes)"
    return head or "unknown"


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def update_readme(block: str) -> bool:
    """Put the recorded table between the README's markers; False when the
    README has none."""
    text = README.read_text()
    start, end = text.find(report.README_START), text.find(report.README_END)
    if start < 0 or end < start:
        return False
    README.write_text(text[:start] + block + text[end + len(report.README_END):])
    return True


def targets_text(table: report.Table) -> str:
    """The figures the issue asks the closing note to report."""
    lines = []
    si = report.si

    def cpu(impl, scen):
        return table.value(impl, next(s for s in table.scenarios(scen.split("-")[0])
                                      if s.name == scen), "cpu_per_unit_us") \
            if any(s.name == scen for g in table.groups() for s in table.scenarios(g)) else None

    for scen in ("echo-1x64", "echo-100x64"):
        for impl in ("compiled", "compiled-poll"):
            mine, c, uv = cpu(impl, scen), cpu("c", scen), cpu("uvloop", scen)
            if mine is None:
                continue
            lines.append(
                f"- **{scen}, server CPU per round trip**, `{impl}`: {si(mine)} µs; "
                f"C {si(c)} µs ({report.ratio(mine, c)}× C); "
                f"uvloop {si(uv)} µs ({report.ratio(mine, uv)}× uvloop)")
    scen_by_name = {s.name: s for g in table.groups() for s in table.scenarios(g)}
    if "idle-10000" in scen_by_name:
        for impl in ("compiled", "compiled-poll", "uvloop", "c"):
            rec = table.by_key.get((impl, "idle-10000"))
            none = table.value(impl, scen_by_name["idle-0"], "p50_us") \
                if "idle-0" in scen_by_name else None
            if rec is None:
                continue
            if not rec.ok:
                lines.append(f"- **p50 with 10,000 idle**, `{impl}`: {rec.status}: {rec.reason}")
                continue
            lines.append(f"- **p50 with 10,000 idle vs none**, `{impl}`: {si(rec.p50_us)} µs "
                         f"vs {si(none)} µs ({report.ratio(rec.p50_us, none)}×)")
    if "lines" in scen_by_name:
        s = scen_by_name["lines"]
        py_rate = table.value("pyasyncore", s, "rate")
        py_cpu = table.value("pyasyncore", s, "cpu_per_unit_us")
        for impl in ("compiled", "compiled-poll"):
            rate, c = table.value(impl, s, "rate"), table.value(impl, s, "cpu_per_unit_us")
            if rate is None:
                continue
            lines.append(f"- **pipelined lines through async_chat**, `{impl}`: {si(rate)} lines/s "
                         f"vs pyasynchat {si(py_rate)} ({report.ratio(rate, py_rate)}×); "
                         f"server CPU {si(c)} µs/line vs {si(py_cpu)} "
                         f"({report.ratio(c, py_cpu)}×)")
    for impl in ("compiled", "compiled-poll", "pure", "pyasyncore"):
        k = table.slowsend_exponent(impl)
        if k is not None:
            verdict = "linear in bytes: met" if k < 1.25 else "not linear"
            if impl in ("pure", "pyasyncore"):
                verdict = report.growth(k)
            lines.append(f"- **slow-reader send**, `{impl}`: server CPU ∝ size^{k:.2f} "
                         f"({verdict})")
    return "\n".join(lines)


def save_json(records: list[Record], meta: dict[str, str], settings: str, path: Path) -> None:
    data = [{"impl": r.impl, "scenario": dataclasses.asdict(r.scenario), "status": r.status,
             "reason": r.reason, "rss_kib": r.rss_kib, "seconds": r.seconds,
             "samples": [dataclasses.asdict(s) for s in r.samples]} for r in records]
    path.write_text(json.dumps({"meta": meta, "settings": settings, "records": data}, indent=1))


def load_json(path: Path) -> tuple[list[Record], dict[str, str], str]:
    """Records, machine and version facts, and settings of a saved run."""
    data = json.loads(path.read_text())
    records = []
    for item in data["records"]:
        records.append(Record(item["impl"], Scenario(**item["scenario"]), item["status"],
                              item["reason"], [Sample(**s) for s in item["samples"]],
                              item["rss_kib"], item.get("seconds", 0.0)))
    return records, data["meta"], data["settings"]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the short version (default)")
    mode.add_argument("--full", action="store_true", help="more, longer runs; larger sizes")
    parser.add_argument("--only", action="append", metavar="SCENARIO",
                        help="scenario name or group (echo, idle, lines, bulk, slowsend, "
                             "churn); repeatable")
    parser.add_argument("--impl", action="append", metavar="NAME",
                        help=f"implementation, repeatable: {', '.join(IMPL_BY_NAME)}")
    parser.add_argument("--runs", type=int, help="measured runs per cell")
    parser.add_argument("--from-json", type=Path, help="re-render a saved run, measure nothing")
    parser.add_argument("--out", type=Path, help="folder for RESULTS.md and plots "
                        "(default bench/out/)")
    parser.add_argument("--record", action="store_true",
                        help="write the committed copies: bench/RESULTS.md, bench/*.png and "
                             "README.md's table (a whole matrix only)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = FULL if args.full else QUICK
    if args.runs:
        settings = dataclasses.replace(settings, runs=args.runs)
    filtered = bool(args.only or args.impl)
    if args.record and (filtered or args.out):
        sys.exit("--record writes the committed results: it takes the whole matrix and "
                 "no --out")
    out = BENCH if args.record else args.out or OUT
    OUT.mkdir(exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    if args.from_json:
        # The facts of the run as it was measured, not of this machine now.
        records, meta, described = load_json(args.from_json)
    else:
        for name in args.impl or ():
            if name not in IMPL_BY_NAME:
                sys.exit(f"unknown implementation {name!r}; known: {', '.join(IMPL_BY_NAME)}")
        impls = [i for i in IMPLEMENTATIONS if not args.impl or i.name in args.impl]
        chosen = [s for s in scenarios(args.full)
                  if not args.only or s.name in args.only or s.group in args.only]
        if not chosen:
            sys.exit(f"no scenario matches {args.only}")
        os.sched_setaffinity(0, {measure.LOADGEN_CPU})
        measure.install_signal_cleanup()
        cells = [(s, i) for s in chosen for i in impls if i.runs(s)]
        load_before = load_average()
        broken = {i.name: core_check(i) for i in impls}
        progress = Progress(len(cells))
        records = []
        started = time.monotonic()
        try:
            for scenario, impl in cells:
                progress.step(f"{impl.name} {scenario.name}")
                cell_start = time.monotonic()
                if broken[impl.name]:
                    records.append(Record(impl.name, scenario, "failed", broken[impl.name]))
                else:
                    records.append(measure.run(impl, scenario, settings.warmups,
                                               settings.runs,
                                               max(settings.phase_ms, scenario.min_phase_ms),
                                               settings.warmup_ms, settings.setup_budget))
                records[-1].seconds = time.monotonic() - cell_start
                progress.done += 1
            progress.finish()
        finally:
            measure.kill_children()
        wall = time.monotonic() - started
        meta = machine_info()
        meta["load average"] = f"{load_before} before the run, {load_average()} after"
        meta["bench wall time"] = f"{wall:.0f} s measuring"
        # `make bench` passes the time its set-up started.
        if os.environ.get("BENCH_T0"):
            total = time.time() - float(os.environ["BENCH_T0"])
            meta["bench wall time"] += f", {total:.0f} s in all with set-up"
        described = settings.describe()
        save_json(records, meta, described, OUT / "results.json")

    table = report.Table(records)
    md = report.markdown(table, meta, described, targets_text(table))
    (out / "RESULTS.md").write_text(report.keep_profile(out / "RESULTS.md", md))
    made = plots.all_plots(table, out)
    written = [out / "RESULTS.md", *made]
    if args.record:
        if not update_readme(report.readme_block(table, meta, described)):
            sys.exit(f"{README} has no {report.README_START!r} ... {report.README_END!r} "
                     "block to write the table into")
        written.append(README)
    here = Path.cwd()
    shown = [str(p.relative_to(here)) if p.is_relative_to(here) else str(p) for p in written]
    print(f"wrote {', '.join(shown)}")
    # The terminal's last screen is the summary (see report.terminal).
    print(report.terminal(table))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        measure.kill_children()
        sys.exit(130)
