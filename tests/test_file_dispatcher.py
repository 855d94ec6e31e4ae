"""asyncore.file_wrapper and asyncore.file_dispatcher on real pipes."""

import errno
import gc
import io
import os
import re
import socket
import warnings

import pytest

import asyncore
from support import PipeReader, PipeWriter, loop_until, private_map

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file_dispatcher is POSIX only")


@pytest.fixture
def pipe():
    """(read_fd, write_fd); either end may be closed by the test through ``close``."""
    r, w = os.pipe()
    ends = {r, w}

    def close(fd):
        ends.discard(fd)
        os.close(fd)

    yield r, w, close
    for fd in ends:
        os.close(fd)


# --------------------------------------------------------------------------
# file_wrapper
# --------------------------------------------------------------------------


def test_wrapper_dups_the_descriptor(pipe):
    r, w, close = pipe
    wrapper = asyncore.file_wrapper(r)
    try:
        assert wrapper.fd != r
        assert wrapper.fileno() == wrapper.fd
        assert os.path.sameopenfile(wrapper.fd, r)
        close(r)
        os.write(w, b"still open")
        assert wrapper.recv(100) == b"still open"
    finally:
        wrapper.close()


def test_wrapper_read_and_write(pipe):
    r, w, _ = pipe
    reader = asyncore.file_wrapper(r)
    writer = asyncore.file_wrapper(w)
    try:
        assert writer.send(b"abc") == 3
        assert writer.write(b"def") == 3
        assert reader.recv(4) == b"abcd"
        assert reader.read(10) == b"ef"
    finally:
        reader.close()
        writer.close()


def test_wrapper_getsockopt():
    r, w = os.pipe()
    os.close(w)
    wrapper = asyncore.file_wrapper(r)
    os.close(r)
    try:
        assert wrapper.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        assert wrapper.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR, 0) == 0
        assert wrapper.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR, None) == 0
        for args in [
            (socket.SOL_SOCKET, socket.SO_ERROR, 4),
            (socket.SOL_SOCKET, socket.SO_REUSEADDR),
            (socket.IPPROTO_TCP, socket.SO_ERROR),
        ]:
            with pytest.raises(NotImplementedError) as info:
                wrapper.getsockopt(*args)
            assert info.value.args == ("Only asyncore specific behaviour implemented.",)
    finally:
        wrapper.close()


def test_wrapper_close_is_idempotent(pipe):
    r, _, _ = pipe
    wrapper = asyncore.file_wrapper(r)
    dup = wrapper.fd
    assert wrapper.close() is None
    assert wrapper.fd == -1
    assert wrapper.fileno() == -1
    with pytest.raises(OSError):
        os.fstat(dup)
    wrapper.close()
    assert wrapper.fd == -1


def test_wrapper_close_after_fd_closed_elsewhere(pipe):
    r, _, _ = pipe
    wrapper = asyncore.file_wrapper(r)
    os.close(wrapper.fd)
    with pytest.raises(OSError) as info:
        wrapper.close()
    assert info.value.errno == errno.EBADF
    # The wrapper forgot the descriptor before the failing close: no retry later.
    assert wrapper.fd == -1
    wrapper.close()


def test_wrapper_warns_when_collected_open(pipe):
    r, _, _ = pipe
    wrapper = asyncore.file_wrapper(r)
    dup = wrapper.fd
    with pytest.warns(ResourceWarning) as record:
        del wrapper
        gc.collect()
    messages = [str(w.message) for w in record]
    assert any(
        re.fullmatch(r"unclosed file <asyncore\.file_wrapper object at 0x[0-9a-fA-F]+>", m)
        for m in messages
    ), messages
    # The collected wrapper closed its descriptor as well as warning.
    with pytest.raises(OSError):
        os.fstat(dup)


def test_wrapper_closed_before_collection_does_not_warn(pipe):
    r, _, _ = pipe
    wrapper = asyncore.file_wrapper(r)
    wrapper.close()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        del wrapper
        gc.collect()
    assert [w for w in record if issubclass(w.category, ResourceWarning)] == []


# --------------------------------------------------------------------------
# file_dispatcher
# --------------------------------------------------------------------------


def test_dispatcher_state(pipe):
    r, _, _ = pipe
    assert os.get_blocking(r)
    d = asyncore.file_dispatcher(r)
    try:
        assert d.connected is True
        assert isinstance(d.socket, asyncore.file_wrapper)
        assert d._fileno == d.socket.fd != r
        assert asyncore.socket_map == {d.socket.fd: d}
        # The caller's descriptor is made non-blocking (and with it the dup).
        assert not os.get_blocking(r)
        assert not os.get_blocking(d.socket.fd)
        assert d.addr is None
        assert repr(d) == f"<asyncore.file_dispatcher connected at {id(d):#x}>"
    finally:
        d.close()
    assert asyncore.socket_map == {}
    assert d.socket.fd == -1


def test_dispatcher_accepts_objects_with_fileno(pipe):
    r, _, _ = pipe
    with io.FileIO(r, "rb", closefd=False) as f:
        with private_map() as m:
            d = asyncore.file_dispatcher(f, map=m)
            assert m == {d.socket.fd: d}
            assert os.path.sameopenfile(d.socket.fd, r)
            assert not os.get_blocking(r)
            d.close()


def test_dispatcher_with_private_map(pipe):
    r, _, _ = pipe
    with private_map() as m:
        d = asyncore.file_dispatcher(r, m)
        assert d._map is m
        assert m == {d._fileno: d}
        assert asyncore.socket_map == {}
        d.close()
        assert m == {}


def test_set_file_replaces_the_wrapper(pipe):
    r, w, _ = pipe
    with private_map() as m:
        d = asyncore.file_dispatcher(r, m)
        old = d.socket
        d.del_channel()
        old.close()
        assert d.set_file(w) is None
        assert d.socket is not old
        assert os.path.sameopenfile(d.socket.fd, w)
        assert m == {d.socket.fd: d}
        d.close()


def test_expt_event_goes_to_handle_expt(pipe):
    r, _, _ = pipe

    class Expt(asyncore.file_dispatcher):
        def handle_expt(self):
            self.got_expt = True

    d = Expt(r)
    try:
        d.handle_expt_event()
        assert d.got_expt
    finally:
        d.close()


def test_send_to_closed_reader_closes(pipe):
    r, w, close = pipe
    writer = PipeWriter(w)
    close(r)
    try:
        assert writer.send(b"x") == 0
        assert writer.events == ["close"]
        assert asyncore.socket_map == {}
    finally:
        writer.close()


def test_recv_on_empty_pipe_raises_would_block(pipe):
    r, _, _ = pipe
    d = PipeReader(r)
    try:
        with pytest.raises(BlockingIOError):
            d.recv(10)
    finally:
        d.close()


# Data followed by end-of-file, as the reader's events record it, by use_poll.
DATA_THEN_EOF = {
    # select() sees end-of-file as readability: recv() gets b'' and closes.
    False: [("read", b"hello"), "close", ("read", b"")],
    # poll() reports data and the hang-up together: read, then handle_close.
    True: [("read", b"hello"), "close"],
}


class TestPipesInTheLoop:
    @pytest.fixture(autouse=True)
    def _mode(self, use_poll):
        self.use_poll = use_poll
        self.data_then_eof = DATA_THEN_EOF[use_poll]

    def test_read_then_eof(self, pipe):
        r, w, close = pipe
        reader = PipeReader(r)
        try:
            os.write(w, b"hello")
            close(w)
            loop_until(lambda: "close" in reader.events, use_poll=self.use_poll)
            assert reader.events == self.data_then_eof
            assert asyncore.socket_map == {}
        finally:
            reader.close()

    def test_write_through_loop(self, pipe):
        r, w, _ = pipe
        writer = PipeWriter(w)
        try:
            writer.pending = b"x" * 200000  # more than a pipe holds
            received = bytearray()

            def drained():
                try:
                    received.extend(os.read(r, 1 << 20))
                except BlockingIOError:
                    pass
                return len(received) == 200000

            os.set_blocking(r, False)
            loop_until(drained, use_poll=self.use_poll)
            assert bytes(received) == b"x" * 200000
            assert writer.pending == b""
            assert len(writer.events) > 1  # the pipe filled up at least once
            assert all(sent > 0 for _, sent in writer.events)
        finally:
            writer.close()

    def test_reader_and_writer_in_one_map(self, pipe):
        r, w, close = pipe
        with private_map() as m:
            reader = PipeReader(r, m)
            writer = PipeWriter(w, m)
            close(w)  # the writer's dup is now the only write end
            writer.pending = b"ping"
            loop_until(lambda: reader.events, map=m, use_poll=self.use_poll)
            assert reader.events == [("read", b"ping")]
            assert writer.events == [("write", 4)]
            writer.close()
            loop_until(lambda: "close" in reader.events, map=m, use_poll=self.use_poll)
            assert m == {}

