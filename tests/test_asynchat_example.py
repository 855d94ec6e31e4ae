"""examples/kv_server.py: the server in a loop thread, driven by blocking clients."""

import os
import selectors
import socket
import subprocess
import sys
import threading

import pytest

import support

EXAMPLE = support.EXAMPLES / "kv_server.py"
kv = support.load_example("kv_server")


class ObservedServer(kv.KVServer):
    """Lets the test wait, without polling, for connections to close."""

    def __init__(self, *args, **kwargs):
        self.closed_condition = threading.Condition()
        super().__init__(*args, **kwargs)

    def connection_closed(self, channel):
        with self.closed_condition:
            super().connection_closed(channel)
            self.closed_condition.notify_all()

    def wait_closed(self, count):
        with self.closed_condition:
            reached = self.closed_condition.wait_for(
                lambda: self.connections_closed >= count, timeout=support.DEADLINE
            )
        assert reached, f"{self.connections_closed} of {count} connections closed"


@pytest.fixture(params=support.FAMILIES, ids=support.FAMILY_IDS)
def server(request, use_poll):
    _, host = request.param
    with support.private_map() as channel_map:
        srv = ObservedServer((host, 0), map=channel_map)
        with support.LoopThread(map=channel_map, use_poll=use_poll):
            yield srv


def raw_connection(srv):
    return socket.create_connection(srv.address, timeout=support.DEADLINE)


def test_set_get_delete(server):
    with kv.KVClient(server.address) as client:
        assert client.get("colour") is None
        client.set("colour", "blue")
        assert client.get("colour") == b"blue"
        client.set("colour", "green")
        assert client.get(b"colour") == b"green"
        assert client.delete("colour") is True
        assert client.delete("colour") is False
        assert client.get("colour") is None
        client.quit()
    server.wait_closed(1)


def test_value_with_spaces_and_empty_value(server):
    with kv.KVClient(server.address) as client:
        client.set("motto", "more than one word ")
        client.set("nothing", "")
        assert client.get("motto") == b"more than one word "
        assert client.get("nothing") == b""
        client.quit()


def test_put_stores_any_bytes(server):
    value = b"line one\r\nline two\n\x00\xff" + b"GET x\r\n" + bytes(range(256))
    with kv.KVClient(server.address) as client:
        client.put("blob", value)
        assert client.get("blob") == value
        # The channel is back on line terminators after the body.
        client.set("after", "fine")
        assert client.get("after") == b"fine"
        client.quit()
    assert server.store[b"blob"] == value


def test_put_of_an_empty_value(server):
    with kv.KVClient(server.address) as client:
        client.put("empty", b"")
        client.set("next", "still parsed as a command")
        assert client.get("empty") == b""
        assert client.get("next") == b"still parsed as a command"
        client.quit()


def test_large_values_both_ways(server):
    value = bytes(range(256)) * 1500  # several times ac_out_buffer_size
    with kv.KVClient(server.address) as client:
        client.put("big", value)
        assert client.get("big") == value
        client.quit()


def test_pipelined_requests_in_one_write(server):
    with raw_connection(server) as sock:
        sock.sendall(
            b"SET a 1\r\nGET a\r\nPUT b 3\r\nx\ny"
            b"GET b\r\nDEL a\r\nGET a\r\nQUIT\r\nGET b\r\n"
        )
        replies = support.recv_until_closed(sock)
    assert replies == (
        b"OK\r\nVALUE 1\r\n1\r\nOK\r\nVALUE 3\r\nx\ny\r\n"
        b"DELETED\r\nNOT_FOUND\r\nBYE\r\n"
    )
    server.wait_closed(1)


def test_requests_arriving_a_byte_at_a_time(server):
    request = b"SET k value\r\nPUT p 2\r\n\r\nGET p\nQUIT\r\n"
    with raw_connection(server) as sock:
        for i in range(len(request)):
            sock.sendall(request[i:i + 1])
        replies = support.recv_until_closed(sock)
    assert replies == b"OK\r\nOK\r\nVALUE 2\r\n\r\n\r\nBYE\r\n"


@pytest.mark.parametrize(
    "request_line, reply",
    [
        (b"FLY away", b"ERROR unknown command"),
        (b"", b"ERROR unknown command"),
        (b"SET lonely", b"ERROR usage: SET <key> <value>"),
        (b"GET", b"ERROR usage: GET <key>"),
        (b"GET two words", b"ERROR usage: GET <key>"),
        (b"DEL", b"ERROR usage: DEL <key>"),
        (b"PUT k many", b"ERROR usage: PUT <key> <length>"),
        (b"PUT k -1", b"ERROR usage: PUT <key> <length>"),
    ],
)
def test_bad_requests_get_an_error_and_the_connection_stays(server, request_line, reply):
    with kv.KVClient(server.address) as client:
        assert client.request(request_line) == reply
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.quit()


def test_commands_are_case_insensitive(server):
    with kv.KVClient(server.address) as client:
        assert client.request("set k v") == b"OK"
        assert client.request("Get k") == b"VALUE 1"
        assert client.read_reply() == b"v"
        client.quit()


def test_overlong_line_is_refused_and_the_connection_closed(server):
    with raw_connection(server) as sock:
        sock.sendall(b"SET k " + b"x" * kv.MAX_LINE)
        assert support.recv_until_closed(sock) == b"ERROR line too long\r\n"
    server.wait_closed(1)
    assert b"k" not in server.store


def test_client_vanishing_mid_put(server):
    with raw_connection(server) as sock:
        sock.sendall(b"PUT k 100\r\nonly part of it")
    server.wait_closed(1)
    assert b"k" not in server.store


def test_interleaved_clients_share_one_store(server):
    clients = [kv.KVClient(server.address) for _ in range(5)]
    try:
        for round_number in range(3):
            for i, client in enumerate(clients):
                client.set(f"own{i}", f"{i}:{round_number}")
                client.set("shared", f"{i}:{round_number}")
            for i, client in enumerate(clients):
                assert client.get(f"own{i}") == f"{i}:{round_number}".encode()
                assert client.get("shared") == f"{len(clients) - 1}:{round_number}".encode()
        for client in clients:
            client.quit()
    finally:
        for client in clients:
            client.close()
    server.wait_closed(len(clients))


def test_concurrent_clients_in_threads(server):
    workers = 8
    rounds = 25
    start = threading.Barrier(workers, timeout=support.DEADLINE)
    errors = []

    def work(n):
        try:
            with kv.KVClient(server.address) as client:
                start.wait()
                for r in range(rounds):
                    key = f"w{n}-{r}"
                    value = bytes([n, r]) * (r + 1) + b"\r\n"
                    if r % 2:
                        client.put(key, value)
                    else:
                        client.set(key, value.hex())
                        value = value.hex().encode()
                    assert client.get(key) == value
                    if r % 3 == 0:
                        assert client.delete(key)
                client.quit()
        except BaseException as exc:  # reported in the main thread
            errors.append((n, exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(support.DEADLINE * 3)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    server.wait_closed(workers)
    expected_keys = {f"w{n}-{r}".encode() for n in range(workers) for r in range(rounds) if r % 3}
    assert set(server.store) == expected_keys


# --------------------------------------------------------------------------
# main()
# --------------------------------------------------------------------------


def _read_line_within_deadline(stream):
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(support.DEADLINE):
            raise AssertionError("the server printed nothing in time")
    return stream.readline()


@pytest.mark.parametrize("extra_args", [[], ["--use-poll"]], ids=["select", "poll"])
def test_main_serves_then_exits_after_the_requested_connections(core, extra_args):
    env = dict(os.environ)
    env.pop("ASYNCORE_NO_EXTENSIONS", None)
    if core == "pure":
        env["ASYNCORE_NO_EXTENSIONS"] = "1"
    command = [sys.executable, "-P", str(EXAMPLE), "--port", "0", "--connections", "2"]
    with subprocess.Popen(
        command + extra_args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    ) as process:
        try:
            banner = _read_line_within_deadline(process.stdout)
            assert banner.startswith("listening on 127.0.0.1:"), banner
            port = int(banner.rsplit(":", 1)[1])
            with kv.KVClient(("127.0.0.1", port)) as first:
                first.set("k", "from the first client")
                with kv.KVClient(("127.0.0.1", port)) as second:
                    assert second.get("k") == b"from the first client"
                    second.quit()
                first.quit()
            assert process.wait(support.DEADLINE) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(support.DEADLINE)
        stderr = process.stderr.read()
    assert "Traceback" not in stderr


def test_main_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as raised:
        kv.main(["--help"])
    assert raised.value.code == 0
    assert "--connections" in capsys.readouterr().out
