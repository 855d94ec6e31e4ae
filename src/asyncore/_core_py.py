"""The pure-Python core: the readable specification of what the compiled core does.

Both cores export the names in ``asyncore._core.EXPORTS`` with identical
behaviour; the tests run every case against each.  Callers (the public
functions in ``asyncore``) have already resolved ``map=None`` to the current
``asyncore.socket_map``, so every function here takes the map it works on.

One deliberate departure from 3.11: ``poll()`` (the default, select-style
pass) waits with poll(2) where the platform has it, so descriptors past
FD_SETSIZE (1024) work.  It keeps select()'s meaning exactly: the same read,
write and exceptional-condition sets, the same order of callbacks, and the
same exceptions for bad timeouts, bad keys and closed descriptors.
"""

import errno
import math
import operator
import os
import select
import time

from . import _timers_py as timers
from ._common import (
    DISCONNECTED,
    POLL_CLOSE,
    POLLERR,
    POLLHUP,
    POLLIN,
    POLLNVAL,
    POLLOUT,
    POLLPRI,
    PYTIME_TOO_LARGE,
    RERAISED,
)
from ._timers_py import (  # noqa: F401  (exported: see _core.EXPORTS)
    Timer,
    call_every,
    call_later,
    call_soon_threadsafe,
    close_timers,
)

NAME = "pure"
HAS_POLL = hasattr(select, "poll")


def backend():
    """What the passes wait with: poll(2), or select(2) where there is no poll."""
    return "poll" if HAS_POLL else "select"

# What select() would report, in poll(2)'s vocabulary (Linux fs/select.c):
# a hang-up or error makes a descriptor readable; an error makes it writable.
SELECT_READ = POLLIN | POLLHUP | POLLERR
SELECT_WRITE = POLLOUT | POLLERR
SELECT_EXCEPT = POLLPRI

# poll(2) takes an int of milliseconds; a longer select() timeout is waited
# in passes of at most this, which loop() cannot tell apart.
_MAX_WAIT_MS = 2**31 - 1
# Bounds of CPython's internal time type, for select()'s overflow errors.
_MAX_SECONDS_INT = (2**63 - 1) // 10**9
_MAX_SECONDS_FLOAT = 2.0**63 / 10**9


# ---------------------------------------------------------------- dispatch


def read(obj):
    try:
        obj.handle_read_event()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


def write(obj):
    try:
        obj.handle_write_event()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


def _exception(obj):
    try:
        obj.handle_expt_event()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


def readwrite(obj, flags):
    try:
        if flags & POLLIN:
            obj.handle_read_event()
        if flags & POLLOUT:
            obj.handle_write_event()
        if flags & POLLPRI:
            obj.handle_expt_event()
        if flags & POLL_CLOSE:
            obj.handle_close()
    except OSError as err:
        # A vanished peer is an ordinary close; anything else is a fault.
        if err.errno in DISCONNECTED:
            obj.handle_close()
        else:
            obj.handle_error()
    except RERAISED:
        raise
    except BaseException:
        obj.handle_error()


# ------------------------------------------------- select()'s conversions


def as_fd(key):
    """The descriptor of a map key, with select()'s errors for bad keys."""
    if isinstance(key, int):
        fd = key
    else:
        fileno = getattr(key, "fileno", None)
        if fileno is None:
            raise TypeError("argument must be an int, or have a fileno() method.")
        fd = fileno()
        if not isinstance(fd, int):
            raise TypeError("fileno() returned a non-integer")
    if not -(2**31) <= fd <= 2**31 - 1:
        raise OverflowError("Python int too large to convert to C int")
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    return int(fd)


def select_timeout_ms(timeout):
    """select()'s timeout, validated as select() does, in poll(2) milliseconds.

    The checks come in select()'s order: NaN, then the range of CPython's
    time type, then the sign.  Integers are anything with __index__.
    """
    if timeout is None:
        return -1
    if isinstance(timeout, float):
        if math.isnan(timeout):
            raise ValueError("Invalid value NaN (not a number)")
        if not -_MAX_SECONDS_FLOAT <= timeout < _MAX_SECONDS_FLOAT:
            raise OverflowError("timestamp out of range for platform time_t")
    else:
        # select() replaces the conversion's TypeError with its own, which
        # so carries no __context__: raise ours once the first is cleared.
        index_ok = True
        try:
            timeout = operator.index(timeout)
        except TypeError:
            index_ok = False
        if not index_ok:
            raise TypeError("timeout must be a float or None")
        if not -_MAX_SECONDS_INT <= timeout <= _MAX_SECONDS_INT:
            raise OverflowError(PYTIME_TOO_LARGE)
    if timeout < 0:
        raise ValueError("timeout must be non-negative")
    # Round up like select() does: a positive timeout never becomes a busy poll.
    return min(math.ceil(timeout * 1000), _MAX_WAIT_MS)


# What select.select() says of a descriptor past FD_SETSIZE.  It checks every
# key before it waits, so after this error nothing has been waited for yet.
_PAST_FD_SETSIZE = "filedescriptor out of range in select()"


def _wait_select(r, w, e, timeout, map=None):
    """select.select(r, w, e, timeout) without the FD_SETSIZE limit.

    With ``map``, the pass's map, a descriptor closed by a channel that
    left the map during the wait is not ready (see _closed_during_wait).
    """
    if not HAS_POLL:
        return select.select(r, w, e, timeout)
    # select(2) itself while every descriptor fits in its tables: that is
    # 3.11's own wait, every error and corner of it included, and it costs
    # no Python call per key.  Only a descriptor past FD_SETSIZE takes the
    # poll(2) emulation below (which asks fileno() of such keys again).
    try:
        return select.select(r, w, e, timeout)
    except ValueError as err:
        if str(err) != _PAST_FD_SETSIZE:
            raise
    return _wait_poll(r, w, e, timeout, map)


def _wait_poll(r, w, e, timeout, map=None):
    """select()'s meaning over poll(2), for descriptors past FD_SETSIZE."""
    ms = select_timeout_ms(timeout)
    # Keys are converted in select()'s order (read, write, exceptional), so
    # the first bad key raises what select() would have raised.
    fds = {}
    interest = {}
    for keys, mask in ((r, POLLIN), (w, POLLOUT), (e, POLLPRI)):
        for key in keys:
            if key not in fds:
                fds[key] = as_fd(key)
            fd = fds[key]
            interest[fd] = interest.get(fd, 0) | mask
    pollster = select.poll()
    for fd, mask in interest.items():
        pollster.register(fd, mask)
    deadline = None if ms < 0 else time.monotonic() + ms / 1000
    while True:
        ready = dict(pollster.poll(ms))
        if not ready:
            return [], [], []
        if any(flags & POLLNVAL for flags in ready.values()):
            for fd in _closed_during_wait(ready, fds, map):
                del ready[fd]
                pollster.unregister(fd)
        found = (
            [key for key in r if ready.get(fds[key], 0) & SELECT_READ],
            [key for key in w if ready.get(fds[key], 0) & SELECT_WRITE],
            [key for key in e if ready.get(fds[key], 0) & SELECT_EXCEPT],
        )
        if any(found):
            return found
        # poll(2) reports a hang-up or error on a descriptor that select()
        # was not asked about for reading (or writing): select() would go on
        # sleeping, so stop watching those and wait out the rest.
        for fd in ready:
            pollster.unregister(fd)
        if deadline is not None:
            ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))


def _closed_during_wait(ready, fds, map):
    """The descriptors poll(2) called closed (POLLNVAL) that select() would not fail on.

    select() checks its descriptors when the wait starts, and a descriptor
    closed while it sleeps is just never ready; poll(2) looks again when it
    wakes.  A channel's close() takes it out of the map before it closes the
    socket, so a closed descriptor none of whose keys is still in the map
    was closed by a channel that left during this pass (another thread, a
    signal handler): not ready.  One still in the map was closed behind the
    loop's back, which select() fails on (as a whole, at the start of the
    next pass at the latest): OSError(EBADF) now.
    """
    closed = [fd for fd, flags in ready.items() if flags & POLLNVAL]
    if map is None or any(key in map for key, fd in fds.items() if fd in closed):
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    return closed


# ----------------------------------------------------------------- passes

# What poll2() registers for a readable channel, and one also writable.
_POLL_READ = POLLIN | POLLPRI
_POLL_READ_WRITE = POLLIN | POLLPRI | POLLOUT


def poll(
    timeout, map, wait=None, read=read, write=write, _exception=_exception, sleep=None,
    timers=timers,
):
    """One select-style pass.

    The keyword hooks are for asyncore's own fallback: when a program has
    replaced asyncore.read (or select.select, as gevent does), the pass runs
    through the replacements, as 3.11's did; ``timers`` is then the active
    core's timer module.

    This is _poll_timers without the timers and the ``wait`` hook, which
    send a pass there: what every pass of a program without timers runs,
    so no instruction here is spent on them (a pass serving one message
    costs about as much as the message).
    """
    if timers._active or wait is not None:
        return _poll_timers(timeout, map, wait, read, write, _exception, sleep, timers)
    if not map:
        return
    r = []
    w = []
    # e, every descriptor in r or w in map order, is r itself until a
    # channel is writable but not readable: one append less per channel.
    e = None
    # The pairs as the pass starts, as 3.11's list(map.items()).  A dict is
    # copied (one call, so no other thread's change lands halfway) and its
    # items walked: the iterator reuses its pair, so there is no tuple per
    # channel to make, free and count towards a garbage collection (a tenth
    # of what an idle channel costs a pass).  Any other mapping is asked
    # for its items, as 3.11 did.
    if type(map) is dict:
        channels = map.copy().items()
    else:
        channels = list(map.items())
    for fd, obj in channels:
        is_r = obj.readable()
        is_w = obj.writable()
        if is_r:
            r.append(fd)
            if e is not None:
                e.append(fd)
            # A listening socket is never waited on for writing.
            if is_w and not obj.accepting:
                w.append(fd)
        elif is_w:
            if e is None:
                e = r[:]
            e.append(fd)
            if not obj.accepting:
                w.append(fd)
    if e is None:
        if not r:
            (sleep or time.sleep)(timeout)
            return
        e = r
    # _wait_select, inline.
    try:
        ready = select.select(r, w, e, timeout)
    except ValueError as err:
        if not HAS_POLL or str(err) != _PAST_FD_SETSIZE:
            raise
        ready = None
    # Outside the handler, so its errors carry no __context__.
    if ready is None:
        ready = _wait_poll(r, w, e, timeout, map)
    r, w, e = ready
    # The map is consulted again: a handler earlier in this pass may have
    # closed or replaced a channel.
    for fd in r:
        obj = map.get(fd)
        if obj is not None:
            read(obj)
    for fd in w:
        obj = map.get(fd)
        if obj is not None:
            write(obj)
    for fd in e:
        obj = map.get(fd)
        if obj is not None:
            _exception(obj)
    if timers._active:
        # A handler started the first timer: it may be due already.
        _run_timers(map, timers)


def _poll_timers(timeout, map, wait, read, write, _exception, sleep, timers):
    """poll() with the map's timers, or through asyncore's hooks."""
    # Timers (issue 14): the map's queue, None unless timers or hand-overs exist.
    tq = timers.queue(map) if timers._active else None
    if not map and tq is None:
        return
    r = []
    w = []
    e = []
    for fd, obj in list(map.items()):
        is_r = obj.readable()
        is_w = obj.writable()
        if is_r:
            r.append(fd)
        # A listening socket is never waited on for writing.
        if is_w and not obj.accepting:
            w.append(fd)
        if is_r or is_w:
            e.append(fd)
    if not (r or w or e):
        if tq is None:
            (sleep or time.sleep)(timeout)
            return
        # Timers: the sleep ends at the next deadline or a hand-over.
        tq.sleep(timeout, sleep)
        _run_timers(map, timers)
        return
    if tq is not None:
        # Timers: wait no longer than the next deadline; wake on a hand-over.
        timeout = tq.clamp(timeout)
        if tq.wake_key is not None:
            r.append(tq.wake_key)
    if wait is None:
        r, w, e = _wait_select(r, w, e, timeout, map)
    else:
        r, w, e = wait(r, w, e, timeout)
    if tq is not None and r and r[-1] is tq.wake_key:
        r.pop()
        tq.drain()
    for fd in r:
        obj = map.get(fd)
        if obj is not None:
            read(obj)
    for fd in w:
        obj = map.get(fd)
        if obj is not None:
            write(obj)
    for fd in e:
        obj = map.get(fd)
        if obj is not None:
            _exception(obj)
    if timers._active:
        _run_timers(map, timers)


def _run_timers(map, timers):
    """Timers: run the map's due timers and hand-overs, after the pass's I/O."""
    tq = timers.queue(map)
    if tq is not None:
        tq.run()


def poll2(timeout, map, pollster=None, readwrite=readwrite, sleep=None, timers=timers):
    """One poll-style pass; the hooks are as for poll().

    As poll() is to _poll_timers, this is _poll2_timers without timers,
    hooks, or a wait that nothing may end (no timeout, or a negative one),
    which go there.
    """
    ms = None if timeout is None else int(timeout * 1000)
    if timers._active or pollster is not None or ms is None or ms < 0:
        return _poll2_timers(ms, timeout, map, pollster, readwrite, sleep, timers)
    pollster = select.poll()
    if not map:
        return
    register = pollster.register
    # The pairs as the pass starts: see poll().
    if type(map) is dict:
        channels = map.copy().items()
    else:
        channels = list(map.items())
    for fd, obj in channels:
        if obj.readable():
            if obj.writable() and not obj.accepting:
                register(fd, _POLL_READ_WRITE)
            else:
                register(fd, _POLL_READ)
        elif obj.writable() and not obj.accepting:
            register(fd, POLLOUT)
    for fd, flags in pollster.poll(ms):
        obj = map.get(fd)
        if obj is not None:
            readwrite(obj, flags)
    if timers._active:
        # A handler started the first timer: it may be due already.
        _run_timers(map, timers)


def _poll2_timers(ms, timeout, map, pollster, readwrite, sleep, timers):
    """poll2() with the map's timers, through asyncore's hooks, or with no bound on the wait."""
    pollster = (pollster or select.poll)()
    # Timers (issue 14): as in _poll_timers().
    tq = timers.queue(map) if timers._active else None
    if not map and tq is None:
        return
    registered = False
    for fd, obj in list(map.items()):
        flags = 0
        if obj.readable():
            flags |= POLLIN | POLLPRI
        if obj.writable() and not obj.accepting:
            flags |= POLLOUT
        if flags:
            pollster.register(fd, flags)
            registered = True
    if tq is not None:
        # Timers: wait no longer than the next deadline; wake on a hand-over.
        ms = tq.clamp_poll(ms)
        if tq.wake >= 0:
            pollster.register(tq.wake, POLLIN)
            registered = True
    if not registered and (ms is None or ms < 0):
        # Nothing can ever end this wait: 3.11 hung here for good.  Fail
        # the way the select-style pass does with nothing to wait for.
        (sleep or time.sleep)(timeout)
    for fd, flags in pollster.poll(ms):
        if tq is not None and fd == tq.wake:
            tq.drain()
            continue
        obj = map.get(fd)
        if obj is not None:
            readwrite(obj, flags)
    if timers._active:
        _run_timers(map, timers)


def loop(timeout, use_poll, map, count):
    pass_ = poll2 if use_poll and HAS_POLL else poll
    # Timers: a map's live timers keep the loop going as its channels do;
    # without any, the test is 3.11's ``while map``.
    active = timers._active
    alive = timers.alive
    if count is None:
        while map or (active and alive(map)):
            pass_(timeout, map)
    else:
        while (map or (active and alive(map))) and count > 0:
            pass_(timeout, map)
            count = count - 1


# -------------------------------------------------- async_chat input path


def chat_consume(chan, data):
    """Split freshly received ``data`` on the channel's terminators.

    3.11 keeps the unconsumed input in ``ac_in_buffer`` and re-slices it
    after every terminator, so a read holding n records costs n copies of
    the rest of the buffer.  Here the buffer is kept as (bytes, offset) in
    ``chan._ac_in``/``chan._ac_pos``; ``ac_in_buffer`` is a property that
    cuts the bytes at the offset only when somebody reads it.  Before each
    callback the state is published, after it the state is read back, so a
    handler sees, and may replace, exactly what it would see on 3.11.

    Every attribute access here is paid per message: async_chat has no
    class defaults for _ac_in/_ac_pos (each access is then one specialised
    instance access), and nothing is stored that the channel already holds
    (when found_terminator() leaves nothing to consume, the read-back state
    is the final one).
    """
    try:
        buf = chan._ac_in
    except AttributeError:
        raise _no_ac_in_buffer(chan) from None
    pos = chan._ac_pos
    if pos:
        buf = buf[pos:]
    buf = buf + data
    pos = 0
    while len(buf) > pos:
        terminator = chan.get_terminator()
        # A non-empty bytes terminator, the common case, is told by its type:
        # isinstance(terminator, int) failing costs a lookup of __class__.
        if type(terminator) is not bytes or not terminator:
            if not terminator:
                chan._ac_in = buf
                chan._ac_pos = pos
                chan.collect_incoming_data(buf[pos:] if pos else buf)
                buf = b""
                pos = 0
                continue
            if isinstance(terminator, int):
                lb = len(buf) - pos
                chan._ac_in = buf
                chan._ac_pos = pos
                if lb < terminator:
                    chan.collect_incoming_data(buf[pos:] if pos else buf)
                    buf = b""
                    pos = 0
                    chan._ac_in = buf
                    chan._ac_pos = pos
                    chan.terminator = chan.terminator - lb
                else:
                    chan.collect_incoming_data(buf[pos : pos + _count(terminator, lb)])
                    buf = chan._ac_in
                    pos = chan._ac_pos
                    pos = min(pos + _count(terminator, len(buf) - pos), len(buf))
                    chan._ac_in = buf
                    chan._ac_pos = pos
                    chan.terminator = 0
                    chan.found_terminator()
                    buf = chan._ac_in
                    pos = chan._ac_pos
                    if len(buf) <= pos:
                        # All consumed, and the channel holds it so: no store.
                        return
                continue
        # len() first, as 3.11: a terminator that is neither fails there.
        tlen = len(terminator)
        index = buf.find(terminator, pos)
        if index != -1:
            chan._ac_in = buf
            chan._ac_pos = pos
            if index > pos:
                chan.collect_incoming_data(buf[pos:index])
                # The handler may have replaced the buffer; cut what it left.
                buf = chan._ac_in
                index = index - pos + chan._ac_pos
            # The channel holds buf (ours, or the handler's): only the
            # offset changes.
            end = index + tlen
            if end < len(buf):
                chan._ac_pos = end
            else:
                # Nothing left: 3.11's empty rest, and the received
                # bytes are not kept alive until the next read.
                chan._ac_in = buf[end:]
                chan._ac_pos = 0
            chan.found_terminator()
            buf = chan._ac_in
            pos = chan._ac_pos
            if len(buf) <= pos:
                # All consumed, and the channel holds it so: no store.
                return
        else:
            keep = _prefix_at_end(buf, pos, terminator)
            if keep:
                if keep != len(buf) - pos:
                    chan._ac_in = buf
                    chan._ac_pos = pos
                    chan.collect_incoming_data(buf[pos : len(buf) - keep])
                    buf = chan._ac_in
                    pos = max(chan._ac_pos, len(buf) - keep)
                break
            chan._ac_in = buf
            chan._ac_pos = pos
            chan.collect_incoming_data(buf[pos:] if pos else buf)
            buf = b""
            pos = 0
    chan._ac_in = buf
    chan._ac_pos = pos


def _no_ac_in_buffer(chan):
    """3.11's error for an async_chat whose __init__ never ran."""
    return AttributeError(
        "'%s' object has no attribute 'ac_in_buffer'" % type(chan).__name__,
        name="ac_in_buffer",
        obj=chan,
    )


def _count(n, available):
    """How many bytes rest[:n] takes, for a count that may be negative.

    set_terminator() refuses a negative count but the attribute does not,
    and 3.11 then sliced with it: all but the last -n bytes.
    """
    return n if n >= 0 else max(available + n, 0)


def _prefix_at_end(buf, pos, needle):
    """Length of the longest proper prefix of needle that ends buf[pos:]."""
    n = len(needle) - 1
    while n and not buf.endswith(needle[:n], pos):
        n -= 1
    return n
