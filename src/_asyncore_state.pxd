# Declarations of the channel-state unit (issue 15): the descriptors on our
# classes that tell the loop of state changes, and the judging of a class.
# The kernel-set unit and the core cimport this; it cimports neither.  What
# it needs of the kernel sets (mark a channel's entries, forget every
# verdict) it calls through the two hooks the kernel-set unit fills in.

cimport cython
from cpython.ref cimport PyObject


cdef extern from "Python.h":
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
    PyTypeObject *_type_of "Py_TYPE"(PyObject *o)
    Py_ssize_t _refcnt "Py_REFCNT"(PyObject *o)


# What our own writable() reads, so what must be watched to cache it.
cdef enum:
    KIND_CONST = 1      # dispatcher.writable: always True
    KIND_SEND = 2       # dispatcher_with_send.writable: connected, out-buffer
    KIND_CHAT = 3       # async_chat.writable: connected, producer_fifo

# The descriptors and functions that make a class "our own", filled in by
# declare_own() when asyncore and asynchat are imported (the core's
# bind_methods() sets _d_out_buffer too).
cdef dict _own_writable           # writable function -> KIND_*
cdef set _own_readable
cdef object _d_connected
cdef object _d_accepting
cdef object _d_producer_fifo
cdef object _d_out_buffer
cdef object _d_class

cdef object S_READABLE
cdef object S_WRITABLE
cdef object S_CONNECTED
cdef object S_ACCEPTING
cdef object S_PRODUCER_FIFO
cdef object S_OUT_BUFFER
cdef object S_WBUF
cdef object S_WOFF
cdef object S_CLASS
cdef object S_SOCKET
cdef object S_OVERRIDE_R
cdef object S_OVERRIDE_W

# The types a steady channel's state has (set again by the core at its end).
cdef object _deque
cdef object _socket_type

# A stored value's absence (see _get_stored).
cdef object _ABSENT

cdef object _get_stored(object obj, object storage)
cdef int _set_stored(object obj, object storage, PyObject *value) except -1


cdef inline dict _instance_dict(object obj):
    return <dict>PyObject_GenericGetDict(obj, NULL)


cdef inline dict _dict_or_none(object obj):
    """obj's instance __dict__, or None for an object that has none (no exception)."""
    if _type_of(<PyObject *>obj).tp_dictoffset == 0:
        return None
    return <dict>PyObject_GenericGetDict(obj, NULL)


# The kernel-set unit's side of _touch and declare_own (see set_hooks).
ctypedef void (*touch_hook)(object obj, bint recheck) noexcept
ctypedef void (*rejudge_hook)() noexcept
cdef touch_hook _touch_hook
cdef int set_hooks(touch_hook touch, rejudge_hook rejudge) except -1


cdef inline void _touch(object obj, bint recheck=False) noexcept:
    """Mark obj's entries for the next pass to ask.

    ``recheck`` for a change of state (connected, accepting, a predicate on
    the instance, __class__, a new producer fifo), never made per message:
    that asking also checks the kernel registration (see _asyncore_kset's
    _ask).  Output queued or sent, the producer fifo read, and an
    event only ask.
    """
    if _touch_hook != NULL:
        _touch_hook(obj, recheck)


@cython.final
cdef class Watched:
    cdef readonly object name
    cdef readonly object storage
    cdef object default
    cdef bint has_default
    cdef bint on_read
    cdef bint in_dict


@cython.final
cdef class Predicate:
    cdef readonly object func
    cdef readonly object name
    cdef readonly object storage


@cython.final
cdef class ClassSlot:
    pass


@cython.final
cdef class _TypeInfo:
    cdef unsigned int tag
    cdef int kind          # KIND_* of its writable(), or 0: not ours, ask every pass


cdef int _judge(PyTypeObject *tp, _TypeInfo info) except -1
cdef bint _is_descriptor(PyObject *found) noexcept
# Whether a channel of a class judged ``info`` answers only from state that
# tells _touch() of changes; whether its socket still holds descriptor fd.
cdef bint _watched(_TypeInfo info, object obj) except -1
cdef bint _socket_is_open(object obj, _TypeInfo info, int fd) except -1
# The core's cya_sock_fd (includes/sockio.h): -2 when it cannot tell.
ctypedef int (*sock_fd_hook)(object sock) noexcept
cdef int set_sock_fd(sock_fd_hook sock_fd) except -1
