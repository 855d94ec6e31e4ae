"""asynchat for Python 3.12+: CPython 3.11's module, kept alive and made fast.

``async_chat`` splits the bytes a channel receives on a terminator (a byte
string, a byte count, or None for "everything") and queues outgoing data
and producers.  The splitting runs in the active asyncore core, in time
linear in the bytes received; the callbacks a subclass sees, and the values
of ``ac_in_buffer``, ``incoming``, ``producer_fifo`` and ``terminator`` while
it sees them, are those of 3.11.
"""

from collections import deque

import asyncore
from asyncore import _core, _core_py

# No __all__: 3.11 had none, and `from asynchat import *` also brought
# asyncore and deque, which old scripts then use.


# What push() accepts, as one constant: a tuple display would be built per
# call.  bytes, the common case, is told by its type (cheaper still).
_BYTES_LIKE = (bytes, bytearray, memoryview)


class async_chat(asyncore.dispatcher):
    """A dispatcher for command/response protocols.

    Subclasses implement collect_incoming_data() and found_terminator().
    """

    ac_in_buffer_size = 65536
    ac_out_buffer_size = 65536

    # Whether str terminators and producer output are encoded with `encoding`.
    use_encoding = 0
    encoding = "latin-1"

    # Input not yet consumed is _ac_in[_ac_pos:]; see ac_in_buffer.  The
    # two have no class defaults: the ac_in_buffer setter gives every
    # instance its own, and a class attribute of the same name would cost
    # every access of them 3.12's specialised instance-attribute access.

    def __init__(self, sock=None, map=None):
        self.ac_in_buffer = b""
        self.incoming = []
        self.producer_fifo = deque()
        asyncore.dispatcher.__init__(self, sock, map)

    @property
    def ac_in_buffer(self):
        """Received bytes not yet handed to collect_incoming_data()."""
        try:
            pos = self._ac_pos
        except AttributeError:
            # __init__ never ran: 3.11's error, which names ac_in_buffer.
            raise _core_py._no_ac_in_buffer(self) from None
        if pos:
            # Cut once, so reading it again costs nothing.
            self._ac_in = self._ac_in[pos:]
            self._ac_pos = 0
        return self._ac_in

    @ac_in_buffer.setter
    def ac_in_buffer(self, data):
        self._ac_in = data
        self._ac_pos = 0

    # -- input

    def collect_incoming_data(self, data):
        raise NotImplementedError("must be implemented in subclass")

    def _collect_incoming_data(self, data):
        self.incoming.append(data)

    def _get_data(self):
        incoming = self.incoming
        data = b"".join(incoming)
        del incoming[:]
        return data

    def found_terminator(self):
        raise NotImplementedError("must be implemented in subclass")

    def set_terminator(self, term):
        """Set the input delimiter: a byte string, a byte count, or None."""
        if isinstance(term, str) and self.use_encoding:
            term = term.encode(self.encoding)
        elif isinstance(term, int) and term < 0:
            raise ValueError("the number of received bytes must be positive")
        self.terminator = term

    def get_terminator(self):
        return self.terminator

    def handle_read(self):
        try:
            data = self.recv(self.ac_in_buffer_size)
        except BlockingIOError:
            return
        except OSError:
            self.handle_error()
            return
        # The type test first: see initiate_send.
        if type(data) is not bytes and isinstance(data, str) and self.use_encoding:
            # 3.11 passed the type, not the data, to bytes(): a str from
            # recv() raised TypeError ("encoding without a string argument"),
            # which dispatch hands to handle_error.  Programs and tests rely on
            # that outcome, so it is kept.
            data = bytes(str, self.encoding)
        try:
            self._ac_in  # noqa: B018  (the read is the test)
        except AttributeError:
            # Our ac_in_buffer setter never ran on this channel: the subclass
            # declared ac_in_buffer itself, so it is a plain attribute, and
            # the same algorithm runs through it, copying as 3.11 did.  (Or
            # __init__ never ran: the adapter's first read then fails as
            # 3.11's did.)  A type test would cost a lookup on the class per
            # read: a property found there is not specialised.
            _consume(_PlainInput(self), data)
            return
        _consume(self, data)

    # -- output

    def handle_write(self):
        self.initiate_send()

    def handle_close(self):
        self.close()

    def push(self, data):
        if type(data) is not bytes and not isinstance(data, _BYTES_LIKE):
            # The template and the type as two arguments, unformatted: 3.11's
            # exact exception, which test suites compare.
            raise TypeError("data argument must be byte-ish (%r)", type(data))
        size = self.ac_out_buffer_size
        if len(data) > size:
            fifo = self.producer_fifo
            for start in range(0, len(data), size):
                fifo.append(data[start : start + size])
        else:
            self.producer_fifo.append(data)
        self.initiate_send()

    def push_with_producer(self, producer):
        self.producer_fifo.append(producer)
        self.initiate_send()

    def readable(self):
        # Always: reading is never throttled by the input buffer's size.
        return 1

    def writable(self):
        return self.producer_fifo or (not self.connected)

    def close_when_done(self):
        """Close the channel once everything queued before now is sent."""
        self.producer_fifo.append(None)

    def initiate_send(self):
        fifo = self.producer_fifo
        while fifo and self.connected:
            first = fifo[0]
            if not first:
                # An empty entry is dropped; None means "close when here".
                del fifo[0]
                if first is None:
                    self.handle_close()
                    return
            size = self.ac_out_buffer_size
            try:
                data = first[:size]
            except TypeError:
                # Not sliceable: a producer.  Its output goes to the front.
                data = first.more()
                if data:
                    fifo.appendleft(data)
                else:
                    del fifo[0]
                continue
            # The type test first: an isinstance() that fails looks up
            # data.__class__, hundreds of instructions per message.
            if type(data) is not bytes and isinstance(data, str) and self.use_encoding:
                data = data.encode(self.encoding)
            try:
                sent = self.send(data)
            except OSError:
                self.handle_error()
                return
            if sent:
                # A bytes entry no longer than size is its own slice: the
                # common case needs no len(first).
                if sent < len(data) or (data is not first and size < len(first)):
                    fifo[0] = _rest(first, sent)
                else:
                    del fifo[0]
            # One send per call; the loop calls again when writable.
            return

    def discard_buffers(self):
        self.ac_in_buffer = b""
        del self.incoming[:]
        self.producer_fifo.clear()


class _PlainInput:
    """Presents a channel whose ac_in_buffer is a plain attribute to the core.

    The core publishes its input state as the pair (_ac_in, _ac_pos), or
    as _ac_pos alone once it has read _ac_in back; this adapter turns each
    such publication into an assignment of the unconsumed rest to
    ac_in_buffer, and reports the attribute back with offset 0.
    Everything else the core touches is the channel's own.
    """

    __slots__ = ("_chan", "_pending")

    def __init__(self, chan):
        self._chan = chan
        self._pending = b""

    @property
    def _ac_in(self):
        # What an _ac_pos stored next is an offset into.
        self._pending = buf = self._chan.ac_in_buffer
        return buf

    @_ac_in.setter
    def _ac_in(self, buf):
        # Always followed by _ac_pos, which completes the assignment.
        self._pending = buf

    @property
    def _ac_pos(self):
        return 0

    @_ac_pos.setter
    def _ac_pos(self, pos):
        self._chan.ac_in_buffer = self._pending[pos:] if pos else self._pending

    @property
    def terminator(self):
        return self._chan.terminator

    @terminator.setter
    def terminator(self, value):
        self._chan.terminator = value

    def get_terminator(self):
        return self._chan.get_terminator()

    def collect_incoming_data(self, data):
        return self._chan.collect_incoming_data(data)

    def found_terminator(self):
        return self._chan.found_terminator()


def _rest(data, sent):
    """data[sent:], without copying what the kernel has not taken yet.

    A view of immutable bytes is safe to keep.  A bytearray is copied as 3.11
    did: a view would stop its owner from resizing it.
    """
    if type(data) is bytes and len(data) - sent > 512:
        return memoryview(data)[sent:]
    return data[sent:]


class simple_producer:
    """Hands out ``data`` in pieces of at most ``buffer_size`` bytes."""

    def __init__(self, data, buffer_size=512):
        self.data = data
        self.buffer_size = buffer_size

    def more(self):
        if len(self.data) > self.buffer_size:
            piece = self.data[: self.buffer_size]
            self.data = self.data[self.buffer_size :]
            return piece
        piece = self.data
        self.data = b""
        return piece


def find_prefix_at_end(haystack, needle):
    """Length of the longest proper prefix of ``needle`` that ends ``haystack``."""
    n = len(needle) - 1
    while n and not haystack.endswith(needle[:n]):
        n -= 1
    return n


def _watch_state():
    """As asyncore._watch_state, for async_chat: see there.

    ``producer_fifo`` stays in the instance's __dict__ under its own name,
    where code that copies or inspects a channel's state finds it; reading
    it marks the channel too, because the reader may append to the deque in
    place.
    """
    hooks = asyncore._hooks
    if hooks is None:
        return
    fifo = hooks.Watched("producer_fifo", on_read=True, in_dict=True)
    async_chat.producer_fifo = fifo
    for name in ("readable", "writable"):
        setattr(async_chat, name, hooks.Predicate(async_chat.__dict__[name]))
    hooks.declare_own(
        readable=[async_chat.readable],
        writable={async_chat.writable: "chat"},
        producer_fifo=fifo,
    )


# Our methods that the compiled core has in C (issue 11), exchanged with
# the active core as asyncore's are (see asyncore._install_methods).
_COMPILED_METHODS = (
    "ac_in_buffer",
    "handle_read",
    "push",
    "initiate_send",
    "_collect_incoming_data",
    "_get_data",
)
_originals = {(async_chat, name): async_chat.__dict__[name] for name in _COMPILED_METHODS}
_compiled = {}
if asyncore._hooks is not None:
    _found = asyncore._hooks.bind_chat(
        async_chat.__dict__["get_terminator"],
        {("async_chat", name): f for (_, name), f in _originals.items()},
    )
    _compiled = {(async_chat, name): _found["async_chat", name] for name in _COMPILED_METHODS}
    del _found


def _install_core(core):
    global _consume
    _consume = core.chat_consume
    asyncore._install_methods(_originals, _compiled, core)


_watch_state()
_consume = None
_install_core(_core.load(asyncore.CORE))
