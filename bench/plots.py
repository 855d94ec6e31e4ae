"""PNG figures of a run (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from report import Table, si  # noqa: E402

# One colour per implementation, the same in every figure.
COLOURS = {
    "c": "#444444",
    "compiled": "#1f77b4",
    "compiled-poll": "#6baed6",
    "pure": "#d62728",
    "pure-poll": "#ff9896",
    "pyasyncore": "#ff7f0e",
    "asyncio": "#2ca02c",
    "asyncio-streams": "#98df8a",
    "uvloop": "#9467bd",
}

THROUGHPUT_SCENARIOS = ("echo-1x64", "echo-1x16K", "echo-100x64", "echo-100x16K",
                        "lines", "bulk", "churn")


def throughput(table: Table, path: Path) -> None:
    _bars(table, path, "rate", lambda s: s.rate_unit,
          "Throughput per scenario (higher is better; median of runs)")


def server_cpu(table: Table, path: Path) -> None:
    _bars(table, path, "cpu_per_unit_us",
          lambda s: "server CPU ms/MB" if s.per_mb else f"server CPU µs/{s.unit}",
          "Server CPU per operation, from the kernel's accounting (lower is better)",
          scale=lambda s: 1e-3 if s.per_mb else 1.0)


def _bars(table: Table, path: Path, metric: str, unit, title: str, scale=lambda s: 1.0) -> None:
    """Grouped bars: one group per scenario, one bar per implementation, each
    scenario on its own axis because their units differ."""
    scenarios = [s for group in table.groups() for s in table.scenarios(group)
                 if s.name in THROUGHPUT_SCENARIOS]
    cols = 4
    rows = (len(scenarios) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        impls = [r.impl for r in table.records if r.scenario.name == scenario.name]
        values = [(table.value(i, scenario, metric) or 0) * scale(scenario) for i in impls]
        bars = ax.bar(range(len(impls)), values, color=[COLOURS.get(i, "grey") for i in impls])
        for bar, value, impl in zip(bars, values, impls, strict=True):
            label = si(value) if value else ("n/a" if table.by_key[(impl, scenario.name)].status
                                             == "n/a" else "failed")
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7, rotation=90,
                        xytext=(0, 2), textcoords="offset points")
        ax.set_title(f"{scenario.name}\n{scenario.title}", fontsize=8)
        ax.set_ylabel(unit(scenario), fontsize=8)
        ax.set_xticks(range(len(impls)), impls, rotation=60, ha="right", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(0, max(values + [1]) * 1.3)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: si(v)))
    for ax in list(axes.flat)[len(scenarios):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def idle_latency(table: Table, path: Path) -> None:
    """Latency and server CPU per round trip against the number of idle
    connections, one line per implementation."""
    scenarios = [s for s in table.scenarios("idle")]
    impls = table.impls("idle")
    metrics = (("p50_us", "p50 latency (µs)"), ("p99_us", "p99 latency (µs)"),
               ("cpu_per_unit_us", "server CPU per round trip (µs)"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, (metric, label) in zip(axes, metrics, strict=True):
        for impl in impls:
            points = [(max(s.idle, 1), table.value(impl, s, metric)) for s in scenarios]
            points = [(x, y) for x, y in points if y is not None]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=impl, color=COLOURS.get(impl, "grey"),
                    linestyle="--" if impl.endswith("poll") else "-")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({max(s.idle, 1) for s in scenarios
                        if any(table.get(i, s) for i in impls)})
        ax.set_xticks(ticks, [f"{t // 1000}k" if t >= 1000 else "0" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("idle connections (0 plotted at 1)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("One active 64 B ping-pong connection among idle ones (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def slowsend(table: Table, path: Path) -> None:
    """Server CPU for one large send() against its size, log-log: a slope of
    1 is linear in bytes, 2 quadratic."""
    scenarios = table.scenarios("slowsend")
    impls = table.impls("slowsend")
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for impl in impls:
        points = []
        for s in scenarios:
            rec = table.get(impl, s)
            if rec:
                points.append((s.phase_arg / 2**20, rec._median(x.server_cpu for x in rec.samples)))
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, [y * 1000 for y in ys], marker="o", label=impl,
                    color=COLOURS.get(impl, "grey"))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    sizes = [s.phase_arg / 2**20 for s in scenarios]
    ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
    ax.minorticks_off()
    # Guides through the first point of the lowest line: what linear and
    # quadratic growth from there would look like.
    lows = [line.get_ydata()[0] for line in ax.get_lines()]
    if lows and len(sizes) > 1:
        y0, x0 = min(lows), sizes[0]
        for power, style in ((1, ":"), (2, "--")):
            ax.plot(sizes, [y0 * (x / x0) ** power for x in sizes], style, color="grey",
                    linewidth=1, label=f"size^{power} guide")
    ax.set_xlabel("size of the one send() (MiB)")
    ax.set_ylabel("server CPU for the transfer (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Large send to a slow reader (slope 1 = linear, 2 = quadratic)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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
