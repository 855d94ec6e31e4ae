"""asynchat: every public name of CPython 3.11's module and its behaviour.

Most of the input-side tests drive ``handle_read`` through a channel whose
``recv`` replays scripted chunks, so that the split of the byte stream into
reads is exact and the callback sequence can be compared literally.  The
output side is driven the same way through a scripted ``send``.  Real
loopback connections then check that the same machinery works on sockets.
"""

import collections
import copy
import errno
import os
import socket
import subprocess
import sys
import threading

import pytest

import asynchat
import asyncore
import support

# An argument default that can never be a real terminator.
_NO_TERMINATOR = object()


class ScriptedChat(asynchat.async_chat):
    """A socketless channel: recv() replays a script, callbacks are recorded.

    Events are ``("data", bytes)`` for collect_incoming_data and
    ``("found", terminator)`` for found_terminator, the terminator being the
    value get_terminator() returns at the moment of the call.
    """

    def __init__(self, terminator=b"\n"):
        super().__init__()
        self.script = []
        self.recv_sizes = []
        self.events = []
        self.errors = []
        if terminator is not _NO_TERMINATOR:
            self.set_terminator(terminator)

    def recv(self, buffer_size):
        self.recv_sizes.append(buffer_size)
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    def feed(self, *chunks):
        """One handle_read() per chunk, as if each arrived in its own read."""
        for chunk in chunks:
            self.script.append(chunk)
            self.handle_read()
        return self

    def collect_incoming_data(self, data):
        self.events.append(("data", data))

    def found_terminator(self):
        self.events.append(("found", self.get_terminator()))

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])


class ScriptedSender(asynchat.async_chat):
    """A socketless channel that believes it is connected; send() is scripted.

    ``send_results`` holds what successive send() calls do: an int is the
    number of bytes accepted, an exception is raised.  Once it is empty every
    send accepts everything it is given.
    """

    def __init__(self, send_results=()):
        super().__init__()
        self.connected = True
        self.send_results = list(send_results)
        self.sent = []
        self.closes = 0
        self.errors = []

    def send(self, data):
        self.sent.append(data)
        if not self.send_results:
            return len(data)
        result = self.send_results.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result

    def handle_close(self):
        self.closes += 1
        super().handle_close()

    def handle_error(self):
        self.errors.append(sys.exc_info()[1])


class CountingProducer:
    """A producer that hands out its pieces one more() call at a time."""

    def __init__(self, *pieces):
        self.pieces = list(pieces)
        self.calls = 0

    def more(self):
        self.calls += 1
        return self.pieces.pop(0) if self.pieces else b""


# --------------------------------------------------------------------------
# The module and its class attributes
# --------------------------------------------------------------------------


class TestModule:
    def test_public_names(self):
        assert callable(asynchat.async_chat)
        assert callable(asynchat.simple_producer)
        assert callable(asynchat.find_prefix_at_end)

    def test_async_chat_is_a_dispatcher(self):
        assert issubclass(asynchat.async_chat, asyncore.dispatcher)

    def test_module_and_qualified_names(self):
        assert asynchat.async_chat.__module__ == "asynchat"
        assert asynchat.async_chat.__qualname__ == "async_chat"
        assert asynchat.simple_producer.__module__ == "asynchat"
        assert asynchat.simple_producer.__qualname__ == "simple_producer"

    def test_repr_names_the_asynchat_class(self):
        text = repr(asynchat.async_chat())
        assert text.startswith("<asynchat.async_chat at 0x")

    def test_asyncore_is_reachable_through_asynchat(self):
        # 3.11's module imports asyncore at its top level; old programs
        # reach the loop as asynchat.asyncore.loop().
        assert asynchat.asyncore is asyncore

    @pytest.mark.cyasyncore_only
    def test_import_emits_no_deprecation_warning(self):
        code = "import asynchat, asyncore; print(asynchat.async_chat.__module__)"
        result = subprocess.run(
            [sys.executable, "-P", "-W", "error::DeprecationWarning",
             "-W", "error::PendingDeprecationWarning", "-c", code],
            capture_output=True,
            text=True,
            timeout=support.DEADLINE * 3,
            cwd=os.path.dirname(os.path.abspath(__file__)) + "/..",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "asynchat"
        assert "Deprecat" not in result.stderr


class TestAttributes:
    def test_class_attributes(self):
        cls = asynchat.async_chat
        assert cls.ac_in_buffer_size == 65536
        assert cls.ac_out_buffer_size == 65536
        assert cls.use_encoding == 0
        assert cls.encoding == "latin-1"

    def test_instance_attributes_after_init(self):
        chat = asynchat.async_chat()
        assert chat.ac_in_buffer == b""
        assert type(chat.ac_in_buffer) is bytes
        assert chat.incoming == []
        assert type(chat.incoming) is list
        assert type(chat.producer_fifo) is collections.deque
        assert len(chat.producer_fifo) == 0

    def test_buffers_are_plain_instance_attributes(self):
        # Code that copies, pickles or inspects a channel's __dict__ finds
        # the output buffers there.  ac_in_buffer is the one exception on
        # cyasyncore: a property over (bytes, offset) that keeps input
        # splitting linear (README, "Differences"); copies still carry it.
        chat = asynchat.async_chat()
        state = vars(chat)
        assert chat.ac_in_buffer == b""
        assert copy.copy(chat).ac_in_buffer == b""
        assert state["incoming"] == []
        assert type(state["producer_fifo"]) is collections.deque

    def test_buffers_are_per_instance(self):
        first, second = asynchat.async_chat(), asynchat.async_chat()
        assert first.incoming is not second.incoming
        assert first.producer_fifo is not second.producer_fifo

    def test_unconnected_without_socket(self):
        chat = asynchat.async_chat()
        assert chat.socket is None
        assert not chat.connected
        assert chat not in asyncore.socket_map.values()

    def test_no_terminator_until_one_is_set(self):
        # __init__ sets no terminator: asking for it is an AttributeError.
        chat = asynchat.async_chat()
        with pytest.raises(AttributeError):
            chat.get_terminator()

    def test_init_with_socket_and_map_registers_the_channel(self):
        client, server = support.connected_pair()
        with client, support.private_map() as channel_map:
            chat = asynchat.async_chat(server, channel_map)
            assert channel_map == {server.fileno(): chat}
            assert chat.connected
            assert chat.socket is server
            assert asyncore.socket_map == {}
            chat.close()
            assert channel_map == {}


class TestExceptionMessages:
    """3.11's exception arguments, for programs and tests that compare them."""

    def test_push_type_error(self):
        # 3.11 passes the format and the type as two arguments, unformatted.
        with pytest.raises(TypeError) as raised:
            asynchat.async_chat().push("text")
        assert raised.value.args == ("data argument must be byte-ish (%r)", str)

    def test_negative_terminator(self):
        with pytest.raises(ValueError) as raised:
            asynchat.async_chat().set_terminator(-1)
        assert raised.value.args == ("the number of received bytes must be positive",)

    def test_abstract_callbacks(self):
        chat = asynchat.async_chat()
        for call in (lambda: chat.collect_incoming_data(b"x"), chat.found_terminator):
            with pytest.raises(NotImplementedError) as raised:
                call()
            assert raised.value.args == ("must be implemented in subclass",)


# --------------------------------------------------------------------------
# Terminators
# --------------------------------------------------------------------------


class TestSetTerminator:
    def test_bytes_kept_as_given(self):
        chat = asynchat.async_chat()
        term = b"\r\n"
        chat.set_terminator(term)
        assert chat.terminator is term
        assert chat.get_terminator() is term

    def test_bytearray_kept_as_given(self):
        chat = asynchat.async_chat()
        term = bytearray(b"||")
        chat.set_terminator(term)
        assert chat.get_terminator() is term

    def test_str_kept_as_str_without_use_encoding(self):
        chat = asynchat.async_chat()
        chat.set_terminator("\r\n")
        assert chat.get_terminator() == "\r\n"
        assert type(chat.get_terminator()) is str

    def test_str_encoded_with_use_encoding(self):
        chat = asynchat.async_chat()
        chat.use_encoding = 1
        chat.set_terminator("\u00e9\n")
        assert chat.get_terminator() == b"\xe9\n"

    def test_str_encoded_with_the_instance_encoding(self):
        chat = asynchat.async_chat()
        chat.use_encoding = True
        chat.encoding = "utf-8"
        chat.set_terminator("\u00e9\n")
        assert chat.get_terminator() == b"\xc3\xa9\n"

    @pytest.mark.parametrize("count", [0, 1, 7, 2**40])
    def test_non_negative_int(self, count):
        chat = asynchat.async_chat()
        chat.set_terminator(count)
        assert chat.get_terminator() == count

    def test_none(self):
        chat = asynchat.async_chat()
        chat.set_terminator(b"\n")
        chat.set_terminator(None)
        assert chat.get_terminator() is None

    @pytest.mark.parametrize("count", [-1, -1000])
    def test_negative_int_is_rejected(self, count):
        chat = asynchat.async_chat()
        chat.set_terminator(b"\n")
        with pytest.raises(ValueError):
            chat.set_terminator(count)
        assert chat.get_terminator() == b"\n"

    def test_get_terminator_reads_the_attribute(self):
        chat = asynchat.async_chat()
        chat.terminator = b"END"
        assert chat.get_terminator() == b"END"


# --------------------------------------------------------------------------
# Incoming data helpers and the abstract callbacks
# --------------------------------------------------------------------------


class TestIncoming:
    def test_collect_incoming_data_is_abstract(self):
        with pytest.raises(NotImplementedError):
            asynchat.async_chat().collect_incoming_data(b"data")

    def test_found_terminator_is_abstract(self):
        with pytest.raises(NotImplementedError):
            asynchat.async_chat().found_terminator()

    def test_handle_read_without_callbacks_raises(self):
        chat = asynchat.async_chat()
        chat.recv = lambda size: b"line\n"
        chat.set_terminator(b"\n")
        with pytest.raises(NotImplementedError):
            chat.handle_read()

    def test_private_collect_appends_to_incoming(self):
        chat = asynchat.async_chat()
        chat._collect_incoming_data(b"ab")
        chat._collect_incoming_data(b"cd")
        assert chat.incoming == [b"ab", b"cd"]

    def test_get_data_joins_and_empties_the_same_list(self):
        chat = asynchat.async_chat()
        incoming = chat.incoming
        chat._collect_incoming_data(b"ab")
        chat._collect_incoming_data(bytearray(b"cd"))
        chat._collect_incoming_data(memoryview(b"ef"))
        data = chat._get_data()
        assert data == b"abcdef"
        assert type(data) is bytes
        assert chat.incoming is incoming
        assert incoming == []

    def test_get_data_when_nothing_was_collected(self):
        assert asynchat.async_chat()._get_data() == b""


# --------------------------------------------------------------------------
# handle_read: the callback sequence
# --------------------------------------------------------------------------


class TestHandleRead:
    def test_recv_asks_for_ac_in_buffer_size(self):
        chat = ScriptedChat().feed(b"x")
        chat.ac_in_buffer_size = 10
        chat.feed(b"y")
        assert chat.recv_sizes == [65536, 10]

    def test_one_line(self):
        chat = ScriptedChat(b"\n").feed(b"hello\n")
        assert chat.events == [("data", b"hello"), ("found", b"\n")]
        assert chat.ac_in_buffer == b""

    def test_data_without_terminator_is_collected_at_once(self):
        chat = ScriptedChat(b"\n").feed(b"hel", b"lo")
        assert chat.events == [("data", b"hel"), ("data", b"lo")]
        assert chat.ac_in_buffer == b""

    def test_terminator_split_across_reads(self):
        chat = ScriptedChat(b"\r\n").feed(b"hello\r")
        assert chat.events == [("data", b"hello")]
        assert chat.ac_in_buffer == b"\r"
        chat.feed(b"\nworld\r\n")
        assert chat.events == [
            ("data", b"hello"),
            ("found", b"\r\n"),
            ("data", b"world"),
            ("found", b"\r\n"),
        ]
        assert chat.ac_in_buffer == b""

    def test_long_terminator_arriving_one_byte_at_a_time(self):
        chat = ScriptedChat(b"<|>").feed(b"ab<")
        assert chat.events == [("data", b"ab")]
        assert chat.ac_in_buffer == b"<"
        chat.feed(b"|")
        assert chat.events == [("data", b"ab")]
        assert chat.ac_in_buffer == b"<|"
        chat.feed(b">cd")
        assert chat.events == [("data", b"ab"), ("found", b"<|>"), ("data", b"cd")]
        assert chat.ac_in_buffer == b""

    def test_false_start_of_a_terminator_is_delivered_as_data(self):
        chat = ScriptedChat(b"\r\n").feed(b"a\r", b"b\r", b"\r", b"\n")
        assert chat.events == [
            ("data", b"a"),
            ("data", b"\rb"),
            ("data", b"\r"),
            ("found", b"\r\n"),
        ]

    def test_buffer_that_is_only_a_terminator_prefix_collects_nothing(self):
        chat = ScriptedChat(b"\r\n.\r\n").feed(b"\r\n.")
        assert chat.events == []
        assert chat.ac_in_buffer == b"\r\n."

    def test_self_overlapping_terminator(self):
        chat = ScriptedChat(b"aab").feed(b"xaa", b"ab")
        assert chat.events == [("data", b"x"), ("data", b"a"), ("found", b"aab")]

    def test_several_terminators_in_one_read(self):
        chat = ScriptedChat(b"\n").feed(b"a\nbb\n\nccc")
        assert chat.events == [
            ("data", b"a"),
            ("found", b"\n"),
            ("data", b"bb"),
            ("found", b"\n"),
            ("found", b"\n"),
            ("data", b"ccc"),
        ]
        assert chat.ac_in_buffer == b""

    def test_terminator_at_start_reports_no_empty_data(self):
        chat = ScriptedChat(b"\r\n").feed(b"\r\n\r\n")
        assert chat.events == [("found", b"\r\n"), ("found", b"\r\n")]

    def test_empty_read_does_nothing(self):
        chat = ScriptedChat(b"\n").feed(b"ab\r")
        chat.set_terminator(b"\r\n")
        chat.feed(b"")
        assert chat.events == [("data", b"ab\r")]
        assert chat.ac_in_buffer == b""

    def test_numeric_terminator_counts_down_across_reads(self):
        chat = ScriptedChat(10)
        terminators = []
        for chunk in (b"abc", b"defg", b"hijXY"):
            chat.feed(chunk)
            terminators.append(chat.get_terminator())
        assert terminators == [7, 3, 0]
        # Once the count reaches 0 it stays 0, and 0 means "collect all".
        assert chat.events == [
            ("data", b"abc"),
            ("data", b"defg"),
            ("data", b"hij"),
            ("found", 0),
            ("data", b"XY"),
        ]

    def test_numeric_terminator_exactly_filled_by_one_read(self):
        chat = ScriptedChat(4).feed(b"abcd")
        assert chat.events == [("data", b"abcd"), ("found", 0)]
        assert chat.get_terminator() == 0
        assert chat.ac_in_buffer == b""

    def test_terminator_zero_collects_everything(self):
        chat = ScriptedChat(0).feed(b"abc\n", b"def")
        assert chat.events == [("data", b"abc\n"), ("data", b"def")]
        assert chat.get_terminator() == 0

    def test_none_terminator_collects_everything(self):
        chat = ScriptedChat(None).feed(b"abc\r\n", b"\x00", b"def")
        assert chat.events == [("data", b"abc\r\n"), ("data", b"\x00"), ("data", b"def")]
        assert chat.get_terminator() is None
        assert chat.ac_in_buffer == b""

    def test_empty_bytes_terminator_collects_everything(self):
        chat = ScriptedChat(b"").feed(b"abc\n")
        assert chat.events == [("data", b"abc\n")]

    def test_bytearray_terminator(self):
        chat = ScriptedChat(bytearray(b";")).feed(b"a;b")
        assert chat.events == [("data", b"a"), ("found", bytearray(b";")), ("data", b"b")]

    def test_str_terminator_without_use_encoding_fails_on_read(self):
        chat = ScriptedChat("\n")
        with pytest.raises(TypeError):
            chat.feed(b"line\n")

    def test_str_terminator_with_use_encoding(self):
        chat = ScriptedChat(_NO_TERMINATOR)
        chat.use_encoding = 1
        chat.set_terminator("\n")
        chat.feed(b"line\n")
        assert chat.events == [("data", b"line"), ("found", b"\n")]

    @pytest.mark.parametrize("use_encoding", [0, 1])
    def test_recv_returning_str_is_a_type_error(self, use_encoding):
        chat = ScriptedChat(b"\n")
        chat.use_encoding = use_encoding
        with pytest.raises(TypeError):
            chat.feed("line\n")

    def test_collected_pieces_are_bytes(self):
        chat = ScriptedChat(b"\n").feed(b"ab\ncd\r", b"ef")
        chat.set_terminator(3)
        chat.feed(b"ghij")
        assert all(type(data) is bytes for kind, data in chat.events if kind == "data")

    def test_get_terminator_override_is_consulted(self):
        class SemicolonChat(ScriptedChat):
            def get_terminator(self):
                return b";"

        chat = SemicolonChat(_NO_TERMINATOR).feed(b"a;b;c")
        assert chat.events == [
            ("data", b"a"),
            ("found", b";"),
            ("data", b"b"),
            ("found", b";"),
            ("data", b"c"),
        ]

    def test_blocking_io_error_is_ignored(self):
        chat = ScriptedChat(b"\r\n").feed(b"ab\r")
        chat.feed(BlockingIOError(errno.EAGAIN, "try again"))
        assert chat.errors == []
        assert chat.events == [("data", b"ab")]
        assert chat.ac_in_buffer == b"\r"

    @pytest.mark.parametrize(
        "error",
        [OSError(errno.EBADF, "bad fd"), ConnectionResetError(errno.ECONNRESET, "reset")],
        ids=["EBADF", "ECONNRESET"],
    )
    def test_other_os_errors_go_to_handle_error(self, error):
        chat = ScriptedChat(b"\r\n").feed(b"ab\r")
        chat.feed(error)
        assert chat.errors == [error]
        assert chat.events == [("data", b"ab")]
        assert chat.ac_in_buffer == b"\r"

    def test_non_os_errors_propagate(self):
        chat = ScriptedChat(b"\n")
        with pytest.raises(ValueError):
            chat.feed(ValueError("not an OSError"))
        assert chat.errors == []

    def test_default_handle_error_closes_the_channel(self, capsys):
        class Chat(ScriptedChat):
            handle_error = asynchat.async_chat.handle_error

            def handle_close(self):
                self.events.append(("closed", None))

        chat = Chat(b"\n").feed(OSError(errno.EBADF, "bad fd"))
        assert chat.events == [("closed", None)]
        assert "uncaptured python exception" in capsys.readouterr().out


class TestChangingTerminators:
    def test_bytes_then_int_then_none_then_bytes(self):
        class Switching(ScriptedChat):
            def found_terminator(self):
                super().found_terminator()
                if self.get_terminator() == b"\r\n":
                    self.set_terminator(3)
                else:
                    self.set_terminator(None)

        chat = Switching(b"\r\n").feed(b"LEN\r\nabcXYZ")
        assert chat.events == [
            ("data", b"LEN"),
            ("found", b"\r\n"),
            ("data", b"abc"),
            ("found", 0),
            ("data", b"XYZ"),
        ]
        assert chat.get_terminator() is None
        chat.feed(b"more\r\n")
        chat.set_terminator(b".")
        chat.feed(b"end.tail")
        assert chat.events[5:] == [
            ("data", b"more\r\n"),
            ("data", b"end"),
            ("found", b"."),
            ("data", b"tail"),
        ]

    def test_switch_from_line_to_count_inside_one_read(self):
        class Bulk(ScriptedChat):
            def found_terminator(self):
                super().found_terminator()
                if self.events[-2] == ("data", b"PUT"):
                    self.set_terminator(5)
                else:
                    self.set_terminator(b"\n")

        chat = Bulk(b"\n").feed(b"PUT\n12\n45", b"next\nPUT", b"\n")
        assert chat.events == [
            ("data", b"PUT"),
            ("found", b"\n"),
            ("data", b"12\n45"),
            ("found", 0),
            ("data", b"next"),
            ("found", b"\n"),
            ("data", b"PUT"),
            ("found", b"\n"),
        ]
        assert chat.get_terminator() == 5

    def test_switch_to_a_longer_terminator_rescans_the_rest(self):
        class Switching(ScriptedChat):
            def found_terminator(self):
                super().found_terminator()
                self.set_terminator(b"\r\n.\r\n")

        chat = Switching(b"\r\n").feed(b"LIST\r\none\r\ntwo\r\n.\r\nafter")
        assert chat.events == [
            ("data", b"LIST"),
            ("found", b"\r\n"),
            ("data", b"one\r\ntwo"),
            ("found", b"\r\n.\r\n"),
            ("data", b"after"),
        ]

    def test_switch_to_none_keeps_a_held_back_prefix_for_the_next_read(self):
        class Stop(ScriptedChat):
            def collect_incoming_data(self, data):
                super().collect_incoming_data(data)
                self.set_terminator(None)

        # The tail "\r" is held back as a possible terminator start before
        # collect_incoming_data switches to None; the next read delivers it.
        chat = Stop(b"\r\n").feed(b"ab\r")
        assert chat.events == [("data", b"ab")]
        assert chat.ac_in_buffer == b"\r"
        chat.feed(b"cd")
        assert chat.events == [("data", b"ab"), ("data", b"\rcd")]


class TestStateSeenFromCallbacks:
    """What the channel's attributes hold while a callback runs."""

    class Snapshotting(asynchat.async_chat):
        def __init__(self, terminator):
            super().__init__()
            self.set_terminator(terminator)
            self.snapshots = []
            self.script = []

        def recv(self, buffer_size):
            return self.script.pop(0)

        def feed(self, *chunks):
            for chunk in chunks:
                self.script.append(chunk)
                self.handle_read()
            return self

        def collect_incoming_data(self, data):
            self.snapshots.append(
                ("data", data, self.ac_in_buffer, self.terminator, list(self.incoming))
            )
            self._collect_incoming_data(data)

        def found_terminator(self):
            self.snapshots.append(
                ("found", self.ac_in_buffer, self.terminator, list(self.incoming))
            )
            self._get_data()

    def test_bytes_terminator(self):
        chat = self.Snapshotting(b"\r\n").feed(b"ab\r\ncd\r\nef\r")
        assert chat.snapshots == [
            ("data", b"ab", b"ab\r\ncd\r\nef\r", b"\r\n", []),
            ("found", b"cd\r\nef\r", b"\r\n", [b"ab"]),
            ("data", b"cd", b"cd\r\nef\r", b"\r\n", []),
            ("found", b"ef\r", b"\r\n", [b"cd"]),
            ("data", b"ef", b"ef\r", b"\r\n", []),
        ]
        assert chat.ac_in_buffer == b"\r"
        assert chat.incoming == [b"ef"]

    def test_held_back_prefix_is_part_of_the_next_buffer(self):
        chat = self.Snapshotting(b"\r\n").feed(b"ab\r", b"\ncd")
        assert chat.snapshots == [
            ("data", b"ab", b"ab\r", b"\r\n", []),
            ("found", b"cd", b"\r\n", [b"ab"]),
            ("data", b"cd", b"cd", b"\r\n", []),
        ]

    def test_numeric_terminator(self):
        chat = self.Snapshotting(10).feed(b"abc", b"defghijkl")
        assert chat.snapshots == [
            ("data", b"abc", b"abc", 10, []),
            ("data", b"defghij", b"defghijkl", 7, [b"abc"]),
            ("found", b"kl", 0, [b"abc", b"defghij"]),
            ("data", b"kl", b"kl", 0, []),
        ]

    def test_none_terminator(self):
        chat = self.Snapshotting(None).feed(b"abc", b"de")
        assert chat.snapshots == [
            ("data", b"abc", b"abc", None, []),
            ("data", b"de", b"de", None, [b"abc"]),
        ]
        assert chat.incoming == [b"abc", b"de"]

    def test_subclass_declaring_the_buffer_at_class_level(self):
        class Declared(self.Snapshotting):
            ac_in_buffer = b""

            def found_terminator(self):
                super().found_terminator()
                self.ac_in_buffer = b""

        chat = Declared(b"\r\n").feed(b"ab\r")
        assert chat.ac_in_buffer == b"\r"
        assert vars(chat)["ac_in_buffer"] == b"\r"
        chat.feed(b"\ncd\r\nlost\r\n")
        assert chat.snapshots == [
            ("data", b"ab", b"ab\r", b"\r\n", []),
            ("found", b"cd\r\nlost\r\n", b"\r\n", [b"ab"]),
        ]
        assert chat.ac_in_buffer == b""

    def test_subclass_declaring_the_buffer_replaced_while_collecting(self):
        # The rest after the terminator is cut from what the handler left.
        class Declared(self.Snapshotting):
            ac_in_buffer = b""

            def collect_incoming_data(self, data):
                super().collect_incoming_data(data)
                if data == b"ab":
                    self.ac_in_buffer = b"XY\r\nZ\r\n"

        chat = Declared(b"\r\n").feed(b"ab\r\ncd\r\n")
        assert chat.snapshots == [
            ("data", b"ab", b"ab\r\ncd\r\n", b"\r\n", []),
            ("found", b"Z\r\n", b"\r\n", [b"ab"]),
            ("data", b"Z", b"Z\r\n", b"\r\n", []),
            ("found", b"", b"\r\n", [b"Z"]),
        ]
        assert chat.ac_in_buffer == b""

    def test_found_terminator_discarding_the_rest_of_the_buffer(self):
        class Discarding(self.Snapshotting):
            def found_terminator(self):
                super().found_terminator()
                self.ac_in_buffer = b""

        chat = Discarding(b"\n").feed(b"one\ntwo\nthree\n", b"four\n")
        assert chat.snapshots == [
            ("data", b"one", b"one\ntwo\nthree\n", b"\n", []),
            ("found", b"two\nthree\n", b"\n", [b"one"]),
            ("data", b"four", b"four\n", b"\n", []),
            ("found", b"", b"\n", [b"four"]),
        ]

    def test_found_terminator_injecting_input(self):
        class Injecting(self.Snapshotting):
            def found_terminator(self):
                super().found_terminator()
                if self.snapshots[-2][1] == b"MACRO":
                    self.ac_in_buffer = b"x\ny\n" + self.ac_in_buffer

        chat = Injecting(b"\n").feed(b"MACRO\nz\n")
        lines = [s[1] for s in chat.snapshots if s[0] == "data"]
        assert lines == [b"MACRO", b"x", b"y", b"z"]

    def test_collect_replacing_the_buffer_bytes_terminator(self):
        # The buffer is trimmed after collect_incoming_data returns, from
        # whatever ac_in_buffer then holds.
        class Replacing(self.Snapshotting):
            def collect_incoming_data(self, data):
                super().collect_incoming_data(data)
                if data == b"ab":
                    self.ac_in_buffer = b"XYZ\nQ"

        chat = Replacing(b"\n").feed(b"ab\ncd")
        assert chat.snapshots == [
            ("data", b"ab", b"ab\ncd", b"\n", []),
            ("found", b"\nQ", b"\n", [b"ab"]),
            ("found", b"Q", b"\n", []),
            ("data", b"Q", b"Q", b"\n", []),
        ]

    def test_collect_replacing_the_buffer_numeric_terminator(self):
        class Replacing(self.Snapshotting):
            def collect_incoming_data(self, data):
                super().collect_incoming_data(data)
                if data == b"abc":
                    self.ac_in_buffer = b"0123456789"

        chat = Replacing(3).feed(b"abcdef")
        assert chat.snapshots == [
            ("data", b"abc", b"abcdef", 3, []),
            ("found", b"3456789", 0, [b"abc"]),
            ("data", b"3456789", b"3456789", 0, []),
        ]

    def test_collect_changing_a_numeric_terminator_mid_count(self):
        class Extending(self.Snapshotting):
            def collect_incoming_data(self, data):
                super().collect_incoming_data(data)
                self.terminator = 100

        # The countdown subtracts the bytes just read from the value the
        # callback left, not from the value before the call.
        chat = Extending(10).feed(b"abcd")
        assert chat.get_terminator() == 96
        assert chat.ac_in_buffer == b""

    def test_collect_replacing_the_buffer_with_a_short_numeric_read(self):
        class Replacing(self.Snapshotting):
            def collect_incoming_data(self, data):
                super().collect_incoming_data(data)
                self.ac_in_buffer = b"ignored"

        # A read shorter than the count empties the buffer after the call.
        chat = Replacing(10).feed(b"abcd")
        assert chat.ac_in_buffer == b""
        assert chat.get_terminator() == 6

    def test_found_terminator_setting_the_attribute_directly(self):
        class Direct(self.Snapshotting):
            def found_terminator(self):
                super().found_terminator()
                self.terminator = 2 if self.terminator == b"\n" else b"\n"

        chat = Direct(b"\n").feed(b"a\nbcd\n")
        assert chat.snapshots == [
            ("data", b"a", b"a\nbcd\n", b"\n", []),
            ("found", b"bcd\n", b"\n", [b"a"]),
            ("data", b"bc", b"bcd\n", 2, []),
            ("found", b"d\n", 0, [b"bc"]),
            ("data", b"d", b"d\n", b"\n", []),
            ("found", b"", b"\n", [b"d"]),
        ]

    @pytest.mark.parametrize("look_at_the_buffer", [False, True])
    def test_negative_terminator_set_directly_mid_buffer(self, look_at_the_buffer):
        # set_terminator() refuses a negative count, the attribute does not;
        # 3.11 then slices with it: all but the last byte, then found.
        class Negative(ScriptedChat):
            def found_terminator(self):
                super().found_terminator()
                if look_at_the_buffer:
                    self.events.append(("buffer", self.ac_in_buffer))
                self.terminator = -1 if self.terminator == b"\n" else b"\n"

        chat = Negative(b"\n").feed(b"a\nbcd")
        events = [event for event in chat.events if event[0] != "buffer"]
        assert events == [
            ("data", b"a"),
            ("found", b"\n"),
            ("data", b"bc"),
            ("found", 0),
            ("data", b"d"),
        ]

    def test_closing_inside_found_terminator_finishes_the_read(self):
        class Quitting(self.Snapshotting):
            def found_terminator(self):
                super().found_terminator()
                self.close()

        chat = Quitting(b"\n").feed(b"QUIT\nmore\n")
        lines = [s[1] for s in chat.snapshots if s[0] == "data"]
        assert lines == [b"QUIT", b"more"]
        assert not chat.connected

    def test_found_terminator_replacing_incoming(self):
        class Fresh(self.Snapshotting):
            def found_terminator(self):
                self.snapshots.append(("found", self.incoming))
                self.incoming = []

        chat = Fresh(b"\n").feed(b"a\nb\n")
        assert chat.snapshots[1] == ("found", [b"a"])
        assert chat.snapshots[3] == ("found", [b"b"])
        assert chat.snapshots[1][1] is not chat.snapshots[3][1]
        incoming = chat.incoming
        chat._collect_incoming_data(b"c")
        chat.discard_buffers()
        assert incoming == [] and chat.incoming is incoming

    def test_found_terminator_pushing_and_replacing_the_fifo(self):
        class Replier(self.Snapshotting):
            def found_terminator(self):
                super().found_terminator()
                line = self._last_line()
                if line == b"RESET":
                    self.producer_fifo = collections.deque([b"reset\n"])
                else:
                    self.push(line.upper() + b"\n")
                self.snapshots.append(("fifo", list(self.producer_fifo)))

            def _last_line(self):
                return self.snapshots[-1][3][0]

        chat = Replier(b"\n")
        old_fifo = chat.producer_fifo
        chat.feed(b"a\nb\nRESET\nc\n")
        fifos = [s[1] for s in chat.snapshots if s[0] == "fifo"]
        # Not connected: nothing is sent, replies wait in the fifo.
        assert fifos == [
            [b"A\n"],
            [b"A\n", b"B\n"],
            [b"reset\n"],
            [b"reset\n", b"C\n"],
        ]
        assert old_fifo == collections.deque([b"A\n", b"B\n"])
        assert chat.producer_fifo is not old_fifo
        assert chat.writable()


class TestInputWhileCallbacksRun:
    """Input state seen by callbacks that read again, run in threads, or change the class."""

    class Nesting(ScriptedChat):
        # found_terminator reads once more, from inside the running split.
        def __init__(self):
            super().__init__(b"\n")
            self.nest = True

        def found_terminator(self):
            self.events.append(("found", self.ac_in_buffer))
            if self.nest:
                self.nest = False
                self.handle_read()

    def test_a_read_from_inside_found_terminator_continues_the_split(self):
        chat = self.Nesting()
        chat.script += [b"a\nb\n", b"c\n"]
        chat.handle_read()
        assert chat.events == [
            ("data", b"a"), ("found", b"b\n"),
            ("data", b"b"), ("found", b"c\n"),
            ("data", b"c"), ("found", b""),
        ]
        assert chat.ac_in_buffer == b""
        assert chat.errors == []

    def test_a_read_from_inside_leaves_a_partial_record_for_the_outer_split(self):
        chat = self.Nesting()
        chat.script += [b"a\nb\n", b"c"]
        chat.handle_read()
        assert chat.events == [
            ("data", b"a"), ("found", b"b\n"),
            ("data", b"b"), ("found", b"c"),
            ("data", b"c"),
        ]
        assert chat.ac_in_buffer == b""
        chat.feed(b"d\n")
        assert chat.events[-2:] == [("data", b"d"), ("found", b"")]

    class Meeting(ScriptedChat):
        # Every channel's found_terminator waits until all are inside theirs.
        barrier = None

        def found_terminator(self):
            self.events.append(("found", self.ac_in_buffer))
            self.barrier.wait()
            self.events.append(("after", self.ac_in_buffer))
            self.ac_in_buffer = self.ac_in_buffer + b"!"

    @pytest.mark.parametrize("channels", [2, 12])
    def test_channels_split_in_threads_at_once_keep_their_own_input(self, channels):
        # More channels than the core keeps live input for at once (8) take
        # its general path; each must see only its own bytes.
        barrier = threading.Barrier(channels, timeout=support.DEADLINE)
        chats = [self.Meeting() for _ in range(channels)]
        for chat in chats:
            chat.barrier = barrier
        errors = []

        def run(chat, i):
            try:
                chat.feed(b"%d\nrest%d" % (i, i))
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)
                barrier.abort()

        threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(chats)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(support.DEADLINE)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        for i, chat in enumerate(chats):
            rest = b"rest%d" % i
            assert chat.events == [
                ("data", b"%d" % i), ("found", rest), ("after", rest),
                ("data", rest + b"!"),
            ]
            assert chat.ac_in_buffer == b""
            assert chat.errors == []

    def test_get_terminator_overridden_on_the_class_later_is_used(self):
        class Later(ScriptedChat):
            pass

        chat = Later(b"\n").feed(b"a\nb;")
        Later.get_terminator = lambda self: b";"
        chat.feed(b"c;")
        assert chat.events == [
            ("data", b"a"), ("found", b"\n"),
            ("data", b"b;"),
            ("data", b"c"), ("found", b";"),
        ]

    def test_get_terminator_set_on_the_instance_is_used(self):
        chat = ScriptedChat(b"\n").feed(b"a\n")
        chat.get_terminator = lambda: b";"
        chat.feed(b"b;c\n")
        assert chat.events == [
            ("data", b"a"), ("found", b"\n"),
            ("data", b"b"), ("found", b";"),
            ("data", b"c\n"),
        ]


# --------------------------------------------------------------------------
# Output: push, producers, initiate_send, close_when_done
# --------------------------------------------------------------------------


class TestPush:
    @pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
    def test_byte_like_data_is_queued(self, kind):
        chat = asynchat.async_chat()
        data = kind(b"hello\n")
        chat.push(data)
        assert list(chat.producer_fifo) == [data]
        assert chat.producer_fifo[0] is data

    @pytest.mark.parametrize("data", ["text", 10, None, [b"a"], ["a"]],
                             ids=["str", "int", "None", "list-of-bytes", "list"])
    def test_anything_else_is_a_type_error(self, data):
        chat = asynchat.async_chat()
        chat.push(b"kept")
        with pytest.raises(TypeError):
            chat.push(data)
        assert list(chat.producer_fifo) == [b"kept"]

    def test_str_is_rejected_even_with_use_encoding(self):
        chat = asynchat.async_chat()
        chat.use_encoding = 1
        with pytest.raises(TypeError):
            chat.push("text")

    def test_large_data_is_split_into_out_buffer_sized_pieces(self):
        chat = asynchat.async_chat()
        chat.ac_out_buffer_size = 4
        chat.push(b"abcdefghij")
        assert list(chat.producer_fifo) == [b"abcd", b"efgh", b"ij"]

    def test_split_of_a_memoryview(self):
        chat = asynchat.async_chat()
        chat.ac_out_buffer_size = 3
        chat.push(memoryview(b"abcdefg"))
        assert [bytes(piece) for piece in chat.producer_fifo] == [b"abc", b"def", b"g"]

    def test_data_of_exactly_the_buffer_size_is_not_split(self):
        chat = asynchat.async_chat()
        chat.ac_out_buffer_size = 4
        data = b"abcd"
        chat.push(data)
        assert chat.producer_fifo[0] is data
        assert len(chat.producer_fifo) == 1

    def test_default_split_size(self):
        chat = asynchat.async_chat()
        chat.push(b"x" * (2 * 65536 + 1))
        assert [len(piece) for piece in chat.producer_fifo] == [65536, 65536, 1]

    def test_push_starts_sending_when_connected(self):
        chat = ScriptedSender()
        chat.push(b"hello")
        assert chat.sent == [b"hello"]
        assert not chat.producer_fifo

    def test_push_of_split_data_sends_only_the_first_piece(self):
        chat = ScriptedSender()
        chat.ac_out_buffer_size = 4
        chat.push(b"abcdefghij")
        assert chat.sent == [b"abcd"]
        assert list(chat.producer_fifo) == [b"efgh", b"ij"]

    def test_push_with_producer_queues_when_not_connected(self):
        chat = asynchat.async_chat()
        producer = asynchat.simple_producer(b"data")
        chat.push_with_producer(producer)
        assert list(chat.producer_fifo) == [producer]

    def test_push_with_producer_starts_sending_when_connected(self):
        chat = ScriptedSender()
        producer = CountingProducer(b"one", b"two")
        chat.push_with_producer(producer)
        assert chat.sent == [b"one"]
        assert list(chat.producer_fifo) == [producer]
        assert producer.calls == 1

    def test_push_with_producer_accepts_plain_bytes(self):
        chat = asynchat.async_chat()
        chat.push_with_producer(b"plain")
        assert list(chat.producer_fifo) == [b"plain"]


class TestInitiateSend:
    def test_nothing_is_sent_when_not_connected(self):
        chat = ScriptedSender()
        chat.connected = False
        chat.push(b"abc")
        chat.initiate_send()
        assert chat.sent == []
        assert list(chat.producer_fifo) == [b"abc"]

    def test_one_send_per_call(self):
        chat = ScriptedSender()
        chat.connected = False
        chat.push(b"one")
        chat.push(b"two")
        chat.connected = True
        chat.initiate_send()
        assert chat.sent == [b"one"]
        assert list(chat.producer_fifo) == [b"two"]
        chat.initiate_send()
        assert chat.sent == [b"one", b"two"]
        assert not chat.producer_fifo

    def test_partial_send_leaves_the_rest_at_the_head(self):
        chat = ScriptedSender(send_results=[5, 2])
        chat.push(b"hello world")
        assert list(chat.producer_fifo) == [b" world"]
        chat.push(b"next")
        # push() called initiate_send again: two more bytes went out.
        assert chat.sent == [b"hello world", b" world"]
        assert list(chat.producer_fifo) == [b"orld", b"next"]

    def test_send_of_nothing_leaves_the_fifo_alone(self):
        chat = ScriptedSender(send_results=[0])
        data = b"stuck"
        chat.push(data)
        assert chat.sent == [data]
        assert list(chat.producer_fifo) == [data]
        assert chat.producer_fifo[0] is data

    def test_head_longer_than_the_out_buffer(self):
        chat = ScriptedSender()
        chat.connected = False
        chat.ac_out_buffer_size = 4
        chat.push_with_producer(b"abcdefghij")
        chat.connected = True
        chat.initiate_send()
        assert chat.sent == [b"abcd"]
        assert list(chat.producer_fifo) == [b"efghij"]

    def test_producer_data_is_sent_before_asking_again(self):
        chat = ScriptedSender()
        producer = CountingProducer(b"one", b"two")
        chat.push_with_producer(producer)
        chat.initiate_send()
        assert chat.sent == [b"one", b"two"]
        assert producer.calls == 2
        # An exhausted producer is dropped, and the same call goes on to
        # the next entry.
        chat.connected = False
        chat.push(b"after")
        chat.connected = True
        chat.initiate_send()
        assert producer.calls == 3
        assert chat.sent == [b"one", b"two", b"after"]
        assert not chat.producer_fifo

    def test_producer_partial_data(self):
        chat = ScriptedSender(send_results=[2])
        producer = CountingProducer(b"abcdef")
        chat.push_with_producer(producer)
        assert chat.sent == [b"abcdef"]
        assert list(chat.producer_fifo) == [b"cdef", producer]
        chat.initiate_send()
        assert chat.sent[-1] == b"cdef"
        assert list(chat.producer_fifo) == [producer]

    def test_empty_producer_is_dropped(self):
        chat = ScriptedSender()
        chat.connected = False
        empty = CountingProducer()
        chat.push_with_producer(empty)
        chat.push(b"data")
        chat.connected = True
        chat.initiate_send()
        assert empty.calls == 1
        assert chat.sent == [b"data"]
        assert not chat.producer_fifo

    def test_producer_data_larger_than_the_out_buffer(self):
        chat = ScriptedSender()
        chat.ac_out_buffer_size = 3
        producer = CountingProducer(b"abcdefg")
        chat.push_with_producer(producer)
        assert chat.sent == [b"abc"]
        assert list(chat.producer_fifo) == [b"defg", producer]

    def test_empty_bytes_entry_is_removed_and_an_empty_send_made(self):
        chat = ScriptedSender()
        chat.connected = False
        chat.push(b"")
        chat.push(b"x")
        chat.connected = True
        chat.initiate_send()
        assert chat.sent == [b""]
        assert list(chat.producer_fifo) == [b"x"]

    def test_str_from_a_producer_is_encoded_with_use_encoding(self):
        chat = ScriptedSender()
        chat.use_encoding = 1
        chat.push_with_producer(CountingProducer("caf\u00e9"))
        assert chat.sent == [b"caf\xe9"]

    def test_str_from_a_producer_is_passed_through_without_use_encoding(self):
        chat = ScriptedSender()
        chat.push_with_producer(CountingProducer("text"))
        assert chat.sent == ["text"]

    def test_os_error_from_send_goes_to_handle_error(self):
        error = OSError(errno.EPIPE, "broken pipe")
        chat = ScriptedSender(send_results=[error])
        chat.push(b"data")
        assert chat.errors == [error]
        assert list(chat.producer_fifo) == [b"data"]

    def test_other_errors_from_send_propagate(self):
        chat = ScriptedSender(send_results=[ValueError("boom")])
        with pytest.raises(ValueError):
            chat.push(b"data")
        assert chat.errors == []

    def test_close_when_done_appends_none(self):
        chat = asynchat.async_chat()
        chat.push(b"data")
        chat.close_when_done()
        assert list(chat.producer_fifo) == [b"data", None]

    def test_close_when_done_closes_once_the_fifo_drains(self):
        chat = ScriptedSender(send_results=[2])
        chat.push(b"abcd")
        chat.close_when_done()
        assert chat.closes == 0
        chat.initiate_send()
        assert chat.sent == [b"abcd", b"cd"]
        assert chat.closes == 0
        assert list(chat.producer_fifo) == [None]
        chat.initiate_send()
        assert chat.closes == 1
        assert not chat.connected
        assert not chat.producer_fifo

    def test_entries_after_none_are_left_unsent(self):
        chat = ScriptedSender()
        chat.close_when_done()
        chat.producer_fifo.append(b"late")
        assert chat.closes == 0  # close_when_done itself sends nothing
        chat.initiate_send()
        assert chat.closes == 1
        assert chat.sent == []
        assert list(chat.producer_fifo) == [b"late"]

    def test_handle_write_calls_initiate_send(self):
        class Recording(asynchat.async_chat):
            calls = 0

            def initiate_send(self):
                self.calls += 1

        chat = Recording()
        chat.handle_write()
        assert chat.calls == 1


class TestBuffersAndPredicates:
    def test_discard_buffers(self):
        chat = ScriptedChat(b"\r\n").feed(b"ab\r")
        chat._collect_incoming_data(b"x")
        incoming, fifo = chat.incoming, chat.producer_fifo
        chat.push(b"out")
        chat.discard_buffers()
        assert chat.ac_in_buffer == b""
        assert chat.incoming is incoming and incoming == []
        assert chat.producer_fifo is fifo and len(fifo) == 0

    def test_readable_is_always_true(self):
        chat = asynchat.async_chat()
        assert chat.readable() == 1
        chat.ac_in_buffer = b"x" * (chat.ac_in_buffer_size + 1)
        chat.connected = True
        assert chat.readable() == 1

    def test_writable(self):
        chat = asynchat.async_chat()
        assert chat.writable()  # not connected: wait for the connect event
        chat.connected = True
        assert not chat.writable()
        chat.producer_fifo.append(b"x")
        assert chat.writable()
        chat.producer_fifo.clear()
        chat.close_when_done()
        assert chat.writable()

    def test_handle_close_closes(self):
        class Recording(asynchat.async_chat):
            closes = 0

            def close(self):
                self.closes += 1

        chat = Recording()
        chat.handle_close()
        assert chat.closes == 1


# --------------------------------------------------------------------------
# simple_producer and find_prefix_at_end
# --------------------------------------------------------------------------


class TestSimpleProducer:
    def test_attributes(self):
        producer = asynchat.simple_producer(b"data")
        assert producer.data == b"data"
        assert producer.buffer_size == 512

    def test_more_in_buffer_size_pieces(self):
        producer = asynchat.simple_producer(b"abcdefghij", buffer_size=4)
        pieces = [producer.more() for _ in range(5)]
        assert pieces == [b"abcd", b"efgh", b"ij", b"", b""]
        assert producer.data == b""

    def test_data_of_exactly_buffer_size(self):
        producer = asynchat.simple_producer(b"abcd", 4)
        assert producer.more() == b"abcd"
        assert producer.more() == b""

    def test_default_buffer_size(self):
        producer = asynchat.simple_producer(b"x" * 1025)
        assert [len(producer.more()) for _ in range(4)] == [512, 512, 1, 0]

    def test_empty(self):
        assert asynchat.simple_producer(b"").more() == b""

    def test_remaining_data_is_visible(self):
        producer = asynchat.simple_producer(b"abcdef", 4)
        producer.more()
        assert producer.data == b"ef"


class TestFindPrefixAtEnd:
    @pytest.mark.parametrize(
        "haystack, needle, expected",
        [
            (b"qwerty\r", b"\r\n", 1),
            (b"qwertydkjf", b"\r\n", 0),
            (b"", b"\r\n", 0),
            (b"\r", b"\r\n", 1),
            (b"abc\r", b"\r\n.\r\n", 1),
            (b"abc\r\n", b"\r\n.\r\n", 2),
            (b"abc\r\n.", b"\r\n.\r\n", 3),
            (b"abc\r\n.\r", b"\r\n.\r\n", 4),
            (b"\r\n.\r", b"\r\n.\r\n", 4),
            (b"xaa", b"aab", 2),
            (b"xa", b"aab", 1),
            (b"xaba", b"abab", 3),
            (b"xab", b"abab", 2),
            (b"abc", b"c", 0),
            (b"abc", b"x", 0),
            ("qwerty\r", "\r\n", 1),
            ("qwertydkjf", "\r\n", 0),
            (b"ab", b"", -1),
        ],
    )
    def test_cases(self, haystack, needle, expected):
        assert asynchat.find_prefix_at_end(haystack, needle) == expected


# --------------------------------------------------------------------------
# Real loopback connections
# --------------------------------------------------------------------------


class LineChannel(asynchat.async_chat):
    """Collects lines; answers each with a reply when ``echo`` is set."""

    def __init__(self, sock=None, map=None, terminator=b"\n", echo=False):
        super().__init__(sock, map)
        self.set_terminator(terminator)
        self.lines = []
        self.echo = echo
        self.closed = False

    def collect_incoming_data(self, data):
        self._collect_incoming_data(data)

    def found_terminator(self):
        line = self._get_data()
        self.lines.append(line)
        if self.echo:
            self.push(b"echo:" + line + self.get_terminator())

    def handle_close(self):
        self.closed = True
        self.close()


@pytest.fixture(params=support.FAMILIES, ids=support.FAMILY_IDS)
def pair(request):
    family, host = request.param
    client, server = support.connected_pair(family, host)
    with client:
        yield client, server
    server.close()


class TestOverSockets:
    def test_lines_sent_in_pieces(self, pair, use_poll):
        client, server = pair
        chat = LineChannel(server, terminator=b"\r\n")
        for piece in (b"hel", b"lo\r", b"\nwor", b"ld\r\n\r\nlast\r", b"\n"):
            client.sendall(piece)
        support.loop_until(lambda: len(chat.lines) == 4, use_poll=use_poll)
        assert chat.lines == [b"hello", b"world", b"", b"last"]
        chat.close()

    def test_replies_pushed_from_found_terminator(self, pair, use_poll):
        client, server = pair
        chat = LineChannel(server, echo=True)
        client.sendall(b"one\ntwo\n")
        support.loop_until(lambda: len(chat.lines) == 2 and not chat.producer_fifo,
                           use_poll=use_poll)
        assert support.recv_exactly(client, 18) == b"echo:one\necho:two\n"
        chat.close()

    def test_numeric_and_none_terminators(self, pair, use_poll):
        client, server = pair

        class Framed(LineChannel):
            def found_terminator(self):
                super().found_terminator()
                if self.lines[-1].startswith(b"LEN "):
                    self.set_terminator(int(self.lines[-1][4:]))
                elif self.lines[-1] == b"RAW":
                    self.set_terminator(None)
                else:
                    self.set_terminator(b"\n")

        chat = Framed(server)
        client.sendall(b"LEN 5\nab\ncdRAW\nrest\nof it")
        support.loop_until(lambda: b"".join(chat.incoming) == b"rest\nof it", use_poll=use_poll)
        assert chat.lines == [b"LEN 5", b"ab\ncd", b"RAW"]
        assert chat.get_terminator() is None
        chat.close()

    def test_large_counted_body_spans_several_reads(self, pair, use_poll):
        client, server = pair
        body = bytes(range(256)) * 800  # more than three ac_in_buffer_size reads
        done = threading.Event()

        class Counted(LineChannel):
            def found_terminator(self):
                super().found_terminator()
                if self.get_terminator() == 0:
                    done.set()
                else:
                    self.set_terminator(len(body))

        chat = Counted(server)
        with support.LoopThread(use_poll=use_poll):
            client.sendall(b"BODY\n" + body + b"after")
            assert done.wait(support.DEADLINE)
        assert chat.lines == [b"BODY", body]
        assert chat.get_terminator() == 0
        chat.close()

    def test_large_push_arrives_whole(self, pair, use_poll):
        client, server = pair
        chat = LineChannel(server)
        data = bytes(range(256)) * 1200  # several out buffers' worth
        chat.push(data)
        assert len(chat.producer_fifo) >= 1
        with support.LoopThread(use_poll=use_poll):
            received = support.recv_exactly(client, len(data))
        assert received == data
        assert not chat.producer_fifo
        chat.close()

    def test_simple_producer_over_a_socket(self, pair, use_poll):
        client, server = pair
        chat = LineChannel(server)
        data = b"produced line\n" * 100
        chat.push_with_producer(asynchat.simple_producer(data, buffer_size=7))
        chat.close_when_done()
        support.loop_until(lambda: chat.closed or not chat.connected, use_poll=use_poll)
        assert support.recv_until_closed(client) == data
        assert server.fileno() == -1

    def test_close_when_done_closes_after_the_data(self, pair, use_poll):
        client, server = pair
        chat = LineChannel(server)
        chat.push(b"first\n")
        chat.push(b"second\n")
        chat.close_when_done()
        support.loop_until(lambda: server.fileno() == -1, use_poll=use_poll)
        assert chat.producer_fifo == collections.deque()
        assert chat not in asyncore.socket_map.values()
        assert support.recv_until_closed(client) == b"first\nsecond\n"

    def test_peer_close_reaches_handle_close(self, pair, use_poll):
        client, server = pair
        chat = LineChannel(server)
        client.sendall(b"partial")
        client.close()
        support.loop_until(lambda: chat.closed, use_poll=use_poll)
        assert chat.incoming == [b"partial"]
        assert chat.lines == []
        assert not asyncore.socket_map

    def test_default_handle_close_removes_the_channel(self, pair, use_poll):
        client, server = pair

        class Plain(asynchat.async_chat):
            def collect_incoming_data(self, data):
                pass

            def found_terminator(self):
                pass

        chat = Plain(server)
        chat.set_terminator(b"\n")
        client.shutdown(socket.SHUT_WR)
        support.loop_until(lambda: not asyncore.socket_map, use_poll=use_poll)
        assert server.fileno() == -1
        assert not chat.connected

    @pytest.mark.parametrize("family, host", support.FAMILIES, ids=support.FAMILY_IDS)
    def test_client_pushes_before_the_connection_completes(self, family, host, use_poll):
        with support.listening_socket(family, host) as listener:
            chat = LineChannel(terminator=b"\n")
            chat.create_socket(family, socket.SOCK_STREAM)
            chat.connect(listener.getsockname()[:2])
            chat.push(b"early\n")
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(support.DEADLINE)
                support.loop_until(lambda: chat.connected and not chat.producer_fifo,
                                   use_poll=use_poll)
                assert support.recv_exactly(conn, 6) == b"early\n"
                conn.sendall(b"reply\n")
                support.loop_until(lambda: chat.lines, use_poll=use_poll)
                assert chat.lines == [b"reply"]
            chat.close()

    def test_private_map(self, pair, use_poll):
        client, server = pair
        with support.private_map() as channel_map:
            chat = LineChannel(server, map=channel_map, echo=True)
            assert not asyncore.socket_map
            client.sendall(b"ping\n")
            support.loop_until(lambda: chat.lines and not chat.producer_fifo,
                               map=channel_map, use_poll=use_poll)
            assert support.recv_exactly(client, 10) == b"echo:ping\n"
            chat.close()
