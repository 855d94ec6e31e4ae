"""Load generator for the echo stress test; runs in its own process.

Opens CONNS connections to each given port and pipelines sequence-numbered
16-byte records (``b"CCCCC SSSSSSSSS\\n"``: connection id, sequence number)
through each, keeping up to WINDOW records in flight, until every connection
has had ROUNDS records echoed back.  Every record that comes back must be the
next one expected on its connection, byte for byte; the first mismatch ends
the run.  Prints one JSON line with the totals and exits 0 only if all is well.

Usage: echo_client.py HOST PORT[,PORT...] CONNS ROUNDS WINDOW DEADLINE_SECONDS
"""

import json
import selectors
import socket
import sys
import time

RECORD = 16


def record(conn_id, seq):
    return b"%05d %09d\n" % (conn_id, seq)


class Conn:
    def __init__(self, conn_id, addr, rounds, window):
        self.id = conn_id
        self.sock = socket.create_connection(addr, timeout=10)
        self.sock.setblocking(False)
        self.rounds = rounds
        self.window = window
        self.next_send = 0
        self.next_recv = 0
        self.out = b""
        self.inbuf = b""
        self.mask = selectors.EVENT_READ | selectors.EVENT_WRITE

    def done(self):
        return self.next_recv == self.rounds

    def want_write(self):
        return bool(self.out) or (
            self.next_send < self.rounds and self.next_send - self.next_recv < self.window
        )

    def on_write(self):
        if not self.out:
            room = min(
                self.window - (self.next_send - self.next_recv), self.rounds - self.next_send
            )
            first = self.next_send
            self.out = b"".join(record(self.id, s) for s in range(first, first + room))
            self.next_send += room
        sent = self.sock.send(self.out)
        self.out = self.out[sent:]

    def on_read(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise AssertionError(
                f"connection {self.id}: server closed after {self.next_recv} records"
            )
        buf = self.inbuf + data
        whole = len(buf) - len(buf) % RECORD
        for offset in range(0, whole, RECORD):
            got = buf[offset : offset + RECORD]
            want = record(self.id, self.next_recv)
            if got != want:
                raise AssertionError(
                    f"connection {self.id}: expected {want!r}, got {got!r} "
                    f"after {self.next_recv} intact records"
                )
            self.next_recv += 1
        self.inbuf = buf[whole:]


def main():
    host, ports, conns, rounds, window, deadline = sys.argv[1:7]
    ports = [int(p) for p in ports.split(",")]
    conns, rounds, window, deadline = int(conns), int(rounds), int(window), float(deadline)
    sel = selectors.DefaultSelector()
    all_conns = []
    for port in ports:
        for _ in range(conns):
            c = Conn(len(all_conns), (host, port), rounds, window)
            all_conns.append(c)
            sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    start = time.monotonic()
    end = start + deadline
    pending = len(all_conns)
    error = None
    try:
        while pending:
            if time.monotonic() > end:
                raise AssertionError(
                    f"deadline of {deadline}s passed with {pending} connections unfinished"
                )
            for key, events in sel.select(1.0):
                c = key.data
                if events & selectors.EVENT_WRITE and c.want_write():
                    c.on_write()
                if events & selectors.EVENT_READ:
                    c.on_read()
                    if c.done():
                        sel.unregister(c.sock)
                        c.sock.close()
                        pending -= 1
                        continue
                mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.want_write() else 0)
                if mask != c.mask:
                    sel.modify(c.sock, mask, c)
                    c.mask = mask
    except Exception as exc:  # reported to the parent, which fails the test
        error = f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - start
    for c in all_conns:
        c.sock.close()
    total = sum(c.next_recv for c in all_conns)
    print(
        json.dumps(
            {
                "round_trips": total,
                "connections": len(all_conns),
                "seconds": elapsed,
                "error": error,
            }
        )
    )
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
