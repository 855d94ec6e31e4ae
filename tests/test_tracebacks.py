"""handle_error()'s compact traceback names 3.11's functions, in 3.11's order.

Programs log that line, and test suites match it: the functions a failure
passed through on its way from the loop to the handler must be the ones
3.11 named, whatever runs them (the compiled core has them in C).  The only
extra frame allowed is chat_consume, between async_chat.handle_read and its
callbacks (README, "Differences from 3.11").
"""

import re
import socket

import pytest

import asynchat
import asyncore
from support import DEADLINE, loop_until, private_map


def frames_of(line):
    return [part.split("|")[1] for part in re.findall(r"\[([^\]]*)\]", line)]


def without_chat_consume(names):
    return [n for n in names if n != "chat_consume"]


class Reporting:
    """Records the traceback handle_error() would log, then closes."""

    def handle_error(self):
        self.report = asyncore.compact_traceback()[3]
        self.close()


class HandlerFails(Reporting, asyncore.dispatcher_with_send):
    def handle_read(self):
        self.recv(10)
        raise ValueError("handler failed")


class RecvFails(Reporting, asyncore.dispatcher_with_send):
    def handle_read(self):
        self.recv(-1)     # ValueError from the socket's recv


class SendFails(Reporting, asyncore.dispatcher_with_send):
    def handle_read(self):
        self.recv(10)
        self.send("text")     # TypeError: str is not bytes


class CallbackFails(Reporting, asynchat.async_chat):
    def __init__(self, sock, map):
        super().__init__(sock, map)
        self.set_terminator(b"\n")

    def collect_incoming_data(self, data):
        pass

    def found_terminator(self):
        raise KeyError("callback failed")


@pytest.mark.parametrize("use_poll", [False, True], ids=["select", "poll"])
@pytest.mark.parametrize(
    "cls, expected",
    [
        (HandlerFails, ["read", "handle_read_event", "handle_read"]),
        (RecvFails, ["read", "handle_read_event", "handle_read", "recv"]),
        (CallbackFails, ["read", "handle_read_event", "handle_read", "found_terminator"]),
    ],
    ids=["handler", "recv", "async_chat-callback"],
)
def test_functions_named_as_in_3_11(cls, expected, use_poll):
    if use_poll:
        expected = ["readwrite"] + expected[1:]
    with private_map() as map:
        ours, peer = socket.socketpair()
        with peer:
            chan = cls(ours, map)
            peer.sendall(b"line\n")
            assert loop_until(lambda: hasattr(chan, "report"), map=map, use_poll=use_poll,
                              timeout=DEADLINE)
            names = without_chat_consume(frames_of(chan.report))
            assert names == expected, chan.report


def test_a_failing_send_names_send_innermost():
    with private_map() as map:
        ours, peer = socket.socketpair()
        with peer:
            chan = SendFails(ours, map)
            peer.sendall(b"x")
            assert loop_until(lambda: hasattr(chan, "report"), map=map)
            names = frames_of(chan.report)
            # 3.11's send concatenated onto its out_buffer: the TypeError
            # comes from dispatcher_with_send.send itself.
            assert names[:3] == ["read", "handle_read_event", "handle_read"], chan.report
            assert names[-1] == "send", chan.report
