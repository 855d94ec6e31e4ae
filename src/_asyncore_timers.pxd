# Declarations of the timers unit (issue 14) that the compiled core cimports:
# its passes reach a map's queue through these C methods, with no Python call.
# The dependency goes one way: this unit never cimports the core, which hands
# it the one thing it needs from the kernel sets as a function pointer
# (set_kset_hook).

cimport cython
from cpython.ref cimport PyObject


ctypedef struct _Slot:
    double when
    unsigned long long seq
    PyObject *timer      # owned reference

# The core's "add this wake-up descriptor to the map's live kernel set".
ctypedef int (*kset_hook)(object map, int fd) except -1


@cython.final
cdef class Timer:
    cdef TimerQueue queue
    cdef object callback
    cdef tuple args
    cdef double delay
    cdef double when
    cdef unsigned long long seq
    cdef Py_ssize_t pos      # slot in the queue's heap, -1 when not scheduled
    cdef bint periodic
    cdef bint is_cancelled


@cython.final
cdef class _WakeKey:
    cdef readonly int fd


@cython.final
cdef class TimerQueue:
    cdef object map
    cdef _Slot *heap
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef unsigned long long next_seq
    cdef object pending
    cdef readonly int wake
    cdef int wake_w
    cdef readonly object wake_key
    cdef object __weakref__

    cdef int activate(self) except -1
    cdef int settle(self) except -1
    cdef void place(self, Py_ssize_t i, _Slot s) noexcept
    cdef void sift_up(self, Py_ssize_t i) noexcept
    cdef void sift_down(self, Py_ssize_t i) noexcept
    cdef void resift(self, Py_ssize_t i) noexcept
    cdef int push(self, Timer t, double when) except -1
    cdef int take_out(self, Timer t) except -1
    cdef int remove(self, Timer t) except -1
    cpdef int clamp_ms(self, int ms) except -2
    cdef int idle_wait(self, object timeout) except -1
    cdef int wait_ms_c(self, int ms) except -1
    cdef int open_wake(self) except -1
    cdef int close_wake(self) except -1
    cdef void drain_wake(self) noexcept
    cdef int run_due(self) except -1
    cdef int close(self) except -1


# What the core's passes call (the core finds a map's queue in _active itself).
cdef bint has_live(object map) except -1
cdef int set_kset_hook(kset_hook hook) except -1
# A snapshot pass about to block without the map's wake-up descriptor
# registers (see wait_begin in the .pyx); -1 means "do not wait at all".
cdef int wait_begin(object map) except -2
cdef void wait_end(int slot) noexcept
cdef bint kicked(int slot) noexcept nogil
