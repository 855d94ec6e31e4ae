"""Rendering the records: terminal table, bench/RESULTS.md and the plots."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from model import (
    BASELINE,
    COMPARED_WITH,
    GROUP_TITLES,
    IMPL_BY_NAME,
    REFERENCE,
    Record,
    Scenario,
    baseline_for,
    label,
    ours,
)

NOISE_LIMIT = 0.20  # flag a run when others took more than this share of a bench core


def si(value: float | None) -> str:
    """Three significant digits with a k/M suffix."""
    if value is None:
        return "–"
    for factor, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return "–"
    r = value / base
    return f"{r:.2f}" if r < 10 else f"{r:.0f}" if r >= 100 else f"{r:.1f}"


class Table:
    """The records of one run, indexed for lookups by (impl, scenario)."""

    def __init__(self, records: Iterable[Record]):
        self.records = list(records)
        self.by_key = {(r.impl, r.scenario.name): r for r in self.records}

    def get(self, impl: str, scenario: Scenario | str) -> Record | None:
        name = scenario if isinstance(scenario, str) else scenario.name
        rec = self.by_key.get((impl, name))
        return rec if rec and rec.ok else None

    def value(self, impl: str, scenario: Scenario, metric: str) -> float | None:
        rec = self.get(impl, scenario)
        return getattr(rec, metric) if rec else None

    def baseline(self, scenario: Scenario, metric: str) -> float | None:
        for name in baseline_for(scenario):
            value = self.value(name, scenario, metric)
            if value is not None:
                return value
        return None

    def cell(self, rec: Record, metric: str, fmt=si) -> str:
        """A figure followed by its ratios to 3.11's code and to C."""
        value = getattr(rec, metric)
        if value is None:
            return "–"
        base = self.baseline(rec.scenario, metric)
        ref = self.value(REFERENCE, rec.scenario, metric)
        return f"{fmt(value)} ({ratio(value, base)} / {ratio(value, ref)})"

    def scenarios(self, group: str) -> list[Scenario]:
        seen = {}
        for rec in self.records:
            if rec.scenario.group == group:
                seen.setdefault(rec.scenario.name, rec.scenario)
        return list(seen.values())

    def impls(self, group: str | None = None) -> list[str]:
        """Implementations with records (in the group), in the matrix's order."""
        names = {r.impl for r in self.records if group is None or r.scenario.group == group}
        return [name for name in IMPL_BY_NAME if name in names]

    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.scenario.group for r in self.records))

    def idle_kib_per_conn(self, rec: Record) -> float | None:
        """Server memory per idle connection: RSS against the same server
        with no idle connection, over the number of idle connections."""
        if rec.scenario.group != "idle" or not rec.scenario.idle or rec.rss_kib is None:
            return None
        base = self.get(rec.impl, "idle-0")
        if not base or base.rss_kib is None:
            return None
        return (rec.rss_kib - base.rss_kib) / rec.scenario.idle

    def slowsend_exponent(self, impl: str) -> float | None:
        """k in cpu ∝ size^k, fitted through the smallest and largest transfer:
        1 means linear in bytes, 2 quadratic."""
        points = []
        for scenario in self.scenarios("slowsend"):
            rec = self.get(impl, scenario)
            cpu = rec and rec._median(s.server_cpu for s in rec.samples)
            if cpu:
                points.append((scenario.phase_arg, cpu))
        if len(points) < 2:
            return None
        (n0, c0), (n1, c1) = min(points), max(points)
        return math.log(c1 / c0) / math.log(n1 / n0)


def group_rows(table: Table, group: str) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and footnotes of one scenario group."""
    notes = []
    header = ["scenario", "implementation"]
    first = table.scenarios(group)[0]
    header.append(f"{first.rate_unit} (×{BASELINE} / ×C)")
    if first.has_latency:
        header += ["p50 µs", "p99 µs"]
    cpu_unit = "ms/MB" if first.per_mb else f"µs/{first.unit}"
    header.append(f"server CPU {cpu_unit}")
    if group == "idle":
        header.append("KiB/idle conn")
    header.append("loadgen CPU")
    rows = []
    for scenario in table.scenarios(group):
        for rec in table.records:
            if rec.scenario.name != scenario.name:
                continue
            row = [scenario.name, rec.impl]
            if not rec.ok:
                label = "not runnable" if rec.status == "n/a" else "failed"
                notes.append(f"{scenario.name} / {rec.impl}: {label}: {rec.reason}")
                rows.append(row + [f"{label} [{len(notes)}]"] + [""] * (len(header) - 3))
                continue
            row.append(table.cell(rec, "rate"))
            if scenario.has_latency:
                row += [table.cell(rec, "p50_us"), table.cell(rec, "p99_us")]
            if scenario.per_mb:
                row.append(table.cell(rec, "cpu_per_unit_us", lambda v: f"{v / 1000:.3g}"))
            else:
                row.append(table.cell(rec, "cpu_per_unit_us"))
            if group == "idle":
                kib = table.idle_kib_per_conn(rec)
                row.append("–" if kib is None else f"{kib:.2f}")
            load = rec.client_load
            row.append("–" if load is None else f"{load:.0%}")
            if rec.other_share > NOISE_LIMIT:
                notes.append(f"{scenario.name} / {rec.impl}: noisy: other processes took "
                             f"{rec.other_share:.0%} of a bench core during a run")
                row[1] += f" ⚠[{len(notes)}]"
            rows.append(row)
    return header, rows, notes


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], labels: int = 2) -> str:
    """A markdown table whose first `labels` columns are text, the rest numbers."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i < labels else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    def fmt(row):
        return "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def growth(k: float) -> str:
    return "linear" if k < 1.25 else "quadratic" if k > 1.6 else "superlinear"


def slowsend_summary(table: Table) -> list[list[str]]:
    rows = []
    for impl in table.impls("slowsend"):
        k = table.slowsend_exponent(impl)
        if k is not None:
            rows.append([impl, f"{k:.2f}", growth(k)])
    return rows


def health(table: Table) -> list[str]:
    """Whether the run can be trusted: the load generator's headroom, the C
    reference's lead, and how busy the rest of the machine was."""
    ok = [r for r in table.records if r.ok]
    if not ok:
        return []
    lines = []
    busiest = max(ok, key=lambda r: r.client_load or 0)
    lines.append(f"load generator: at most {busiest.client_load:.0%} of its core "
                 f"({busiest.scenario.name}, {busiest.impl})")
    wins, total, losses = 0, 0, []
    for group in table.groups():
        for scenario in table.scenarios(group):
            c_rate = table.value(REFERENCE, scenario, "rate")
            others = [(r.rate, r.impl) for r in ok
                      if r.scenario.name == scenario.name and r.impl != REFERENCE]
            if c_rate is None or not others:
                continue
            total += 1
            best, who = max(others)
            if c_rate >= best:
                wins += 1
            else:
                losses.append(f"{scenario.name}: {who} {si(best)} vs C {si(c_rate)}")
    lines.append(f"the C server is the fastest in {wins} of {total} scenarios"
                 + (f" (not in {'; '.join(losses)})" if losses else ""))
    noisy = [r for r in ok if r.other_share > NOISE_LIMIT]
    worst = max(r.other_share for r in ok)
    lines.append(f"other processes: {len(noisy)} of {len(ok)} cells flagged ⚠; at worst they "
                 f"took {worst:.0%} of a bench core during a run"
                 + (" — rates and latencies of this run are unreliable; the server-CPU "
                    "figures much less so" if len(noisy) > len(ok) // 4 else ""))
    return lines


def short_reason(rec: Record) -> str:
    """Why a cell has no figure, in a few words (plots and the README)."""
    if rec.status == "n/a":
        return "not runnable here"
    if "filedescriptor out of range" in rec.reason:
        return "died: fd ≥ 1024"
    if rec.reason.startswith("set-up too slow"):
        return "gave up: too slow"
    return "failed"


def better(metric: str) -> str:
    return "higher" if metric == "rate" else "lower"


def ratio_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Our headline figures over those of 3.11's code, uvloop and C."""
    header = ["figure", "ours", "value",
              *(f"×{'C' if name == REFERENCE else name}" for name in COMPARED_WITH)]
    rows = []
    for scenario, metric, title in HEADLINE:
        shown = f"{title} ({better(metric)} is better)"
        for impl in table.impls():
            rec = table.by_key.get((impl, scenario))
            if not ours(impl) or rec is None:
                continue
            if not rec.ok:
                rows.append([shown, impl, short_reason(rec), *[""] * len(COMPARED_WITH)])
            else:
                value = getattr(rec, metric)
                rows.append([shown, impl, si(value),
                             *(ratio(value, table.value(name, rec.scenario, metric))
                               for name in COMPARED_WITH)])
            shown = ""
    return header, rows


def legend(table: Table) -> list[str]:
    """What each implementation in the run is."""
    return [f"{name}: {IMPL_BY_NAME[name].description}" for name in table.impls()]


RATIO_NOTE = (f"our figure divided by theirs, measured in the same run; {BASELINE} is "
              "pyasyncore/pyasynchat from PyPI, CPython 3.11's code; a rate above 1 is faster "
              "than theirs, a CPU or latency figure below 1 is cheaper or quicker")


def terminal(table: Table) -> str:
    """Every table, then what a reader wants first: the run's health, the
    headline, what the names mean, and our figures as ratios."""
    out = []
    for group in table.groups():
        header, rows, notes = group_rows(table, group)
        out += ["", f"== {GROUP_TITLES[group]}", text_table(header, rows)]
        out += [f"  [{i}] {n}" for i, n in enumerate(notes, 1)]
        if group == "slowsend":
            out += ["", text_table(["implementation", "CPU ∝ size^k", "so"],
                                   slowsend_summary(table))]
    out += ["", "== Health of this run"] + [f"  {line}" for line in health(table)]
    out += ["", "== Headline", text_table(*headline_rows(table))]
    out += ["", "== The implementations"] + [f"  {line}" for line in legend(table)]
    out += ["", f"== Ours against pyasyncore, uvloop and C: {RATIO_NOTE}",
            text_table(*ratio_rows(table))]
    return "\n".join(out)


# The headline: the figures the README shows.
HEADLINE = (
    ("echo-1x64", "rate", "1 conn 64 B rt/s"),
    ("echo-100x64", "rate", "100 conn 64 B rt/s"),
    ("echo-1x64", "cpu_per_unit_us", "CPU µs/rt (1 conn)"),
    ("echo-100x64", "cpu_per_unit_us", "CPU µs/rt (100 conn)"),
    ("idle-10000", "p50_us", "p50 µs, 10k idle"),
    ("lines", "rate", "lines/s"),
)


def headline_rows(table: Table) -> tuple[list[str], list[list[str]]]:
    header = ["implementation", *(title for _, _, title in HEADLINE), "slow send CPU ∝ size^k"]
    rows = []
    for impl in table.impls():
        row = [impl]
        for scenario, metric, _ in HEADLINE:
            rec = table.by_key.get((impl, scenario))
            if rec is None:
                row.append("")
            elif not rec.ok:
                row.append(short_reason(rec))
            else:
                row.append(si(getattr(rec, metric)))
        k = table.slowsend_exponent(impl)
        row.append("" if k is None else f"{k:.2f}")
        rows.append(row)
    return header, rows


def headline(table: Table) -> str:
    return markdown_table(*headline_rows(table), labels=1)


# The README's table: (scenario, metric, column title); the idle column adds
# the same implementation's figure with no idle connection in brackets.
README_COLUMNS = (
    ("echo-1x64", "cpu_per_unit_us", "server CPU µs per round trip, 1 conn × 64 B"),
    ("echo-100x64", "cpu_per_unit_us", "same, 100 conn × 64 B"),
    ("idle-10000", "p50_us", "p50 µs, 1 active + 10,000 idle (none idle)"),
    ("lines", "rate", "async_chat lines/s (one reply per line)"),
)
README_IMPLS = ("c", "compiled", "compiled-poll", "pure", "pyasyncore", "asyncio", "uvloop")
README_START = "<!-- bench-table: written by make bench-record; do not edit by hand -->"
README_END = "<!-- /bench-table -->"


def readme_block(table: Table, meta: dict[str, str], settings: str) -> str:
    """The README's benchmark table with the facts of its run, between the
    markers that `bench/run.py --record` replaces."""
    header = ["implementation", *(title for _, _, title in README_COLUMNS),
              "slow-reader send: CPU ∝ size^k"]
    rows = []
    for impl in README_IMPLS:
        if impl not in table.impls():
            continue
        row = [f"**{label(impl)}**" if ours(impl) else label(impl)]
        for scenario, metric, _ in README_COLUMNS:
            rec = table.by_key.get((impl, scenario))
            if rec is None:
                row.append("")
                continue
            text = si(getattr(rec, metric)) if rec.ok else short_reason(rec)
            if scenario.startswith("idle-") and rec.ok:
                none = table.value(impl, table.get(impl, "idle-0").scenario, metric) \
                    if table.get(impl, "idle-0") else None
                text += f" ({si(none)})"
            row.append(text)
        k = table.slowsend_exponent(impl)
        row.append("" if k is None else f"{k:.2f}")
        rows.append(row)
    ok = [r for r in table.records if r.ok]
    noisy = sum(r.other_share > NOISE_LIMIT for r in ok)
    facts = (f"Recorded {meta.get('date', '?')} by `make bench-record` "
             f"({settings.split(':')[0]} settings, commit {meta.get('commit', 'not recorded')}): "
             f"{meta.get('machine', '?').split(';')[0]}, {meta.get('kernel', '?')}, "
             f"Python {meta.get('Python', '?')}; other processes disturbed {noisy} of "
             f"{len(ok)} cells (flagged in [bench/RESULTS.md](bench/RESULTS.md)).")
    return "\n".join([README_START, facts, "", markdown_table(header, rows, labels=1),
                      README_END])


def markdown(table: Table, meta: dict[str, str], settings: str, targets: str) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `bench/run.py` (`make bench-record` writes this copy; `make bench` and "
        "`make bench-full` write bench/out/); do not edit by hand.",
        "",
        *(f"- **{k}**: {v}" for k, v in meta.items()),
        f"- **settings**: {settings}",
        "",
        "Each server runs in its own process pinned to one core, the C load generator "
        "(`bench/c/loadgen.c`) pinned to the other. Figures are medians of the measured runs "
        "(after warm-up). *Server CPU* is the server process's own CPU time per operation "
        "from the kernel's scheduler accounting (`/proc/<pid>/task/*/schedstat`), which a busy "
        "neighbour disturbs far less than the wall-clock rates. In each cell, "
        f"`(a / b)` is the figure's ratio to {BASELINE}'s (3.11's code) and to the C server's, "
        "measured in the same run. *loadgen CPU* is the share of its core the load generator "
        "used: it stays well below 100% so it is not the bottleneck. "
        "⚠ marks runs during which other processes took more than "
        f"{NOISE_LIMIT:.0%} of a bench core (from `/proc/stat`).",
        "",
        "## Health of this run",
        "",
        *(f"- {line}" for line in health(table)),
        "",
        "## Headline",
        "",
        headline(table),
        "",
        "## The implementations",
        "",
        *(f"- `{line.split(':')[0]}`:{line.split(':', 1)[1]}" for line in legend(table)),
        "",
        "## Ours against pyasyncore, uvloop and C",
        "",
        RATIO_NOTE[0].upper() + RATIO_NOTE[1:] + ".",
        "",
        markdown_table(*ratio_rows(table)),
        "",
        "![throughput](throughput.png)",
        "",
        "![server CPU per operation](server_cpu.png)",
        "",
        "![latency against idle connections](idle_latency.png)",
        "",
        "![slow-reader send](slowsend.png)",
        "",
    ]
    if targets:
        lines += ["## Targets for the compiled core", "", targets, ""]
    for group in table.groups():
        header, rows, notes = group_rows(table, group)
        lines += ["", f"## {GROUP_TITLES[group]}", ""]
        scen = {s.name: s.title for s in table.scenarios(group)}
        lines += [f"- `{name}`: {title}" for name, title in scen.items()]
        lines += ["", markdown_table(header, rows)]
        if group == "idle":
            lines += ["", "*KiB/idle conn* is the server's resident memory with the idle "
                      "connections open less the same server's with none, per connection: "
                      "user-space memory only (kernel socket buffers are not in RSS). The C "
                      "server keeps the 4 KiB output buffer each connection's one-byte "
                      "handshake echo allocated."]
        if notes:
            lines.append("")
            lines += [f"{i}. {n}" for i, n in enumerate(notes, 1)]
        if group == "slowsend":
            lines += ["", "Growth of the server's CPU time with the size of the one send() "
                      "(k = 1: linear, k = 2: quadratic):", "",
                      markdown_table(["implementation", "CPU ∝ size^k", "so"],
                                     slowsend_summary(table), labels=1)]
    return "\n".join(lines) + "\n"


# `make profile` (bench/profile.py) keeps its table in RESULTS.md between
# these markers; a bench run rewrites everything else and carries it over.
PROFILE_BEGIN = "<!-- make profile: begin -->"
PROFILE_END = "<!-- make profile: end -->"


def keep_profile(path, md: str) -> str:
    """``md`` followed by the profile section of the file at ``path``, if any."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        return md
    start, end = old.find(PROFILE_BEGIN), old.find(PROFILE_END)
    if start == -1 or end == -1:
        return md
    return md.rstrip("\n") + "\n\n" + old[start : end + len(PROFILE_END)] + "\n"
