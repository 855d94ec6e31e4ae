"""Descriptors that change under a loop: reused behind a channel, closed during a wait.

3.11 builds its wait set from the map on every pass and hands it to
select(2) or poll(2), so (issue 12):

- a descriptor number reused behind a registered channel (``os.dup2`` over
  it) is the new file from the next pass on;
- in select mode, a channel closed while the loop waits (from another
  thread) is just not ready: select() checked its descriptors when the
  wait began.  One already closed when the pass begins still fails it with
  EBADF.

Each case runs on both cores, in both loop modes, on a map's first pass
(the compiled core's poll(2) snapshot) and on a settled map (its kernel
set), and on the 3.11 oracle.
"""

import errno
import os
import socket
import threading

import pytest

import asyncore
from support import DEADLINE, private_map, wait_until_blocked


# Passes before the scenario: none (the first pass over the map) or enough
# for the compiled core to move the map to its kernel set.
@pytest.fixture(params=[0, 3], ids=["first-pass", "settled"])
def settle(request):
    return request.param


class Reader(asyncore.dispatcher_with_send):
    """Overrides neither predicate: the compiled core asks it only when it changes."""

    def handle_read(self):
        self.received = getattr(self, "received", b"") + self.recv(100)


class Quiet(asyncore.dispatcher):
    """Waited on for reading only; remembers being read."""

    reads = 0

    def writable(self):
        return False

    def handle_read(self):
        Quiet.reads += 1
        self.recv(100)


def run(m, use_poll, passes, timeout=0.05):
    for _ in range(passes):
        asyncore.loop(timeout=timeout, use_poll=use_poll, map=m, count=1)


# ------------------------------------------------- a number reused by dup2


@pytest.mark.parametrize("how", ["idle", "touched", "old-file-kept"])
def test_a_number_dup2ed_over_a_channel_reads_the_new_file(use_poll, settle, how):
    # The old file goes with the dup2 (or, kept open through a duplicate,
    # stays silent); the new one has data, which must reach handle_read.
    with private_map() as m:
        old_ours, old_peer = socket.socketpair()
        new_ours, new_peer = socket.socketpair()
        kept = None
        try:
            chan = Reader(old_ours, map=m)
            run(m, use_poll, settle)
            if how == "old-file-kept":
                kept = os.dup(old_ours.fileno())
            os.dup2(new_ours.fileno(), old_ours.fileno(), inheritable=False)
            new_peer.sendall(b"new file")
            if how == "touched":
                # Asked again: the next pass must wait on the new file.
                chan.connected = True
                run(m, use_poll, 1)
            else:
                run(m, use_poll, 3)
            assert getattr(chan, "received", b"") == b"new file"
        finally:
            if kept is not None:
                os.close(kept)
            for s in (old_peer, new_ours, new_peer):
                s.close()


def test_a_number_dup2ed_over_one_of_many_idle_channels(use_poll):
    # An idle map larger than one quiet pass checks at once: the reused
    # number is still found within a bounded number of quiet passes.
    with private_map() as m:
        socks = []
        try:
            chans = []
            for _ in range(40):
                a, b = socket.socketpair()
                socks += [a, b]
                chans.append(Reader(a, map=m))
            run(m, use_poll, 3, timeout=0)
            victim = chans[len(chans) // 2]
            new_ours, new_peer = socket.socketpair()
            socks += [new_ours, new_peer]
            os.dup2(new_ours.fileno(), victim.socket.fileno(), inheritable=False)
            new_peer.sendall(b"new file")
            run(m, use_poll, 4, timeout=0)
            assert getattr(victim, "received", b"") == b"new file"
        finally:
            for s in socks:
                s.close()


# ------------------------------------------ closed while the loop waits


@pytest.mark.parametrize("last", [True, False], ids=["last-channel", "with-others"])
def test_closing_a_channel_from_another_thread_while_the_loop_waits(use_poll, settle, last):
    # The way test suites stop their servers: loop() runs in a thread, the
    # main thread closes a channel while that loop is blocked in its wait.
    Quiet.reads = 0
    with private_map() as m:
        a, a_peer = socket.socketpair()
        b, b_peer = socket.socketpair()
        try:
            closing = Quiet(a, map=m)
            if not last:
                other = Quiet(b, map=m)
            run(m, use_poll, settle)
            errors = []

            def serve():
                try:
                    if last:
                        # Ends when the map is empty, after this wait times out.
                        asyncore.loop(timeout=0.3, use_poll=use_poll, map=m)
                    else:
                        asyncore.loop(timeout=DEADLINE, use_poll=use_poll, map=m, count=1)
                except BaseException as exc:
                    errors.append(exc)

            server = threading.Thread(target=serve)
            server.start()
            try:
                wait_until_blocked(server)
                closing.close()
                if not last:
                    # End the wait: the other channel becomes readable.
                    b_peer.sendall(b"wake")
            finally:
                server.join(DEADLINE)
            assert not server.is_alive()
            assert errors == []
            assert list(m.values()) == ([] if last else [other])
            assert Quiet.reads == (0 if last else 1)
        finally:
            for s in (a_peer, b, b_peer):
                s.close()


def test_a_descriptor_closed_before_the_pass_still_fails_select(use_poll, settle):
    # Closed behind the loop's back (still in the map) before the pass
    # begins: select() fails with EBADF; poll() reports POLLNVAL.  A
    # settled map in the compiled core learns of it from its first quiet
    # wait (README, differences), so the answer may come a pass later.
    with private_map() as m:
        a, a_peer = socket.socketpair()
        try:
            chan = Quiet(a, map=m)
            run(m, use_poll, settle)
            chan.socket.close()
            passes = 2 if settle else 1
            if use_poll:
                run(m, use_poll, passes)
                assert not m
            else:
                with pytest.raises(OSError) as info:
                    run(m, use_poll, passes)
                assert info.value.errno == errno.EBADF
        finally:
            a_peer.close()
