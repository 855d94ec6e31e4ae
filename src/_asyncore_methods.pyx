# cython: language_level=3
"""Our own classes' methods, in C: the compiled core's third unit (issue 15).

asyncore and asynchat put these functions on their classes, in place of the
Python originals, while the compiled core is active (issue 11); the loop
never calls them directly, only through attribute lookup on the channel,
so an override wins as it always did.  Here, in order: what a class makes
of our own attributes (one cached verdict per class), async_chat's input
split (``chat_consume``, the twin of ``asyncore._core_py.chat_consume``;
_asyncore_core exports it), and the dispatcher, dispatcher_with_send and
async_chat methods with the direct socket calls of includes/sockio.h.

Dependencies point one way: this unit cimports _asyncore_state (the
descriptors whose stored values it reads past) and imports nothing of
asyncore when it loads; bind_methods() and bind_chat(), called by asyncore
and asynchat at their import, hand it what it compares with.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, PyObject
from libc.errno cimport EINTR
from libc.string cimport memset

from includes.system cimport cya_find, cya_prefix_at_end
from _asyncore_state cimport (
    PyObject_GenericGetAttr,
    PyObject_GenericSetAttr,
    PyTypeObject,
    PyUnstable_Type_AssignVersionTag,
    S_ACCEPTING,
    S_CONNECTED,
    S_OUT_BUFFER,
    S_PRODUCER_FIFO,
    Watched,
    _ABSENT,
    _PyType_Lookup,
    _d_accepting,
    _d_connected,
    _d_out_buffer,
    _d_producer_fifo,
    _dict_or_none,
    _get_stored,
    _touch,
    _type_of,
    set_sock_fd,
)

import os
import socket
import sys

# recv() and send() on a socket's descriptor (see the methods below).
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

cdef extern from "Python.h":
    PyObject *PyDict_GetItemWithError(object d, object k) except? NULL
    bint PyType_IsSubtype(PyTypeObject *a, PyTypeObject *b)

# Bound by bind_methods() (see there): asyncore's pure core, whose
# functions some error paths share, and the errnos that mean "disconnected".
cdef object _pure = None
cdef object DISCONNECTED = None


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
    V_DWS = 128         # our initiate_send, out_buffer, dispatcher.send: dws.send's fast case

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


cdef bint _dws_own(PyTypeObject *tp, PyTypeObject *base) noexcept:
    return PyType_IsSubtype(tp, base) \
        and _PyType_Lookup(tp, <PyObject *>S_INITIATE_SEND) == <PyObject *>_py_dws_initiate_send \
        and _PyType_Lookup(tp, <PyObject *>S_OUT_BUFFER) == <PyObject *>_d_out_buffer \
        and _PyType_Lookup(base, <PyObject *>S_SEND) == <PyObject *>_c_dispatcher_send


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
    # dispatcher.send is read on dispatcher itself (the original calls it
    # so); a change there retags its subclasses, so only they qualify.
    if _dispatcher_class is not None and _dws_own(tp, <PyTypeObject *>_dispatcher_class):
        bits |= V_DWS
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


class dispatcher_with_send:
    """Compiled methods of asyncore.dispatcher_with_send."""

    def send(self, data):
        # The Python original (asyncore.dispatcher_with_send.send) is the
        # specification; this is its common case, with the socket call made
        # first: when the socket takes everything, nothing else changes.
        cdef int fd
        cdef int err = 0
        cdef Py_ssize_t sent, n
        if self.debug or type(data) is not bytes or not _verdict(self) & V_DWS:
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
    global _py_dws_send, _pure, DISCONNECTED
    # asyncore is importing (it calls this): its submodules are there.
    from asyncore import _core_py
    from asyncore._common import DISCONNECTED as disconnected
    _pure = _core_py
    DISCONNECTED = disconnected
    _dispatcher_class = dispatcher_class
    _d_out_buffer = out_buffer  # no-cython-lint (_asyncore_state's, cimported)
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


_probe_sockets()
# The state unit reads a socket's descriptor with sockio.h's reader, whose
# state (filled in by _probe_sockets) is this unit's.
set_sock_fd(cya_sock_fd)
