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
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Next
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.errno cimport EINTR, errno
from libc.math cimport ceil

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
)

import os
import time

cdef extern from "Python.h":
    int PyObject_AsFileDescriptor(object o) except -1
    object PyNumber_Index(object o)
    PyObject *PyDict_GetItemWithError(object d, object k) except? NULL

NAME = "compiled"
HAS_POLL = bool(CYA_HAVE_POLL)

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


cdef int _wait(cya_pollfd *pfd, Py_ssize_t count, int ms) except -1:
    """poll(2) with the GIL released; EINTR runs signal handlers and retries."""
    cdef int ready
    cdef int err
    cdef double deadline = 0.0
    if ms > 0:
        deadline = cya_monotonic() + ms / 1000.0
    while True:
        with nogil:
            ready = cya_poll(pfd, <unsigned long>count, ms)
            err = errno
        if ready >= 0:
            return ready
        if err != EINTR:
            raise OSError(err, os.strerror(err))
        # A handler that raises ends the wait, as it does in select.select().
        PyErr_CheckSignals()
        if ms > 0:
            ms = <int>max(0.0, ceil((deadline - cya_monotonic()) * 1000.0))


# ------------------------------------------------------ select-style pass


cdef int select_timeout_ms(object timeout) except -2:
    """select()'s timeout, validated as select() does (see _core_py), in ms."""
    cdef double seconds
    if timeout is None:
        return -1
    if isinstance(timeout, float):
        seconds = timeout
        if seconds != seconds:
            raise ValueError("Invalid value NaN (not a number)")
        if not -MAX_SECONDS_FLOAT <= seconds < MAX_SECONDS_FLOAT:
            raise OverflowError("timestamp out of range for platform time_t")
    else:
        try:
            timeout = PyNumber_Index(timeout)
        except TypeError:
            raise TypeError("timeout must be a float or None") from None
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


cdef int _poll_select(_Pass p, object timeout, object map) except -1:
    cdef Py_ssize_t i, j
    cdef Py_ssize_t m = 0
    cdef unsigned char want
    cdef double deadline = 0.0
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
            time.sleep(timeout)
            return 0
        ms = select_timeout_ms(timeout)
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
        if ms > 0:
            deadline = cya_monotonic() + ms / 1000.0
        while True:
            if _wait(p.pfd, m, ms) == 0:
                return 0
            for j in range(m):
                if p.pfd[j].revents & CYA_POLLNVAL:
                    # select() fails as a whole on a closed descriptor.
                    raise OSError(9, os.strerror(9))
            if _select_would_report(p, m):
                break
            # poll(2) reports a hang-up or error on a descriptor that select()
            # was not asked about for reading (or writing): select() would go
            # on sleeping, so stop watching those and wait out the rest.
            for j in range(m):
                if p.pfd[j].revents:
                    p.pfd[j].fd = -1
            if ms == 0:
                return 0
            if ms > 0:
                ms = <int>max(0.0, ceil((deadline - cya_monotonic()) * 1000.0))
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


cdef int _poll_poll(_Pass p, object timeout, object map) except -1:
    cdef Py_ssize_t i, j
    cdef Py_ssize_t m = 0
    cdef short flags
    cdef int fd
    cdef int ms = -1
    cdef dict seen = None
    original = timeout
    if timeout is not None:
        timeout = int(timeout * 1000)
    if not map:
        return 0
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
        if m == 0 and ms < 0:
            # Nothing can ever end this wait: 3.11 hung here for good.  Fail
            # the way the select-style pass does with nothing to wait for.
            time.sleep(original)
        if _wait(p.pfd, m, ms) == 0:
            return 0
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
    if count is None:
        while map:
            _one_pass(p, with_poll, timeout, map)
    elif type(count) is int and -2**62 < count < 2**62:
        left = count
        while map and left > 0:
            _one_pass(p, with_poll, timeout, map)
            left -= 1
    else:
        # A float, a huge int or something stranger: Python's arithmetic, as 3.11.
        while map and count > 0:
            _one_pass(p, with_poll, timeout, map)
            count = count - 1
    return 0


cdef inline int _one_pass(_Pass p, bint with_poll, object timeout, object map) except -1:
    if with_poll:
        return _poll_poll(p, timeout, map)
    if map:
        return _poll_select(p, timeout, map)
    return 0


# -------------------------------------------------- async_chat input path


def chat_consume(chan, data):
    """Split received data on the channel's terminators: see _core_py.chat_consume.

    The same algorithm, with the search done in C when the buffer and the
    terminator are plain bytes.
    """
    cdef Py_ssize_t pos, lb, index, tlen, keep, n
    buf = chan._ac_in
    pos = chan._ac_pos
    if pos:
        buf = buf[pos:]
    buf = buf + data
    pos = 0
    while len(buf) > pos:
        lb = len(buf) - pos
        terminator = chan.get_terminator()
        if not terminator:
            chan._ac_in = buf
            chan._ac_pos = pos
            chan.collect_incoming_data(buf[pos:] if pos else buf)
            buf = b""
            pos = 0
        elif isinstance(terminator, int):
            if lb < terminator:
                chan._ac_in = buf
                chan._ac_pos = pos
                chan.collect_incoming_data(buf[pos:] if pos else buf)
                buf = b""
                pos = 0
                chan._ac_in = buf
                chan._ac_pos = pos
                chan.terminator = chan.terminator - lb
            else:
                # A count below -lb slices like -lb - 1: to nothing.
                n = max(terminator, -lb - 1)
                chan._ac_in = buf
                chan._ac_pos = pos
                chan.collect_incoming_data(buf[pos:pos + _count(n, lb)])
                buf = chan._ac_in
                pos = chan._ac_pos
                pos = min(pos + _count_obj(terminator, len(buf) - pos), len(buf))
                chan._ac_in = buf
                chan._ac_pos = pos
                chan.terminator = 0
                chan.found_terminator()
                buf = chan._ac_in
                pos = chan._ac_pos
        else:
            tlen = len(terminator)
            index = _find(buf, terminator, pos)
            if index != -1:
                chan._ac_in = buf
                chan._ac_pos = pos
                if index > pos:
                    chan.collect_incoming_data(buf[pos:index])
                    buf = chan._ac_in
                    index = index - pos + <Py_ssize_t>chan._ac_pos
                    pos = chan._ac_pos
                pos = min(index + tlen, len(buf))
                chan._ac_in = buf
                chan._ac_pos = pos
                chan.found_terminator()
                buf = chan._ac_in
                pos = chan._ac_pos
            else:
                keep = _prefix_at_end(buf, pos, terminator)
                if keep:
                    if keep != lb:
                        chan._ac_in = buf
                        chan._ac_pos = pos
                        chan.collect_incoming_data(buf[pos:len(buf) - keep])
                        buf = chan._ac_in
                        pos = max(<Py_ssize_t>chan._ac_pos, len(buf) - keep)
                    break
                chan._ac_in = buf
                chan._ac_pos = pos
                chan.collect_incoming_data(buf[pos:] if pos else buf)
                buf = b""
                pos = 0
    chan._ac_in = buf
    chan._ac_pos = pos


cdef inline Py_ssize_t _count(Py_ssize_t n, Py_ssize_t available) noexcept:
    # A negative count slices from the end, as 3.11's rest[:n] did.
    return n if n >= 0 else max(available + n, 0)


cdef Py_ssize_t _count_obj(object n, Py_ssize_t available) except -1:
    # _count for a Python int of any size (the handler may have changed the
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


# The shared names come last: importing asyncore's package runs its core
# selection, which imports this module; by now every export above exists,
# so that nested import finds a complete core.
from asyncore import _core_py as _pure_module
from asyncore._common import DISCONNECTED as _DISCONNECTED
from asyncore._common import PYTIME_TOO_LARGE as _PYTIME_TOO_LARGE
from asyncore._common import RERAISED as _RERAISED

RERAISED = _RERAISED
DISCONNECTED = _DISCONNECTED
PYTIME_TOO_LARGE = _PYTIME_TOO_LARGE
_pure = _pure_module
