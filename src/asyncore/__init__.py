"""asyncore for Python 3.12+: CPython 3.11's module, kept alive and made fast.

Everything public here behaves as it did in CPython 3.11: the dispatcher
classes, the loop and its passes, the log lines and the order of callbacks.
The loop and the readiness dispatch run in a compiled core where one is
available; ``CORE`` says which core is active ("compiled" or "pure").  Set
``ASYNCORE_NO_EXTENSIONS=1`` in the environment to force the pure one.
"""

import os
import select
import socket
import sys
import time
import warnings
from errno import (  # noqa: F401  (the errno names 3.11 exposed at module level)
    EAGAIN,
    EALREADY,
    EBADF,
    ECONNABORTED,
    ECONNRESET,
    EINPROGRESS,
    EINVAL,
    EISCONN,
    ENOTCONN,
    EPIPE,
    ESHUTDOWN,
    EWOULDBLOCK,
    errorcode,
)

from . import _core, _core_py
from ._common import (
    DISCONNECTED as _DISCONNECTED,
    RERAISED as _reraised_exceptions,
    ExitNow as ExitNow,
)

__version__ = "0.1.0"

# The compiled core's descriptors for the classes below, or None (see
# _core.hooks and _watch_state at the end of this module).
_hooks = _core.hooks()
_touch = _hooks.touch if _hooks is not None else lambda obj: None

# The map every dispatcher and loop() uses unless given one.  Programs rebind
# it, so it is looked up each time it is needed, never captured.
socket_map = {}


def _strerror(err):
    try:
        return os.strerror(err)
    except (ValueError, OverflowError, NameError):
        return errorcode.get(err, f"Unknown error {err}")


# ------------------------------------------------------ the loop and passes
#
# read, write, _exception and readwrite are the active core's own functions,
# bound here by _install_core() (at the end of this module, and again by
# _core.use()).  poll, poll2 and loop resolve their defaults at call time and
# hand the core the map to work on.


def poll(timeout=0.0, map=None):
    if map is None:
        map = socket_map
    if _hooks_intact():
        _impl.poll(timeout, map)
    else:
        _core_py.poll(
            timeout,
            map,
            wait=select.select,
            read=read,
            write=write,
            _exception=_exception,
            sleep=time.sleep,
            timers=_impl.timers,
        )


def poll2(timeout=0.0, map=None):
    if map is None:
        map = socket_map
    if _hooks_intact():
        _impl.poll2(timeout, map)
    else:
        _core_py.poll2(
            timeout,
            map,
            pollster=select.poll,
            readwrite=readwrite,
            sleep=time.sleep,
            timers=_impl.timers,
        )


# 3.11 kept the old name for poll2.
poll3 = poll2


def loop(timeout=30.0, use_poll=False, map=None, count=None):
    if map is None:
        map = socket_map
    if _hooks_intact():
        _impl.loop(timeout, use_poll, map, count)
        return
    # Something the loop calls was replaced: go through the module's names
    # one pass at a time, as 3.11's loop did.
    pass_ = poll2 if use_poll and hasattr(select, "poll") else poll
    # Timers (issue 14): live timers keep the loop going, as channels do.
    alive = _impl.timers.alive
    if count is None:
        while map or alive(map):
            pass_(timeout, map)
    else:
        while (map or alive(map)) and count > 0:
            pass_(timeout, map)
            count = count - 1


# ---------------------------------------------------------------- timers
#
# The only additions to 3.11's API (issue 14).  Timers and hand-overs belong
# to a map, resolved at call time; the active core keeps them out of the map.


def call_later(seconds, callback, *args, map=None):
    """Run callback(*args) once, ``seconds`` from now, in the map's loop."""
    if map is None:
        map = socket_map
    return _impl.call_later(seconds, callback, args, map)


def call_every(seconds, callback, *args, map=None):
    """Run callback(*args) every ``seconds``, from ``seconds`` from now."""
    if map is None:
        map = socket_map
    return _impl.call_every(seconds, callback, args, map)


def call_soon_threadsafe(callback, *args, map=None):
    """From any thread: run callback(*args) in the map's loop, soon, waking it."""
    if map is None:
        map = socket_map
    _impl.call_soon_threadsafe(callback, args, map)


def _hooks_intact():
    """Whether everything 3.11's loop looked up at call time is still ours.

    Programs wrap asyncore.read/write/_exception/readwrite or replace
    asyncore.poll/poll2; cooperative libraries (gevent) replace select.select
    and select.poll.  Any of that sends the loop down the path that calls
    the replacements, as 3.11 did; the compiled core runs otherwise.
    """
    core = _impl
    return (
        read is core.read
        and write is core.write
        and _exception is core._exception
        and readwrite is core.readwrite
        and poll is _own_poll
        and poll2 is _own_poll2
        and select.select is _select_select
        and getattr(select, "poll", None) is _select_poll
        and time is _time_module
    )


_own_poll = poll
_own_poll2 = poll2
_select_select = select.select
_select_poll = getattr(select, "poll", None)
_time_module = time


# ------------------------------------------------------------- dispatcher


class dispatcher:
    debug = False
    connected = False
    accepting = False
    connecting = False
    closing = False
    addr = None
    ignore_log_types = frozenset({"warning"})

    if _hooks is not None:
        # object's own __class__, except that assigning it tells the loop
        # (a class can only be given this way, in its body).
        __class__ = _hooks.ClassSlot()

    def __init__(self, sock=None, map=None):
        self._map = socket_map if map is None else map
        self._fileno = None
        if not sock:
            self.socket = None
            return
        sock.setblocking(False)
        self.set_socket(sock, map)
        self.connected = True
        try:
            self.addr = sock.getpeername()
        except OSError as err:
            if err.errno not in (ENOTCONN, EINVAL):
                self.del_channel(map)
                raise
            # Listening, or not connected yet: a channel all the same.
            self.connected = False

    def __repr__(self):
        cls = self.__class__
        words = [f"{cls.__module__}.{cls.__qualname__}"]
        if self.accepting and self.addr:
            words.append("listening")
        elif self.connected:
            words.append("connected")
        if self.addr is not None:
            try:
                words.append("%s:%d" % self.addr)
            except TypeError:
                # An IPv6 4-tuple or a Unix path does not fit host:port.
                words.append(repr(self.addr))
        return "<%s at %#x>" % (" ".join(words), id(self))

    # -- the map

    def add_channel(self, map=None):
        if map is None:
            map = self._map
        map[self._fileno] = self

    def del_channel(self, map=None):
        if map is None:
            map = self._map
        fd = self._fileno
        if fd in map:
            del map[fd]
        self._fileno = None

    # -- the socket

    def create_socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
        self.family_and_type = family, type
        # The module global, read now: test suites swap in a fake socket module.
        sock = socket.socket(family, type)
        sock.setblocking(False)
        self.set_socket(sock)

    def set_socket(self, sock, map=None):
        self.socket = sock
        self._fileno = sock.fileno()
        self.add_channel(map)

    def set_reuse_addr(self):
        try:
            current = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, current | 1)
        except OSError:
            pass

    # -- what the loop asks

    def readable(self):
        return True

    def writable(self):
        return True

    # -- socket methods, with asyncore's treatment of errors

    def listen(self, num):
        self.accepting = True
        if os.name == "nt" and num > 5:
            num = 5
        return self.socket.listen(num)

    def bind(self, addr):
        self.addr = addr
        return self.socket.bind(addr)

    def connect(self, address):
        self.connected = False
        self.connecting = True
        err = self.socket.connect_ex(address)
        # Windows reports a non-blocking connect under way as EINVAL.
        if err in (EINPROGRESS, EALREADY, EWOULDBLOCK) or (err == EINVAL and os.name == "nt"):
            self.addr = address
            return
        if err in (0, EISCONN):
            self.addr = address
            self.handle_connect_event()
        else:
            raise OSError(err, errorcode[err])

    def accept(self):
        try:
            conn, addr = self.socket.accept()
        except TypeError:
            # socket.accept() on a closed socket object
            return None
        except OSError as why:
            if why.errno in (EWOULDBLOCK, ECONNABORTED, EAGAIN):
                return None
            raise
        return conn, addr

    def send(self, data):
        try:
            return self.socket.send(data)
        except OSError as why:
            if why.errno == EWOULDBLOCK:
                return 0
            if why.errno in _DISCONNECTED:
                self.handle_close()
                return 0
            raise

    def recv(self, buffer_size):
        try:
            data = self.socket.recv(buffer_size)
        except OSError as why:
            if why.errno in _DISCONNECTED:
                self.handle_close()
                return b""
            raise
        if not data:
            # An orderly shutdown by the peer.
            self.handle_close()
            return b""
        return data

    def close(self):
        self.connected = False
        self.accepting = False
        self.connecting = False
        self.del_channel()
        if self.socket is not None:
            try:
                self.socket.close()
            except OSError as why:
                if why.errno not in (ENOTCONN, EBADF):
                    raise

    # -- logging

    def log(self, message):
        # %-formatting, as 3.11: str() of the message, not format().
        sys.stderr.write("log: %s\n" % str(message))

    def log_info(self, message, type="info"):
        if type not in self.ignore_log_types:
            print("%s: %s" % (type, message))

    # -- events, as the core delivers them

    def handle_read_event(self):
        if self.accepting:
            # A listening socket is readable when a connection waits.
            self.handle_accept()
        elif not self.connected:
            if self.connecting:
                self.handle_connect_event()
            self.handle_read()
        else:
            self.handle_read()

    def handle_connect_event(self):
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            raise OSError(err, _strerror(err))
        self.handle_connect()
        self.connected = True
        self.connecting = False

    def handle_write_event(self):
        if self.accepting:
            # Listening sockets are not written to; nothing to do.
            return
        if not self.connected and self.connecting:
            self.handle_connect_event()
        self.handle_write()

    def handle_expt_event(self):
        # An exceptional condition is either a pending socket error (which
        # ends the channel) or out-of-band data.
        err = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err != 0:
            self.handle_close()
        else:
            self.handle_expt()

    def handle_error(self):
        _, t, v, tbinfo = compact_traceback()
        try:
            self_repr = repr(self)
        except BaseException:
            self_repr = "<__repr__(self) failed for object at %0x>" % id(self)
        self.log_info(
            "uncaptured python exception, closing channel %s (%s:%s %s)"
            % (self_repr, t, v, tbinfo),
            "error",
        )
        self.handle_close()

    # -- the handlers programs override; these defaults just report

    def handle_expt(self):
        self.log_info("unhandled incoming priority event", "warning")

    def handle_read(self):
        self.log_info("unhandled read event", "warning")

    def handle_write(self):
        self.log_info("unhandled write event", "warning")

    def handle_connect(self):
        self.log_info("unhandled connect event", "warning")

    def handle_accept(self):
        pair = self.accept()
        if pair is not None:
            self.handle_accepted(*pair)

    def handle_accepted(self, sock, addr):
        sock.close()
        self.log_info("unhandled accepted event", "warning")

    def handle_close(self):
        self.log_info("unhandled close event", "warning")
        self.close()


# CPython keeps one empty bytes object: "nothing pending" is one identity test.
_EMPTY = b""


class dispatcher_with_send(dispatcher):
    """A dispatcher whose send() buffers what the socket does not take at once.

    3.11 kept the pending bytes in one bytes object and re-sliced all of it
    after every send, so a large send to a slow reader cost time quadratic in
    its size.  Here send() appends to a private bytearray that is consumed
    through an offset and compacted only when more than half of it is sent:
    every byte is copied a bounded number of times.

    ``out_buffer`` keeps its 3.11 meaning.  Reading it gives the bytes not
    yet sent (as bytes, the type 3.11 had); an object assigned to it is kept
    as it is, so a program may grow its own bytearray in place, until a send
    consumes part of it, when 3.11 too replaced it with a new object.
    """

    # Largest piece handed to the socket at once, as in 3.11.
    _SEND_MAX = 65536

    # Pending output is _wbuf[_woff:].  _wown says _wbuf is a private
    # bytearray nobody else holds; _wkind is the type 3.11's out_buffer would
    # have (bytes, or bytearray when a program assigned one).  _wbuf, _woff
    # and _wown have no class defaults: the out_buffer setter gives every
    # instance its own, and a class attribute of the same name would cost
    # every read of them 3.12's specialised instance-attribute access.  An
    # instance that never ran __init__ then fails as in 3.11, which had no
    # out_buffer on the class either (see _no_out_buffer).
    _wkind = bytes

    def __init__(self, sock=None, map=None):
        dispatcher.__init__(self, sock, map)
        self.out_buffer = b""

    @property
    def out_buffer(self):
        # Whoever reads it may change it in place: the loop asks again.
        _touch(self)
        try:
            own = self._wown
        except AttributeError:
            raise _no_out_buffer(self) from None
        if own:
            # Hand out the pending bytes as the type 3.11 would have had, and
            # stop treating them as private: the caller may keep or grow them.
            if self._wkind is bytearray:
                del self._wbuf[: self._woff]
            else:
                self._wbuf = bytes(memoryview(self._wbuf)[self._woff :])
            self._woff = 0
            self._wown = False
        elif self._woff:
            self._wbuf = self._wbuf[self._woff :]
            self._woff = 0
        return self._wbuf

    @out_buffer.setter
    def out_buffer(self, data):
        self._wbuf = data
        self._woff = 0
        self._wown = False
        _touch(self)

    def initiate_send(self):
        try:
            start = self._woff
        except AttributeError:
            # Our out_buffer setter never ran on this channel (see writable).
            if type(self).out_buffer is _OUT_BUFFER:
                raise _no_out_buffer(self) from None
            # The subclass declared out_buffer itself: a plain attribute,
            # handled as 3.11 did (with 3.11's cost).
            sent = dispatcher.send(self, self.out_buffer[: self._SEND_MAX])
            self.out_buffer = self.out_buffer[sent:]
            return
        if self._wown:
            chunk = bytes(memoryview(self._wbuf)[start : start + self._SEND_MAX])
        else:
            # A bytes object of at most _SEND_MAX sliced whole is itself: no copy.
            chunk = self._wbuf[start : start + self._SEND_MAX]
        sent = dispatcher.send(self, chunk)
        if sent:
            self._consume(sent)
            _touch(self)

    def _own(self, start):
        """Make _wbuf[start:] a private bytearray, as 3.11 made a new object."""
        self._wkind = bytearray if isinstance(self._wbuf, bytearray) else bytes
        self._wbuf = bytearray(self._wbuf[start:])
        self._woff = 0
        self._wown = True

    def _consume(self, sent):
        end = self._woff + sent
        if not self._wown:
            if end >= len(self._wbuf):
                # All of it went: nothing to keep, nothing to copy.
                self._wbuf = _EMPTY if type(self._wbuf) is bytes else self._wbuf[end:]
                self._woff = 0
            else:
                self._own(end)
        elif end >= len(self._wbuf):
            self._wbuf = bytearray()
            self._woff = 0
        elif end > len(self._wbuf) // 2:
            del self._wbuf[:end]
            self._woff = 0
        else:
            self._woff = end

    def handle_write(self):
        self.initiate_send()

    def writable(self):
        # 3.11's answer, (not connected) or len(out_buffer), asked on every
        # pass of every channel: the common cases first, and no lookup on
        # the class (a property found there is not specialised).
        if not self.connected:
            return True
        try:
            pending = self._wbuf
        except AttributeError:
            # Our out_buffer setter never ran on this channel: the subclass
            # declared out_buffer itself (a plain attribute), or __init__
            # never ran.  Only that setter makes _wbuf, so its presence says
            # the pending output is ours: send and initiate_send tell the
            # cases the same way.
            if type(self).out_buffer is not _OUT_BUFFER:
                return len(self.out_buffer)
            raise _no_out_buffer(self) from None
        if pending is _EMPTY:
            return 0
        return len(pending) - self._woff

    def send(self, data):
        if self.debug:
            self.log_info("sending %s" % repr(data))
        try:
            pending = self._wbuf
        except AttributeError:
            # Our out_buffer setter never ran on this channel (see writable).
            if type(self).out_buffer is _OUT_BUFFER:
                raise _no_out_buffer(self) from None
            # A subclass's plain out_buffer: its path below, as 3.11.
            pending = None
        if (
            pending is _EMPTY
            and type(data) is bytes
            and type(self).initiate_send is _DWS_INITIATE_SEND
        ):
            # Nothing pending, the common case: hand the caller's bytes to the
            # socket as they are (3.11's b"" + data was data itself; its
            # out_buffer[:65536] of them too), then keep only what it did not
            # take.  While the socket call runs, out_buffer shows the data,
            # as it did in 3.11.
            self._wbuf = data
            piece = data if len(data) <= self._SEND_MAX else data[: self._SEND_MAX]
            try:
                sent = dispatcher.send(self, piece)
            except BaseException:
                # The data stays pending, as in 3.11: the loop must know.
                if self._wbuf is data:
                    _touch(self)
                raise
            if self._wbuf is data:
                if sent >= len(data):
                    self._wbuf = _EMPTY
                else:
                    if sent:
                        self._own(sent)
                    # Output is pending now: the loop must wait for writability.
                    _touch(self)
            return
        if not isinstance(data, (bytes, bytearray, memoryview)):
            # 3.11 concatenated onto bytes; keep its error for non-bytes.
            data = b"" + data
        if pending is None:
            self.out_buffer = self.out_buffer + data
            self.initiate_send()
            return
        if not self._wown:
            self._own(self._woff)
        self._wbuf += data
        _touch(self)
        self.initiate_send()


_OUT_BUFFER = dispatcher_with_send.__dict__["out_buffer"]


def _no_out_buffer(obj):
    """3.11's error for a dispatcher_with_send whose __init__ never ran."""
    return AttributeError(
        "'%s' object has no attribute 'out_buffer'" % type(obj).__name__,
        name="out_buffer",
        obj=obj,
    )
_DWS_INITIATE_SEND = dispatcher_with_send.initiate_send


# ---------------------------------------------------------------- helpers


def compact_traceback():
    t, v, tb = sys.exc_info()
    if not tb:
        raise AssertionError("traceback does not exist")
    frames = []
    while tb:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, code.co_name, str(tb.tb_lineno)))
        tb = tb.tb_next
    info = " ".join("[%s|%s|%s]" % frame for frame in frames)
    return frames[-1], t, v, info


def close_all(map=None, ignore_all=False):
    if map is None:
        map = socket_map
    for channel in list(map.values()):
        try:
            channel.close()
        except OSError as err:
            if err.errno != EBADF and not ignore_all:
                raise
        except _reraised_exceptions:
            raise
        except BaseException:
            if not ignore_all:
                raise
    map.clear()
    # Timers (issue 14): the map's timers go with its channels.
    _impl.close_timers(map)


if os.name == "posix":

    class file_wrapper:
        """Gives a file descriptor the few socket methods a dispatcher calls."""

        def __init__(self, fd):
            # Our own descriptor: closing the wrapper leaves the caller's open.
            self.fd = os.dup(fd)

        def __del__(self):
            if self.fd >= 0:
                warnings.warn(f"unclosed file {self!r}", ResourceWarning, stacklevel=1, source=self)
            self.close()

        def recv(self, *args):
            return os.read(self.fd, *args)

        def send(self, *args):
            return os.write(self.fd, *args)

        def getsockopt(self, level, optname, buflen=None):
            # handle_connect_event/handle_expt_event ask for SO_ERROR: a file has none.
            if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and not buflen:
                return 0
            raise NotImplementedError("Only asyncore specific behaviour implemented.")

        read = recv
        write = send

        def close(self):
            if self.fd < 0:
                return
            fd, self.fd = self.fd, -1
            os.close(fd)

        def fileno(self):
            return self.fd

    class file_dispatcher(dispatcher):
        """A dispatcher over a file descriptor (a pipe, a tty) instead of a socket."""

        def __init__(self, fd, map=None):
            dispatcher.__init__(self, None, map)
            self.connected = True
            try:
                fd = fd.fileno()
            except AttributeError:
                pass
            self.set_file(fd)
            os.set_blocking(fd, False)

        def set_file(self, fd):
            self.socket = file_wrapper(fd)
            self._fileno = self.socket.fileno()
            self.add_channel()


# ------------------------------------------------------------ core wiring


# Our methods that the compiled core has in C (issue 11).  The Python
# originals above are the pure core's and the specification of the compiled
# ones; _install_methods gives the classes the active core's.
_COMPILED_METHODS = (
    (dispatcher, "handle_read_event"),
    (dispatcher, "handle_write_event"),
    (dispatcher, "recv"),
    (dispatcher, "send"),
    (dispatcher_with_send, "send"),
)
_originals = {(cls, name): cls.__dict__[name] for cls, name in _COMPILED_METHODS}
_compiled = {}
if _hooks is not None:
    _found = _hooks.bind_methods(
        dispatcher,
        _OUT_BUFFER,
        _DWS_INITIATE_SEND,
        {(cls.__name__, name): f for (cls, name), f in _originals.items()},
    )
    _compiled = {(cls, name): _found[cls.__name__, name] for cls, name in _COMPILED_METHODS}
    del _found


def _install_methods(originals, compiled, core):
    """Give our classes ``core``'s methods: the compiled ones for the compiled core.

    A method a program assigned to one of our classes itself stays.  Each
    assignment to a class costs it one of the version tags CPython hands a
    class out of a limited supply (with none left its attribute accesses
    lose their fast paths), so only a change of core assigns: that is rare
    in programs, and the test suite runs each core's tests together.
    """
    for key, original in originals.items():
        cls, name = key
        fast = compiled.get(key)
        current = cls.__dict__.get(name)
        if current is not original and (fast is None or current is not fast):
            continue
        chosen = fast if fast is not None and core.NAME == "compiled" else original
        if current is not chosen:
            setattr(cls, name, chosen)


def _install_core(core):
    """Bind the module-level names that belong to ``core`` (see _core.use)."""
    global _impl, CORE, BACKEND, read, write, _exception, readwrite, Timer
    _impl = core
    _install_methods(_originals, _compiled, core)
    CORE = core.NAME
    # What the passes wait with: epoll or kqueue (the compiled core, for a
    # map it sees again), else poll(2), or select(2) where there is no poll.
    BACKEND = core.backend()
    read = core.read
    write = core.write
    _exception = core._exception
    readwrite = core.readwrite
    Timer = core.Timer


def _watch_state():
    """Let the compiled core see every change of what our predicates read.

    3.11 asked each channel readable() and writable() on every pass.  The
    compiled core asks only channels whose answer may have changed, so the
    attributes those answers come from become descriptors that tell it
    (values still live in the instance's __dict__, as in 3.11), and the
    predicates become descriptors that notice an override set on the
    instance.  See _asyncore_kset (the kernel interest sets) and _asyncore_state.
    """
    if _hooks is None:
        return
    connected = _hooks.Watched("connected", False)
    accepting = _hooks.Watched("accepting", False)
    dispatcher.connected = connected
    dispatcher.accepting = accepting
    for cls, name in (
        (dispatcher, "readable"),
        (dispatcher, "writable"),
        (dispatcher_with_send, "writable"),
    ):
        setattr(cls, name, _hooks.Predicate(cls.__dict__[name]))
    _hooks.declare_own(
        readable=[dispatcher.readable],
        writable={dispatcher.writable: "const", dispatcher_with_send.writable: "send"},
        connected=connected,
        accepting=accepting,
        out_buffer=_OUT_BUFFER,
        class_slot=dispatcher.__dict__["__class__"],
    )


_watch_state()
_impl = CORE = BACKEND = read = write = _exception = readwrite = Timer = None
_install_core(_core.init())
