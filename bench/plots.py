"""PNG figures of a run (matplotlib, no display needed).

Each figure is meant to be read in a few seconds: cyasyncore's rows are
named so and drawn in blue, thick and bold, everything else in muted
colours; a cell that failed is drawn as a failure at its place, with the
reason in a few words; an axis whose values span decades is logarithmic.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from model import BASELINE, Record, label, ours  # noqa: E402
from report import NOISE_LIMIT, Table, ratio, short_reason, si  # noqa: E402

# One colour per implementation, the same in every figure: blues for ours,
# orange for 3.11's code (the comparison a drop-in answers to), greys and a
# muted purple for the rest.
COLOURS = {
    "c": "#3a3a3a",
    "compiled": "#08519c",
    "compiled-poll": "#3182bd",
    "pure": "#6baed6",
    "pure-poll": "#9ecae1",
    "pyasyncore": "#e6550d",
    "asyncio": "#a0a0a0",
    "asyncio-streams": "#cccccc",
    "uvloop": "#9e7bb5",
}
FAILED = "#c00000"

BAR_SCENARIOS = ("echo-1x64", "echo-1x16K", "echo-100x64", "echo-100x16K",
                 "lines", "bulk", "churn")
# A panel whose largest and smallest bars differ more than this is drawn on
# a log axis: on a linear one the small bars would all look alike.
LOG_SPAN = 20


def _colour(impl: str) -> str:
    return COLOURS.get(impl, "grey")


def _bold_ours(ax, impls: list[str], axis: str = "y") -> None:
    labels = ax.get_yticklabels() if axis == "y" else ax.get_xticklabels()
    for text, impl in zip(labels, impls, strict=True):
        if ours(impl):
            text.set_fontweight("bold")
            text.set_color(COLOURS["compiled"])


def throughput(table: Table, path: Path) -> None:
    _bars(table, path, "rate", lambda s: s.rate_unit,
          "Throughput per scenario: higher is better")


def server_cpu(table: Table, path: Path) -> None:
    _bars(table, path, "cpu_per_unit_us",
          lambda s: "server CPU ms/MB" if s.per_mb else f"server CPU µs/{s.unit}",
          "Server CPU per operation, from the kernel's accounting: lower is better",
          scale=lambda s: 1e-3 if s.per_mb else 1.0)


def _bars(table: Table, path: Path, metric: str, unit, title: str, scale=lambda s: 1.0) -> None:
    """One panel per scenario (their units differ), one horizontal bar per
    implementation; our bars carry their ratio to 3.11's code."""
    scenarios = [s for group in table.groups() for s in table.scenarios(group)
                 if s.name in BAR_SCENARIOS]
    if not scenarios:
        return
    cols = 3
    rows = (len(scenarios) + cols - 1) // cols
    most = max(len([r for r in table.records if r.scenario.name == s.name]) for s in scenarios)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, (0.32 * most + 1.3) * rows),
                             squeeze=False)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        recs = [r for r in table.records if r.scenario.name == scenario.name]
        impls = [r.impl for r in recs]
        values = [(getattr(r, metric) or 0) * scale(scenario) if r.ok else 0 for r in recs]
        shown = [v for v in values if v > 0]
        log = bool(shown) and max(shown) / min(shown) > LOG_SPAN
        ys = list(range(len(recs)))[::-1]   # the matrix's first row on top
        low = min(shown) / 3 if log else 0
        ax.barh(ys, [v - low if v else 0 for v in values], left=low,
                color=[_colour(i) for i in impls],
                edgecolor=["black" if ours(i) else "none" for i in impls], linewidth=0.8)
        base = table.value(BASELINE, scenario, metric)
        for y, value, rec in zip(ys, values, recs, strict=True):
            if not rec.ok:
                ax.text(low if log else 0, y, f"  ✕ {short_reason(rec)}", va="center",
                        fontsize=8, color=FAILED, fontweight="bold")
                continue
            text = f" {si(value)}"
            if ours(rec.impl) and base:
                text += f"  ({ratio(value / scale(scenario), base)}× {BASELINE})"
            if rec.other_share > NOISE_LIMIT:
                text += " ⚠"
            ax.text(value, y, text, va="center", fontsize=8,
                    fontweight="bold" if ours(rec.impl) else "normal")
        ax.set_yticks(ys, [label(i) for i in impls], fontsize=8)
        _bold_ours(ax, impls)
        top = max(shown, default=1)
        if log:
            ax.set_xscale("log")
            ax.set_xlim(low, top * 15)
        else:
            ax.set_xlim(0, top * 1.6)
        ax.set_title(f"{scenario.title}" + ("  (log scale)" if log else ""), fontsize=9)
        ax.set_xlabel(unit(scenario), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: si(v)))
        ax.grid(True, axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    fig.suptitle(f"{title}.  cyasyncore in blue (bold), its ratio to {BASELINE} "
                 "(3.11's code) in brackets; median of the measured runs\n"
                 f"⚠: other processes took over {NOISE_LIMIT:.0%} of a bench core during a run "
                 "of that cell", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _per_run(rec: Record, metric: str) -> list[float]:
    """The metric of each measured run of a cell."""
    if metric == "cpu_per_unit_us":
        return [s.server_cpu / rec.units(s) * 1e6 for s in rec.samples if rec.units(s) > 0]
    return [v for v in (getattr(s, metric) for s in rec.samples) if v is not None]


def idle_latency(table: Table, path: Path) -> None:
    """Latency and server CPU per round trip against the number of idle
    connections, one line per implementation; each point is the median of
    the runs, its bar their range, and a run disturbed by other processes
    is drawn hollow rather than hidden."""
    scenarios = table.scenarios("idle")
    impls = table.impls("idle")
    runnable = [s for s in scenarios
                if any(table.by_key.get((i, s.name)) and table.by_key[(i, s.name)].status != "n/a"
                       for i in impls)]
    not_runnable = [s for s in scenarios if s not in runnable]
    metrics = (("p50_us", "p50 latency (µs)"), ("p99_us", "p99 latency (µs)"),
               ("cpu_per_unit_us", "server CPU per round trip (µs)"))
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.2))
    for ax, (metric, ylabel) in zip(axes, metrics, strict=True):
        failures = []   # (impl, x, last good (x, y) or None, reason)
        for impl in impls:
            xs, ys, lows, highs, hollow, last = [], [], [], [], [], None
            for s in runnable:
                rec = table.by_key.get((impl, s.name))
                x = max(s.idle, 1)
                if rec is None:
                    continue
                if not rec.ok:
                    failures.append((impl, x, last, short_reason(rec)))
                    break   # a size it died at: larger ones say nothing more
                values = _per_run(rec, metric)
                median = getattr(rec, metric)
                if median is None or not values:
                    continue
                xs.append(x)
                ys.append(median)
                lows.append(median - min(values))
                highs.append(max(values) - median)
                hollow.append(rec.other_share > NOISE_LIMIT)
                last = (x, median)
            if not xs:
                continue
            mine = ours(impl)
            colour = _colour(impl)
            ax.plot(xs, ys, color=colour, linewidth=2.6 if mine else 1.2,
                    linestyle="--" if impl.endswith("poll") else "-", label=label(impl),
                    zorder=3 if mine else 2)
            ax.errorbar(xs, ys, yerr=[lows, highs], fmt="none", ecolor=colour, elinewidth=1,
                        capsize=3, zorder=3 if mine else 2)
            for x, y, empty in zip(xs, ys, hollow, strict=True):
                ax.plot([x], [y], marker="o", markersize=7 if mine else 5,
                        markerfacecolor="white" if empty else colour, markeredgecolor=colour,
                        zorder=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        bottom, top = ax.get_ylim()
        # Failures sit above every figure, at the size where they happened,
        # joined by a dotted line to the last size the implementation ran.
        mark_y = top * 1.8
        for n, (impl, x, last, reason) in enumerate(failures):
            y = mark_y * (1.9 ** n)
            if last:
                ax.plot([last[0], x], [last[1], y], linestyle=":", color=_colour(impl),
                        linewidth=1.5)
            ax.plot([x], [y], marker="X", markersize=11, color=FAILED, zorder=5)
            ax.annotate(f"{label(impl)}: {reason}", (x, y), xytext=(-8, 0),
                        textcoords="offset points", ha="right", va="center", fontsize=8,
                        color=FAILED, fontweight="bold")
        if failures:
            ax.set_ylim(bottom, mark_y * (1.9 ** len(failures)) * 1.5)
            ax.axhspan(mark_y / 1.35, ax.get_ylim()[1], color=FAILED, alpha=0.06, linewidth=0)
            ax.text(min(max(s.idle, 1) for s in runnable), mark_y / 1.3, " failed",
                    fontsize=8, color=FAILED, va="bottom")
        ticks = [max(s.idle, 1) for s in runnable]
        ax.set_xticks(ticks, [f"{t // 1000:,}k" if t >= 1000 else "0" for t in ticks])
        ax.set_xlim(min(ticks) / 2, max(ticks) * 2)
        ax.minorticks_off()
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: si(v)))
        ax.set_xlabel("idle connections (0 plotted at 1; log scale)")
        ax.set_ylabel(ylabel + ", log scale")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, loc="lower center", ncol=(len(labels) + 1) // 2,
                        fontsize=9, frameon=False)
    for text in legend.get_texts():
        if text.get_text().startswith("cyasyncore"):
            text.set_fontweight("bold")
    note = ("Each point: median of the measured runs; its bar: the range over the runs; "
            f"hollow: other processes took over {NOISE_LIMIT:.0%} of a bench core during a run. "
            "✕: the implementation failed at that size.")
    if not_runnable:
        reason = table.by_key.get((impls[0], not_runnable[0].name))
        note += (f"  Not runnable here: {', '.join(f'{s.idle:,}' for s in not_runnable)} idle"
                 f" ({reason.reason.split(';')[0] if reason else 'see RESULTS.md'}).")
    fig.text(0.5, 0.115, note, ha="center", fontsize=8.5, wrap=True)
    fig.suptitle("One active 64 B ping-pong connection among idle ones: lower is better; "
                 "cyasyncore in blue (thick)", fontsize=12)
    fig.tight_layout(rect=(0, 0.14, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def slowsend(table: Table, path: Path) -> None:
    """Server CPU for one large send() against its size, log-log: a slope of
    1 is linear in bytes, 2 quadratic."""
    scenarios = table.scenarios("slowsend")
    impls = table.impls("slowsend")
    fig, ax = plt.subplots(figsize=(8, 5.2))
    lows = []
    for impl in impls:
        points, failed = [], None
        for s in scenarios:
            rec = table.by_key.get((impl, s.name))
            if rec is None:
                continue
            if not rec.ok:
                failed = (s.phase_arg / 2**20, short_reason(rec))
                break
            points.append((s.phase_arg / 2**20, rec._median(x.server_cpu for x in rec.samples)))
        mine = ours(impl)
        if points:
            xs, ys = zip(*points, strict=True)
            ys = [y * 1000 for y in ys]
            lows.append(ys[0])
            k = table.slowsend_exponent(impl)
            ax.plot(xs, ys, marker="o", color=_colour(impl), linewidth=2.6 if mine else 1.2,
                    markersize=7 if mine else 5, zorder=3 if mine else 2,
                    label=label(impl) + ("" if k is None else f"  (size^{k:.2f})"))
        if failed:
            y = (ys[-1] if points else 1) * 2
            ax.plot([failed[0]], [y], marker="X", markersize=11, color=FAILED)
            ax.annotate(f"{label(impl)}: {failed[1]}", (failed[0], y), xytext=(-8, 0),
                        textcoords="offset points", ha="right", fontsize=8, color=FAILED)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = [s.phase_arg / 2**20 for s in scenarios]
    ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
    ax.minorticks_off()
    # Guides through the first point of the lowest line: what linear and
    # quadratic growth from there would look like.
    if lows and len(sizes) > 1:
        y0, x0 = min(lows), sizes[0]
        for power, style in ((1, ":"), (2, "--")):
            ax.plot(sizes, [y0 * (x / x0) ** power for x in sizes], style, color="grey",
                    linewidth=1, label=f"size^{power} guide")
    ax.set_xlabel("size of the one send() (MiB, log scale)")
    ax.set_ylabel("server CPU for the transfer (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    legend = ax.legend(fontsize=8)
    for text in legend.get_texts():
        if text.get_text().startswith("cyasyncore"):
            text.set_fontweight("bold")
    ax.set_title("Large send to a slow reader: slope 1 = linear, 2 = quadratic\n"
                 "cyasyncore in blue (thick); lower is better", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def all_plots(table: Table, folder: Path) -> list[Path]:
    made = []
    groups = set(table.groups())
    bars = {"echo", "lines", "bulk", "churn"}
    for name, draw, wanted in (("throughput.png", throughput, bars),
                               ("server_cpu.png", server_cpu, bars),
                               ("idle_latency.png", idle_latency, {"idle"}),
                               ("slowsend.png", slowsend, {"slowsend"})):
        if wanted & groups:
            draw(table, folder / name)
            made.append(folder / name)
    return made
