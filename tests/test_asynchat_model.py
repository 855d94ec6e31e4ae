"""async_chat against a reference model, on random streams and random splits.

A small protocol mixes every kind of terminator: lines under a bytes
terminator, ``LEN:<n>`` lines announcing a body read with a numeric
terminator, ``TERM:<i>`` lines switching to another bytes terminator and
``RAW`` switching to None (the rest of the stream).  Hypothesis generates
streams of such records (line data drawn from the terminators' own bytes, so
terminator prefixes and accidental terminators are common) and cuts them
into reads at random points.

The reference model never looks at the reads to find records: it splits
the whole stream with ``bytes.find`` and slicing.  From that split it
predicts, after every read, what async_chat must have delivered: each
record is complete as soon as its terminator has arrived, and of the record
in progress everything has been collected except the longest proper prefix
of the terminator that the received bytes end with, which waits in
``ac_in_buffer``.
"""

import socket
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import asynchat
import support

TERMINATORS = (b"\n", b"\r\n", b"\r\n.\r\n", b"||", b"aab", b"\x00")
# Bytes that make up the terminators, plus one that appears in none.
ALPHABET = sorted(set(b"".join(TERMINATORS)) | {ord("x")})

# The model and the channel under test switch terminators by this one rule.
# Each step returns (next terminator, line terminator to come back to).


def protocol_step(was_body, line_terminator, record):
    if was_body:
        return line_terminator, line_terminator
    if record.startswith(b"LEN:") and record[4:].isdigit():
        return int(record[4:]), line_terminator
    if record.startswith(b"TERM:") and record[5:].isdigit():
        index = int(record[5:])
        if index < len(TERMINATORS):
            return TERMINATORS[index], TERMINATORS[index]
    if record == b"RAW":
        return None, line_terminator
    return line_terminator, line_terminator


# --------------------------------------------------------------------------
# The reference model
# --------------------------------------------------------------------------


@dataclass
class Record:
    start: int  # first byte of the record's data
    end: int  # first byte after its terminator
    data: bytes
    active: object  # the terminator it was read under
    at_found: object  # what get_terminator() returns inside found_terminator


@dataclass
class Tail:
    """The record that never completes: it runs to the end of the stream."""

    start: int
    active: object


def split_stream(stream, first_terminator):
    """Cut the whole stream into records, the plain way."""
    records = []
    pos = 0
    terminator = line_terminator = first_terminator
    while True:
        # 3.11 treats every false terminator (None, 0) as "collect it all".
        if not terminator:
            return records, Tail(pos, terminator)
        if isinstance(terminator, int):
            if len(stream) - pos < terminator:
                return records, Tail(pos, terminator)
            end = data_end = pos + terminator
            at_found = 0
        else:
            data_end = stream.find(terminator, pos)
            if data_end < 0:
                return records, Tail(pos, terminator)
            end = data_end + len(terminator)
            at_found = terminator
        records.append(Record(pos, end, stream[pos:data_end], terminator, at_found))
        was_body = isinstance(terminator, int)
        terminator, line_terminator = protocol_step(
            was_body, line_terminator, stream[pos:data_end]
        )
        pos = end


def held_back(pending, terminator):
    """Length of the longest proper prefix of terminator that pending ends with."""
    if not isinstance(terminator, (bytes, bytearray)) or not terminator:
        return 0
    return max(
        (n for n in range(1, len(terminator)) if pending.endswith(terminator[:n])),
        default=0,
    )


def predict(stream, first_terminator, read_ends):
    """What async_chat must report for the stream arriving in reads ending at read_ends.

    Returns (found, after_reads):
    found: one (data, terminator, ac_in_buffer) per found_terminator call;
    after_reads: one (records completed, data collected of the record in
    progress, ac_in_buffer, terminator) per read.
    """
    records, tail = split_stream(stream, first_terminator)
    found = []
    after_reads = []
    done = 0
    for received in read_ends:
        while done < len(records) and records[done].end <= received:
            record = records[done]
            found.append((record.data, record.at_found, stream[record.end:received]))
            done += 1
        current = records[done] if done < len(records) else tail
        pending = stream[current.start:received]
        keep = held_back(pending, current.active)
        collected = pending[: len(pending) - keep]
        buffered = pending[len(pending) - keep:]
        if isinstance(current.active, int) and current.active:
            terminator = current.active - len(pending)
        else:
            terminator = current.active
        after_reads.append((done, collected, buffered, terminator))
    return found, after_reads


# --------------------------------------------------------------------------
# The channel under test
# --------------------------------------------------------------------------


class ProtocolChat(asynchat.async_chat):
    """Follows protocol_step; records what it sees from the callbacks.

    ``observe`` says from which callbacks the channel reads ac_in_buffer:
    "never", "found" (found_terminator) or "always" (both callbacks).
    Reading it must not change what happens next, so the runs that never
    look check the unobserved path.
    """

    def __init__(self, first_terminator, sock=None, map=None, observe="found"):
        super().__init__(sock, map)
        self.set_terminator(first_terminator)
        self.observe = observe
        self.line_terminator = first_terminator
        self.in_body = False
        self.pieces = []
        self.empty_collects = 0
        # Collected bytes that ac_in_buffer did not start with at the time.
        self.misplaced_collects = []
        self.found = []
        self.closed = False

    def collect_incoming_data(self, data):
        if not data:
            self.empty_collects += 1
        if self.observe == "always" and not self.ac_in_buffer.startswith(data):
            self.misplaced_collects.append((bytes(data), bytes(self.ac_in_buffer)))
        self.pieces.append(bytes(data))

    def found_terminator(self):
        record = b"".join(self.pieces)
        self.pieces = []
        buffered = None if self.observe == "never" else bytes(self.ac_in_buffer)
        self.found.append((record, self.get_terminator(), buffered))
        was_body, self.in_body = self.in_body, False
        terminator, self.line_terminator = protocol_step(was_body, self.line_terminator, record)
        self.in_body = isinstance(terminator, int) and not was_body and bool(terminator)
        self.set_terminator(terminator)

    def state(self):
        return (len(self.found), b"".join(self.pieces), self.ac_in_buffer, self.get_terminator())

    def handle_close(self):
        self.closed = True
        self.close()


class ScriptedProtocolChat(ProtocolChat):
    def __init__(self, first_terminator, observe="found"):
        super().__init__(first_terminator, observe=observe)
        self.script = []

    def recv(self, buffer_size):
        return self.script.pop(0)


# --------------------------------------------------------------------------
# Streams
# --------------------------------------------------------------------------

line_data = st.lists(st.sampled_from(ALPHABET), max_size=8).map(bytes)
body_data = st.binary(max_size=12) | st.lists(st.sampled_from(ALPHABET), max_size=12).map(bytes)

record_ops = st.one_of(
    st.tuples(st.just("line"), line_data),
    st.tuples(st.just("line"), line_data),
    st.tuples(st.just("body"), body_data),
    st.tuples(st.just("term"), st.integers(0, len(TERMINATORS) - 1)),
)
final_ops = st.one_of(
    st.tuples(st.just("end"), line_data),  # a record left incomplete
    st.tuples(st.just("raw"), body_data),
    st.tuples(st.just("empty-body"), body_data),
)


@st.composite
def streams(draw):
    """(first terminator, stream bytes) following the protocol, mostly."""
    first = draw(st.sampled_from(TERMINATORS))
    ops = draw(st.lists(record_ops, max_size=10))
    last_kind, last_data = draw(final_ops)
    terminator = first
    out = []
    for kind, arg in ops:
        if kind == "line":
            out.append(arg + terminator)
        elif kind == "body":
            out.append(b"LEN:%d" % len(arg) + terminator + arg)
        else:
            out.append(b"TERM:%d" % arg + terminator)
            terminator = TERMINATORS[arg]
    if last_kind == "raw":
        out.append(b"RAW" + terminator + last_data)
    elif last_kind == "empty-body":
        # A zero count is false, so 3.11 collects everything after it.
        out.append(b"LEN:0" + terminator + last_data)
    else:
        out.append(last_data)
    return first, b"".join(out)


@st.composite
def split_streams(draw):
    first, stream = draw(streams())
    cuts = draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 2))
    # Repeated cuts give empty reads, which must change nothing.
    read_ends = sorted(cuts) + [len(stream)]
    return first, stream, read_ends


# --------------------------------------------------------------------------
# The properties
# --------------------------------------------------------------------------


@settings(
    max_examples=500,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(split_streams(), st.sampled_from(["never", "found", "always"]))
def test_scripted_reads_match_the_model(case, observe):
    first, stream, read_ends = case
    chat = ScriptedProtocolChat(first, observe)
    after_reads = []
    start = 0
    for end in read_ends:
        chat.script.append(stream[start:end])
        chat.handle_read()
        after_reads.append(chat.state())
        start = end
    expected_found, expected_after_reads = predict(stream, first, read_ends)
    if observe == "never":
        expected_found = [(data, at_found, None) for data, at_found, _ in expected_found]
    assert chat.found == expected_found
    assert after_reads == expected_after_reads
    assert chat.empty_collects == 0
    assert chat.misplaced_collects == []


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(streams())
def test_result_does_not_depend_on_the_split(case):
    first, stream = case
    whole = ScriptedProtocolChat(first)
    whole.script.append(stream)
    whole.handle_read()
    byte_by_byte = ScriptedProtocolChat(first)
    for i in range(len(stream)):
        byte_by_byte.script.append(stream[i:i + 1])
        byte_by_byte.handle_read()
    records = [(data, at_found) for data, at_found, _ in whole.found]
    assert [(data, at_found) for data, at_found, _ in byte_by_byte.found] == records
    # The terminator and any held-back prefix are the same however the
    # bytes arrived; so is everything delivered so far.
    assert byte_by_byte.state() == whole.state()


def _transport_pair(kind):
    if kind == "unix":
        first, second = socket.socketpair()
        first.settimeout(support.DEADLINE)
        return first, second
    return support.connected_pair()


TRANSPORTS = ["tcp"] + (["unix"] if support.HAS_UNIX else [])


@settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    split_streams(),
    st.integers(1, 32),
    st.sampled_from(TRANSPORTS),
    st.sampled_from(support.LOOP_MODES),
    st.sampled_from(["found", "always"]),
)
def test_real_sockets_match_the_model(case, in_buffer_size, transport, use_poll, observe):
    first, stream, read_ends = case
    client, server = _transport_pair(transport)
    with client, support.private_map() as channel_map:
        chat = ProtocolChat(first, server, channel_map, observe)
        # A small receive size forces many reads whatever the kernel merges.
        chat.ac_in_buffer_size = in_buffer_size
        start = 0
        for end in read_ends:
            client.sendall(stream[start:end])
            start = end
        client.shutdown(socket.SHUT_WR)
        support.loop_until(lambda: chat.closed, map=channel_map, use_poll=use_poll)

    records, _ = split_stream(stream, first)
    assert [(data, at_found) for data, at_found, _ in chat.found] == [
        (record.data, record.at_found) for record in records
    ]
    for (_, _, buffered), record in zip(chat.found, records, strict=True):
        # Whatever the reads were, the buffer then holds the next bytes.
        assert stream[record.end:].startswith(buffered)
        assert len(buffered) < in_buffer_size
    _, expected_final = predict(stream, first, [len(stream)])
    assert [chat.state()] == expected_final
    assert chat.empty_collects == 0
    assert chat.misplaced_collects == []


@pytest.mark.parametrize("first", TERMINATORS)
def test_model_agrees_with_a_hand_worked_example(first):
    # A fixed stream checks the model itself, independently of async_chat.
    stream = b"hi" + first + b"LEN:3" + first + b"abc" + b"RAW" + first + b"tail"
    records, tail = split_stream(stream, first)
    assert [(r.data, r.at_found) for r in records] == [
        (b"hi", first),
        (b"LEN:3", first),
        (b"abc", 0),
        (b"RAW", first),
    ]
    assert tail.active is None
    assert stream[tail.start:] == b"tail"
    found, after = predict(stream, first, [1, len(stream)])
    assert after[0] == (0, b"h", b"", first)
    assert after[1] == (4, b"tail", b"", None)
    assert found[-1] == (b"RAW", first, b"tail")
