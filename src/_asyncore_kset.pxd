# Declarations of the kernel-interest-set unit (issue 15) that the compiled
# core cimports: its passes over a long-lived map (_kpoll_select,
# _kpoll_poll) reach the map's registry through these, with no Python call.
# Dependencies go one way: this unit cimports _asyncore_state (the verdict
# on a class, the stored values) and never the core, which hands it the one
# thing it needs from the passes, its EINTR-retrying poll(2), as a function
# pointer (set_poll_wait).

cimport cython
from cpython.ref cimport PyObject

from _asyncore_state cimport _TypeInfo
from includes.system cimport cya_kevent, cya_kraw, cya_pollfd


cdef extern from "Python.h":
    ctypedef enum PyDict_WatchEvent:
        PyDict_EVENT_ADDED
        PyDict_EVENT_MODIFIED
        PyDict_EVENT_DELETED
        PyDict_EVENT_CLONED
        PyDict_EVENT_CLEARED
        PyDict_EVENT_DEALLOCATED


# Interest bits of a snapshot entry and of a channel.
cdef enum:
    WANT_READ = 1
    WANT_WRITE = 2
    WANT_EXCEPT = 4
    WANT_RW = WANT_READ | WANT_WRITE

# Which pass the kernel masks are for.
cdef enum:
    MODE_SELECT = 1
    MODE_POLL = 2

cdef class _Registry


@cython.final
cdef class _Entry:
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
    cdef bint evented         # had an event this pass, not asked again for it (see _after_events)
    cdef unsigned long asking_thread    # in this thread
    cdef _TypeInfo info
    cdef _Entry next_owner    # the same channel in another map

    cdef void mark(self) noexcept


@cython.final
cdef class _KSet:
    cdef int kfd


ctypedef struct _Ready:
    long long seq
    int fd
    short revents
    unsigned char want


@cython.final
cdef class _Buffers:
    cdef cya_kraw *raw
    cdef cya_kevent *kev
    cdef _Ready *out
    cdef Py_ssize_t cap
    cdef Py_ssize_t raw_count     # events the kernel gave in the last wait

    cdef int reserve(self, Py_ssize_t size) except -1


@cython.final
cdef class _Registry:
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

    cdef _Buffers take(self)
    cdef void give_back(self, _Buffers b) noexcept
    cdef _Entry add(self, object key, PyObject *obj, long long seq)
    cdef void remove(self, _Entry e) noexcept
    cdef void clear(self) noexcept
    cdef void _count(self, _Entry e, int sign) noexcept
    cdef void _forget_kernel(self, _Entry e) noexcept
    cdef void on_event(self, PyDict_WatchEvent event, PyObject *key, PyObject *value) noexcept
    cdef int resync(self, object map) except -1
    cdef int rekernel(self) except -1


# What the core's passes call.
cdef _Registry _registry_for(object map)
cdef int _sync(_Registry reg, object map, int mode) except -1
cdef void _before_events(_Registry reg, _Ready *ready, Py_ssize_t n) noexcept
cdef int _after_events(_Registry reg, _Ready *ready, Py_ssize_t n, bint check) except -1
cdef int _mute(_Registry reg, _Entry e) except -1
cdef Py_ssize_t _wait_ready(_Registry reg, int ms, _Buffers buf, bint with_bad) except -1
# The timers unit's hook (see _asyncore_timers.set_kset_hook).
cdef int _kset_add_wake(object map, int fd) except -1

# The core's poll(2) wait: EINTR runs signal handlers and retries.
ctypedef int (*poll_wait)(cya_pollfd *pfd, Py_ssize_t count, int ms) except -1
cdef int set_poll_wait(poll_wait wait) except -1
