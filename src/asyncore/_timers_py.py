"""Timers and thread hand-overs of the pure core (issue 14).

The readable specification of ``_asyncore_timers``, which does the same in C.
Every map that has timers, or callbacks handed over by other threads, has a
``_Queue``: a ``heapq`` of ``[deadline, seq, timer]`` entries plus a deque of
handed-over callbacks and, once ``call_soon_threadsafe`` has been used for the
map, a wake-up descriptor (an eventfd, or a self-pipe) that the passes add to
their wait.  Nothing of this is ever in the map: ``len(map)``, iterating it and
``loop()``'s ``while map`` see only the program's channels.

A map without a queue costs a pass one failed lookup in an empty dict.

Queues are found by ``id(map)``; a queue holds its map, so the id stays the
map's while the queue lives.  A queue with nothing to do (no live timer, no
pending callback, no wake-up descriptor) is dropped from ``_active`` and kept
only as long as some Timer still refers to it (``_idle`` holds it weakly), so
maps that had timers once are not kept alive for ever.
"""

import collections
import heapq
import math
import numbers
import os
import select
import sys
import threading
import time
import typing
import weakref

from ._common import POLLIN, RERAISED

# id(map) -> _Queue that the passes must serve.
_active: "dict[int, _Queue]" = {}
# id(map) -> _Queue with nothing to do, while a Timer still holds it.
_idle: "weakref.WeakValueDictionary[int, _Queue]" = weakref.WeakValueDictionary()
# Guards creating a queue, its activation and its wake-up descriptor, which
# another thread's call_soon_threadsafe() may do while the loop runs.
_lock = threading.Lock()

# poll(2) takes an int of milliseconds.
_MAX_WAIT_MS = 2**31 - 1
# What select() and time.sleep() accept before overflowing (see _core_py).
_MAX_SECONDS_INT = (2**63 - 1) // 10**9
_MAX_SECONDS_FLOAT = 2.0**63 / 10**9
# Dead heap entries (cancelled timers) are swept out once they are this many
# and more than half of the heap, so churn does not grow it without bound.
_SWEEP_AT = 64

_HAVE_EVENTFD = hasattr(os, "eventfd")


def delay_of(seconds):
    """A delay in seconds as a float; TypeError/ValueError for a bad one."""
    if type(seconds) is float:
        delay = seconds
    elif isinstance(seconds, numbers.Real):
        try:
            delay = float(seconds)
        except OverflowError:
            # An int past float's range: a deadline nobody will see.
            delay = math.inf
    else:
        raise TypeError(f"delay must be a real number, not {type(seconds).__name__}")
    if delay != delay:
        raise ValueError("delay must not be NaN")
    if delay < 0:
        raise ValueError("delay must be non-negative")
    return delay


def seconds_ms(timeout):
    """A valid plain timeout in seconds as poll(2) milliseconds (-1 for None), else None."""
    if timeout is None:
        return -1
    if type(timeout) is float:
        if not 0 <= timeout < _MAX_SECONDS_FLOAT:
            return None
        return _MAX_WAIT_MS if timeout >= _MAX_WAIT_MS / 1000 else math.ceil(timeout * 1000)
    if type(timeout) is int:
        if not 0 <= timeout <= _MAX_SECONDS_INT:
            return None
        return min(timeout * 1000, _MAX_WAIT_MS)
    return None


def _check_callback(callback):
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")


def report(callback):
    """Log the exception being handled, as handle_error() logs a channel's."""
    compact_traceback = sys.modules["asyncore"].compact_traceback
    _, t, v, tbinfo = compact_traceback()
    try:
        what = repr(callback)
    except BaseException:
        what = "<__repr__(callback) failed for object at %0x>" % id(callback)
    print("error: uncaptured python exception in callback %s (%s:%s %s)" % (what, t, v, tbinfo))


@typing.final
class Timer:
    """A callback due at ``deadline`` (time.monotonic() seconds), made by call_later/call_every."""

    __module__ = "asyncore"
    __slots__ = (
        "_queue", "_callback", "_args", "_delay", "_periodic",
        "_when", "_seq", "_entry", "_cancelled",
    )

    def __init__(self, *args, **kwargs):
        raise TypeError("Timer objects are made by asyncore.call_later() and call_every()")

    @property
    def deadline(self):
        return self._when

    @property
    def cancelled(self):
        return self._cancelled

    def cancel(self):
        if self._cancelled:
            return
        self._cancelled = True
        if self._entry is not None:
            self._queue.remove(self)

    def reset(self):
        if self._cancelled:
            return
        self._queue.push(self, time.monotonic() + self._delay)

    def __repr__(self):
        state = "cancelled" if self._cancelled else f"deadline={self._when:.6f}"
        kind = "every" if self._periodic else "later"
        return f"<asyncore.Timer {kind} {self._delay!r}s {state} callback={self._callback!r}>"


def _make_timer(queue, delay, periodic, callback, args):
    timer = object.__new__(Timer)
    timer._queue = queue
    timer._callback = callback
    timer._args = args
    timer._delay = delay
    timer._periodic = periodic
    timer._when = 0.0
    timer._seq = 0
    timer._entry = None
    timer._cancelled = False
    return timer


class _WakeKey:
    """The wake-up descriptor as a select() key: an object no map key can be."""

    __slots__ = ("fd",)

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


class _Queue:
    __slots__ = (
        "map", "heap", "seq", "live", "dead", "pending",
        "wake", "wake_w", "wake_key", "__weakref__",
    )

    def __init__(self, map):
        self.map = map
        self.heap = []
        self.seq = 0          # next scheduling serial: ties run in this order
        self.live = 0         # timers in the heap, not cancelled
        self.dead = 0         # entries in the heap of cancelled timers
        self.pending = collections.deque()
        self.wake = -1        # wake-up descriptor the passes wait on, or -1
        self.wake_w = -1      # its writing end (the same for an eventfd)
        self.wake_key = None

    # -- membership of _active

    def activate(self):
        key = id(self.map)
        if _active.get(key) is not self:
            with _lock:
                _active[key] = self
                _idle.pop(key, None)

    def settle(self):
        """Leave _active when nothing is left to do for the passes."""
        if self.live or self.pending or self.wake >= 0:
            return
        with _lock:
            if self.live or self.pending or self.wake >= 0:
                return
            key = id(self.map)
            if _active.get(key) is self:
                del _active[key]
                _idle[key] = self
            # Only dead entries are left: nothing refers to them.
            self.heap.clear()
            self.dead = 0

    # -- the heap

    def push(self, timer, when):
        """(Re)schedule timer at when, after everything scheduled before it."""
        seq = self.seq
        self.seq = seq + 1
        timer._when = when
        timer._seq = seq
        entry = timer._entry
        if entry is not None:
            if when >= entry[0]:
                # Later than its entry says (an idle timeout's reset): leave
                # the entry, which now only bounds the deadline from below,
                # and move it when it reaches the top (see top()).
                return
            entry[2] = None
            self.dead += 1
        else:
            self.live += 1
        timer._entry = entry = [when, seq, timer]
        heapq.heappush(self.heap, entry)
        self.activate()

    def remove(self, timer):
        timer._entry[2] = None
        timer._entry = None
        self.live -= 1
        self.dead += 1
        heap = self.heap
        if self.dead > _SWEEP_AT and self.dead * 2 > len(heap):
            heap[:] = [e for e in heap if e[2] is not None]
            heapq.heapify(heap)
            self.dead = 0
        self.settle()

    def top(self):
        """The heap's first live entry, with its true key, or None."""
        heap = self.heap
        while heap:
            entry = heap[0]
            timer = entry[2]
            if timer is None:
                heapq.heappop(heap)
                self.dead -= 1
            elif timer._seq != entry[1]:
                timer._entry = moved = [timer._when, timer._seq, timer]
                heapq.heapreplace(heap, moved)
            else:
                return entry
        return None

    # -- what the passes ask

    def clamp_ms(self, ms):
        """A wait of ms (-1: for ever) cut short at the next deadline."""
        if self.pending:
            return 0
        entry = self.top()
        if entry is None:
            return ms
        left = entry[0] - time.monotonic()
        if left <= 0:
            return 0
        left_ms = math.ceil(left * 1000) if left < _MAX_WAIT_MS / 1000 else _MAX_WAIT_MS
        return left_ms if ms < 0 or left_ms < ms else ms

    def clamp(self, timeout):
        """A wait's timeout in seconds, cut short at the next deadline.

        A timeout the wait would refuse is left as it is, so that the wait
        raises what it raises without timers.
        """
        ms = seconds_ms(timeout)
        if ms is None:
            return timeout
        got = self.clamp_ms(ms)
        if got == ms:
            return timeout
        return got / 1000

    def clamp_poll(self, ms):
        """poll()'s millisecond timeout (None: for ever), cut short; a bad one is left."""
        if ms is None:
            got = self.clamp_ms(-1)
            return None if got < 0 else got
        if type(ms) is not int or not -(2**31) <= ms <= _MAX_WAIT_MS:
            return ms
        wanted = ms if ms >= 0 else -1
        got = self.clamp_ms(wanted)
        return ms if got == wanted else got

    def sleep(self, timeout, sleep=None):
        """A pass with nothing to wait for: time.sleep(timeout), cut short.

        ``sleep`` is a program's replacement of time.sleep (see asyncore's
        fallback loop): it is called with the shortened timeout.
        """
        ms = None if timeout is None else seconds_ms(timeout)
        if sleep is not None:
            sleep(timeout if ms is None else self.clamp(timeout))
        elif ms is None:
            # What time.sleep() refuses, it refuses with timers too.
            time.sleep(timeout)
        else:
            self.wait_ms(ms)

    def wait_ms(self, ms):
        """Wait ms (validated already; -1: for ever), cut short, on the wake-up descriptor."""
        ms = self.clamp_ms(ms)
        if self.wake < 0:
            if ms < 0:
                # Nothing can end this wait (see _core_py.poll2).
                time.sleep(None)
            time.sleep(ms / 1000)
            return
        pollster = select.poll()
        pollster.register(self.wake, POLLIN)
        if pollster.poll(ms):
            self.drain()

    # -- the wake-up descriptor

    def open_wake(self):
        if _HAVE_EVENTFD:
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.wake = self.wake_w = fd
        else:
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self.wake, self.wake_w = r, w
        self.wake_key = _WakeKey(self.wake)

    def close_wake(self):
        if self.wake < 0:
            return
        r, w = self.wake, self.wake_w
        self.wake = self.wake_w = -1
        self.wake_key = None
        os.close(r)
        if w != r:
            os.close(w)

    def signal(self):
        try:
            if _HAVE_EVENTFD:
                os.eventfd_write(self.wake_w, 1)
            else:
                os.write(self.wake_w, b"\0")
        except BlockingIOError:
            # Full: a wake-up is pending already.
            pass

    def drain(self):
        fd = self.wake
        if fd < 0:
            return
        try:
            if _HAVE_EVENTFD:
                os.eventfd_read(fd)
            else:
                while os.read(fd, 4096):
                    pass
        except BlockingIOError:
            pass

    # -- after a pass's I/O

    def run(self):
        """Run the handed-over callbacks, then the timers due, in deadline order."""
        # Only what is due now and was scheduled before this started: a
        # callback that schedules a timer due at once (its own, or a
        # call_every of 0 s) has it run in the next pass, after I/O.
        now = time.monotonic()
        limit = self.seq
        pending = self.pending
        heap = self.heap
        try:
            for _ in range(len(pending)):
                callback, args = pending.popleft()
                _call(callback, args, None)
            while True:
                entry = self.top()
                if entry is None or entry[0] > now or entry[1] >= limit:
                    break
                heapq.heappop(heap)
                timer = entry[2]
                timer._entry = None
                self.live -= 1
                if timer._periodic:
                    # Rescheduled before it runs, so that its callback may
                    # cancel or reset it like any other timer.
                    when = entry[0] + timer._delay
                    self.push(timer, when if when > now else now + timer._delay)
                _call(timer._callback, timer._args, timer)
        finally:
            self.settle()

    def close(self):
        """close_all(map): cancel every timer and forget the hand-overs."""
        for entry in self.heap:
            timer = entry[2]
            if timer is not None:
                timer._cancelled = True
                timer._entry = None
        self.heap.clear()
        self.live = self.dead = 0
        self.pending.clear()
        with _lock:
            self.close_wake()
        self.settle()


def _call(callback, args, timer):
    try:
        callback(*args)
    except RERAISED:
        raise
    except BaseException:
        report(callback)
        if timer is not None and timer._periodic:
            timer.cancel()


def _queue_for(map):
    key = id(map)
    queue = _active.get(key)
    if queue is None:
        queue = _idle.get(key)
        if queue is None:
            with _lock:
                queue = _active.get(key) or _idle.get(key)
                if queue is None:
                    queue = _Queue(map)
                    _idle[key] = queue
    return queue


# ---------------------------------------------------------- what cores export


def queue(map):
    """The queue the passes must serve for map, or None (the common case)."""
    if not _active:
        return None
    return _active.get(id(map))


def alive(map):
    """Whether the map's timers or hand-overs keep loop() going."""
    if not _active:
        return False
    q = _active.get(id(map))
    return q is not None and bool(q.live or q.pending)


def call_later(seconds, callback, args, map):
    delay = delay_of(seconds)
    _check_callback(callback)
    q = _queue_for(map)
    timer = _make_timer(q, delay, False, callback, args)
    q.push(timer, time.monotonic() + delay)
    return timer


def call_every(seconds, callback, args, map):
    delay = delay_of(seconds)
    _check_callback(callback)
    q = _queue_for(map)
    timer = _make_timer(q, delay, True, callback, args)
    q.push(timer, time.monotonic() + delay)
    return timer


def call_soon_threadsafe(callback, args, map):
    _check_callback(callback)
    q = _queue_for(map)
    with _lock:
        if q.wake < 0:
            q.open_wake()
        # The callback first, then the wake-up: the loop drains the
        # descriptor before it takes the callbacks, so none is left behind.
        q.pending.append((callback, args))
        _active[id(map)] = q
        _idle.pop(id(map), None)
        q.signal()


def close_timers(map):
    key = id(map)
    q = _active.get(key) or _idle.get(key)
    if q is not None:
        q.close()


def _after_fork():
    # The child must not share wake-up descriptors with its parent: a
    # hand-over in one would wake the other's loop.
    global _lock
    _lock = threading.Lock()
    for q in list(_active.values()):
        if q.wake >= 0:
            q.close_wake()
            q.open_wake()
            if q.pending:
                q.signal()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
