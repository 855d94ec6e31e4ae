# cython: language_level=3
"""The compiled core's kernel interest sets (issue 15): one per long-lived map, kept between passes.

A map that loop() comes back to keeps its interest in the kernel (epoll or
kqueue, see kset.h) between passes.  A _Registry follows the map through a
dict watcher, so it sees every edit (map[fd] = obj, del, clear, update) as
it happens, and keeps one _Entry per channel: the channel's last answers
to readable()/writable() and what the kernel holds for it.

A pass asks only the channels that may have changed their answers: the
"dirty" ones.  A channel becomes dirty when it is added, when it had an
event, and when state its predicates read is changed: the descriptors of
_asyncore_state (connected, accepting, producer_fifo, readable/writable set
on the instance, __class__) and the out-buffer methods of
dispatcher_with_send and async_chat call _touch(), which lands in
_mark_owner below.  Channels whose class does not use our own predicates --
or that we cannot fully watch -- are "volatile": asked every pass, exactly
as 3.11 asked every channel.

Entries hold borrowed references: the map owns the channels, and its
watcher tells us before it lets go of one.  So an abandoned map and its
channels are collected as they were in 3.11.

The parts: the entry table of one map (_Registry), asking its channels
(_sync and the functions after it), telling the kernel and waiting on it
(_apply ... _wait_ready), and the module's switches (use_kernel_set,
backend, interest_info).  The core's passes over the set (_kpoll_select,
_kpoll_poll) stay in the core, beside the snapshot passes whose dispatch
they share.
"""

cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_Next
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.exc cimport PyErr_CheckSignals
from cpython.ref cimport PyObject
from libc.errno cimport EBADF, EINTR, errno

from _asyncore_state cimport (
    PyTypeObject,
    _TypeInfo,
    _judge,
    _socket_is_open,
    _type_of,
    _watched,
    set_hooks,
)
from includes.system cimport (
    CYA_HAVE_POLL,
    CYA_KSET,
    CYA_KSET_NAME,
    CYA_POLLERR,
    CYA_POLLHUP,
    CYA_POLLIN,
    CYA_POLLNVAL,
    CYA_POLLOUT,
    CYA_POLLPRI,
    cya_kevent,
    cya_kraw,
    cya_kset_add_once,
    cya_kset_check,
    cya_kset_close,
    cya_kset_forget,
    cya_kset_open,
    cya_kset_set,
    cya_kset_wait,
    cya_pollfd,
)
from includes.helpers cimport _deadline, _grow, _ms_left

import os

cdef extern from "Python.h":
    ctypedef int (*PyDict_WatchCallback)(PyDict_WatchEvent event, PyObject *d,
                                         PyObject *key, PyObject *new_value) noexcept
    int PyDict_AddWatcher(PyDict_WatchCallback cb)
    int PyDict_Watch(int watcher_id, object d) except -1
    PyObject *PyErr_GetRaisedException()
    void PyErr_SetRaisedException(PyObject *exc)
    object PyLong_FromVoidPtr(void *p)
    void PyErr_Clear()

cdef extern from "stdlib.h":
    void qsort(void *base, size_t n, size_t size,
               int (*cmp)(const void *, const void *) noexcept nogil) nogil

cdef int _watcher = -1            # our dict watcher, or -1 (none: no kernel sets)
cdef bint _kset_on = False        # kernel sets in use (see use_kernel_set below)
cdef dict _registries = {}        # id(map) -> _Registry, dropped when the map dies
cdef dict _owners = {}            # id(channel) -> first _Entry of that channel
cdef unsigned long _forks = 0     # bumped in a forked child: kernel sets are shared
cdef unsigned int _serials = 0    # registration serials (see kset.h)
# The serial that marks an event from poll(2) beside the kernel set (never a
# registration's): side entries and descriptors the kernel refused.
cdef unsigned int SIDE_SERIAL = 0xFFFFFFFF
# Registrations one wait the kernel answered with nothing checks (see
# _audit): a few, plus this many per millisecond waited.
cdef Py_ssize_t AUDIT_MIN = 16
cdef Py_ssize_t AUDIT_PER_MS = 32

# The core's poll(2) wait (see set_poll_wait).
cdef poll_wait _poll_wait = NULL


cdef int set_poll_wait(poll_wait wait) except -1:
    global _poll_wait
    _poll_wait = wait
    return 0


# ----------------------------------------------- what _touch() reaches


cdef void _mark_owner(object obj, bint recheck) noexcept:
    """_touch() of _asyncore_state: mark obj's entries in every map for the next pass."""
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


cdef void _rejudge_all() noexcept:
    """declare_own() of _asyncore_state: any class already classified may be judged differently."""
    for reg in list(_registries.values()):
        (<_Registry>reg).clear()
        (<_Registry>reg).types.clear()
        (<_Registry>reg).rebuild = True


set_hooks(_mark_owner, _rejudge_all)


# ------------------------------------------------------- types and entries


@cython.final
cdef class _Entry:
    """One channel of a watched map."""

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

    def __cinit__(self):
        self.kfd = cya_kset_open()
        if self.kfd < 0:
            raise OSError(errno, os.strerror(errno))

    def __dealloc__(self):
        if self.kfd >= 0:
            cya_kset_close(self.kfd)


@cython.final
cdef class _Buffers:
    """What one wait fills: the kernel's events, and the ready channels in map order.

    A registry keeps one between passes (see _Registry.take), so a steady
    loop allocates nothing per pass; a nested or concurrent pass over the
    same map finds it taken and makes its own.
    """

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
                    _apply(self, e, e.target)
            finally:
                self._count(e, 1)
        return 0

# ------------------------------------------------------- asking the channels

cdef int _sync(_Registry reg, object map, int mode) except -1:
    """Bring the kernel set up to date for a pass in ``mode``."""
    cdef list todo
    cdef Py_ssize_t i = 0, j
    cdef Py_ssize_t n
    cdef _Entry e
    if reg.forks != _forks:
        # A forked child shares its parent's epoll set: make its own.
        reg.forks = _forks
        reg.kset = None
        reg.rebuild = True
    if reg.rebuild:
        reg.resync(map)
        if not reg.valid:
            return 0
    _check_types(reg)
    if reg.mode != mode:
        # select() and poll() are asked for different things: ask again.
        reg.mode = mode
        for e in reg.entries.values():
            e.mark()
    todo = reg.dirty
    reg.dirty = []
    n = len(todo)
    reg.asked_last = 0
    if n == 0:
        return 0
    _sort_entries(todo)
    # While this thread asks, a pass in another thread must not take
    # "nothing to wait for" for the truth (see the core's _kpoll_select).
    reg.in_flight += 1
    try:
        while i < n and not reg.rebuild:
            e = <_Entry>todo[i]
            if e.reg is reg:
                e.dirty = False
                _ask(reg, e, mode)
                reg.asked_last += 1
            i += 1
    except BaseException:
        # The rest (this one too) is asked on the next pass.
        e = <_Entry>todo[i]
        if e.reg is reg:
            e.mark()
        for j in range(i + 1, n):
            e = <_Entry>todo[j]
            if e.reg is reg and e.dirty:
                reg.dirty.append(e)
        raise
    finally:
        reg.in_flight -= 1
    return 0

cdef int _ask(_Registry reg, _Entry e, int mode) except -1:
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
    if e.reg is not reg:
        return 0    # a predicate took it out of the map
    steady = _steady(reg, e, obj)
    verify = not _socket_is_open(obj, e.info, e.fd)
    if e.reg is not reg:
        return 0
    if e.recheck:
        # Its state changed, or an audit found its registration gone:
        # register it anew rather than trust what the kernel held (its
        # number may name another file now), under a new serial, so
        # events of a registration that outlived its file stay stale.
        e.recheck = False
        reg._forget_kernel(e)
    # No Python code runs from here to the end: the counts stay true
    # for a loop in another thread.
    reg._count(e, -1)
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
        _apply(reg, e, target, verify)
    finally:
        e.volatile = e.bad or not steady
        reg._count(e, 1)
    if e.volatile:
        e.mark()
    return 0

cdef bint _steady(_Registry reg, _Entry e, object obj) except -1:
    """Whether obj's answers can only change through what _touch() sees (its class judged once)."""
    cdef PyObject *found
    cdef PyObject *tp = <PyObject *>_type_of(<PyObject *>obj)
    cdef _TypeInfo info
    found = PyDict_GetItemWithError(reg.types, <object>tp)
    if found == NULL:
        info = _TypeInfo.__new__(_TypeInfo)
        _judge(<PyTypeObject *>tp, info)
        if len(reg.types) >= 4096:
            # Classes made on the fly: start over rather than grow.
            reg.types.clear()
            for other in reg.entries.values():
                (<_Entry>other).mark()
        reg.types[<object>tp] = info
    else:
        info = <_TypeInfo>found
    e.info = info
    return _watched(info, obj)

# -------------------------------------------------------------- after events

cdef void _before_events(_Registry reg, _Ready *ready, Py_ssize_t n) noexcept:
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
        found = PyDict_GetItemWithError(reg.entries, ready[i].fd)
        if found == NULL:
            continue
        e = <_Entry>found
        if e.volatile or e.info is None or e.info.kind == 0:
            e.mark()
        else:
            e.evented = True

cdef int _after_events(_Registry reg, _Ready *ready, Py_ssize_t n, bint check) except -1:
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
        found = PyDict_GetItemWithError(reg.entries, ready[i].fd)
        if found == NULL:
            continue
        e = <_Entry>found
        if not e.evented:
            continue
        e.evented = False
        if e.dirty or e.reg is not reg:
            continue
        if not check or not _socket_is_open(<object>e.obj, e.info, e.fd):
            e.mark()
    return 0

cdef int _check_types(_Registry reg) except -1:
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
    for tp_obj, info_obj in reg.types.items():
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
    for e in reg.entries.values():
        if (<_Entry>e).info in changed:
            (<_Entry>e).mark()
            (<_Entry>e).recheck = True
    return 0

# -------------------------------------------------------- telling the kernel

cdef int _apply(_Registry reg, _Entry e, short target, bint verify=False) except -1:
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
    if reg.kset is None:
        if target == 0:
            return 0
        reg.kset = _KSet()
    if e.kmask == 0:
        reg.generation += 1
        _serials += 1
        if _serials >= SIDE_SERIAL:
            _serials = 1
        e.serial = _serials
    if e.fd == reg.kset.kfd:
        # The channel's number is our kernel set's own: its descriptor
        # was closed behind the loop's back and the number reused.
        err = EBADF
    else:
        err = cya_kset_set(reg.kset.kfd, e.fd, e.kmask, target, e.serial)
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

cdef int _mute(_Registry reg, _Entry e) except -1:
    """Stop watching e until it is asked again (see the core's _kpoll_select)."""
    reg._count(e, -1)
    if e.kmask and reg.kset is not None:
        cya_kset_set(reg.kset.kfd, e.fd, e.kmask, 0, 0)
    e.kmask = 0
    e.muted = True
    if e.side:
        e.side = False
    reg._count(e, 1)
    return 0

cdef void _audit(_Registry reg, int ms) noexcept:
    """Check, in turn, registrations the kernel may have lost (after a wait that found nothing).

    A descriptor number closed or dup2'ed over behind the loop's back
    loses its epoll registration silently, and a channel nobody asks
    again would stay deaf where select() and poll() followed the
    number.  Only a wait the kernel answered with nothing pays: up to
    AUDIT_MIN + AUDIT_PER_MS * ms checks (one epoll_ctl each, a
    quarter to half a microsecond), so a quiet loop spends one or two
    percent of its sleep on it, and a busy one nothing.  A
    registration found gone is asked again, and registered anew, by
    the next pass (see _ask).
    """
    cdef Py_ssize_t budget, pos
    cdef PyObject *k
    cdef PyObject *v
    cdef _Entry e
    cdef bint wrapped = False
    if reg.kset is None or reg.forks != _forks or reg.n_kernel == 0:
        return
    budget = min(AUDIT_MIN + AUDIT_PER_MS * <Py_ssize_t>max(ms, 0), reg.n_kernel)
    pos = reg.audit_pos
    # No Python code runs in this loop: the dict cannot change under it.
    while budget > 0:
        if not PyDict_Next(reg.entries, &pos, &k, &v):
            if wrapped:
                break
            wrapped = True
            pos = 0
            continue
        e = <_Entry>v
        if e.kmask == 0:
            continue
        budget -= 1
        reg.audited += 1
        if cya_kset_check(reg.kset.kfd, e.fd, e.kmask, e.serial) != 0:
            e.recheck = True
            e.mark()
    reg.audit_pos = pos

# ------------------------------------------------------------------- waiting

cdef Py_ssize_t _wait_ready(_Registry reg, int ms, _Buffers buf, bint with_bad) except -1:
    """Wait up to ms; put what is ready in buf.out, in map order; return the count."""
    cdef _KSet kset = reg.kset
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
    cdef unsigned long generation = reg.generation
    if kset is not None:
        kfd = kset.kfd
    if reg.n_side or (with_bad and reg.n_bad):
        extra = [x for x in reg.entries.values()
                 if (<_Entry>x).side or (with_bad and (<_Entry>x).bad)]
        m = len(extra)
    # kqueue reports reading and writing of one descriptor apart.
    cap = (2 if CYA_KSET == 2 else 1) * reg.n_kernel + m + 1
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
                _poll_wait(NULL, 0, ms)
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
            if with_bad and reg.n_bad:
                ms = 0      # poll() would report POLLNVAL at once
            _poll_wait(pfd, m + 1, ms)
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
        if n == 0 and kset is not None and kset is reg.kset:
            _audit(reg, ms)
        for i in range(n):
            found = PyDict_GetItemWithError(reg.entries, kev[i].fd)
            if found == NULL:
                if kev[i].serial != SIDE_SERIAL and kset is reg.kset and not stale \
                        and generation == reg.generation:
                    # Not in the map: removed while we waited, or a
                    # registration that outlived its descriptor (closed
                    # behind the loop's back while a duplicate keeps the
                    # file open), which would fire on every wait.
                    stale = True
                    reg.rekernel()
                continue
            e = <_Entry>found
            if kev[i].serial == SIDE_SERIAL:
                if not (e.side or e.bad):
                    continue
                out[k].revents = kev[i].revents
            else:
                if e.kmask == 0 or kev[i].serial != e.serial:
                    if kset is reg.kset and e.kmask and kev[i].serial != e.serial \
                            and not stale and generation == reg.generation:
                        stale = True
                        # A registration outlived its descriptor (closed
                        # behind the loop's back while a duplicate keeps
                        # the file open): only a new set is rid of it.
                        reg.rekernel()
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


# ------------------------------------------------- registries and switches


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


cdef int _kset_add_wake(object map, int fd) except -1:
    """The first hand-over to map: add its wake-up descriptor to the map's live kernel set.

    Once: a pass waiting on the set ends (the descriptor is ready), and
    _wait_ready passes over the event (SIDE_SERIAL, no entry); later passes
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
    (see _audit).
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
