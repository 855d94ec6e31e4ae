# cython: language_level=3
"""The compiled core's channel-state watching (issue 15): what tells the loop a channel changed.

asyncore and asynchat put these descriptors on their classes (see
``asyncore._core``): ``connected``, ``accepting`` and ``producer_fifo`` as
Watched, ``readable``/``writable`` as Predicate, ``__class__`` as ClassSlot.
Setting any of them on an instance calls _touch(), which marks the
channel's entries in the kernel interest sets (_asyncore_kset) for the
next pass to ask again; and _judge() tells the kernel-set unit whether a
class's answers can only change through what _touch() sees.

This unit depends on no other of the core's: the kernel-set unit cimports
it and fills in the two hooks (set_hooks) through which _touch() and
declare_own() reach the registries.
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError
from cpython.ref cimport Py_DECREF, PyObject

import collections
import socket
import sys

cdef extern from "Python.h":
    object PyMethod_New(object func, object self)

_own_writable = {}
_own_readable = set()
_d_connected = None
_d_accepting = None
_d_producer_fifo = None
_d_out_buffer = None
_d_class = None
_deque = collections.deque
_socket_type = socket.socket

S_READABLE = "readable"
S_WRITABLE = "writable"
S_CONNECTED = "connected"
S_ACCEPTING = "accepting"
S_PRODUCER_FIFO = "producer_fifo"
S_OUT_BUFFER = "out_buffer"
S_WBUF = "_wbuf"
S_WOFF = "_woff"
S_CLASS = "__class__"
S_SOCKET = "socket"
S_OVERRIDE_R = "_asyncore_readable"
S_OVERRIDE_W = "_asyncore_writable"
cdef object _OBJECT_CLASS = object.__dict__["__class__"]

_touch_hook = NULL
cdef rejudge_hook _rejudge_hook = NULL
# The core's reading of a socket's descriptor from the object (sockio.h,
# whose state -- socket.socket's layout, probed once -- is the core's).
cdef sock_fd_hook _sock_fd = NULL


cdef int set_hooks(touch_hook touch, rejudge_hook rejudge) except -1:
    """The kernel-set unit's: mark a channel's entries; forget every class's verdict."""
    global _touch_hook, _rejudge_hook
    _touch_hook = touch
    _rejudge_hook = rejudge
    return 0


cdef int set_sock_fd(sock_fd_hook sock_fd) except -1:
    global _sock_fd
    _sock_fd = sock_fd
    return 0


# ----------------------------------------------- descriptors on our classes


# Where the descriptors keep their values: an ordinary instance attribute
# under a private name ("_asyncore_" + the public name), read and written
# with the generic attribute code, so neither a class's own __getattr__ or
# __setattr__ sees it nor is the instance's __dict__ materialised (which
# costs every later attribute access on the channel its fast path).
_ABSENT = object()


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
    if _rejudge_hook != NULL:
        _rejudge_hook()


# ------------------------------------------------------- judging a class


@cython.final
cdef class _TypeInfo:
    """What a pass may assume of one class, valid while its version tag holds."""


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


cdef int _judge(PyTypeObject *tp, _TypeInfo info) except -1:
    PyUnstable_Type_AssignVersionTag(tp)
    info.tag = tp.tp_version_tag
    info.kind = _classify(tp) if info.tag != 0 else 0
    if tp.tp_version_tag != info.tag:
        info.kind = 0
    return 0


# ------------------------------------------------- judging one channel


cdef bint _watched(_TypeInfo info, object obj) except -1:
    """Whether obj (of a class judged ``info``) answers only from state _touch() sees."""
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


cdef bint _socket_is_open(object obj, _TypeInfo info, int fd) except -1:
    """Whether a channel of our classes still holds its descriptor (fd) open.

    The cheap answer, from the socket object (closed: fileno() is -1),
    saves the kernel call that would otherwise renew the registration of
    every channel asked again.  Any other kind of channel, or socket, gets
    the kernel call (see _asyncore_kset's _apply).
    """
    cdef int found
    if info is None or info.kind == 0:
        return False
    sock = _get_stored(obj, S_SOCKET)
    if type(sock) is not _socket_type:
        return False
    if _sock_fd != NULL:
        found = _sock_fd(sock)
        if found != -2:
            return found == fd
    return sock.fileno() == fd
