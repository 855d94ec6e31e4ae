"""Resource figures for the stress tests: descriptors, RSS, traced Python memory."""

import gc
import os
import tracemalloc
from dataclasses import dataclass

MiB = 1 << 20


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@dataclass
class Figures:
    fds: int
    rss: int
    traced: int

    @classmethod
    def now(cls):
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
        return cls(open_fds(), rss_bytes(), traced)


def report(title, counts, before, after):
    """Print the figures the way the lead quotes them."""
    lines = [f"== {title}"]
    lines += [f"   {name}: {value:,}" for name, value in counts.items()]
    lines += [
        f"   open fds: {before.fds} before, {after.fds} after",
        f"   RSS: {before.rss / MiB:.1f} MiB before, {after.rss / MiB:.1f} MiB after "
        f"({(after.rss - before.rss) / MiB:+.1f} MiB)",
        f"   tracemalloc current: {before.traced / 1024:.1f} KiB before, "
        f"{after.traced / 1024:.1f} KiB after ({(after.traced - before.traced) / 1024:+.1f} KiB)",
    ]
    print("\n".join(lines), flush=True)
