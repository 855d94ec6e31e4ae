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
"""

cimport cython
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, PyObject
from libc.errno cimport EINTR, errno
from libc.math cimport ceil
from libc.string cimport memset

from includes.system cimport (
    CYA_HAVE_POLL,
    CYA_POLLERR,
    CYA_POLLHUP,
    CYA_POLLIN,
    CYA_POLLNVAL,
    CYA_POLLOUT,
    CYA_POLLPRI,
    cya_find,
    cya_monotonic,
    cya_poll,
    cya_pollfd,
    cya_prefix_at_end,
    CYA_KSET,
    CYA_KSET_NAME,
    cya_kevent,
    cya_kraw,
    cya_kset_check,
    cya_kset_close,
    cya_kset_forget,
    cya_kset_open,
    cya_kset_set,
    cya_kset_wait,
    cya_kset_add_once,
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

# recv() and send() on a socket's descriptor (issue 11; see the methods below).
cdef extern from "sockio.h":
    object cya_sock_recv(object sock, object size)
    object cya_sock_send(object sock, object data)
    int cya_fast_fd(object sock)
    int cya_sock_fd(object sock)
    Py_ssize_t cya_send_raw(int fd, object data, Py_ssize_t most, int *err)
    void cya_sockio_enable(PyTypeObject *type, Py_ssize_t fd_offset, Py_ssize_t timeout_offset,
                           object recv_name, object send_name, object recv_method,
                           object send_method)
    bint cya_sockio_enabled()
    int cya_peek_int(object o, Py_ssize_t offset)
    long long cya_peek_int64(object o, Py_ssize_t offset)

import collections
import os
import socket
import sys
import time

cdef extern from "Python.h":
    int PyObject_AsFileDescriptor(object o) except -1
    object PyNumber_Index(object o)
    PyObject *PyDict_GetItemWithError(object d, object k) except? NULL

NAME = "compiled"

# What select() would report, in poll(2)'s vocabulary: see _core_py.
cdef short SELECT_READ = CYA_POLLIN | CYA_POLLHUP | CYA_POLLERR
cdef short SELECT_WRITE = CYA_POLLOUT | CYA_POLLERR
cdef short SELECT_EXCEPT = CYA_POLLPRI
cdef short POLL_CLOSE = CYA_POLLHUP | CYA_POLLERR | CYA_POLLNVAL

cdef int MAX_WAIT_MS = 2147483647
cdef long long MAX_SECONDS_INT = 9223372036  # (2**63 - 1) // 10**9
# select() takes seconds that fit CPython's time type: 2**63 ns.
cdef double MAX_SECONDS_FLOAT = 9223372036.854775808

# Interest bits of one snapshot entry.
cdef enum:
    WANT_READ = 1
    WANT_WRITE = 2
    WANT_EXCEPT = 4

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


cdef bint _grow(void **ptr, size_t size) noexcept:
    cdef void *p = PyMem_Realloc(ptr[0], size)
    if p == NULL:
        return False
    ptr[0] = p
    return True


cdef inline object _lookup(object map, PyObject *key):
    """map.get(key), without a method call for a plain dict."""
    cdef PyObject *found
    if type(map) is dict:
        found = PyDict_GetItemWithError(map, <object>key)
        if found == NULL:
            return None
        return <object>found
    return map.get(<object>key)


cdef inline double _deadline(int ms) noexcept:
    """When a wait of ms milliseconds ends, on the monotonic clock."""
    return cya_monotonic() + ms / 1000.0


cdef inline int _ms_left(double deadline) noexcept:
    """What is left of a wait until deadline, in whole milliseconds rounded up."""
    return <int>max(0.0, ceil((deadline - cya_monotonic()) * 1000.0))


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


cdef int _kset_add_wake(object map, int fd) except -1:
    """The first hand-over to map: add its wake-up descriptor to the map's live kernel set.

    Once: a pass waiting on the set ends (the descriptor is ready), and
    reg.wait passes over the event (SIDE_SERIAL, no entry); later passes
    watch the descriptor themselves (_wait_with_wake).
    """
    cdef PyObject *found
    cdef _KSet kset
    if not _kset_on or type(map) is not dict:
        return 0
    found = PyDict_GetItemWithError(_registries, PyLong_FromVoidPtr(<void *>map))
    if found != NULL:
        kset = (<_Registry>found).kset
        if kset is not None:
            cya_kset_add_once(kset.kfd, fd, SIDE_SERIAL)
    return 0


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


cdef int _poll_select(_Pass p, object timeout, object map) except -1:
    cdef Py_ssize_t i, j
    cdef Py_ssize_t m = 0
    cdef unsigned char want
    cdef double deadline = 0.0
    cdef int wake = -1
    cdef TimerQueue tq
    cdef _Registry reg = _registry_for(map)
    if reg is not None:
        reg.sync(map, MODE_SELECT)
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
        reg.sync(map, MODE_POLL)
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


# ------------------------------------------------- the kernel interest set
#
# A map that loop() comes back to keeps its interest in the kernel (epoll or
# kqueue, see kset.h) between passes.  A _Registry follows the map through a
# dict watcher, so it sees every edit (map[fd] = obj, del, clear, update) as
# it happens, and keeps one _Entry per channel: the channel's last answers
# to readable()/writable() and what the kernel holds for it.
#
# A pass asks only the channels that may have changed their answers: the
# "dirty" ones.  A channel becomes dirty when it is added, when it had an
# event, and when state its predicates read is changed: the descriptors
# below (connected, accepting, producer_fifo, readable/writable set on the
# instance, __class__) and the out-buffer methods of dispatcher_with_send
# and async_chat call _touch().  Channels whose class does not use our own
# predicates -- or that we cannot fully watch -- are "volatile": asked every
# pass, exactly as 3.11 asked every channel.
#
# Entries hold borrowed references: the map owns the channels, and its
# watcher tells us before it lets go of one.  So an abandoned map and its
# channels are collected as they were in 3.11.

cdef extern from "Python.h":
    ctypedef enum PyDict_WatchEvent:
        PyDict_EVENT_ADDED
        PyDict_EVENT_MODIFIED
        PyDict_EVENT_DELETED
        PyDict_EVENT_CLONED
        PyDict_EVENT_CLEARED
        PyDict_EVENT_DEALLOCATED
    ctypedef int (*PyDict_WatchCallback)(PyDict_WatchEvent event, PyObject *d,
                                         PyObject *key, PyObject *new_value) noexcept
    int PyDict_AddWatcher(PyDict_WatchCallback cb)
    int PyDict_Watch(int watcher_id, object d) except -1

    ctypedef struct PyTypeObject "PyTypeObject":
        unsigned int tp_version_tag
        void *tp_getattro
        void *tp_setattro
        void *tp_descr_get
        void *tp_descr_set
        Py_ssize_t tp_dictoffset
    int PyUnstable_Type_AssignVersionTag(PyTypeObject *t)
    PyObject *_PyType_Lookup(PyTypeObject *t, PyObject *name)
    PyObject *PyObject_GenericGetAttr(PyObject *o, PyObject *name)
    int PyObject_GenericSetAttr(PyObject *o, PyObject *name, PyObject *v)
    PyObject *_PyObject_GenericGetAttrWithDict(PyObject *o, PyObject *name,
                                               PyObject *d, int suppress)
    PyObject *PyErr_Occurred()
    object PyObject_GenericGetDict(object o, void *context)
    object PyMethod_New(object func, object self)
    PyObject *PyErr_GetRaisedException()
    void PyErr_SetRaisedException(PyObject *exc)
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)
    PyTypeObject *_type_of "Py_TYPE"(PyObject *o)
    object PyLong_FromVoidPtr(void *p)
    void PyErr_Clear()

cdef extern from "stdlib.h":
    void qsort(void *base, size_t n, size_t size,
               int (*cmp)(const void *, const void *) noexcept nogil) nogil

from libc.errno cimport EBADF

# Interest bits of a channel (the WANT_* of a snapshot entry, above).
cdef unsigned char WANT_RW = WANT_READ | WANT_WRITE

# What our own writable() reads, so what must be watched to cache it.
cdef enum:
    KIND_CONST = 1      # dispatcher.writable: always True
    KIND_SEND = 2       # dispatcher_with_send.writable: connected, out-buffer
    KIND_CHAT = 3       # async_chat.writable: connected, producer_fifo

cdef enum:
    MODE_SELECT = 1
    MODE_POLL = 2

cdef int _watcher = -1            # our dict watcher, or -1 (none: no kernel sets)
cdef bint _kset_on = False        # kernel sets in use (see _kset_enable below)
cdef dict _registries = {}        # id(map) -> _Registry, dropped when the map dies
cdef dict _owners = {}            # id(channel) -> first _Entry of that channel
cdef unsigned long _forks = 0     # bumped in a forked child: kernel sets are shared
cdef unsigned int _serials = 0    # registration serials (see kset.h)
# The serial that marks an event from poll(2) beside the kernel set (never a
# registration's): side entries and descriptors the kernel refused.
cdef unsigned int SIDE_SERIAL = 0xFFFFFFFF
# Registrations one wait the kernel answered with nothing checks (see
# _Registry.audit): a few, plus this many per millisecond waited.
cdef Py_ssize_t AUDIT_MIN = 16
cdef Py_ssize_t AUDIT_PER_MS = 32
cdef object _deque = None
cdef object _socket_type = None

# The descriptors and functions that make a class "our own", filled in by
# declare_own() when asyncore and asynchat are imported.
cdef dict _own_writable = {}      # writable function -> KIND_*
cdef set _own_readable = set()
cdef object _d_connected = None
cdef object _d_accepting = None
cdef object _d_producer_fifo = None
cdef object _d_out_buffer = None
cdef object _d_class = None

cdef object S_READABLE = "readable"
cdef object S_WRITABLE = "writable"
cdef object S_CONNECTED = "connected"
cdef object S_ACCEPTING = "accepting"
cdef object S_PRODUCER_FIFO = "producer_fifo"
cdef object S_OUT_BUFFER = "out_buffer"
cdef object S_WBUF = "_wbuf"
cdef object S_WOFF = "_woff"
cdef object S_CLASS = "__class__"
cdef object S_SOCKET = "socket"
cdef object S_OVERRIDE_R = "_asyncore_readable"
cdef object S_OVERRIDE_W = "_asyncore_writable"
cdef object _OBJECT_CLASS = object.__dict__["__class__"]


# ----------------------------------------------- descriptors on our classes


# Where the descriptors keep their values: an ordinary instance attribute
# under a private name ("_asyncore_" + the public name), read and written
# with the generic attribute code, so neither a class's own __getattr__ or
# __setattr__ sees it nor is the instance's __dict__ materialised (which
# costs every later attribute access on the channel its fast path).
cdef object _ABSENT = object()


cdef inline object _storage_name(object name):
    return sys.intern("_asyncore_" + name)


cdef int _raise_pending() except -1:
    if PyErr_Occurred() != NULL:
        return -1
    return 0


cdef object _get_stored(object obj, object storage):
    """The stored value (from the instance, or a class default), or _ABSENT."""
    cdef PyObject *found = _PyObject_GenericGetAttrWithDict(
        <PyObject *>obj, <PyObject *>storage, NULL, 1)
    if found == NULL:
        _raise_pending()
        return _ABSENT
    value = <object>found
    Py_DECREF(value)    # <object> took its own reference
    return value


cdef int _set_stored(object obj, object storage, PyObject *value) except -1:
    if PyObject_GenericSetAttr(<PyObject *>obj, <PyObject *>storage, value) < 0:
        return -1
    return 0


cdef inline dict _instance_dict(object obj):
    return <dict>PyObject_GenericGetDict(obj, NULL)


cdef inline dict _dict_or_none(object obj):
    """obj's instance __dict__, or None for an object that has none (no exception)."""
    if _type_of(<PyObject *>obj).tp_dictoffset == 0:
        return None
    return <dict>PyObject_GenericGetDict(obj, NULL)


cdef object _no_attribute(object obj, object name):
    return AttributeError(
        f"'{type(obj).__name__}' object has no attribute '{name}'", name=name, obj=obj)


@cython.final
cdef class Watched:
    """An instance attribute whose assignment is seen by the loop.

    Setting (and deleting) it goes through here, which marks the channel
    for the next pass to ask again; the value itself is an ordinary
    instance attribute under a private name (see _storage_name), or with
    ``in_dict`` under its own name in the instance's __dict__, where code
    that inspects a channel's __dict__ looks for it.  With ``on_read`` the
    channel is marked on every read too: for a mutable value (the producer
    fifo) that the reader may change in place.
    """

    cdef readonly object name
    cdef readonly object storage
    cdef object default
    cdef bint has_default
    cdef bint on_read
    cdef bint in_dict

    def __cinit__(self, name, *default, on_read=False, in_dict=False):
        self.name = name
        self.in_dict = in_dict
        self.storage = name if in_dict else _storage_name(name)
        self.has_default = len(default) > 0
        self.default = default[0] if default else None
        self.on_read = on_read

    def __get__(self, obj, owner):
        if obj is None:
            if self.has_default:
                return self.default
            # As for any instance attribute the class itself does not have.
            raise AttributeError(
                f"type object '{owner.__name__}' has no attribute '{self.name}'",
                name=self.name, obj=owner)
        cdef PyObject *found
        if self.in_dict:
            found = PyDict_GetItemWithError(_instance_dict(obj), self.name)
            value = <object>found if found != NULL else _ABSENT
        else:
            value = _get_stored(obj, self.storage)
        if value is _ABSENT:
            if self.has_default:
                return self.default
            raise _no_attribute(obj, self.name)
        if self.on_read:
            _touch(obj)
        return value

    def __set__(self, obj, value):
        if self.in_dict:
            _instance_dict(obj)[self.name] = value
        else:
            _set_stored(obj, self.storage, <PyObject *>value)
        _touch(obj, True)

    def __delete__(self, obj):
        try:
            if self.in_dict:
                del _instance_dict(obj)[self.name]
            else:
                _set_stored(obj, self.storage, NULL)
        except (AttributeError, KeyError):
            raise _no_attribute(obj, self.name) from None
        _touch(obj, True)


@cython.final
cdef class Predicate:
    """readable()/writable() of our classes, as a method that sees overrides.

    Reading it gives the function bound to the instance, or what was set on
    the instance, as a plain function in the class would.  Setting or
    deleting it on an instance marks the channel, so a pass asks again.
    """

    cdef readonly object func
    cdef readonly object name
    cdef readonly object storage

    def __cinit__(self, func):
        self.func = func
        self.name = func.__name__
        self.storage = _storage_name(self.name)

    def __get__(self, obj, owner):
        if obj is None:
            return self.func
        # An instance override wins only where this is what the class
        # finds; super() from a subclass's override gets our function.
        found = _get_stored(obj, self.storage)
        if found is not _ABSENT and _PyType_Lookup(
                _type_of(<PyObject *>obj), <PyObject *>self.name) == <PyObject *>self:
            return found
        return PyMethod_New(self.func, obj)

    def __set__(self, obj, value):
        _set_stored(obj, self.storage, <PyObject *>value)
        _touch(obj, True)

    def __delete__(self, obj):
        try:
            _set_stored(obj, self.storage, NULL)
        except AttributeError:
            raise _no_attribute(obj, self.name) from None
        _touch(obj, True)

    @property
    def __doc__(self):
        return self.func.__doc__

    @property
    def __wrapped__(self):
        return self.func


@cython.final
cdef class ClassSlot:
    """``__class__`` of our dispatchers: object's own, and assignment marks the channel."""

    def __get__(self, obj, owner):
        if obj is None:
            return self
        return type(obj)

    def __set__(self, obj, value):
        _OBJECT_CLASS.__set__(obj, value)
        _touch(obj, True)

    def __delete__(self, obj):
        _OBJECT_CLASS.__delete__(obj)


def touch(obj):
    """Tell the loop that obj's readable()/writable() may answer differently now."""
    _touch(obj)


cdef inline void _touch(object obj, bint recheck=False) noexcept:
    """Mark obj's entries for the next pass to ask.

    ``recheck`` for a change of state (connected, accepting, a predicate on
    the instance, __class__, a new producer fifo), never made per message:
    that asking also checks the kernel registration (see _Registry.ask).
    Output queued or sent, the producer fifo read, and an event only ask.
    """
    cdef PyObject *found
    cdef _Entry e
    if not _owners:
        return
    found = PyDict_GetItemWithError(_owners, PyLong_FromVoidPtr(<void *>obj))
    if found == NULL:
        PyErr_Clear()
        return
    e = <_Entry>found
    while e is not None:
        # What a channel's own predicates read while it is being asked is
        # no news (the producer fifo marks on reading).
        if not (e.asking and e.asking_thread == PyThread_get_thread_ident()):
            e.mark()
            if recheck:
                e.recheck = True
        e = e.next_owner


def declare_own(readable=(), writable=None, connected=None, accepting=None,
                producer_fifo=None, out_buffer=None, class_slot=None):
    """Tell the core which predicates and descriptors are asyncore's and asynchat's own.

    Called by the two modules at import.  A class whose predicates and
    watched attributes all resolve to these has its interest cached; any
    other class is asked every pass.
    """
    global _d_connected, _d_accepting, _d_producer_fifo, _d_out_buffer, _d_class
    for func in readable:
        _own_readable.add(func)
    if writable:
        for func, kind in writable.items():
            _own_writable[func] = {"const": KIND_CONST, "send": KIND_SEND,
                                   "chat": KIND_CHAT}[kind]
    if connected is not None:
        _d_connected = connected
    if accepting is not None:
        _d_accepting = accepting
    if producer_fifo is not None:
        _d_producer_fifo = producer_fifo
    if out_buffer is not None:
        _d_out_buffer = out_buffer
    if class_slot is not None:
        _d_class = class_slot
    # Any class already classified may be judged differently now.
    for reg in list(_registries.values()):
        (<_Registry>reg).clear()
        (<_Registry>reg).types.clear()
        (<_Registry>reg).rebuild = True


# ------------------------------------------------------- types and entries


@cython.final
cdef class _TypeInfo:
    """What a pass may assume of one class, valid while its version tag holds."""
    cdef unsigned int tag
    cdef int kind          # KIND_* of its writable(), or 0: not ours, ask every pass


cdef PyObject *_lookup_type(PyTypeObject *tp, object name):
    return _PyType_Lookup(tp, <PyObject *>name)


cdef int _classify(PyTypeObject *tp) except -1:
    """KIND_* when every predicate and watched attribute of the class is ours, else 0."""
    cdef PyObject *r
    cdef PyObject *w
    cdef int kind
    if tp.tp_getattro != <void *>PyObject_GenericGetAttr \
            or tp.tp_setattro != <void *>PyObject_GenericSetAttr:
        return 0
    if _d_connected is None or _d_class is None:
        return 0
    r = _lookup_type(tp, S_READABLE)
    w = _lookup_type(tp, S_WRITABLE)
    if r == NULL or w == NULL or type(<object>r) is not Predicate \
            or type(<object>w) is not Predicate:
        return 0
    if (<Predicate>r).func not in _own_readable:
        return 0
    kind = _own_writable.get((<Predicate>w).func, 0)
    if kind == 0:
        return 0
    if _lookup_type(tp, S_CONNECTED) != <PyObject *>_d_connected \
            or _lookup_type(tp, S_ACCEPTING) != <PyObject *>_d_accepting \
            or _lookup_type(tp, S_CLASS) != <PyObject *>_d_class:
        return 0
    if kind == KIND_SEND:
        if _d_out_buffer is None \
                or _lookup_type(tp, S_OUT_BUFFER) != <PyObject *>_d_out_buffer \
                or _is_descriptor(_lookup_type(tp, S_WBUF)) \
                or _is_descriptor(_lookup_type(tp, S_WOFF)):
            return 0
    elif kind == KIND_CHAT:
        if _d_producer_fifo is None \
                or _lookup_type(tp, S_PRODUCER_FIFO) != <PyObject *>_d_producer_fifo:
            return 0
    return kind


cdef bint _is_descriptor(PyObject *found) noexcept:
    return found != NULL and _type_of(found).tp_descr_get != NULL


@cython.final
cdef class _Entry:
    """One channel of a watched map."""
    cdef _Registry reg        # None once removed
    cdef PyObject *obj        # borrowed: the map holds it while we do
    cdef int fd
    cdef long long seq        # position in the map's order
    cdef unsigned char want   # WANT_* from the last asking
    cdef short kmask          # what the kernel holds (0: nothing)
    cdef short target         # what it should hold
    cdef unsigned int serial
    cdef bint dirty
    cdef bint volatile
    cdef bint asked           # want is valid
    cdef bint bad             # the kernel refused the descriptor: EBADF
    cdef bint side            # the kernel refused it otherwise: poll(2) it
    cdef bint muted           # left out after an event select() would not report
    cdef bint recheck         # asking it again makes its registration anew
    cdef bint asking          # its predicates run now,
    cdef bint evented         # had an event this pass, not asked again for it (see after_events)
    cdef unsigned long asking_thread    # in this thread
    cdef _TypeInfo info
    cdef _Entry next_owner    # the same channel in another map

    cdef inline void mark(self) noexcept:
        if not self.dirty and self.reg is not None:
            self.dirty = True
            self.reg.dirty.append(self)


@cython.final
cdef class _KSet:
    """One kernel interest set; closed when the last user lets go.

    A pass waiting on it in another thread keeps it open, so the descriptor
    number is never reused under a wait.
    """
    cdef int kfd

    def __cinit__(self):
        self.kfd = cya_kset_open()
        if self.kfd < 0:
            raise OSError(errno, os.strerror(errno))

    def __dealloc__(self):
        if self.kfd >= 0:
            cya_kset_close(self.kfd)


ctypedef struct _Ready:
    long long seq
    int fd
    short revents
    unsigned char want


@cython.final
cdef class _Buffers:
    """What one wait fills: the kernel's events, and the ready channels in map order.

    A registry keeps one between passes (see _Registry.take), so a steady
    loop allocates nothing per pass; a nested or concurrent pass over the
    same map finds it taken and makes its own.
    """
    cdef cya_kraw *raw
    cdef cya_kevent *kev
    cdef _Ready *out
    cdef Py_ssize_t cap
    cdef Py_ssize_t raw_count     # events the kernel gave in the last wait

    def __dealloc__(self):
        PyMem_Free(self.raw)
        PyMem_Free(self.kev)
        PyMem_Free(self.out)

    cdef int reserve(self, Py_ssize_t size) except -1:
        if size <= self.cap:
            return 0
        size = max(size, 2 * self.cap, 16)
        if not _grow(<void **>&self.raw, size * sizeof(cya_kraw)) \
                or not _grow(<void **>&self.kev, size * sizeof(cya_kevent)) \
                or not _grow(<void **>&self.out, size * sizeof(_Ready)):
            raise MemoryError()
        self.cap = size
        return 0


cdef int _by_seq(const void *a, const void *b) noexcept nogil:
    cdef long long x = (<_Ready *>a).seq
    cdef long long y = (<_Ready *>b).seq
    return (x > y) - (x < y)


ctypedef struct _Dirty:
    long long seq
    PyObject *entry


cdef int _dirty_by_seq(const void *a, const void *b) noexcept nogil:
    cdef long long x = (<_Dirty *>a).seq
    cdef long long y = (<_Dirty *>b).seq
    return (x > y) - (x < y)


@cython.final
cdef class _Registry:
    """The kernel-side interest of one map."""
    cdef dict entries         # fd -> _Entry
    cdef list dirty
    cdef dict types           # type -> _TypeInfo
    cdef _KSet kset
    cdef bint rebuild         # resynchronise from the map before the next pass
    cdef bint valid           # every key is a plain descriptor number
    cdef int mode             # MODE_* the kernel masks are for, 0: none yet
    cdef unsigned long forks
    cdef long long next_seq
    cdef Py_ssize_t n_select  # entries select() would be given
    cdef Py_ssize_t n_poll    # entries poll() would be given
    cdef Py_ssize_t n_kernel  # entries the kernel holds
    cdef Py_ssize_t n_bad
    cdef Py_ssize_t n_side
    cdef Py_ssize_t n_volatile
    cdef Py_ssize_t asked_last    # channels asked in the last pass (for tests)
    cdef Py_ssize_t audit_pos     # where the next audit starts in entries
    cdef Py_ssize_t audited       # registrations checked by audits so far (for tests)
    cdef int in_flight            # sync() calls asking channels now (threads)
    # Bumped when a registration goes or changes serial.
    cdef unsigned long generation
    cdef _Buffers spare

    cdef _Buffers take(self):
        cdef _Buffers b = self.spare
        if b is None:
            return _Buffers.__new__(_Buffers)
        self.spare = None
        return b

    cdef void give_back(self, _Buffers b) noexcept:
        # A set that shrank a lot gives its large buffers back to the system.
        if b.cap <= 4 * (self.n_kernel + self.n_side + self.n_bad) + 64:
            self.spare = b

    def __cinit__(self):
        self.entries = {}
        self.dirty = []
        self.types = {}
        self.rebuild = True

    # -- entries

    cdef _Entry add(self, object key, PyObject *obj, long long seq):
        cdef _Entry e = _Entry.__new__(_Entry)
        cdef PyObject *found
        e.reg = self
        e.obj = obj
        e.fd = key
        e.seq = seq
        self.entries[key] = e
        owner_key = PyLong_FromVoidPtr(<void *>obj)
        found = PyDict_GetItemWithError(_owners, owner_key)
        if found != NULL:
            e.next_owner = <_Entry>found
        _owners[owner_key] = e
        e.mark()
        return e

    cdef void remove(self, _Entry e) noexcept:
        cdef _Entry cur
        cdef PyObject *found
        if e.reg is None:
            return
        try:
            self._forget_kernel(e)
            self._count(e, -1)
            if self.entries.get(e.fd) is e:
                del self.entries[e.fd]
            owner_key = PyLong_FromVoidPtr(<void *>e.obj)
            found = PyDict_GetItemWithError(_owners, owner_key)
            if found != NULL:
                cur = <_Entry>found
                if cur is e:
                    if e.next_owner is None:
                        del _owners[owner_key]
                    else:
                        _owners[owner_key] = e.next_owner
                else:
                    while cur is not None:
                        if cur.next_owner is e:
                            cur.next_owner = e.next_owner
                            break
                        cur = cur.next_owner
        except BaseException:
            PyErr_Clear()
        e.reg = None
        e.obj = NULL
        e.next_owner = None
        if not self.entries:
            # An empty map holds no descriptor of ours open.
            self.kset = None

    cdef void clear(self) noexcept:
        for e in list(self.entries.values()):
            self.remove(<_Entry>e)
        self.entries.clear()
        del self.dirty[:]
        self.kset = None
        self.n_select = self.n_poll = self.n_kernel = 0
        self.n_bad = self.n_side = self.n_volatile = 0

    cdef void _count(self, _Entry e, int sign) noexcept:
        if e.asked and e.want:
            self.n_select += sign
        if e.asked and e.want & WANT_RW:
            self.n_poll += sign
        if e.kmask:
            self.n_kernel += sign
        if e.bad:
            self.n_bad += sign
        if e.side:
            self.n_side += sign
        if e.volatile:
            self.n_volatile += sign

    cdef void _forget_kernel(self, _Entry e) noexcept:
        # Before the channel closes its descriptor: epoll keys a
        # registration by (open file, number), and a registration made
        # through a number that is closed while a duplicate keeps the file
        # open could not be removed any more.
        if self.forks != _forks:
            # In a forked child the set is the parent's: leave it alone.
            self.kset = None
            self.rebuild = True
        elif e.kmask and self.kset is not None:
            cya_kset_forget(self.kset.kfd, e.fd)
        if e.kmask:
            self.generation += 1
            self.n_kernel -= 1
            e.kmask = 0

    # -- the map's watcher

    cdef void on_event(self, PyDict_WatchEvent event, PyObject *key, PyObject *value) noexcept:
        cdef PyObject *found
        cdef _Entry e
        # Entries must never outlive the map's reference to their channel,
        # so every event is followed, even with a resynchronisation pending;
        # whatever calls for one drops all entries at once.
        if event == PyDict_EVENT_CLEARED or event == PyDict_EVENT_DEALLOCATED:
            self.clear()
            return
        if event == PyDict_EVENT_CLONED:
            self.clear()
            self.rebuild = True
            return
        k = <object>key
        if type(k) is not int or not 0 <= k <= 2147483647:
            self.clear()
            self.rebuild = True
            return
        found = PyDict_GetItemWithError(self.entries, k)
        e = <_Entry>found if found != NULL else None
        if event == PyDict_EVENT_ADDED:
            if e is not None:
                self.remove(e)
            self.add(k, value, self.next_seq)
            self.next_seq += 1
        elif event == PyDict_EVENT_MODIFIED:
            if e is None:
                if not self.rebuild:
                    self.clear()
                    self.rebuild = True
            elif e.obj != value:
                # Same place in the map, another channel.
                self.remove(e)
                self.add(k, value, e.seq)
        elif event == PyDict_EVENT_DELETED:
            if e is not None:
                self.remove(e)

    # -- resynchronising

    cdef int resync(self, object map) except -1:
        """Forget everything and take the map as it is now (in its order)."""
        cdef Py_ssize_t pos = 0
        cdef PyObject *k
        cdef PyObject *v
        self.clear()
        self.types.clear()
        self.mode = 0
        self.rebuild = False
        self.valid = True
        for key in list(map):
            if type(key) is not int or not 0 <= key <= 2147483647:
                # Keys that are not descriptor numbers (sockets, negative
                # numbers, bools...) take the snapshot path, which gives
                # them the errors and meaning 3.11 did.
                self.valid = False
                self.rebuild = True
                return 0
        # No Python code runs inside this loop, so the dict cannot change.
        while PyDict_Next(map, &pos, &k, &v):
            self.add(<object>k, v, self.next_seq)
            self.next_seq += 1
        return 0

    cdef int rekernel(self) except -1:
        """A new kernel set holding what the old one should have held."""
        cdef _Entry e
        self.kset = None
        for x in list(self.entries.values()):
            e = <_Entry>x
            self._count(e, -1)
            e.kmask = 0
            try:
                if e.target and not e.muted and not e.side:
                    self.apply(e, e.target)
            finally:
                self._count(e, 1)
        return 0

    # -- asking the channels

    cdef int sync(self, object map, int mode) except -1:
        """Bring the kernel set up to date for a pass in ``mode``."""
        cdef list todo
        cdef Py_ssize_t i = 0, j
        cdef Py_ssize_t n
        cdef _Entry e
        if self.forks != _forks:
            # A forked child shares its parent's epoll set: make its own.
            self.forks = _forks
            self.kset = None
            self.rebuild = True
        if self.rebuild:
            self.resync(map)
            if not self.valid:
                return 0
        self.check_types()
        if self.mode != mode:
            # select() and poll() are asked for different things: ask again.
            self.mode = mode
            for e in self.entries.values():
                e.mark()
        todo = self.dirty
        self.dirty = []
        n = len(todo)
        self.asked_last = 0
        if n == 0:
            return 0
        _sort_entries(todo)
        # While this thread asks, a pass in another thread must not take
        # "nothing to wait for" for the truth (see the passes).
        self.in_flight += 1
        try:
            while i < n and not self.rebuild:
                e = <_Entry>todo[i]
                if e.reg is self:
                    e.dirty = False
                    self.ask(e, mode)
                    self.asked_last += 1
                i += 1
        except BaseException:
            # The rest (this one too) is asked on the next pass.
            e = <_Entry>todo[i]
            if e.reg is self:
                e.mark()
            for j in range(i + 1, n):
                e = <_Entry>todo[j]
                if e.reg is self and e.dirty:
                    self.dirty.append(e)
            raise
        finally:
            self.in_flight -= 1
        return 0

    cdef int ask(self, _Entry e, int mode) except -1:
        """3.11's questions to one channel, in its order; then tell the kernel."""
        cdef unsigned char want = 0
        cdef short target = 0
        cdef bint was_asking = e.asking
        cdef unsigned long previous_thread = e.asking_thread
        obj = <object>e.obj
        e.asking = True
        e.asking_thread = PyThread_get_thread_ident()
        try:
            if mode == MODE_SELECT:
                is_r = obj.readable()
                is_w = obj.writable()
                if is_r:
                    want = WANT_READ
                if is_w and not obj.accepting:
                    want |= WANT_WRITE
                if is_r or is_w:
                    want |= WANT_EXCEPT
            else:
                # poll()'s order: readable() is judged before writable() is asked.
                if obj.readable():
                    want = WANT_READ
                is_w = obj.writable()
                if is_w and not obj.accepting:
                    want |= WANT_WRITE
        finally:
            e.asking = was_asking
            e.asking_thread = previous_thread
        if e.reg is not self:
            return 0    # a predicate took it out of the map
        steady = self.steady(e, obj)
        verify = not _socket_is_open(obj, e)
        if e.reg is not self:
            return 0
        if e.recheck:
            # Its state changed, or an audit found its registration gone:
            # register it anew rather than trust what the kernel held (its
            # number may name another file now), under a new serial, so
            # events of a registration that outlived its file stay stale.
            e.recheck = False
            self._forget_kernel(e)
        # No Python code runs from here to the end: the counts stay true
        # for a loop in another thread.
        self._count(e, -1)
        e.want = want
        e.asked = True
        e.muted = False
        if mode == MODE_SELECT:
            if want & WANT_READ:
                target = CYA_POLLIN
            if want & WANT_WRITE:
                target |= CYA_POLLOUT
            if want & WANT_EXCEPT:
                target |= CYA_POLLPRI
        else:
            if want & WANT_READ:
                target = CYA_POLLIN | CYA_POLLPRI
            if want & WANT_WRITE:
                target |= CYA_POLLOUT
        try:
            self.apply(e, target, verify)
        finally:
            e.volatile = e.bad or not steady
            self._count(e, 1)
        if e.volatile:
            e.mark()
        return 0

    cdef bint steady(self, _Entry e, object obj) except -1:
        """Whether obj's answers can only change through what _touch() sees."""
        cdef PyObject *found
        cdef PyObject *tp = <PyObject *>_type_of(<PyObject *>obj)
        cdef _TypeInfo info
        found = PyDict_GetItemWithError(self.types, <object>tp)
        if found == NULL:
            info = _TypeInfo.__new__(_TypeInfo)
            _judge(<PyTypeObject *>tp, info)
            if len(self.types) >= 4096:
                # Classes made on the fly: start over rather than grow.
                self.types.clear()
                for other in self.entries.values():
                    (<_Entry>other).mark()
            self.types[<object>tp] = info
        else:
            info = <_TypeInfo>found
        e.info = info
        if info.kind == 0:
            return False
        if _get_stored(obj, S_OVERRIDE_R) is not _ABSENT \
                or _get_stored(obj, S_OVERRIDE_W) is not _ABSENT:
            return False
        # Below, a value held by the instance and by us has two references;
        # a third is someone else's, who may change it in place, unseen.
        if info.kind == KIND_SEND:
            value = _get_stored(obj, S_WBUF)
            # An object of another type may change its length by itself.
            if type(value) is not bytes and (
                    type(value) is not bytearray or _refcnt(<PyObject *>value) > 2):
                return False
        elif info.kind == KIND_CHAT:
            # Kept in __dict__ (see asynchat), so the dict's reference and ours.
            value = _instance_dict(obj).get(S_PRODUCER_FIFO, _ABSENT)
            if value is not _ABSENT and (
                    type(value) is not _deque or _refcnt(<PyObject *>value) > 2):
                return False
        return True

    # -- after events

    cdef void before_events(self, _Ready *ready, Py_ssize_t n) noexcept:
        """Mark for asking the channels whose answers an event may change unseen.

        A channel of our own dispatcher, dispatcher_with_send or
        async_chat, steady when last asked, answers from state that tells
        _touch() when it changes (connected, accepting, the out-buffer, the
        producer fifo emptied or filled by our methods or read by anyone
        else, a predicate set on the instance, __class__): its event alone
        changes nothing the next pass would learn by asking, so it is not
        asked again (issue 11).
        What its handler may still do unseen is close its socket, which
        after_events checks.  Any other channel is asked again, as before.
        """
        cdef Py_ssize_t i
        cdef PyObject *found
        cdef _Entry e
        for i in range(n):
            found = PyDict_GetItemWithError(self.entries, ready[i].fd)
            if found == NULL:
                continue
            e = <_Entry>found
            if e.volatile or e.info is None or e.info.kind == 0:
                e.mark()
            else:
                e.evented = True

    cdef int after_events(self, _Ready *ready, Py_ssize_t n, bint check) except -1:
        """After the events of a pass: did a handler close its channel's socket?

        A descriptor closed behind the loop's back drops out of epoll
        silently, where select() would fail and poll() say POLLNVAL on the
        next pass: asking such a channel again renews its registration,
        which finds out.  Without ``check`` (the pass is being left by an
        exception) every such channel is simply asked again.
        """
        cdef Py_ssize_t i
        cdef PyObject *found
        cdef _Entry e
        for i in range(n):
            found = PyDict_GetItemWithError(self.entries, ready[i].fd)
            if found == NULL:
                continue
            e = <_Entry>found
            if not e.evented:
                continue
            e.evented = False
            if e.dirty or e.reg is not self:
                continue
            if not check or not _socket_is_open(<object>e.obj, e):
                e.mark()
        return 0

    cdef int check_types(self) except -1:
        """Re-judge every class modified since the last pass.

        Its channels are asked again only when the verdict changes: while
        the predicates and watched attributes are still ours, their answers
        still follow the state we watch (a class that counts its events in
        a class attribute is modified all the time, and that alone must
        not cost a pass over its channels).
        """
        cdef _TypeInfo info
        cdef int kind
        changed = None
        # _judge runs no Python code, so the dict cannot change meanwhile.
        for tp_obj, info_obj in self.types.items():
            info = <_TypeInfo>info_obj
            if info.tag != 0 and (<PyTypeObject *>tp_obj).tp_version_tag != info.tag:
                kind = info.kind
                _judge(<PyTypeObject *>tp_obj, info)
                if info.kind != kind:
                    if changed is None:
                        changed = []
                    changed.append(info)
        if changed is None:
            return 0
        for e in self.entries.values():
            if (<_Entry>e).info in changed:
                (<_Entry>e).mark()
                (<_Entry>e).recheck = True
        return 0

    # -- telling the kernel

    cdef int apply(self, _Entry e, short target, bint verify=False) except -1:
        """Make the kernel hold ``target`` for e (counts are the caller's).

        With ``verify``, an unchanged registration is renewed all the same:
        the kernel then says whether the descriptor is still open, which
        select() and poll() found out on every pass.  (epoll forgets a
        closed descriptor silently.)
        """
        global _serials
        cdef int err
        e.target = target
        if e.side:
            if target == 0:
                e.side = False
            return 0
        e.bad = False
        if target == e.kmask and (target == 0 or not verify):
            return 0
        if self.kset is None:
            if target == 0:
                return 0
            self.kset = _KSet()
        if e.kmask == 0:
            self.generation += 1
            _serials += 1
            if _serials >= SIDE_SERIAL:
                _serials = 1
            e.serial = _serials
        if e.fd == self.kset.kfd:
            # The channel's number is our kernel set's own: its descriptor
            # was closed behind the loop's back and the number reused.
            err = EBADF
        else:
            err = cya_kset_set(self.kset.kfd, e.fd, e.kmask, target, e.serial)
        if err == 0:
            e.kmask = target
        elif err == EBADF:
            # Not an open descriptor: select() fails and poll() says POLLNVAL.
            e.kmask = 0
            e.bad = True
        else:
            # The kernel set will not take it (a regular file: EPERM); it is
            # polled beside the set instead.
            e.kmask = 0
            e.side = True
        return 0

    cdef int mute(self, _Entry e) except -1:
        """Stop watching e until it is asked again (see the select pass)."""
        self._count(e, -1)
        if e.kmask and self.kset is not None:
            cya_kset_set(self.kset.kfd, e.fd, e.kmask, 0, 0)
        e.kmask = 0
        e.muted = True
        if e.side:
            e.side = False
        self._count(e, 1)
        return 0

    cdef void audit(self, int ms) noexcept:
        """Check, in turn, registrations the kernel may have lost (after a wait that found nothing).

        A descriptor number closed or dup2'ed over behind the loop's back
        loses its epoll registration silently, and a channel nobody asks
        again would stay deaf where select() and poll() followed the
        number.  Only a wait the kernel answered with nothing pays: up to
        AUDIT_MIN + AUDIT_PER_MS * ms checks (one epoll_ctl each, a
        quarter to half a microsecond), so a quiet loop spends one or two
        percent of its sleep on it, and a busy one nothing.  A
        registration found gone is asked again, and registered anew, by
        the next pass (see ask).
        """
        cdef Py_ssize_t budget, pos
        cdef PyObject *k
        cdef PyObject *v
        cdef _Entry e
        cdef bint wrapped = False
        if self.kset is None or self.forks != _forks or self.n_kernel == 0:
            return
        budget = min(AUDIT_MIN + AUDIT_PER_MS * <Py_ssize_t>max(ms, 0), self.n_kernel)
        pos = self.audit_pos
        # No Python code runs in this loop: the dict cannot change under it.
        while budget > 0:
            if not PyDict_Next(self.entries, &pos, &k, &v):
                if wrapped:
                    break
                wrapped = True
                pos = 0
                continue
            e = <_Entry>v
            if e.kmask == 0:
                continue
            budget -= 1
            self.audited += 1
            if cya_kset_check(self.kset.kfd, e.fd, e.kmask, e.serial) != 0:
                e.recheck = True
                e.mark()
        self.audit_pos = pos

    # -- waiting

    cdef Py_ssize_t wait(self, int ms, _Buffers buf, bint with_bad) except -1:
        """Wait up to ms; put what is ready in buf.out, in map order; return the count."""
        cdef _KSet kset = self.kset
        cdef Py_ssize_t cap, n = 0, m = 0, k = 0, i
        cdef int kfd = -1
        cdef cya_kraw *raw
        cdef cya_kevent *kev
        cdef cya_pollfd *pfd = NULL
        cdef _Ready *out
        cdef _Entry e
        cdef list extra = None
        cdef PyObject *found
        cdef bint stale = False
        # Registrations changed by another thread while we waited make
        # events that only look stale: judge staleness only without such.
        cdef unsigned long generation = self.generation
        if kset is not None:
            kfd = kset.kfd
        if self.n_side or (with_bad and self.n_bad):
            extra = [x for x in self.entries.values()
                     if (<_Entry>x).side or (with_bad and (<_Entry>x).bad)]
            m = len(extra)
        # kqueue reports reading and writing of one descriptor apart.
        cap = (2 if CYA_KSET == 2 else 1) * self.n_kernel + m + 1
        buf.reserve(cap)
        buf.raw_count = 0
        raw = buf.raw
        kev = buf.kev
        out = buf.out
        if m:
            pfd = <cya_pollfd *>PyMem_Malloc((m + 1) * sizeof(cya_pollfd))
            if pfd == NULL:
                raise MemoryError()
        try:
            if m == 0:
                if kset is None:
                    _wait(NULL, 0, ms)
                else:
                    n = _kwait(kfd, raw, kev, cap - 1, ms)
            else:
                # Descriptors the kernel set refused are polled beside it.
                pfd[0].fd = kfd
                pfd[0].events = CYA_POLLIN
                pfd[0].revents = 0
                for i in range(m):
                    e = <_Entry>extra[i]
                    pfd[i + 1].fd = e.fd
                    pfd[i + 1].events = e.target
                    pfd[i + 1].revents = 0
                if with_bad and self.n_bad:
                    ms = 0      # poll() would report POLLNVAL at once
                _wait(pfd, m + 1, ms)
                if kfd >= 0 and pfd[0].revents:
                    n = _kwait(kfd, raw, kev, cap - 1 - m, 0)
                for i in range(m):
                    e = <_Entry>extra[i]
                    if e.bad:
                        pfd[i + 1].revents = CYA_POLLNVAL
                    if pfd[i + 1].revents:
                        kev[n].fd = e.fd
                        kev[n].serial = SIDE_SERIAL
                        kev[n].revents = pfd[i + 1].revents
                        n += 1
            buf.raw_count = n
            if n == 0 and kset is not None and kset is self.kset:
                self.audit(ms)
            for i in range(n):
                found = PyDict_GetItemWithError(self.entries, kev[i].fd)
                if found == NULL:
                    if kev[i].serial != SIDE_SERIAL and kset is self.kset and not stale \
                            and generation == self.generation:
                        # Not in the map: removed while we waited, or a
                        # registration that outlived its descriptor (closed
                        # behind the loop's back while a duplicate keeps the
                        # file open), which would fire on every wait.
                        stale = True
                        self.rekernel()
                    continue
                e = <_Entry>found
                if kev[i].serial == SIDE_SERIAL:
                    if not (e.side or e.bad):
                        continue
                    out[k].revents = kev[i].revents
                else:
                    if e.kmask == 0 or kev[i].serial != e.serial:
                        if kset is self.kset and e.kmask and kev[i].serial != e.serial \
                                and not stale and generation == self.generation:
                            stale = True
                            # A registration outlived its descriptor (closed
                            # behind the loop's back while a duplicate keeps
                            # the file open): only a new set is rid of it.
                            self.rekernel()
                        continue
                    out[k].revents = kev[i].revents & (e.kmask | CYA_POLLERR | CYA_POLLHUP)
                    if out[k].revents == 0:
                        continue
                out[k].seq = e.seq
                out[k].fd = e.fd
                out[k].want = e.want
                k += 1
            if k > 1:
                if not _in_order(out, k):
                    qsort(out, k, sizeof(_Ready), _by_seq)
                # kqueue reports reading and writing apart: one per channel.
                n = 0
                for i in range(1, k):
                    if out[i].seq == out[n].seq:
                        out[n].revents |= out[i].revents
                    else:
                        n += 1
                        out[n] = out[i]
                k = n + 1
        finally:
            PyMem_Free(pfd)
        return k


cdef bint _in_order(_Ready *out, Py_ssize_t k) noexcept:
    """Whether the ready events already are in map order (issue 11).

    epoll hands back descriptors in the order they became ready, which for
    a request/response load is mostly the order they were served in: one
    linear check then saves the n log n sort of every pass.
    """
    cdef Py_ssize_t i
    for i in range(1, k):
        if out[i - 1].seq > out[i].seq:
            return False
    return True


cdef void _sort_entries(list todo) except *:
    """Sort entries by map position, cheaply when they already are."""
    cdef Py_ssize_t i, n = len(todo)
    cdef _Dirty *tmp
    for i in range(1, n):
        if (<_Entry>todo[i - 1]).seq > (<_Entry>todo[i]).seq:
            break
    else:
        return
    tmp = <_Dirty *>PyMem_Malloc(n * sizeof(_Dirty))
    if tmp == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            tmp[i].seq = (<_Entry>todo[i]).seq
            tmp[i].entry = <PyObject *>todo[i]
        qsort(tmp, n, sizeof(_Dirty), _dirty_by_seq)
        ordered = [<object>tmp[i].entry for i in range(n)]
        todo[:] = ordered
    finally:
        PyMem_Free(tmp)


cdef bint _socket_is_open(object obj, _Entry e) except -1:
    """Whether a channel of our classes still holds its descriptor open.

    The cheap answer, from the socket object (closed: fileno() is -1),
    saves the kernel call that would otherwise renew the registration of
    every channel asked again.  Any other kind of channel, or socket, gets
    the kernel call (see _Registry.apply).
    """
    if e.info is None or e.info.kind == 0:
        return False
    cdef int fd
    sock = _get_stored(obj, S_SOCKET)
    if type(sock) is not _socket_type:
        return False
    fd = cya_sock_fd(sock)
    if fd != -2:
        return fd == e.fd
    return sock.fileno() == e.fd


cdef int _judge(PyTypeObject *tp, _TypeInfo info) except -1:
    PyUnstable_Type_AssignVersionTag(tp)
    info.tag = tp.tp_version_tag
    info.kind = _classify(tp) if info.tag != 0 else 0
    if tp.tp_version_tag != info.tag:
        info.kind = 0
    return 0


cdef int _kwait(int kfd, cya_kraw *raw, cya_kevent *kev, Py_ssize_t cap, int ms) except -1:
    """cya_kset_wait with the GIL released; EINTR runs signal handlers and retries."""
    cdef int got
    cdef int err
    cdef int most = <int>min(cap, 1 << 20)
    cdef double deadline = 0.0
    if most < 1:
        most = 1
    if ms > 0:
        deadline = _deadline(ms)
    while True:
        with nogil:
            got = cya_kset_wait(kfd, raw, kev, most, ms)
            err = errno
        if got >= 0:
            return got
        if err != EINTR:
            raise OSError(err, os.strerror(err))
        PyErr_CheckSignals()
        if ms > 0:
            ms = _ms_left(deadline)


# ---------------------------------------------------- passes over the set


cdef _Registry _registry_for(object map):
    """The map's registry once it is worth one, else None (take a snapshot)."""
    cdef PyObject *found
    cdef _Registry reg
    if not _kset_on or type(map) is not dict:
        return None
    key = PyLong_FromVoidPtr(<void *>map)
    found = PyDict_GetItemWithError(_registries, key)
    if found == NULL:
        # First sight: follow the map from now on, but take this pass the
        # snapshot way, so a fresh dict for every pass never pays for a set.
        reg = _Registry.__new__(_Registry)
        reg.forks = _forks
        PyDict_Watch(_watcher, map)
        _registries[key] = reg
        return None
    return <_Registry>found


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
                n = reg.wait(0, buf, False)
            else:
                n = reg.wait(ms, buf, False)
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
                        reg.mute(<_Entry>found)
            if kept or buf.raw_count == 0 or ms == 0:
                n = kept
                break
            if ms > 0:
                ms = _ms_left(deadline)
            # Timers: what woke us may be a first hand-over (_kset_add_wake).
            tq = _tq(map)
        reg.before_events(ready, n)
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
            reg.after_events(ready, n, False)
            raise
        reg.after_events(ready, n, True)
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
                n = reg.wait(0, buf, True)
            else:
                n = reg.wait(ms, buf, True)
            # Only what was not for us (see wait): wait out the rest.
            if n or buf.raw_count == 0 or ms == 0:
                break
            if ms > 0:
                ms = _ms_left(deadline)
            # Timers: what woke us may be a first hand-over (_kset_add_wake).
            tq = _tq(map)
        ready = buf.out
        reg.before_events(ready, n)
        try:
            for i in range(n):
                obj = _lookup_fd(map, ready[i].fd)
                if obj is not None:
                    _readwrite(obj, ready[i].revents)
        except BaseException:
            reg.after_events(ready, n, False)
            raise
        reg.after_events(ready, n, True)
    finally:
        reg.give_back(buf)
    return 0


cdef int _on_dict_event(PyDict_WatchEvent event, PyObject *d, PyObject *key,
                        PyObject *value) noexcept:
    cdef PyObject *pending = PyErr_GetRaisedException()
    cdef PyObject *found
    try:
        found = PyDict_GetItemWithError(_registries, PyLong_FromVoidPtr(<void *>d))
        if found != NULL:
            (<_Registry>found).on_event(event, key, value)
            if event == PyDict_EVENT_DEALLOCATED:
                del _registries[PyLong_FromVoidPtr(<void *>d)]
    except BaseException:
        pass
    PyErr_SetRaisedException(pending)
    return 0


def _after_fork():
    global _forks
    _forks += 1


def use_kernel_set(on):
    """Whether long-lived maps get a kernel interest set (epoll/kqueue); returns the old value.

    Off, every pass is a poll(2) snapshot of the whole map, as before.  The
    environment variable ASYNCORE_BACKEND=poll turns it off at import.
    """
    global _kset_on
    previous = _kset_on
    _kset_on = bool(on) and CYA_KSET != 0 and _watcher >= 0
    if not _kset_on:
        for reg in _registries.values():
            (<_Registry>reg).clear()
            (<_Registry>reg).rebuild = True
    return previous


def backend():
    """What passes wait with: "epoll", "kqueue" or "poll" (or "select" without poll(2))."""
    if _kset_on:
        return CYA_KSET_NAME.decode()
    return "poll" if CYA_HAVE_POLL else "select"


def interest_info(map):
    """How the core watches ``map`` (for tests and debugging), or None.

    channels: entries followed; volatile: asked every pass; asked_last_pass:
    channels asked in the last pass; in_kernel: registered in the kernel set;
    audited: registrations checked so far after waits that found nothing
    (see _Registry.audit).
    """
    found = _registries.get(PyLong_FromVoidPtr(<void *>map)) if type(map) is dict else None
    if found is None:
        return None
    reg = <_Registry>found
    return {
        "backend": CYA_KSET_NAME.decode(),
        "active": not reg.rebuild and reg.valid,
        "channels": len(reg.entries),
        "volatile": reg.n_volatile,
        "asked_last_pass": reg.asked_last,
        "in_kernel": reg.n_kernel,
        "audited": reg.audited,
    }


if CYA_KSET:
    _watcher = PyDict_AddWatcher(_on_dict_event)
    if _watcher < 0:
        PyErr_Clear()
    os.register_at_fork(after_in_child=_after_fork)
    use_kernel_set(os.environ.get("ASYNCORE_BACKEND", "").lower() not in ("poll", "select"))


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


# ------------------------------------- our classes, as our methods see them

# Set by bind_methods() when asyncore is imported.
cdef object _dispatcher_class = None    # asyncore.dispatcher
cdef object _py_dws_initiate_send = None
cdef object _c_dispatcher_send = None   # dispatcher.send below
# The Python original of dispatcher_with_send.send: its general case.
cdef object _py_dws_send = None
cdef object S_SEND = "send"
cdef object S_INITIATE_SEND = "initiate_send"
cdef object _EMPTY = b""

# asynchat's handle_read original (its general case), and what the
# compiled methods compare with (see bind_chat).
cdef object _py_chat_handle_read = None
cdef object _c_ac_in_buffer = None      # async_chat.ac_in_buffer below, the property
cdef object _py_get_terminator = None
# The channel whose push() is running our initiate_send(): push() tells the
# loop about the fifo itself, once, when both are done.
cdef object _quiet = None
cdef object _c_chat_initiate_send = None    # async_chat.initiate_send below
cdef object S_AC_IN_BUFFER = "ac_in_buffer"
cdef object S_GET_TERMINATOR = "get_terminator"
cdef object S_TERMINATOR = "terminator"
cdef object _BYTEISH = (bytes, bytearray, memoryview)


# What a class makes of our own methods, judged once per class (issue 11).
# Each compiled method used to ask the class, per call, whether the
# attributes it reads are still ours (a type lookup each); now one cached
# verdict answers for all of them.  It is keyed by the class and its
# version tag, which CPython changes whenever the class or one of its bases
# is modified and never hands out twice: an override assigned later is seen
# at the next call, exactly as attribute lookup would see it.

cdef enum:
    V_STATE = 1         # connected and accepting: our Watched, a plain stored value
    V_FIFO = 2          # producer_fifo: our Watched
    V_INITIATE = 4      # initiate_send: async_chat's compiled one
    V_SEND = 8          # send: dispatcher's compiled one
    V_TERMINATOR = 16   # get_terminator: ours; terminator: no data descriptor
    V_PLAIN_INPUT = 32  # _ac_in and _ac_pos: plain instance attributes in the __dict__
    V_INPUT = 64        # ac_in_buffer: the compiled property, over plain _ac_in/_ac_pos

ctypedef struct _Verdict:
    PyTypeObject *tp
    unsigned int tag
    int bits

cdef enum:
    N_VERDICTS = 16     # a direct-mapped cache: a program has few channel classes

cdef _Verdict _verdicts[N_VERDICTS]


cdef bint _plain_watched(PyTypeObject *tp, object name, object desc) noexcept:
    cdef Watched w
    if desc is None or _PyType_Lookup(tp, <PyObject *>name) != <PyObject *>desc:
        return False
    w = <Watched>desc
    return not w.in_dict and not w.on_read and w.has_default


cdef int _judge_class(PyTypeObject *tp) noexcept:
    cdef int bits = 0
    cdef bint generic = tp.tp_getattro == <void *>PyObject_GenericGetAttr \
        and tp.tp_setattro == <void *>PyObject_GenericSetAttr and tp.tp_dictoffset != 0
    if _plain_watched(tp, S_CONNECTED, _d_connected) \
            and _plain_watched(tp, S_ACCEPTING, _d_accepting):
        bits |= V_STATE
    if _d_producer_fifo is not None and _PyType_Lookup(
            tp, <PyObject *>S_PRODUCER_FIFO) == <PyObject *>_d_producer_fifo:
        bits |= V_FIFO
    if _c_chat_initiate_send is not None and _PyType_Lookup(
            tp, <PyObject *>S_INITIATE_SEND) == <PyObject *>_c_chat_initiate_send:
        bits |= V_INITIATE
    if _c_dispatcher_send is not None and _PyType_Lookup(
            tp, <PyObject *>S_SEND) == <PyObject *>_c_dispatcher_send:
        bits |= V_SEND
    if _py_get_terminator is not None and _PyType_Lookup(
            tp, <PyObject *>S_GET_TERMINATOR) == <PyObject *>_py_get_terminator \
            and not _is_data_descriptor(_PyType_Lookup(tp, <PyObject *>S_TERMINATOR)):
        bits |= V_TERMINATOR
    if generic and not _is_data_descriptor(_PyType_Lookup(tp, <PyObject *>S_AC_IN)) \
            and not _is_data_descriptor(_PyType_Lookup(tp, <PyObject *>S_AC_POS)):
        bits |= V_PLAIN_INPUT
        if _c_ac_in_buffer is not None and _PyType_Lookup(
                tp, <PyObject *>S_AC_IN_BUFFER) == <PyObject *>_c_ac_in_buffer:
            bits |= V_INPUT
    return bits


cdef int _judge_and_keep(PyTypeObject *tp, _Verdict *v) noexcept:
    cdef int bits = _judge_class(tp)
    if PyUnstable_Type_AssignVersionTag(tp):
        v.tp = tp
        v.tag = tp.tp_version_tag
        v.bits = bits
    return bits


cdef inline int _verdict(object obj) noexcept:
    cdef PyTypeObject *tp = _type_of(<PyObject *>obj)
    cdef _Verdict *v = &_verdicts[(<size_t>tp >> 4) % N_VERDICTS]
    if v.tp == tp and v.tag != 0 and v.tag == tp.tp_version_tag:
        return v.bits
    return _judge_and_keep(tp, v)


cdef void _forget_verdicts() noexcept:
    # What the verdicts compare with has changed (bind_methods, bind_chat).
    memset(_verdicts, 0, sizeof(_verdicts))


# -------------------------------------------------- async_chat input path


cdef inline object _piece(object buf, Py_ssize_t start, Py_ssize_t end):
    """buf[start:end] for 0 <= start <= end <= len(buf); a copy made directly for bytes."""
    if type(buf) is bytes and (start or end != PyBytes_GET_SIZE(buf)):
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(buf) + start, end - start)
    return buf[start:end]


cdef object _terminator_of(object chan, dict d):
    """chan.get_terminator(), read directly when it is our own method.

    ``d`` is chan's instance __dict__ (see _input_dict), or None.
    """
    cdef PyObject *found
    if d is not None and _verdict(chan) & V_TERMINATOR \
            and PyDict_GetItemWithError(d, S_GET_TERMINATOR) == NULL:
        # Its body is ``return self.terminator``, and the class has no data
        # descriptor there: an instance value is what attribute lookup finds.
        found = PyDict_GetItemWithError(d, S_TERMINATOR)
        if found != NULL:
            return <object>found
        return chan.terminator
    return chan.get_terminator()


cdef inline bint _is_data_descriptor(PyObject *found) noexcept:
    return found != NULL and _type_of(found).tp_descr_set != NULL


cdef object S_AC_IN = "_ac_in"
cdef object S_AC_POS = "_ac_pos"


cdef dict _input_dict(object chan):
    """The instance __dict__ where chan's _ac_in and _ac_pos live, or None.

    Reading and writing them there is what attribute access does for a
    class with the generic attribute methods and no data descriptor of
    either name; any other object (asynchat's _PlainInput) gets getattr.
    """
    if _verdict(chan) & V_PLAIN_INPUT:
        return _dict_or_none(chan)
    return None


# Live input (issue 11).  While chat_consume() runs a channel's callbacks,
# the channel's unconsumed input is kept here, in C, instead of being
# written to its _ac_in/_ac_pos before and read back after every callback:
# our ac_in_buffer property (async_chat.ac_in_buffer below) reads and
# assigns the frame, so a callback sees exactly what it saw in 3.11.  The
# instance gets the final state once, when chat_consume() returns (or
# raises).  A nested chat_consume() of the same channel (a callback that
# reads again) shares the frame, as it would have shared the attributes;
# the slots are not a stack, since another thread's channels may come and
# go while a callback has released the GIL.

ctypedef struct _Live:
    PyObject *chan          # borrowed: the chat_consume() that owns the slot holds it
    PyObject *buf           # owned
    Py_ssize_t pos

cdef enum:
    N_LIVE = 8              # more channels at once (threads) publish as before

cdef _Live _lives[N_LIVE]
cdef int _lives_used = 0


cdef inline _Live *_live_of(object chan) noexcept:
    cdef int i
    if _lives_used == 0:
        return NULL
    for i in range(N_LIVE):
        if _lives[i].chan == <PyObject *>chan:
            return &_lives[i]
    return NULL


cdef inline void _live_put(_Live *f, object buf, Py_ssize_t pos) noexcept:
    cdef PyObject *old = f.buf
    Py_INCREF(buf)
    f.buf = <PyObject *>buf
    f.pos = pos
    Py_XDECREF(old)


cdef _Live *_live_enter(object chan, object buf, Py_ssize_t pos) noexcept:
    """A frame for chan holding (buf, pos), or NULL when every slot is taken."""
    global _lives_used
    cdef int i
    for i in range(N_LIVE):
        if _lives[i].chan == NULL:
            _lives[i].chan = <PyObject *>chan
            _lives[i].buf = NULL
            _live_put(&_lives[i], buf, pos)
            _lives_used += 1
            return &_lives[i]
    return NULL


cdef int _live_leave(_Live *f, dict d, object buf0, Py_ssize_t pos0) except -1:
    """Give the frame's state to the instance and free the slot.

    (buf0, pos0) is what the instance held when the frame was made; only
    the frame was written while it lived.
    """
    global _lives_used
    cdef Py_ssize_t pos = f.pos
    buf = <object>f.buf
    f.chan = NULL
    f.buf = NULL
    _lives_used -= 1
    Py_DECREF(buf)      # the slot's reference: <object> above took one of its own
    if type(buf) is bytes and pos >= PyBytes_GET_SIZE(buf):
        # All consumed: what 3.11 held then, and what ac_in_buffer reads
        # without cutting.
        buf = _EMPTY
        pos = 0
    # A channel that reads whole lines holds this state already.
    if buf is buf0 and pos == pos0:
        return 0
    _in_store(None, d, buf, pos)
    return 0


cdef object _in_first(object chan, dict d):
    """chan._ac_in, or 3.11's error for an async_chat whose __init__ never ran."""
    cdef PyObject *found
    if d is not None:
        found = PyDict_GetItemWithError(d, S_AC_IN)
        if found != NULL:
            return <object>found
    try:
        return chan._ac_in
    except AttributeError:
        raise _pure._no_ac_in_buffer(chan) from None


cdef inline object _in_buf(object chan, dict d, _Live *f):
    cdef PyObject *found
    if f != NULL:
        return <object>f.buf
    if d is not None:
        found = PyDict_GetItemWithError(d, S_AC_IN)
        if found != NULL:
            return <object>found
    return chan._ac_in


cdef inline Py_ssize_t _in_pos(object chan, dict d, _Live *f) except -1:
    cdef PyObject *found
    if f != NULL:
        return f.pos
    if d is not None:
        found = PyDict_GetItemWithError(d, S_AC_POS)
        if found != NULL:
            return <object>found
    return chan._ac_pos


cdef int _in_store(object chan, dict d, object buf, Py_ssize_t pos) except -1:
    # The publication order of the Python original: _ac_in, then _ac_pos.
    if d is not None:
        d[S_AC_IN] = buf
        d[S_AC_POS] = pos
    else:
        chan._ac_in = buf
        chan._ac_pos = pos


cdef inline int _in_set(object chan, dict d, _Live *f, object buf, Py_ssize_t pos) except -1:
    if f != NULL:
        _live_put(f, buf, pos)
        return 0
    return _in_store(chan, d, buf, pos)


def chat_consume(chan, data):
    """Split received data on the channel's terminators: see _core_py.chat_consume.

    The same algorithm, with the search done in C when the buffer and the
    terminator are plain bytes, and the unconsumed input in a live frame
    (above) while the callbacks run.
    """
    cdef Py_ssize_t pos, pos0, lb, index, tlen, keep, n
    cdef Py_ssize_t shown_pos = -1
    cdef dict d = _input_dict(chan)
    cdef _Live *f = _live_of(chan)
    cdef _Live *own = NULL
    shown = None    # without a frame: the pair (shown, shown_pos) the channel holds now
    if f != NULL:
        buf = <object>f.buf
        pos = f.pos
    else:
        buf = _in_first(chan, d)
        pos = _in_pos(chan, d, NULL)
    buf0 = buf
    pos0 = pos
    if pos:
        buf = buf[pos:]
    if type(buf) is bytes and type(data) is bytes and PyBytes_GET_SIZE(buf) == 0:
        buf = data      # what b"" + data gives, without the buffer protocol
    else:
        buf = buf + data
    pos = 0
    if f == NULL and d is not None and _verdict(chan) & V_INPUT:
        # It starts from what the instance holds: an error before the first
        # publication leaves the instance as it was, as in the pure core.
        f = own = _live_enter(chan, buf0, pos0)
    try:
        while len(buf) > pos:
            lb = len(buf) - pos
            terminator = _terminator_of(chan, d)
            if not terminator:
                _in_set(chan, d, f, buf, pos)
                shown, shown_pos = buf, pos
                chan.collect_incoming_data(buf[pos:] if pos else buf)
                buf = _EMPTY
                pos = 0
            elif isinstance(terminator, int):
                if lb < terminator:
                    _in_set(chan, d, f, buf, pos)
                    shown, shown_pos = buf, pos
                    chan.collect_incoming_data(buf[pos:] if pos else buf)
                    buf = _EMPTY
                    pos = 0
                    _in_set(chan, d, f, buf, pos)
                    shown, shown_pos = buf, pos
                    chan.terminator = chan.terminator - lb
                else:
                    # A count below -lb slices like -lb - 1: to nothing.
                    n = max(terminator, -lb - 1)
                    _in_set(chan, d, f, buf, pos)
                    shown, shown_pos = buf, pos
                    chan.collect_incoming_data(buf[pos:pos + _span(n, lb)])
                    buf = _in_buf(chan, d, f)
                    pos = _in_pos(chan, d, f)
                    pos = min(pos + _span_obj(terminator, len(buf) - pos), len(buf))
                    _in_set(chan, d, f, buf, pos)
                    shown, shown_pos = buf, pos
                    chan.terminator = 0
                    chan.found_terminator()
                    buf = _in_buf(chan, d, f)
                    pos = _in_pos(chan, d, f)
                    shown, shown_pos = buf, pos
            else:
                tlen = len(terminator)
                index = _find(buf, terminator, pos)
                if index != -1:
                    _in_set(chan, d, f, buf, pos)
                    shown, shown_pos = buf, pos
                    if index > pos:
                        chan.collect_incoming_data(_piece(buf, pos, index))
                        buf = _in_buf(chan, d, f)
                        index = index - pos + _in_pos(chan, d, f)
                    pos = min(index + tlen, len(buf))
                    _in_set(chan, d, f, buf, pos)
                    chan.found_terminator()
                    buf = _in_buf(chan, d, f)
                    pos = _in_pos(chan, d, f)
                    shown, shown_pos = buf, pos
                else:
                    keep = _prefix_at_end(buf, pos, terminator)
                    if keep:
                        if keep != lb:
                            _in_set(chan, d, f, buf, pos)
                            shown, shown_pos = buf, pos
                            chan.collect_incoming_data(buf[pos:len(buf) - keep])
                            buf = _in_buf(chan, d, f)
                            pos = max(_in_pos(chan, d, f), len(buf) - keep)
                        break
                    _in_set(chan, d, f, buf, pos)
                    shown, shown_pos = buf, pos
                    chan.collect_incoming_data(buf[pos:] if pos else buf)
                    buf = _EMPTY
                    pos = 0
        if f != NULL:
            _live_put(f, buf, pos)
        elif buf is not shown or pos != shown_pos:
            # What the last callback left, or the last publication, needs no repeating.
            _in_store(chan, d, buf, pos)
    finally:
        if own != NULL:
            _live_leave(own, d, buf0, pos0)


cdef inline Py_ssize_t _span(Py_ssize_t n, Py_ssize_t available) noexcept:
    # A negative count slices from the end, as 3.11's rest[:n] did.
    return n if n >= 0 else max(available + n, 0)


cdef Py_ssize_t _span_obj(object n, Py_ssize_t available) except -1:
    # _span for a Python int of any size (the handler may have changed the
    # buffer, so the clamp used before the callback does not apply).
    if n >= 0:
        return min(n, available)
    if n <= -available:
        return 0
    return available + <Py_ssize_t>n


cdef Py_ssize_t _find(object buf, object needle, Py_ssize_t pos) except -2:
    cdef Py_ssize_t found
    if type(buf) is bytes and type(needle) is bytes:
        found = cya_find(PyBytes_AS_STRING(buf) + pos, PyBytes_GET_SIZE(buf) - pos,
                         PyBytes_AS_STRING(needle), PyBytes_GET_SIZE(needle))
        return found + pos if found >= 0 else -1
    # Anything else gets the object's own find(), and its errors (a str
    # terminator against bytes raises TypeError, as in 3.11).
    return buf.find(needle, pos)


cdef Py_ssize_t _prefix_at_end(object buf, Py_ssize_t pos, object needle) except -1:
    cdef Py_ssize_t n
    if type(buf) is bytes and type(needle) is bytes:
        return cya_prefix_at_end(PyBytes_AS_STRING(buf) + pos, PyBytes_GET_SIZE(buf) - pos,
                                 PyBytes_AS_STRING(needle), PyBytes_GET_SIZE(needle))
    n = len(needle) - 1
    while n and not buf.endswith(needle[:n], pos):
        n -= 1
    return n


# ------------------------------------------------- our own methods, in C
#
# Issue 11: the dispatcher methods every event runs through, compiled.
# While this core is active asyncore puts them on its classes in place of
# the Python originals (asyncore._install_methods), so attribute lookup
# decides exactly as before: a subclass's or a mixin's override, or an
# attribute set on the instance, wins, whenever it was added.  They call
# the program's code (handle_read, handle_close...) the way the originals
# did, and they are the same functions in the same order, so tracebacks
# name them as 3.11's did (setup.py keeps the module's name out of the
# traceback entries Cython makes).
#
# recv() and send() reach the descriptor directly when the socket is a
# plain socket.socket in non-blocking mode (see includes/sockio.h).

cdef extern from "errno.h":
    const int EWOULDBLOCK

cdef extern from "Python.h":
    int PyErr_CheckSignals() except -1

cdef tuple _sockio_keep = None     # what sockio.h holds borrowed: see _probe_sockets


cdef int _probe_sockets() except -1:
    """Find where a socket object keeps its descriptor and timeout (see sockio.h).

    The descriptor is the first field after the object header.  The
    timeout is the only 64-bit field that reads back what settimeout() set,
    in nanoseconds, for several values.  Anything unexpected leaves the
    direct calls off, and every socket then goes through its methods.
    """
    global _sockio_keep
    cdef Py_ssize_t fd_at = sizeof(PyObject)
    cdef Py_ssize_t at, found = -1
    if os.name == "nt" or not hasattr(socket, "AF_INET"):
        return 0
    base = socket.socket.__mro__[1]     # _socket.socket: the C struct's size
    try:
        first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return 0
    with first, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as second:
        if cya_peek_int(first, fd_at) != first.fileno() \
                or cya_peek_int(second, fd_at) != second.fileno():
            return 0
        at = (fd_at + sizeof(int) + 7) & ~7
        while at + 8 <= base.__basicsize__:
            for value, expected in ((1.25, 1250000000), (0.0, 0), (3.5, 3500000000)):
                first.settimeout(value)
                if cya_peek_int64(first, at) != expected:
                    break
            else:
                first.settimeout(None)
                if cya_peek_int64(first, at) < 0:
                    if found != -1:
                        return 0    # two candidates: trust neither
                    found = at
            at += 8
    if found != -1:
        _sockio_keep = (sys.intern("recv"), sys.intern("send"),
                        base.__dict__["recv"], base.__dict__["send"])
        cya_sockio_enable(<PyTypeObject *>socket.socket, fd_at, found, _sockio_keep[0],
                          _sockio_keep[1], _sockio_keep[2], _sockio_keep[3])
    return 0


def sockio_enabled():
    """Whether recv() and send() of plain sockets go straight to the descriptor."""
    return cya_sockio_enabled()


cdef object _state(object obj, object name, object desc, dict d=None):
    """obj.<name> for connected/accepting, read past their descriptor when it is ours.

    ``d``, when given, is obj's instance __dict__ (async_chat's is always
    materialised), where the value is found quicker than by attribute lookup.
    """
    cdef Watched w
    cdef PyObject *found
    if _verdict(obj) & V_STATE:
        w = <Watched>desc
        if d is not None:
            # Only Watched stores under that name, and only on instances.
            found = PyDict_GetItemWithError(d, w.storage)
            return <object>found if found != NULL else w.default
        value = _get_stored(obj, w.storage)
        return w.default if value is _ABSENT else value
    return getattr(obj, name)


class dispatcher:
    """Compiled methods of asyncore.dispatcher (a namespace; see above)."""

    def handle_read_event(self):
        # async_chat's __dict__ is materialised by its input path anyway:
        # the state is found there quickest.
        cdef dict d = _dict_or_none(self) if _verdict(self) & V_INPUT else None
        if _state(self, S_ACCEPTING, _d_accepting, d):
            self.handle_accept()
        elif not _state(self, S_CONNECTED, _d_connected, d):
            if self.connecting:
                self.handle_connect_event()
            self.handle_read()
        else:
            self.handle_read()

    def handle_write_event(self):
        if _state(self, S_ACCEPTING, _d_accepting):
            return
        if not _state(self, S_CONNECTED, _d_connected) and self.connecting:
            self.handle_connect_event()
        self.handle_write()

    def recv(self, buffer_size):
        try:
            data = cya_sock_recv(self.socket, buffer_size)
        except OSError as why:
            if why.errno in DISCONNECTED:
                self.handle_close()
                return b""
            raise
        if not data:
            self.handle_close()
            return b""
        return data

    def send(self, data):
        try:
            return cya_sock_send(self.socket, data)
        except OSError as why:
            if why.errno == EWOULDBLOCK:
                return 0
            if why.errno in DISCONNECTED:
                self.handle_close()
                return 0
            raise


cdef PyTypeObject *_dws_type = NULL
cdef unsigned int _dws_tag = 0
cdef unsigned int _dws_base_tag = 0


cdef bint _dws_fast(object self, object data) except -1:
    """Whether dispatcher_with_send.send(data) may take the compiled path.

    It is the Python original's common case (nothing pending, bytes, our
    own initiate_send, out_buffer and dispatcher.send), on a socket the
    direct calls serve.
    """
    global _dws_type, _dws_tag, _dws_base_tag
    cdef PyTypeObject *tp = _type_of(<PyObject *>self)
    cdef PyTypeObject *base = <PyTypeObject *>_dispatcher_class
    if type(data) is not bytes:
        return False
    # The verdict for the last class seen holds while neither it nor
    # dispatcher changed: version tags are never reused.
    if tp == _dws_type and _dws_tag != 0 and tp.tp_version_tag == _dws_tag \
            and base.tp_version_tag == _dws_base_tag:
        return True
    if _PyType_Lookup(tp, <PyObject *>S_INITIATE_SEND) != <PyObject *>_py_dws_initiate_send \
            or _PyType_Lookup(tp, <PyObject *>S_OUT_BUFFER) != <PyObject *>_d_out_buffer \
            or _PyType_Lookup(base, <PyObject *>S_SEND) != <PyObject *>_c_dispatcher_send:
        return False
    if PyUnstable_Type_AssignVersionTag(tp) and PyUnstable_Type_AssignVersionTag(base):
        _dws_type = tp
        _dws_tag = tp.tp_version_tag
        _dws_base_tag = base.tp_version_tag
    return True


class dispatcher_with_send:
    """Compiled methods of asyncore.dispatcher_with_send."""

    def send(self, data):
        # The Python original (asyncore.dispatcher_with_send.send) is the
        # specification; this is its common case, with the socket call made
        # first: when the socket takes everything, nothing else changes.
        cdef int fd
        cdef int err = 0
        cdef Py_ssize_t sent, n
        if self.debug or not _dws_fast(self, data):
            return _py_dws_send(self, data)
        try:
            pending = self._wbuf
        except AttributeError:
            return _py_dws_send(self, data)
        fd = cya_fast_fd(self.socket)
        if pending is not _EMPTY or fd == -2:
            return _py_dws_send(self, data)
        n = len(data)
        while True:
            sent = cya_send_raw(fd, data, self._SEND_MAX, &err)
            if sent >= 0 or err != EINTR:
                break
            # Signal handlers run while the data is pending, as in 3.11.
            self._wbuf = data
            try:
                PyErr_CheckSignals()
            except BaseException:
                if self._wbuf is data:
                    _touch(self)
                raise
        if sent == n:
            if self._wbuf is data:
                self._wbuf = _EMPTY
            return None
        self._wbuf = data
        if sent < 0:
            sent = 0
            if err == EWOULDBLOCK:
                pass
            elif err in DISCONNECTED:
                try:
                    self.handle_close()
                except BaseException:
                    if self._wbuf is data:
                        _touch(self)
                    raise
            else:
                _touch(self)
                raise OSError(err, os.strerror(err))
        if self._wbuf is data:
            if sent:
                self._own(sent)
            # Output is pending now: the loop must wait for writability.
            _touch(self)
        return None


cdef object _fifo_of(object self):
    """self.producer_fifo, without telling the loop (our methods tell it themselves)."""
    cdef PyObject *found
    if _verdict(self) & V_FIFO:
        d = _dict_or_none(self)
        if d is not None:
            found = PyDict_GetItemWithError(d, S_PRODUCER_FIFO)
            if found != NULL:
                return <object>found
    return self.producer_fifo


cdef object _rest(object data, Py_ssize_t sent):
    # As asynchat._rest: a view of immutable bytes, a copy of anything else.
    if type(data) is bytes and PyBytes_GET_SIZE(data) - sent > 512:
        return memoryview(data)[sent:]
    return data[sent:]


cdef bint _own_method(object self, object name, int bit, dict d) except -1:
    """Whether self.<name> is ours (the verdict's ``bit``), with nothing on the instance."""
    if not _verdict(self) & bit:
        return False
    return d is None or PyDict_GetItemWithError(d, name) == NULL


cdef int _initiate(object self, object fifo) except -1:
    """The body of async_chat.initiate_send (see the Python original)."""
    cdef dict d = _dict_or_none(self)
    while fifo and _state(self, S_CONNECTED, _d_connected, d):
        first = fifo[0]
        if not first:
            del fifo[0]
            if first is None:
                self.handle_close()
                return 0
        size = self.ac_out_buffer_size
        if type(first) is bytes and type(size) is int and PyBytes_GET_SIZE(first) <= size:
            data = first    # what the slice gives: bytes sliced whole are themselves
        else:
            try:
                data = first[:size]
            except TypeError:
                # Not sliceable: a producer.
                data = first.more()
                if data:
                    fifo.appendleft(data)
                else:
                    del fifo[0]
                continue
        if isinstance(data, str) and self.use_encoding:
            data = data.encode(self.encoding)
        try:
            if _own_method(self, S_SEND, V_SEND, d):
                # dispatcher.send's body, without the call.
                try:
                    sent = cya_sock_send(self.socket, data)
                except OSError as why:
                    if why.errno == EWOULDBLOCK:
                        sent = 0
                    elif why.errno in DISCONNECTED:
                        self.handle_close()
                        sent = 0
                    else:
                        raise
            else:
                sent = self.send(data)
        except OSError:
            self.handle_error()
            return 0
        if sent:
            if sent < len(data) or size < len(first):
                fifo[0] = _rest(first, sent)
            else:
                del fifo[0]
        return 0
    return 0


class async_chat:
    """Compiled methods of asynchat.async_chat."""

    @property
    def ac_in_buffer(self):
        """Received bytes not yet handed to collect_incoming_data()."""
        cdef _Live *f = _live_of(self)
        if f != NULL:
            # A callback of chat_consume(), asking: the live frame holds it.
            if f.pos:
                rest = (<object>f.buf)[f.pos:]
                _live_put(f, rest, 0)
            return <object>f.buf
        try:
            pos = self._ac_pos
        except AttributeError:
            raise _pure._no_ac_in_buffer(self) from None
        if pos:
            self._ac_in = self._ac_in[pos:]
            self._ac_pos = 0
        return self._ac_in

    @ac_in_buffer.setter
    def ac_in_buffer(self, data):
        cdef _Live *f = _live_of(self)
        if f != NULL:
            _live_put(f, data, 0)
            return
        self._ac_in = data
        self._ac_pos = 0

    def handle_read(self):
        if not _verdict(self) & V_INPUT:
            return _py_chat_handle_read(self)
        try:
            data = self.recv(self.ac_in_buffer_size)
        except BlockingIOError:
            return
        except OSError:
            self.handle_error()
            return
        if isinstance(data, str) and self.use_encoding:
            # 3.11's own bug, kept (see the Python original).
            data = bytes(str, self.encoding)
        _consume(self, data)

    def push(self, data):
        global _quiet
        if not isinstance(data, _BYTEISH):
            raise TypeError("data argument must be byte-ish (%r)", type(data))
        size = self.ac_out_buffer_size
        fifo = _fifo_of(self)
        was = bool(fifo)
        if len(data) > size:
            for start in range(0, len(data), size):
                fifo.append(data[start:start + size])
        else:
            fifo.append(data)
        if _own_method(self, S_INITIATE_SEND, V_INITIATE, _dict_or_none(self)):
            try:
                _initiate(self, fifo)
            finally:
                # The loop asks again only when writable()'s answer may differ.
                if bool(fifo) != was:
                    _touch(self)
            return
        _quiet = self
        try:
            self.initiate_send()
        finally:
            _quiet = None
            if bool(fifo) != was:
                _touch(self)

    def initiate_send(self):
        global _quiet
        quiet = _quiet is self
        _quiet = None
        fifo = _fifo_of(self)
        was = bool(fifo)
        try:
            _initiate(self, fifo)
        finally:
            if not quiet and bool(fifo) != was:
                _touch(self)

    def _collect_incoming_data(self, data):
        self.incoming.append(data)

    def _get_data(self):
        incoming = self.incoming
        data = b"".join(incoming)
        del incoming[:]
        return data


cdef object _consume = None    # chat_consume, below


def bind_chat(get_terminator, originals):
    """Called by asynchat at import, as bind_methods by asyncore."""
    global _py_get_terminator, _py_chat_handle_read, _consume
    global _c_chat_initiate_send, _c_ac_in_buffer
    _py_get_terminator = get_terminator
    _py_chat_handle_read = originals["async_chat", "handle_read"]
    _consume = chat_consume
    _c_chat_initiate_send = async_chat.__dict__["initiate_send"]
    _c_ac_in_buffer = async_chat.__dict__["ac_in_buffer"]
    _forget_verdicts()
    return {("async_chat", name): value for name, value in async_chat.__dict__.items()
            if not name.startswith("__")}


def bind_methods(dispatcher_class, out_buffer, dws_initiate_send, originals):
    """Called by asyncore at import: what the compiled methods compare with.

    ``originals`` maps (class name, method name) to the Python original.
    Returns {(class name, method name): function} for asyncore to install.
    """
    global _dispatcher_class, _py_dws_initiate_send, _c_dispatcher_send, _d_out_buffer
    global _py_dws_send
    _dispatcher_class = dispatcher_class
    _d_out_buffer = out_buffer
    _py_dws_initiate_send = dws_initiate_send
    _c_dispatcher_send = dispatcher.__dict__["send"]
    _py_dws_send = originals["dispatcher_with_send", "send"]
    _forget_verdicts()
    found = {}
    for namespace in (dispatcher, dispatcher_with_send):
        for name, value in namespace.__dict__.items():
            if not name.startswith("__"):
                found[namespace.__name__, name] = value
    return found


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
_probe_sockets()
PYTIME_TOO_LARGE = _PYTIME_TOO_LARGE
_pure = _pure_module
