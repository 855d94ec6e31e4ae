"""Timer churn (issue 14): schedule 100,000 timers, then cancel them all.

    bench/.venv-cy/bin/python bench/timer_churn.py [--count N] [--repeat R]

Times, per implementation, scheduling N timers a minute away and cancelling
them, and the same with one reset() each in between: cyasyncore's compiled
core (its C heap), its pure core (heapq) and uvloop's call_later/cancel (which
has no reset: a cancel and a new call_later).  Each figure is the best of R
runs in a fresh subprocess, in nanoseconds per timer.
"""

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, time
count, repeat, impl = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def best(fn):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns(); fn(); out.append(time.perf_counter_ns() - t0)
    return min(out) / count
if impl == "uvloop":
    import uvloop
    loop = uvloop.new_event_loop()
    def cb(): pass
    def sched_cancel():
        hs = [loop.call_later(60, cb) for _ in range(count)]
        for h in hs: h.cancel()
    def sched_reset_cancel():
        hs = [loop.call_later(60, cb) for _ in range(count)]
        hs = [(h.cancel(), loop.call_later(60, cb))[1] for h in hs]
        for h in hs: h.cancel()
    a, b = best(sched_cancel), best(sched_reset_cancel)
    loop.run_until_complete(__import__("asyncio").sleep(0)); loop.close()
else:
    import asyncore
    assert asyncore.CORE == impl, asyncore.CORE
    m = {}
    def cb(): pass
    def sched_cancel():
        ts = [asyncore.call_later(60, cb, map=m) for _ in range(count)]
        for t in ts: t.cancel()
    def sched_reset_cancel():
        ts = [asyncore.call_later(60, cb, map=m) for _ in range(count)]
        for t in ts: t.reset()
        for t in ts: t.cancel()
    a, b = best(sched_cancel), best(sched_reset_cancel)
print(f"{a:.0f} {b:.0f}")
"""


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{args.count:,} timers scheduled 60 s away, then cancelled; ns per timer, "
          f"best of {args.repeat}")
    print(f"{'implementation':<12} {'schedule+cancel':>16} {'schedule+reset+cancel':>22}")
    for impl, env in (("compiled", {}), ("pure", {"ASYNCORE_NO_EXTENSIONS": "1"}),
                      ("uvloop", {})):
        environ = dict(os.environ)
        environ.pop("ASYNCORE_NO_EXTENSIONS", None)
        environ.update(env)
        out = subprocess.run([sys.executable, "-P", "-c", CHILD, str(args.count),
                              str(args.repeat), impl], env=environ, capture_output=True,
                             text=True, timeout=600)
        if out.returncode:
            print(f"{impl:<12} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        a, b = out.stdout.split()
        print(f"{impl:<12} {a:>16} {b:>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
