# cython: language_level=3
"""The compiled core of cyasyncore: the loop, its passes and readiness dispatch.

It exports the names listed in ``asyncore._core.EXPORTS`` and behaves exactly
like ``asyncore._core_py``, the pure-Python core, which is the readable
specification: read that first.  What differs is how the work is done.  A
pass snapshots the map into C arrays instead of a list of tuples, builds a
``struct pollfd`` array instead of Python lists and a poll object, and waits
with the GIL released, so loops in other threads run meanwhile.

Every call into user code goes through attribute lookup on the object, so a
subclass's override always wins, and the objects need not be dispatchers.
Only ExitNow, KeyboardInterrupt and SystemExit leave dispatch; every other
exception reaches the object's handle_error().

Built from five units (issue 15): this one, and the ones it cimports or
imports: _asyncore_state (the descriptors on our classes), _asyncore_kset
(the kernel interest sets), _asyncore_timers (timers and hand-overs) and
_asyncore_methods (our classes' methods in C, and chat_consume).
"""

cimport cython
from cpython.dict cimport PyDict_Next
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Free
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.errno cimport EBADF, EINTR, errno
from libc.math cimport ceil

from includes.helpers cimport _deadline, _grow, _ms_left
from includes.system cimport (
    CYA_HAVE_POLL,
    CYA_POLLERR,
    CYA_POLLHUP,
    CYA_POLLIN,
    CYA_POLLNVAL,
    CYA_POLLOUT,
    CYA_POLLPRI,
    cya_poll,
    cya_pollfd,
)
# The channel-state unit's (issue 15) deque and socket types, bound at the bottom.
from _asyncore_state cimport _deque, _socket_type
# The kernel interest sets (issue 15): a long-lived map's registry, asked
# and waited on by the passes over the set below.
from _asyncore_kset cimport (
    MODE_POLL,
    MODE_SELECT,
    WANT_EXCEPT,
    WANT_READ,
    WANT_WRITE,
    _after_events,
    _before_events,
    _Buffers,
    _Entry,
    _kset_add_wake,
    _KSet,
    _mute,
    _Ready,
    _Registry,
    _registry_for,
    _sync,
    _wait_ready,
    set_poll_wait,
)
# Timers (issue 14): the queues' C methods, called from the passes.
from _asyncore_timers cimport (
    TimerQueue,
    has_live,
    kicked,
    set_kset_hook,
    wait_begin,
    wait_end,
)

import collections
import os
import socket
import time

cdef extern from "Python.h":
    int PyObject_AsFileDescriptor(object o) except -1
    object PyNumber_Index(object o)
    PyObject *PyDict_GetItemWithError(object d, object k) except? NULL

NAME = "compiled"

# What asyncore and asynchat find on this module of the units it is built
# from (issue 15): the descriptors they put on their classes, the kernel-set
# switches the tests and ``python -m asyncore`` use, and our own classes'
# compiled methods with async_chat's input split (the twin of
# _core_py.chat_consume lives with the methods it serves).
import _asyncore_kset
import _asyncore_methods
import _asyncore_state

for _unit, _names in (
        (_asyncore_state, ("Watched", "Predicate", "ClassSlot", "touch", "declare_own")),
        (_asyncore_kset, ("use_kernel_set", "backend", "interest_info", "_after_fork")),
        (_asyncore_methods, ("chat_consume", "bind_methods", "bind_chat", "sockio_enabled"))):
    for _name in _names:
        globals()[_name] = getattr(_unit, _name)
del _unit, _names, _name

# What select() would report, in poll(2)'s vocabulary: see _core_py.
cdef short SELECT_READ = CYA_POLLIN | CYA_POLLHUP | CYA_POLLERR
cdef short SELECT_WRITE = CYA_POLLOUT | CYA_POLLERR
cdef short SELECT_EXCEPT = CYA_POLLPRI
cdef short POLL_CLOSE = CYA_POLLHUP | CYA_POLLERR | CYA_POLLNVAL

cdef int MAX_WAIT_MS = 2147483647
cdef long long MAX_SECONDS_INT = 9223372036  # (2**63 - 1) // 10**9
# select() takes seconds that fit CPython's time type: 2**63 ns.
cdef double MAX_SECONDS_FLOAT = 9223372036.854775808

# Set at the bottom of this module (see there for why).
cdef object RERAISED = None
cdef object DISCONNECTED = None
cdef object PYTIME_TOO_LARGE = None
cdef object _pure = None


# ---------------------------------------------------------------- dispatch


def read(obj):
    _read(obj)


def write(obj):
    _write(obj)


def _exception(obj):
    _expt(obj)


def readwrite(obj, flags):
    _readwrite(obj, flags)


cdef int _read(object obj) except -1:
    try:
        obj.handle_read_event()
    except RERAISED:
        raise
    except:  # noqa: E722  everything else is the channel's problem
        obj.handle_error()
    return 0


cdef int _write(object obj) except -1:
    try:
        obj.handle_write_event()
    except RERAISED:
        raise
    except:  # noqa: E722
        obj.handle_error()
    return 0


cdef int _expt(object obj) except -1:
    try:
        obj.handle_expt_event()
    except RERAISED:
        raise
    except:  # noqa: E722
        obj.handle_error()
    return 0


cdef int _readwrite(object obj, object flags) except -1:
    cdef long bits
    try:
        # Any object that supports & with an int may come in; the common
        # case (an int from our own pass) is tested in C.
        if type(flags) is int and 0 <= flags <= 0xFFFF:
            bits = flags
            if bits & CYA_POLLIN:
                obj.handle_read_event()
            if bits & CYA_POLLOUT:
                obj.handle_write_event()
            if bits & CYA_POLLPRI:
                obj.handle_expt_event()
            if bits & POLL_CLOSE:
                obj.handle_close()
        else:
            if flags & CYA_POLLIN:
                obj.handle_read_event()
            if flags & CYA_POLLOUT:
                obj.handle_write_event()
            if flags & CYA_POLLPRI:
                obj.handle_expt_event()
            if flags & POLL_CLOSE:
                obj.handle_close()
    except OSError as err:
        if err.errno in DISCONNECTED:
            obj.handle_close()
        else:
            obj.handle_error()
    except RERAISED:
        raise
    except:  # noqa: E722
        obj.handle_error()
    return 0


# ------------------------------------------------------- one pass's arrays


@cython.final
cdef class _Pass:
    """The arrays of one pass: a snapshot of the map and its pollfds.

    Owned by one loop() or poll() call (never shared, so nested loops and
    loops in other threads each have their own) and reused across that
    call's passes, so a steady loop allocates nothing per pass.
    """

    cdef PyObject **keys      # owned references, map order
    cdef PyObject **objs      # owned references
    cdef unsigned char *want  # WANT_* bits per entry
    cdef Py_ssize_t *slot     # pollfd index -> entry index
    cdef cya_pollfd *pfd
    cdef Py_ssize_t n         # entries in the snapshot
    cdef Py_ssize_t cap

    def __dealloc__(self):
        self.release()
        PyMem_Free(self.keys)
        PyMem_Free(self.objs)
        PyMem_Free(self.want)
        PyMem_Free(self.slot)
        PyMem_Free(self.pfd)

    cdef int reserve(self, Py_ssize_t size) except -1:
        if size <= self.cap:
            return 0
        size = max(size, 2 * self.cap, 16)
        if not _grow(<void **>&self.keys, size * sizeof(PyObject *)) \
                or not _grow(<void **>&self.objs, size * sizeof(PyObject *)) \
                or not _grow(<void **>&self.want, size * sizeof(unsigned char)) \
                or not _grow(<void **>&self.slot, size * sizeof(Py_ssize_t)) \
                or not _grow(<void **>&self.pfd, size * sizeof(cya_pollfd)):
            raise MemoryError()
        self.cap = size
        return 0

    cdef int take(self, object map) except -1:
        """Snapshot the map's (key, channel) pairs, as 3.11's list(map.items())."""
        cdef Py_ssize_t pos = 0
        cdef PyObject *k
        cdef PyObject *v
        self.release()
        if type(map) is dict:
            self.reserve(len(<dict>map))
            # No Python code runs inside this loop, so the dict cannot change.
            while PyDict_Next(map, &pos, &k, &v):
                Py_INCREF(<object>k)
                Py_INCREF(<object>v)
                self.keys[self.n] = k
                self.objs[self.n] = v
                self.n += 1
            return 0
        # Any other mapping: its own items(), as 3.11 called it.
        items = list(map.items())
        self.reserve(len(items))
        for key, obj in items:
            Py_INCREF(key)
            Py_INCREF(obj)
            self.keys[self.n] = <PyObject *>key
            self.objs[self.n] = <PyObject *>obj
            self.n += 1
        return 0

    cdef void release(self):
        cdef Py_ssize_t i
        cdef Py_ssize_t n = self.n
        # Zero first: a __del__ run by a decref may not see stale entries.
        self.n = 0
        for i in range(n):
            Py_XDECREF(self.keys[i])
            Py_XDECREF(self.objs[i])


# One _Pass kept between calls, so loop(count=1) in a test server's thread
# does not allocate its arrays every time.  Taken and put back under the GIL;
# a nested or concurrent call finds it taken and makes its own.
cdef _Pass _spare = None


cdef _Pass _take_pass():
    global _spare
    cdef _Pass p = _spare
    if p is None:
        return _Pass()
    _spare = None
    return p


cdef void _give_back(_Pass p) noexcept:
    global _spare
    if p.cap <= 4096:
        _spare = p


cdef inline object _lookup(object map, PyObject *key):
    """map.get(key), without a method call for a plain dict."""
    cdef PyObject *found
    if type(map) is dict:
        found = PyDict_GetItemWithError(map, <object>key)
        if found == NULL:
            return None
        return <object>found
    return map.get(<object>key)


cdef int _wait(cya_pollfd *pfd, Py_ssize_t count, int ms, int slot=-1) except -1:
    """poll(2) with the GIL released; EINTR runs signal handlers and retries.

    slot: the wait's registration for a first hand-over (see _pass_wait),
    which ends it as a timeout would.
    """
    cdef int ready
    cdef int err = 0
    cdef double deadline = 0.0
    if ms > 0:
        deadline = _deadline(ms)
    while True:
        with nogil:
            if slot >= 0 and kicked(slot):
                ready = 0
            else:
                ready = cya_poll(pfd, <unsigned long>count, ms)
                err = errno
        if ready >= 0:
            return ready
        if err != EINTR:
            raise OSError(err, os.strerror(err))
        # A handler that raises ends the wait, as it does in select.select().
        PyErr_CheckSignals()
        if slot >= 0 and kicked(slot):
            return 0
        if ms > 0:
            ms = _ms_left(deadline)


cdef int _wait_plain(cya_pollfd *pfd, Py_ssize_t count, int ms) except -1:
    return _wait(pfd, count, ms)


# The kernel-set unit's waits beside the set (descriptors the kernel
# refused, a set not opened yet) are this same wait.
set_poll_wait(_wait_plain)


# ------------------------------------------- timers (issue 14), in the passes
#
# The queues live in _asyncore_timers (a C heap per map); a pass
# looks for the map's queue only when some map has one (_tactive non-empty),
# so a program without timers pays one C truth test of an empty dict.

cdef dict _tactive = None


cdef inline TimerQueue _tq(object map):
    """The map's timer queue, or None (always None without timers)."""
    if not _tactive:
        return None
    return _tq_lookup(map)


cdef TimerQueue _tq_lookup(object map):
    # Out of line: the test above is all a program without timers runs.
    return <TimerQueue>_tactive.get(id(map))


cdef int _run_timers(object map) except -1:
    """Run the map's due timers and hand-overs, after the pass's I/O."""
    cdef TimerQueue tq = _tq(map)
    if tq is not None:
        tq.run_due()
    return 0


cdef int _idle_pass(object timeout, object map) except -1:
    """A select-style pass over an empty map that has timers."""
    cdef TimerQueue tq = _tq(map)
    if tq is not None:
        tq.idle_wait(timeout)
        tq.run_due()
    return 0


cdef inline int _wake_fd(TimerQueue tq) noexcept:
    return -1 if tq is None else tq.wake


cdef int _pass_wait(object map, int wake, cya_pollfd *pfd, Py_ssize_t count, int ms) except -1:
    """A snapshot pass's wait.

    Without the map's wake-up descriptor (wake < 0), a blocking wait is
    registered, so that the first hand-over can end it (_asyncore_timers).
    """
    cdef int slot
    if wake >= 0 or ms == 0:
        return _wait(pfd, count, ms)
    slot = wait_begin(map)
    try:
        return _wait(pfd, count, ms, slot)
    finally:
        wait_end(slot)


cdef int _wait_with_wake(int kfd, TimerQueue tq, int ms) except -1:
    """Wait on a kernel set's descriptor and the wake-up descriptor; drain a wake-up."""
    cdef cya_pollfd pfd[2]
    pfd[0].fd = kfd
    pfd[0].events = CYA_POLLIN
    pfd[0].revents = 0
    pfd[1].fd = tq.wake
    pfd[1].events = CYA_POLLIN
    pfd[1].revents = 0
    _wait(pfd, 2, ms)
    if pfd[1].revents:
        tq.drain_wake()
    return 0


# ------------------------------------------------------ select-style pass


cdef int select_timeout_ms(object timeout) except -2:
    """select()'s timeout, validated as select() does (see _core_py), in ms."""
    cdef double seconds
    cdef bint index_ok
    if timeout is None:
        return -1
    if isinstance(timeout, float):
        seconds = timeout
        if seconds != seconds:
            raise ValueError("Invalid value NaN (not a number)")
        if not -MAX_SECONDS_FLOAT <= seconds < MAX_SECONDS_FLOAT:
            raise OverflowError("timestamp out of range for platform time_t")
    else:
        # select() replaces the conversion's TypeError with its own, which
        # so carries no __context__: raise ours once the first is cleared.
        index_ok = True
        try:
            timeout = PyNumber_Index(timeout)
        except TypeError:
            index_ok = False
        if not index_ok:
            raise TypeError("timeout must be a float or None")
        if not -MAX_SECONDS_INT <= timeout <= MAX_SECONDS_INT:
            raise OverflowError(PYTIME_TOO_LARGE)
        seconds = <double><long long>timeout
    if seconds < 0:
        raise ValueError("timeout must be non-negative")
    seconds = ceil(seconds * 1000.0)
    if seconds > MAX_WAIT_MS:
        return MAX_WAIT_MS
    return <int>seconds


def poll(timeout, map):
    if not CYA_HAVE_POLL:
        return _pure.poll(timeout, map)
    if map:
        p = _take_pass()
        try:
            _poll_select(p, timeout, map)
        finally:
            _give_back(p)
        _run_timers(map)
    elif _tactive:
        # Timers (issue 14): an empty map with timers waits for them.
        _idle_pass(timeout, map)


cdef int _poll_select(_Pass p, object timeout, object map) except -1:
    cdef Py_ssize_t i, j
    cdef Py_ssize_t m = 0
    cdef unsigned char want
    cdef double deadline = 0.0
    cdef int wake = -1
    cdef TimerQueue tq
    cdef _Registry reg = _registry_for(map)
    if reg is not None:
        _sync(reg, map, MODE_SELECT)
        if reg.valid:
            return _kpoll_select(reg, timeout, map)
    tq = _tq(map)
    try:
        p.take(map)
        # Ask every channel, in map order, exactly as 3.11 does.
        for i in range(p.n):
            obj = <object>p.objs[i]
            is_r = obj.readable()
            is_w = obj.writable()
            want = 0
            if is_r:
                want = WANT_READ
            # A listening socket is never waited on for writing.
            if is_w and not obj.accepting:
                want |= WANT_WRITE
            # Whatever is asked about at all is watched for exceptions too.
            if is_r or is_w:
                want |= WANT_EXCEPT
            p.want[i] = want
            if want:
                p.slot[m] = i
                m += 1
        if m == 0:
            if tq is not None:
                tq.idle_wait(timeout)
            else:
                time.sleep(timeout)
            return 0
        ms = select_timeout_ms(timeout)
        if tq is not None:
            # Timers: no longer than the next deadline; wake on a hand-over.
            ms = tq.clamp_ms(ms)
            wake = tq.wake
        # Descriptors are resolved in select()'s order (read list, then write
        # list), so the first bad key raises what select() would have raised.
        for j in range(m):
            i = p.slot[j]
            p.pfd[j].events = CYA_POLLPRI
            p.pfd[j].revents = 0
            if p.want[i] & WANT_READ:
                p.pfd[j].fd = PyObject_AsFileDescriptor(<object>p.keys[i])
                p.pfd[j].events |= CYA_POLLIN
            if p.want[i] & WANT_WRITE:
                p.pfd[j].events |= CYA_POLLOUT
        for want in (WANT_WRITE, WANT_EXCEPT):
            for j in range(m):
                i = p.slot[j]
                if p.want[i] & (WANT_READ | WANT_WRITE) == want & (WANT_READ | WANT_WRITE):
                    p.pfd[j].fd = PyObject_AsFileDescriptor(<object>p.keys[i])
        if wake >= 0:
            p.reserve(m + 1)
            p.pfd[m].fd = wake
            p.pfd[m].events = CYA_POLLIN
            p.pfd[m].revents = 0
        if ms > 0:
            deadline = _deadline(ms)
        while True:
            if _pass_wait(map, wake, p.pfd, m + (wake >= 0), ms) == 0:
                return 0
            _drop_closed_during_wait(p, m, map)
            if _select_would_report(p, m):
                break
            if wake >= 0 and p.pfd[m].revents:
                # Timers: only a hand-over woke the wait.
                tq.drain_wake()
                return 0
            # poll(2) reports a hang-up or error on a descriptor that select()
            # was not asked about for reading (or writing): select() would go
            # on sleeping, so stop watching those and wait out the rest.
            for j in range(m):
                if p.pfd[j].revents:
                    p.pfd[j].fd = -1
            if ms == 0:
                return 0
            if ms > 0:
                ms = _ms_left(deadline)
        # Reads, then writes, then exceptional conditions, each in map order;
        # the map is consulted again because a handler may have changed it.
        for j in range(m):
            i = p.slot[j]
            if p.want[i] & WANT_READ and p.pfd[j].revents & SELECT_READ:
                obj = _lookup(map, p.keys[i])
                if obj is not None:
                    _read(obj)
        for j in range(m):
            i = p.slot[j]
            if p.want[i] & WANT_WRITE and p.pfd[j].revents & SELECT_WRITE:
                obj = _lookup(map, p.keys[i])
                if obj is not None:
                    _write(obj)
        for j in range(m):
            if p.pfd[j].revents & SELECT_EXCEPT:
                obj = _lookup(map, p.keys[p.slot[j]])
                if obj is not None:
                    _expt(obj)
    finally:
        p.release()
    return 0


cdef int _drop_closed_during_wait(_Pass p, Py_ssize_t m, object map) except -1:
    """Stop watching what poll(2) called closed (POLLNVAL) that select() would not fail on.

    As _core_py._closed_during_wait: select() checks its descriptors when
    the wait starts, poll(2) again when it wakes.  A channel that left the
    map during the pass (close() from another thread or a signal handler)
    closed its descriptor while select() would have slept: not ready.  One
    still in the map was closed behind the loop's back: OSError(EBADF).
    """
    cdef Py_ssize_t j
    for j in range(m):
        if p.pfd[j].revents & CYA_POLLNVAL:
            if <object>p.keys[p.slot[j]] in map:
                # select() fails as a whole on a closed descriptor.
                raise OSError(EBADF, os.strerror(EBADF))
            p.pfd[j].fd = -1
            p.pfd[j].revents = 0
    return 0


cdef bint _select_would_report(_Pass p, Py_ssize_t m) noexcept:
    cdef Py_ssize_t j
    cdef unsigned char want
    cdef short revents
    for j in range(m):
        revents = p.pfd[j].revents
        want = p.want[p.slot[j]]
        if (want & WANT_READ and revents & SELECT_READ) \
                or (want & WANT_WRITE and revents & SELECT_WRITE) \
                or revents & SELECT_EXCEPT:
            return True
    return False


# -------------------------------------------------------- poll-style pass


def poll2(timeout, map):
    if not CYA_HAVE_POLL:
        return _pure.poll2(timeout, map)
    p = _take_pass()
    try:
        _poll_poll(p, timeout, map)
    finally:
        _give_back(p)
    _run_timers(map)


cdef int _poll_poll(_Pass p, object timeout, object map) except -1:
    cdef Py_ssize_t i, j
    cdef Py_ssize_t m = 0
    cdef short flags
    cdef int fd
    cdef int ms = -1
    cdef dict seen = None
    cdef _Registry reg
    cdef int wake = -1
    cdef TimerQueue tq
    original = timeout
    if timeout is not None:
        timeout = int(timeout * 1000)
    tq = _tq(map)
    if not map and tq is None:
        return 0
    # Timers: an empty map (timers alone) needs no kernel set.
    reg = _registry_for(map) if map else None
    if reg is not None:
        _sync(reg, map, MODE_POLL)
        if reg.valid:
            ms = -1 if timeout is None else _poll_timeout_ms(timeout)
            return _kpoll_poll(reg, original, ms, map)
    try:
        p.take(map)
        for i in range(p.n):
            obj = <object>p.objs[i]
            flags = 0
            if obj.readable():
                flags = CYA_POLLIN | CYA_POLLPRI
            if obj.writable() and not obj.accepting:
                flags |= CYA_POLLOUT
            if not flags:
                continue
            key = <object>p.keys[i]
            fd = PyObject_AsFileDescriptor(key)
            if type(key) is not int and seen is None:
                # Keys that are not ints may share a descriptor; a poll
                # object keeps one registration per descriptor, the last.
                seen = {p.pfd[k].fd: k for k in range(m)}
            if seen is not None:
                j = seen.get(fd, -1)
                if j >= 0:
                    p.pfd[j].events = flags
                    continue
                seen[fd] = m
            p.pfd[m].fd = fd
            p.pfd[m].events = flags
            p.pfd[m].revents = 0
            m += 1
        if timeout is not None:
            ms = _poll_timeout_ms(timeout)
        if tq is not None:
            # Timers: no longer than the next deadline; wake on a hand-over.
            ms = tq.clamp_ms(ms)
            wake = tq.wake
            if wake >= 0:
                p.reserve(m + 1)
                p.pfd[m].fd = wake
                p.pfd[m].events = CYA_POLLIN
                p.pfd[m].revents = 0
        if m == 0 and ms < 0 and wake < 0:
            # Nothing can ever end this wait: 3.11 hung here for good.  Fail
            # the way the select-style pass does with nothing to wait for.
            time.sleep(original)
        if _pass_wait(map, wake, p.pfd, m + (wake >= 0), ms) == 0:
            return 0
        if wake >= 0 and p.pfd[m].revents:
            tq.drain_wake()
        for j in range(m):
            if p.pfd[j].revents:
                # Looked up by descriptor number, as 3.11's poll object returned it.
                obj = _lookup_fd(map, p.pfd[j].fd)
                if obj is not None:
                    _readwrite(obj, p.pfd[j].revents)
    finally:
        p.release()
    return 0


cdef int _poll_timeout_ms(object ms) except? -2:
    """poll()'s check of a millisecond timeout, with its errors; negative is -1."""
    if not -9223372036854 <= ms <= 9223372036854:
        raise OverflowError(PYTIME_TOO_LARGE)
    if not -2147483648 <= ms <= MAX_WAIT_MS:
        raise OverflowError("timeout is too large")
    return ms if ms >= 0 else -1


cdef inline object _lookup_fd(object map, int fd):
    cdef object key = fd
    return _lookup(map, <PyObject *>key)

# ---------------------------------------------- passes over the kernel set
#
# A long-lived map's passes (issue 15: the set itself, its registries and
# their asking, is _asyncore_kset): the same dispatch as the snapshot
# passes, over what the kernel set reports ready.


cdef int _kpoll_select(_Registry reg, object timeout, object map) except -1:
    """select()'s pass over the kernel set: what select() would report, as it would."""
    cdef _Buffers buf
    cdef _Ready *ready
    cdef Py_ssize_t n, i, kept
    cdef int ms
    cdef double deadline = 0.0
    cdef PyObject *found
    cdef TimerQueue tq = _tq(map)
    if reg.n_select == 0 and reg.in_flight == 0:
        if tq is not None:
            tq.idle_wait(timeout)
        else:
            time.sleep(timeout)
        return 0
    ms = select_timeout_ms(timeout)
    if tq is not None:
        # Timers: no longer than the next deadline.
        ms = tq.clamp_ms(ms)
    if reg.kset is None:
        # Channels asked in another thread right now register here: wait
        # on the set they will join (as 3.11's select() waited on them).
        reg.kset = _KSet()
    if reg.n_bad:
        # select() fails as a whole on a descriptor that is not open.
        raise OSError(EBADF, os.strerror(EBADF))
    if ms > 0:
        deadline = _deadline(ms)
    buf = reg.take()
    try:
        while True:
            if _wake_fd(tq) >= 0:
                # Timers: the kernel set and the wake-up descriptor together.
                _wait_with_wake(reg.kset.kfd, tq, ms)
                n = _wait_ready(reg, 0, buf, False)
            else:
                n = _wait_ready(reg, ms, buf, False)
            ready = buf.out
            kept = 0
            for i in range(n):
                if ready[i].revents & CYA_POLLNVAL:
                    # select() fails as a whole on a closed descriptor.
                    raise OSError(EBADF, os.strerror(EBADF))
                if (ready[i].want & WANT_READ and ready[i].revents & SELECT_READ) \
                        or (ready[i].want & WANT_WRITE and ready[i].revents & SELECT_WRITE) \
                        or ready[i].revents & SELECT_EXCEPT:
                    ready[kept] = ready[i]
                    kept += 1
                else:
                    # poll(2)-style news select() would not give (a hang-up
                    # on a channel asked only about exceptional conditions):
                    # select() would sleep on, so stop watching it until the
                    # channel is asked again, and wait out the rest.
                    found = PyDict_GetItemWithError(reg.entries, ready[i].fd)
                    if found != NULL:
                        _mute(reg, <_Entry>found)
            if kept or buf.raw_count == 0 or ms == 0:
                n = kept
                break
            if ms > 0:
                ms = _ms_left(deadline)
            # Timers: what woke us may be a first hand-over (_kset_add_wake).
            tq = _tq(map)
        _before_events(reg, ready, n)
        try:
            # Reads, then writes, then exceptional conditions, each in map order.
            for i in range(n):
                if ready[i].want & WANT_READ and ready[i].revents & SELECT_READ:
                    obj = _lookup_fd(map, ready[i].fd)
                    if obj is not None:
                        _read(obj)
            for i in range(n):
                if ready[i].want & WANT_WRITE and ready[i].revents & SELECT_WRITE:
                    obj = _lookup_fd(map, ready[i].fd)
                    if obj is not None:
                        _write(obj)
            for i in range(n):
                if ready[i].revents & SELECT_EXCEPT:
                    obj = _lookup_fd(map, ready[i].fd)
                    if obj is not None:
                        _expt(obj)
        except BaseException:
            _after_events(reg, ready, n, False)
            raise
        _after_events(reg, ready, n, True)
    finally:
        reg.give_back(buf)
    return 0


cdef int _kpoll_poll(_Registry reg, object original, int ms, object map) except -1:
    """poll()'s pass over the kernel set: its flags to readwrite(), in map order."""
    cdef _Buffers buf
    cdef _Ready *ready
    cdef Py_ssize_t n, i
    cdef double deadline = 0.0
    cdef TimerQueue tq = _tq(map)
    if tq is not None:
        # Timers: no longer than the next deadline.
        ms = tq.clamp_ms(ms)
    if reg.n_poll == 0 and ms < 0 and reg.in_flight == 0 and _wake_fd(tq) < 0:
        # As the snapshot pass: nothing could end this wait.
        time.sleep(original)
    if reg.kset is None:
        reg.kset = _KSet()
    if ms > 0:
        deadline = _deadline(ms)
    buf = reg.take()
    try:
        while True:
            if _wake_fd(tq) >= 0:
                # Timers: the kernel set and the wake-up descriptor together.
                _wait_with_wake(reg.kset.kfd, tq, ms)
                n = _wait_ready(reg, 0, buf, True)
            else:
                n = _wait_ready(reg, ms, buf, True)
            # Only what was not for us (see _wait_ready): wait out the rest.
            if n or buf.raw_count == 0 or ms == 0:
                break
            if ms > 0:
                ms = _ms_left(deadline)
            # Timers: what woke us may be a first hand-over (_kset_add_wake).
            tq = _tq(map)
        ready = buf.out
        _before_events(reg, ready, n)
        try:
            for i in range(n):
                obj = _lookup_fd(map, ready[i].fd)
                if obj is not None:
                    _readwrite(obj, ready[i].revents)
        except BaseException:
            _after_events(reg, ready, n, False)
            raise
        _after_events(reg, ready, n, True)
    finally:
        reg.give_back(buf)
    return 0

# ------------------------------------------------------------------- loop


def loop(timeout, use_poll, map, count):
    cdef _Pass p
    cdef bint with_poll = use_poll and CYA_HAVE_POLL
    if not CYA_HAVE_POLL:
        return _pure.loop(timeout, use_poll, map, count)
    p = _take_pass()
    try:
        _loop(p, with_poll, timeout, map, count)
    finally:
        _give_back(p)


cdef int _loop(_Pass p, bint with_poll, object timeout, object map, object count) except -1:
    cdef long long left
    # Timers (issue 14): live timers keep the loop going as channels do;
    # without any, the test is 3.11's ``while map``.
    if count is None:
        while map or (_tactive and has_live(map)):
            _one_pass(p, with_poll, timeout, map)
    elif type(count) is int and -2**62 < count < 2**62:
        left = count
        while (map or (_tactive and has_live(map))) and left > 0:
            _one_pass(p, with_poll, timeout, map)
            left -= 1
    else:
        # A float, a huge int or something stranger: Python's arithmetic, as 3.11.
        while (map or (_tactive and has_live(map))) and count > 0:
            _one_pass(p, with_poll, timeout, map)
            count = count - 1
    return 0


cdef inline int _one_pass(_Pass p, bint with_poll, object timeout, object map) except -1:
    if with_poll:
        _poll_poll(p, timeout, map)
    elif map:
        _poll_select(p, timeout, map)
    elif _tactive:
        # Timers: an empty map with timers waits for them.
        return _idle_pass(timeout, map)
    else:
        return 0
    return _run_timers(map)


# Timers (issue 14): the queues of the compiled timers unit (see _tq).  The
# unit imports nothing of asyncore at load (the cimport above loaded it
# already), so its names are bound before the import below.
import _asyncore_timers as _timers_module

timers = _timers_module
Timer = _timers_module.Timer
call_later = _timers_module.call_later
call_every = _timers_module.call_every
call_soon_threadsafe = _timers_module.call_soon_threadsafe
close_timers = _timers_module.close_timers
_tactive = _timers_module._active
set_kset_hook(_kset_add_wake)

# The shared names come last: importing asyncore's package runs its core
# selection, which imports this module; by now every export above exists,
# so that nested import finds a complete core.
from asyncore import _core_py as _pure_module
from asyncore._common import DISCONNECTED as _DISCONNECTED
from asyncore._common import PYTIME_TOO_LARGE as _PYTIME_TOO_LARGE
from asyncore._common import RERAISED as _RERAISED

RERAISED = _RERAISED
DISCONNECTED = _DISCONNECTED
_deque = collections.deque
_socket_type = socket.socket
PYTIME_TOO_LARGE = _PYTIME_TOO_LARGE
_pure = _pure_module
