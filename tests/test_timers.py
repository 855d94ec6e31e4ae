"""Timers and thread hand-overs (issue 14): call_later, call_every, Timer, call_soon_threadsafe.

Every test runs on both cores (conftest) and in both loop modes (the
``use_poll`` parameter); the channel-holding tests run with the kernel
interest set of the compiled core too, since a map that is looped over
repeatedly gets one.
"""

import math
import os
import socket
import threading
import time

import pytest

import asyncore
from support import DEADLINE, wait_until_blocked

pytestmark = pytest.mark.cyasyncore_only

MODES = pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])


class Idle(asyncore.dispatcher):
    """A readable channel nobody writes to: the loop blocks on it."""

    def __init__(self, sock, map):
        asyncore.dispatcher.__init__(self, sock, map=map)

    def writable(self):
        return False

    def handle_read(self):
        self.recv(4096)


@pytest.fixture
def tmap(request):
    m = {}
    yield m
    asyncore.close_all(m)
    # Let the map die before the leak guard looks: the compiled core's
    # kernel set for it (an epoll descriptor) goes with it.
    request.node.funcargs.pop("tmap", None)


@pytest.fixture
def idle_channel(tmap, request):
    a, b = socket.socketpair()
    chan = Idle(a, tmap)
    chan.peer = b
    yield chan
    chan.close()
    b.close()
    request.node.funcargs.pop("idle_channel", None)


def stop():
    raise asyncore.ExitNow


# ----------------------------------------------------------------- ordering


@MODES
def test_deadline_order_and_ties_in_scheduling_order(tmap, use_poll):
    out = []
    asyncore.call_later(0.03, out.append, "late", map=tmap)
    for name in ("t1", "t2", "t3"):
        asyncore.call_later(0, out.append, name, map=tmap)
    asyncore.call_later(0.01, out.append, "mid", map=tmap)
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == ["t1", "t2", "t3", "mid", "late"]


@MODES
def test_timers_alone_keep_loop_alive_and_it_ends_with_them(tmap, use_poll):
    out = []
    t = asyncore.call_later(0.02, out.append, 1, map=tmap)
    start = time.monotonic()
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == [1]
    assert time.monotonic() >= t.deadline >= start
    assert not tmap


@MODES
def test_zero_delay_from_a_callback_runs_next_pass(tmap, use_poll):
    out = []

    def first():
        out.append("first")
        asyncore.call_later(0, out.append, "second", map=tmap)

    asyncore.call_later(0, first, map=tmap)
    pass_ = asyncore.poll2 if use_poll else asyncore.poll
    pass_(0, tmap)
    assert out == ["first"]
    pass_(0, tmap)
    assert out == ["first", "second"]


@MODES
def test_call_every_and_count(tmap, use_poll):
    ticks = []
    t = asyncore.call_every(0, lambda: ticks.append(len(ticks)), map=tmap)
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap, count=3)
    # One run per pass: each reschedule lands in the next pass.
    assert ticks == [0, 1, 2]
    assert not t.cancelled
    t.cancel()
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap, count=3)
    assert ticks == [0, 1, 2]


@MODES
def test_call_every_period(tmap, use_poll):
    ticks = []

    def tick():
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            t.cancel()

    t = asyncore.call_every(0.01, tick, map=tmap)
    first = t.deadline
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert len(ticks) == 3 and t.cancelled
    assert ticks[0] >= first


# --------------------------------------------------------- cancel and reset


@MODES
def test_cancel_outside_and_inside_callbacks(tmap, use_poll):
    out = []
    gone = asyncore.call_later(0, out.append, "gone", map=tmap)
    gone.cancel()
    gone.cancel()  # idempotent
    assert gone.cancelled

    def killer():
        out.append("killer")
        victim.cancel()
        me.cancel()  # its own, while it runs: harmless

    me = asyncore.call_later(0.005, killer, map=tmap)
    victim = asyncore.call_later(0.01, out.append, "victim", map=tmap)
    asyncore.call_later(0.02, out.append, "end", map=tmap)
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == ["killer", "end"]
    assert victim.cancelled


@MODES
def test_reset_moves_the_deadline_and_reorders(tmap, use_poll):
    out = []
    a = asyncore.call_later(0.01, out.append, "a", map=tmap)
    b = asyncore.call_later(0.01, out.append, "b", map=tmap)
    before = a.deadline
    a.reset()
    assert a.deadline > before
    # Same delay, a reset after b: its deadline ties or follows, b runs first.
    b.reset()
    a.reset()
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == ["b", "a"]
    # A one-shot timer that ran may be re-armed; a cancelled one may not.
    a.reset()
    b.cancel()
    b.reset()
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == ["b", "a", "a"]


@MODES
def test_reset_inside_its_own_callback(tmap, use_poll):
    runs = []

    def again():
        runs.append(1)
        if len(runs) < 3:
            t.reset()

    t = asyncore.call_later(0, again, map=tmap)
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert len(runs) == 3


@MODES
def test_user_map_timers_do_not_run_on_other_maps(tmap, use_poll):
    out = []
    other = {}
    asyncore.call_later(0, out.append, "mine", map=tmap)
    asyncore.loop(timeout=0, use_poll=use_poll, map=other, count=2)
    assert out == []
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == ["mine"]


@MODES
def test_default_map_resolved_at_call_time(use_poll):
    out = []
    saved = asyncore.socket_map
    asyncore.socket_map = mine = {}
    try:
        asyncore.call_later(0, out.append, 1)
    finally:
        asyncore.socket_map = saved
    asyncore.loop(timeout=0, use_poll=use_poll, count=2)
    assert out == []
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=mine)
    assert out == [1]


@MODES
def test_close_all_cancels_the_maps_timers(tmap, idle_channel, use_poll):
    out = []
    t = asyncore.call_later(0, out.append, 1, map=tmap)
    e = asyncore.call_every(0, out.append, 2, map=tmap)
    asyncore.close_all(tmap)
    assert t.cancelled and e.cancelled
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == []


@MODES
def test_callbacks_may_create_and_close_channels(tmap, use_poll):
    made = []

    def make():
        a, b = socket.socketpair()
        made.append((Idle(a, tmap), b))
        asyncore.call_later(0, close, map=tmap)

    def close():
        chan, b = made[0]
        chan.close()
        b.close()

    asyncore.call_later(0, make, map=tmap)
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert made and not tmap


@MODES
def test_timer_wait_is_cut_at_the_deadline_with_channels(tmap, idle_channel, use_poll):
    # The idle channel alone would keep a 30 s wait; the timer ends it.
    asyncore.call_later(0.01, stop, map=tmap)
    for _ in range(3):  # the kernel set takes over from the second pass
        with pytest.raises(asyncore.ExitNow):
            asyncore.loop(timeout=30, use_poll=use_poll, map=tmap)
        asyncore.call_later(0.01, stop, map=tmap)


# ---------------------------------------------------------------- exceptions


@MODES
@pytest.mark.parametrize("exc", [asyncore.ExitNow, KeyboardInterrupt, SystemExit])
def test_reraised_exceptions_leave_the_loop(tmap, use_poll, exc):
    out = []

    def boom():
        raise exc("out")

    asyncore.call_later(0, boom, map=tmap)
    asyncore.call_later(0.01, out.append, "after", map=tmap)
    with pytest.raises(exc):
        asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    # The rest stays scheduled for the next loop.
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == ["after"]


def failing():
    raise ValueError("bad thing")


@MODES
def test_other_exceptions_are_logged_and_the_loop_goes_on(tmap, use_poll, capsys):
    out = []
    every = asyncore.call_every(0, failing, map=tmap)
    asyncore.call_later(0, failing, map=tmap)
    asyncore.call_later(0.01, out.append, "after", map=tmap)
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert out == ["after"]
    assert every.cancelled
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("error: uncaptured python exception in callback <function failing")
        assert "(<class 'ValueError'>:bad thing [" in line
        assert "|failing|" in line


# --------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", ["call_later", "call_every"])
@pytest.mark.parametrize(
    "delay, error",
    [(-1, ValueError), (-0.5, ValueError), (math.nan, ValueError), ("1", TypeError),
     (None, TypeError), (b"1", TypeError)],
)
def test_bad_delays_raise_at_the_call(tmap, fn, delay, error):
    with pytest.raises(error):
        getattr(asyncore, fn)(delay, print, map=tmap)
    assert asyncore._impl.timers.queue(tmap) is None


def test_non_callable_raises_at_the_call(tmap):
    for fn in (asyncore.call_later, asyncore.call_every):
        with pytest.raises(TypeError):
            fn(1, "not callable", map=tmap)
    with pytest.raises(TypeError):
        asyncore.call_soon_threadsafe(None, map=tmap)


def test_timer_objects_and_api(tmap):
    t = asyncore.call_later(1.5, print, "x", map=tmap)
    assert isinstance(t, asyncore.Timer)
    assert repr(t).startswith("<asyncore.Timer later 1.5s deadline=")
    assert abs(t.deadline - (time.monotonic() + 1.5)) < 1.0
    assert t.cancelled is False
    assert "Timer" in repr(t)
    with pytest.raises(TypeError):
        asyncore.Timer()
    t.cancel()
    assert t.cancelled is True
    assert "cancelled" in repr(t)


# -------------------------------------------- programs that never use them


@MODES
def test_nothing_in_the_map_and_no_descriptor_until_used(tmap, idle_channel, use_poll):
    fds = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    asyncore.call_later(0, print, map=tmap).cancel()
    asyncore.call_every(5, print, map=tmap).cancel()
    assert list(tmap) == [idle_channel._fileno]
    if fds is not None:
        assert set(os.listdir("/proc/self/fd")) == fds
    asyncore.call_soon_threadsafe(lambda: None, map=tmap)
    assert list(tmap) == [idle_channel._fileno]
    asyncore.loop(timeout=0, use_poll=use_poll, map=tmap, count=1)


def test_no_queue_without_timers(tmap, idle_channel):
    asyncore.loop(timeout=0, map=tmap, count=3)
    assert asyncore._impl.timers.queue(tmap) is None


# ------------------------------------------------------------ hand-overs


@MODES
def test_hand_overs_run_in_order_in_the_loop_thread(tmap, idle_channel, use_poll):
    seen = []
    loop_thread = threading.get_ident()
    asyncore.call_soon_threadsafe(lambda: None, map=tmap)

    def note(i):
        seen.append((i, threading.get_ident()))

    def worker():
        for i in range(100):
            asyncore.call_soon_threadsafe(note, i, map=tmap)
        asyncore.call_soon_threadsafe(stop, map=tmap)

    th = threading.Thread(target=worker)
    th.start()
    with pytest.raises(asyncore.ExitNow):
        asyncore.loop(timeout=DEADLINE * 3, use_poll=use_poll, map=tmap)
    th.join(DEADLINE)
    assert [i for i, _ in seen] == list(range(100))
    assert {ident for _, ident in seen} == {loop_thread}


@MODES
def test_no_lost_wake_up_across_10000_hand_overs(tmap, idle_channel, use_poll):
    """Each hand-over is made while the loop waits (30 s) on an idle channel."""
    n = 10_000
    done = threading.Semaphore(0)
    count = [0]

    def one():
        count[0] += 1
        done.release()

    failed = []

    def worker():
        for _ in range(n):
            asyncore.call_soon_threadsafe(one, map=tmap)
            if not done.acquire(timeout=DEADLINE):
                failed.append(count[0])
                break
        asyncore.call_soon_threadsafe(stop, map=tmap)

    # The first hand-over opens the wake-up descriptor: made before the
    # loop waits, so that every wait includes it.
    asyncore.call_soon_threadsafe(lambda: None, map=tmap)
    th = threading.Thread(target=worker)
    th.start()
    with pytest.raises(asyncore.ExitNow):
        asyncore.loop(timeout=30, use_poll=use_poll, map=tmap)
    th.join(DEADLINE)
    assert not failed
    assert count[0] == n


@pytest.fixture(params=["snapshot", "kernel-set"])
def wait_kind(request, core, tmap, idle_channel, use_poll):
    """What the compiled core's passes wait in: poll(2) over a snapshot, or the map's kernel set.

    The pure core has only the first.
    """
    if core != "compiled":
        if request.param != "snapshot":
            pytest.skip("the pure core has no kernel set")
        yield request.param
        return
    import _asyncore_core

    kernel_set = request.param == "kernel-set"
    previous = _asyncore_core.use_kernel_set(kernel_set)
    try:
        if kernel_set:
            if _asyncore_core.backend() == "poll":
                pytest.skip("no kernel set here")
            # A fresh map's first pass is a snapshot; the next use the set.
            asyncore.loop(timeout=0, use_poll=use_poll, map=tmap, count=3)
            assert _asyncore_core.interest_info(tmap)["active"]
        yield request.param
    finally:
        _asyncore_core.use_kernel_set(previous)


@MODES
def test_first_hand_over_wakes_a_loop_already_waiting(
    tmap, idle_channel, use_poll, wait_kind, core
):
    """No wake-up descriptor when the loop starts its 60 s wait: the first hand-over ends it."""
    if core == "pure":
        # CPython's select() and poll() retry after a signal in any thread
        # but the main one, and no descriptor can join a wait under way:
        # the pure core sees a first hand-over when its wait ends.
        pytest.skip("the pure core cannot end a wait that predates the wake-up descriptor")
    assert asyncore._impl.timers.queue(tmap) is None
    ran = []
    passes = []

    def run():
        asyncore.loop(timeout=60, use_poll=use_poll, map=tmap, count=1)
        passes.append(1)

    th = threading.Thread(target=run)
    th.start()
    woken = False
    try:
        wait_until_blocked(th)
        asyncore.call_soon_threadsafe(lambda: ran.append(threading.get_ident()), map=tmap)
        th.join(DEADLINE)
        woken = not th.is_alive()
    finally:
        if th.is_alive():
            # Not woken: end the wait the old way, so the test fails cleanly.
            idle_channel.peer.send(b"x")
            th.join(DEADLINE)
    assert woken
    assert passes == [1]
    assert ran == [th.ident]


@MODES
def test_no_lost_first_hand_over_across_1000_rounds(tmap, idle_channel, use_poll, wait_kind, core):
    """Each round drops the wake-up descriptor, so each hand-over is a first one.

    The loop waits 30 s a pass; the hand-overs come from another thread
    wherever the loop is, in its wait or between (the races a kick must win).
    """
    if core == "pure":
        pytest.skip("the pure core cannot end a wait that predates the wake-up descriptor")
    rounds = 1000
    done = threading.Semaphore(0)
    count = [0]

    def one():
        count[0] += 1
        # Back to no descriptor: the next hand-over opens a new one.
        asyncore._impl.close_timers(tmap)
        done.release()

    failed = []

    def worker():
        for _ in range(rounds):
            asyncore.call_soon_threadsafe(one, map=tmap)
            if not done.acquire(timeout=DEADLINE):
                failed.append(count[0])
                break
        asyncore.call_soon_threadsafe(stop, map=tmap)

    th = threading.Thread(target=worker)
    th.start()
    with pytest.raises(asyncore.ExitNow):
        asyncore.loop(timeout=30, use_poll=use_poll, map=tmap)
    th.join(DEADLINE)
    assert not failed
    assert count[0] == rounds


@MODES
def test_first_hand_over_wakes_a_loop_of_timers_alone(tmap, use_poll, core):
    if core == "pure":
        pytest.skip("the pure core cannot end a wait that predates the wake-up descriptor")
    out = []
    long = asyncore.call_later(60, out.append, "never", map=tmap)
    th = threading.Thread(target=asyncore.loop,
                          kwargs={"timeout": 60, "use_poll": use_poll, "map": tmap, "count": 1})
    th.start()
    woken = False
    try:
        wait_until_blocked(th)
        asyncore.call_soon_threadsafe(long.cancel, map=tmap)
        th.join(DEADLINE)
        woken = not th.is_alive()
    finally:
        if th.is_alive():
            long.cancel()
            th.join(70)
    assert woken
    assert long.cancelled and out == []


@MODES
def test_hand_over_wakes_a_loop_of_timers_alone(tmap, use_poll):
    out = []
    asyncore.call_soon_threadsafe(lambda: None, map=tmap)
    long = asyncore.call_later(DEADLINE * 3, out.append, "never", map=tmap)

    def done():
        out.append("handed")
        long.cancel()

    th = threading.Thread(target=asyncore.call_soon_threadsafe, args=(done,), kwargs={"map": tmap})
    th.start()
    # The loop ends once the hand-over cancels the only timer; closing the
    # wake-up descriptor (close_all) is what lets it end for good.
    asyncore.loop(timeout=DEADLINE * 3, use_poll=use_poll, map=tmap, count=50)
    th.join(DEADLINE)
    assert out == ["handed"]


# ----------------------------------------------------------- the fallback


@MODES
def test_fallback_loop_honours_timers(tmap, idle_channel, use_poll, monkeypatch):
    calls = []
    own_read = asyncore.read

    def wrapped(obj):
        calls.append(obj)
        own_read(obj)

    # A program's own read: the loop goes through the module's names.
    monkeypatch.setattr(asyncore, "read", wrapped)
    out = []
    asyncore.call_later(0.01, out.append, 1, map=tmap)
    asyncore.call_later(0.02, stop, map=tmap)
    with pytest.raises(asyncore.ExitNow):
        asyncore.loop(timeout=30, use_poll=use_poll, map=tmap)
    assert out == [1]
    idle_channel.close()
    asyncore.call_later(0, out.append, 2, map=tmap)
    asyncore.loop(timeout=30, use_poll=use_poll, map=tmap)
    assert out == [1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_wake_up_descriptor(tmap):
    asyncore.call_soon_threadsafe(lambda: None, map=tmap)
    before = asyncore._impl.timers.queue(tmap).wake
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            q = asyncore._impl.timers.queue(tmap)
            os.write(w, b"1" if q.wake >= 0 and os.fstat(q.wake) is not None else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    assert got == b"1"
    assert asyncore._impl.timers.queue(tmap).wake == before


# ------------------------------------------------------------- the heap


@MODES
def test_many_timers_run_in_deadline_order_after_cancels_and_resets(tmap, use_poll):
    import random

    rng = random.Random(14)
    fired = []
    timers = [asyncore.call_later(rng.random() * 0.05, lambda i=i: fired.append(i), map=tmap)
              for i in range(600)]
    cancelled = set(rng.sample(range(600), 150))
    for i in cancelled:
        timers[i].cancel()
    for i in rng.sample(range(600), 150):
        timers[i].reset()
    asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=tmap)
    assert sorted(fired) == sorted(set(range(600)) - cancelled)
    deadlines = [timers[i].deadline for i in fired]
    assert deadlines == sorted(deadlines)


@pytest.mark.compiled_only
def test_compiled_core_has_the_compiled_timer_queue():
    import _asyncore_timers

    assert asyncore._impl.timers is _asyncore_timers
    assert asyncore.Timer is _asyncore_timers.Timer
