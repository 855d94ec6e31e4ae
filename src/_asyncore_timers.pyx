# cython: language_level=3
"""The compiled core's timers and thread hand-overs (issue 14).

The twin of ``asyncore._timers_py``, which is the readable specification:
the same queues per map, the same rules, the same log lines.  What differs is
the heap: a binary heap of C structs (deadline, serial, timer), each Timer
knowing its slot, so cancel() and reset() move one entry in O(log n) and a
pass looks only at the top, whatever the number of timers pending.

The compiled core cimports this unit (_asyncore_timers.pxd) and calls the
queue's C methods from its passes.  That import comes first thing when the
core loads, while asyncore's package may still be choosing its core: so
nothing of asyncore is imported here before first use (see _spec_module).
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.errno cimport EINTR, errno
from libc.math cimport ceil

from includes.system cimport CYA_POLLIN, cya_monotonic, cya_poll, cya_pollfd

import os
import threading
import weakref

cdef extern from "wake.h" nogil:
    int cya_wake_open(int *r, int *w)
    void cya_wake_signal(int w)
    void cya_wake_drain(int r)

    ctypedef struct cya_kicks:
        pass
    int cya_wait_begin(const void *map)
    void cya_wait_end(int slot)
    void cya_wait_reset()
    void cya_wait_mark(int slot)
    int cya_wait_kicked(int slot)
    int cya_kick(const void *map, cya_kicks *k)
    int cya_kick_again(const cya_kicks *k)
    void cya_nap_us(long us)


cdef int MAX_WAIT_MS = 2147483647

# asyncore._timers_py (the specification: validation, the log line) and
# the exceptions that leave the loop, imported at first use.
cdef object _spec = None
cdef object RERAISED = None


cdef object _spec_module():
    global _spec, RERAISED
    if _spec is None:
        from asyncore import _timers_py
        from asyncore._common import RERAISED as reraised

        RERAISED = reraised
        _spec = _timers_py
    return _spec

# id(map) -> TimerQueue the passes must serve; see _timers_py.
_active = {}
_idle = weakref.WeakValueDictionary()
_lock = threading.Lock()


@cython.final
@cython.auto_pickle(False)
cdef class Timer:
    """A callback due at ``deadline`` (time.monotonic() seconds), made by call_later/call_every."""

    def __init__(self, *args, **kwargs):
        raise TypeError("Timer objects are made by asyncore.call_later() and call_every()")

    @property
    def deadline(self):
        return self.when

    @property
    def cancelled(self):
        return self.is_cancelled

    def cancel(self):
        if self.is_cancelled:
            return
        self.is_cancelled = True
        if self.pos >= 0:
            self.queue.remove(self)

    def reset(self):
        if self.is_cancelled:
            return
        self.queue.push(self, cya_monotonic() + self.delay)

    def __repr__(self):
        state = "cancelled" if self.is_cancelled else f"deadline={self.when:.6f}"
        kind = "every" if self.periodic else "later"
        return f"<asyncore.Timer {kind} {self.delay!r}s {state} callback={self.callback!r}>"


cdef inline bint _before(_Slot *a, _Slot *b) noexcept:
    return a.when < b.when or (a.when == b.when and a.seq < b.seq)


cdef Timer _make_timer(TimerQueue queue, double delay, bint periodic, object callback,
                       tuple args):
    cdef Timer t = Timer.__new__(Timer)
    t.queue = queue
    t.callback = callback
    t.args = args
    t.delay = delay
    t.periodic = periodic
    t.pos = -1
    return t


@cython.final
cdef class _WakeKey:
    """The wake-up descriptor as a select() key (see _timers_py)."""

    def fileno(self):
        return self.fd


@cython.final
cdef class TimerQueue:
    def __cinit__(self, map):
        import collections

        self.map = map
        self.pending = collections.deque()
        self.wake = -1
        self.wake_w = -1

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            Py_DECREF(<object>self.heap[i].timer)
        self.n = 0
        PyMem_Free(self.heap)

    # -- membership of _active

    cdef int activate(self) except -1:
        key = id(self.map)
        if _active.get(key) is not self:
            with _lock:
                _active[key] = self
                _idle.pop(key, None)
        return 0

    cdef int settle(self) except -1:
        if self.n or self.pending or self.wake >= 0:
            return 0
        with _lock:
            if self.n or self.pending or self.wake >= 0:
                return 0
            key = id(self.map)
            if _active.get(key) is self:
                del _active[key]
                _idle[key] = self
        return 0

    # -- the heap

    cdef inline void place(self, Py_ssize_t i, _Slot s) noexcept:
        self.heap[i] = s
        (<Timer>s.timer).pos = i

    cdef void sift_up(self, Py_ssize_t i) noexcept:
        cdef _Slot s = self.heap[i]
        cdef Py_ssize_t parent
        while i > 0:
            parent = (i - 1) >> 1
            if not _before(&s, &self.heap[parent]):
                break
            self.place(i, self.heap[parent])
            i = parent
        self.place(i, s)

    cdef void sift_down(self, Py_ssize_t i) noexcept:
        cdef _Slot s = self.heap[i]
        cdef Py_ssize_t child
        while True:
            child = 2 * i + 1
            if child >= self.n:
                break
            if child + 1 < self.n and _before(&self.heap[child + 1], &self.heap[child]):
                child += 1
            if not _before(&self.heap[child], &s):
                break
            self.place(i, self.heap[child])
            i = child
        self.place(i, s)

    cdef void resift(self, Py_ssize_t i) noexcept:
        """Restore the heap around slot i, whose key changed."""
        if i > 0 and _before(&self.heap[i], &self.heap[(i - 1) >> 1]):
            self.sift_up(i)
        else:
            self.sift_down(i)

    cdef int push(self, Timer t, double when) except -1:
        """(Re)schedule t at when, after everything scheduled before it."""
        cdef void *grown
        cdef Py_ssize_t i
        t.when = when
        t.seq = self.next_seq
        self.next_seq += 1
        if t.pos >= 0:
            i = t.pos
            self.heap[i].when = when
            self.heap[i].seq = t.seq
            self.resift(i)
            return 0
        if self.n == self.cap:
            grown = PyMem_Realloc(self.heap, max(16, 2 * self.cap) * sizeof(_Slot))
            if grown == NULL:
                raise MemoryError()
            self.heap = <_Slot *>grown
            self.cap = max(16, 2 * self.cap)
        Py_INCREF(t)
        self.heap[self.n].when = when
        self.heap[self.n].seq = t.seq
        self.heap[self.n].timer = <PyObject *>t
        t.pos = self.n
        self.n += 1
        self.sift_up(self.n - 1)
        self.activate()
        return 0

    cdef int take_out(self, Timer t) except -1:
        """Remove t from the heap; the caller keeps its own reference to t."""
        cdef Py_ssize_t i = t.pos
        t.pos = -1
        self.n -= 1
        if i != self.n:
            self.place(i, self.heap[self.n])
            self.resift(i)
        Py_DECREF(t)
        return 0

    cdef int remove(self, Timer t) except -1:
        self.take_out(t)
        self.settle()
        return 0

    # -- what the passes ask (the same methods as _timers_py._Queue)

    cpdef int clamp_ms(self, int ms) except -2:
        cdef double left
        cdef int left_ms
        if self.pending:
            return 0
        if self.n == 0:
            return ms
        left = self.heap[0].when - cya_monotonic()
        if left <= 0:
            return 0
        if left >= MAX_WAIT_MS / 1000.0:
            left_ms = MAX_WAIT_MS
        else:
            left_ms = <int>ceil(left * 1000.0)
        return left_ms if ms < 0 or left_ms < ms else ms

    def clamp(self, timeout):
        ms = _spec_module().seconds_ms(timeout)
        if ms is None:
            return timeout
        got = self.clamp_ms(ms)
        if got == ms:
            return timeout
        return got / 1000

    def clamp_poll(self, ms):
        if ms is None:
            got = self.clamp_ms(-1)
            return None if got < 0 else got
        if type(ms) is not int or not -(2**31) <= ms <= MAX_WAIT_MS:
            return ms
        wanted = ms if ms >= 0 else -1
        got = self.clamp_ms(wanted)
        return ms if got == wanted else got

    def sleep(self, timeout, sleep=None):
        if sleep is not None:
            ms = None if timeout is None else _spec_module().seconds_ms(timeout)
            sleep(timeout if ms is None else self.clamp(timeout))
        else:
            self.idle_wait(timeout)

    cdef int idle_wait(self, object timeout) except -1:
        """A pass with nothing to wait for: time.sleep(timeout), cut short."""
        import time

        ms = None if timeout is None else _spec_module().seconds_ms(timeout)
        if ms is None:
            time.sleep(timeout)
        else:
            self.wait_ms_c(ms)
        return 0

    def wait_ms(self, int ms):
        self.wait_ms_c(ms)

    cdef int wait_ms_c(self, int ms) except -1:
        cdef cya_pollfd pfd
        cdef int got = 0
        cdef int err = 0
        cdef int slot = -1
        cdef double deadline = 0.0
        import time

        ms = self.clamp_ms(ms)
        if self.wake < 0 and ms < 0:
            time.sleep(None)
        pfd.fd = self.wake
        pfd.events = CYA_POLLIN
        pfd.revents = 0
        if ms > 0:
            deadline = cya_monotonic() + ms / 1000.0
        if self.wake < 0 and ms != 0:
            # Timers alone, no hand-over yet: the first may interrupt (kick) us.
            slot = wait_begin(self.map)
        try:
            while True:
                with nogil:
                    if cya_wait_kicked(slot):
                        got = 0
                    else:
                        got = cya_poll(&pfd, 1, ms)
                        err = errno
                if got >= 0:
                    break
                if err != EINTR:
                    raise OSError(err, os.strerror(err))
                _check_signals()
                if cya_wait_kicked(slot):
                    got = 0
                    break
                if ms > 0:
                    ms = <int>max(0.0, ceil((deadline - cya_monotonic()) * 1000.0))
        finally:
            cya_wait_end(slot)
        if got > 0:
            self.drain_wake()
        return 0

    # -- the wake-up descriptor

    cdef int open_wake(self) except -1:
        cdef int r, w
        if cya_wake_open(&r, &w) < 0:
            raise OSError(errno, os.strerror(errno))
        self.wake = r
        self.wake_w = w
        key = _WakeKey.__new__(_WakeKey)
        (<_WakeKey>key).fd = r
        self.wake_key = key
        return 0

    cdef int close_wake(self) except -1:
        cdef int r = self.wake
        cdef int w = self.wake_w
        if r < 0:
            return 0
        self.wake = self.wake_w = -1
        self.wake_key = None
        os.close(r)
        if w != r:
            os.close(w)
        return 0

    def drain(self):
        self.drain_wake()

    cdef void drain_wake(self) noexcept:
        if self.wake >= 0:
            cya_wake_drain(self.wake)

    # -- after a pass's I/O

    def run(self):
        self.run_due()

    cdef int run_due(self) except -1:
        cdef double now = cya_monotonic()
        cdef unsigned long long limit = self.next_seq
        cdef Timer t
        cdef double when
        cdef Py_ssize_t _k
        pending = self.pending
        try:
            for _k in range(len(pending)):
                callback, args = pending.popleft()
                _call(callback, args, None)
            while self.n:
                if self.heap[0].when > now or self.heap[0].seq >= limit:
                    break
                t = <Timer>self.heap[0].timer
                when = self.heap[0].when
                self.take_out(t)
                if t.periodic:
                    when += t.delay
                    self.push(t, when if when > now else now + t.delay)
                _call(t.callback, t.args, t)
        finally:
            self.settle()
        return 0

    cdef int close(self) except -1:
        cdef Timer t
        while self.n:
            t = <Timer>self.heap[self.n - 1].timer
            t.is_cancelled = True
            self.take_out(t)
        self.pending.clear()
        with _lock:
            self.close_wake()
        self.settle()
        return 0


cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1


cdef int _check_signals() except -1:
    PyErr_CheckSignals()
    return 0


cdef int _call(object callback, tuple args, Timer timer) except -1:
    if RERAISED is None:
        _spec_module()
    try:
        callback(*args)
    except RERAISED:
        raise
    except:  # noqa: E722  reported, as handle_error() reports a channel's
        _spec.report(callback)
        if timer is not None and timer.periodic:
            timer.cancel()
    return 0


cdef TimerQueue _queue_for(object map):
    key = id(map)
    q = _active.get(key)
    if q is None:
        q = _idle.get(key)
        if q is None:
            with _lock:
                q = _active.get(key) or _idle.get(key)
                if q is None:
                    q = TimerQueue(map)
                    _idle[key] = q
    return <TimerQueue>q


# ---------------------------------------------------------- what cores export


def queue(map):
    """The queue the passes must serve for map, or None (the common case)."""
    if not _active:
        return None
    return _active.get(id(map))


def alive(map):
    """Whether the map's timers or hand-overs keep loop() going."""
    return has_live(map)


cdef bint has_live(object map) except -1:
    if not _active:
        return False
    q = _active.get(id(map))
    return q is not None and bool((<TimerQueue>q).n or (<TimerQueue>q).pending)


def call_later(seconds, callback, tuple args, map):
    cdef double delay = _spec_module().delay_of(seconds)
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    q = _queue_for(map)
    t = _make_timer(q, delay, False, callback, args)
    q.push(t, cya_monotonic() + delay)
    return t


def call_every(seconds, callback, tuple args, map):
    cdef double delay = _spec_module().delay_of(seconds)
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    q = _queue_for(map)
    t = _make_timer(q, delay, True, callback, args)
    q.push(t, cya_monotonic() + delay)
    return t


def call_soon_threadsafe(callback, tuple args, map):
    cdef TimerQueue q
    cdef bint first = False
    if not callable(callback):
        raise TypeError(f"callback must be callable, not {type(callback).__name__}")
    q = _queue_for(map)
    with _lock:
        if q.wake < 0:
            q.open_wake()
            first = True
        # The callback first, then the wake-up (see _timers_py).
        q.pending.append((callback, args))
        _active[id(map)] = q
        _idle.pop(id(map), None)
        cya_wake_signal(q.wake_w)
    if first:
        _end_waits(map, q.wake)


# ------------------------------------ the first hand-over to a waiting loop
#
# A pass that started waiting before the map had a wake-up descriptor does
# not watch it; programs that never hand over must not pay a descriptor (or
# anything else) for the day they might, so the first hand-over ends such a
# wait itself:
# - a pass waiting on the map's kernel set (epoll/kqueue) gets the new
#   descriptor added to that set, once (the core does it: set_kset_hook);
#   the descriptor is ready, so the wait ends;
# - a pass waiting in poll(2) over a snapshot, or sleeping with timers alone,
#   cannot be given another descriptor: it registers (wait_begin) before it
#   blocks, and the first hand-over interrupts it with SIGURG, whose default
#   action is to ignore it.  The registration and the signal only happen in
#   passes without the descriptor and in waits that block; a signal that
#   comes just before its waiter blocks is sent again (_end_waits).
# Either way the pass ends without I/O and runs the hand-over.

cdef kset_hook _kset_hook = NULL


cdef int set_kset_hook(kset_hook hook) except -1:
    global _kset_hook
    _kset_hook = hook
    return 0


cdef int wait_begin(object map) except -2:
    """Register a blocking wait of a pass over map that has no wake-up descriptor.

    Returns the slot to give wait_end, -1 when the table is full.  A
    hand-over that came since the pass looked for the map's queue marks the
    wait kicked at once: the waiter then does not block at all.
    """
    cdef int slot = cya_wait_begin(<void *>map)
    if _active:
        q = _active.get(id(map))
        if q is not None and (<TimerQueue>q).wake >= 0:
            cya_wait_mark(slot)
    return slot


cdef void wait_end(int slot) noexcept:
    cya_wait_end(slot)


cdef bint kicked(int slot) noexcept nogil:
    return cya_wait_kicked(slot) != 0


cdef int _end_waits(object map, int fd) except -1:
    """The first hand-over to map: end the waits that do not watch fd."""
    cdef cya_kicks sent
    cdef int k
    if _kset_hook != NULL:
        _kset_hook(map, fd)
    if cya_kick(<void *>map, &sent) == 0:
        return 0
    # A waiter signalled between registering and blocking sleeps on: send
    # again until every wait kicked has ended (the GIL is let go meanwhile,
    # which the waiter needs to end), 25 ms at most.
    for k in range(8):
        with nogil:
            cya_nap_us(100 << k)
        if cya_kick_again(&sent) == 0:
            break
    return 0


def close_timers(map):
    key = id(map)
    q = _active.get(key) or _idle.get(key)
    if q is not None:
        (<TimerQueue>q).close()


def _after_fork():
    global _lock
    _lock = threading.Lock()
    # The parent's waiting threads are not in the child: never signal them.
    cya_wait_reset()
    for q in list(_active.values()):
        if (<TimerQueue>q).wake >= 0:
            (<TimerQueue>q).close_wake()
            (<TimerQueue>q).open_wake()
            if (<TimerQueue>q).pending:
                cya_wake_signal((<TimerQueue>q).wake_w)


os.register_at_fork(after_in_child=_after_fork)
