"""The documented examples in examples/ run against real loopback peers."""

import http.server
import os
import select
import signal
import socket
import subprocess
import sys
import threading

import pytest

import asyncore
from support import (
    DEADLINE,
    EXAMPLES,
    HAS_IPV6,
    HOST4,
    HOST6,
    LoopThread,
    load_example,
    loop_until,
    recv_exactly,
)

http_client = load_example("http_client")
echo_server = load_example("echo_server")

BODY = b"hello from the test server\n"


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = BODY + self.path.encode("ascii") + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class LocalHTTPServer(http.server.HTTPServer):
    def server_bind(self):
        # HTTPServer.server_bind resolves the host name; loopback needs no DNS.
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = self.server_address[:2]


@pytest.fixture
def http_server():
    server = LocalHTTPServer((HOST4, 0), QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        thread.join(DEADLINE)
        server.server_close()


def check_response(data, path):
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"Content-Type: text/plain" in head
    assert body == BODY + path.encode("ascii") + b"\n"


# --------------------------------------------------------------------------
# http_client
# --------------------------------------------------------------------------


def test_http_client_fetches_a_page(http_server, use_poll, capsys):
    host, port = http_server
    client = http_client.HTTPClient(host, "/some/page", port)
    loop_until(lambda: not asyncore.socket_map, use_poll=use_poll)
    check_response(client.response, "/some/page")
    out = capsys.readouterr().out
    # Chunks are printed as bytes reprs, as in the docs.
    assert out.startswith("b'HTTP/1.0 200 ")
    assert client.buffer == b""


def test_http_client_with_private_map(http_server):
    host, port = http_server
    m = {}
    client = http_client.HTTPClient(host, "/private", port, map=m)
    assert asyncore.socket_map == {}
    loop_until(lambda: not m, map=m)
    check_response(client.response, "/private")


def test_http_client_main(http_server, capsys):
    host, port = http_server
    result = []
    # main() loops until the connection ends; a thread keeps that wait bounded.
    thread = threading.Thread(
        target=lambda: result.append(http_client.main([f"http://{host}:{port}/via/main?x=1"]))
    )
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive(), "http_client.main did not finish"
    assert result == [0]
    out = capsys.readouterr().out
    assert out.startswith("b'HTTP/1.0 200 ")
    assert "/via/main?x=1" in out


# --------------------------------------------------------------------------
# echo_server
# --------------------------------------------------------------------------


def _echo_families():
    params = [pytest.param(socket.AF_INET, HOST4, id="ipv4")]
    params.append(
        pytest.param(
            socket.AF_INET6,
            HOST6,
            id="ipv6",
            marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6"),
        )
    )
    return params


@pytest.mark.parametrize("family,host", _echo_families())
def test_echo_server_serves_several_clients(family, host, use_poll, capsys):
    server = echo_server.EchoServer(host, 0)
    address = server.socket.getsockname()[:2]
    clients = []
    try:
        with LoopThread(use_poll=use_poll):
            clients = [socket.create_connection(address, timeout=DEADLINE) for _ in range(5)]
            names = [c.getsockname() for c in clients]
            # Interleave the clients so several handlers have data at once.
            for round_ in range(3):
                messages = [b"client %d round %d\n" % (i, round_) for i in range(len(clients))]
                for c, message in zip(clients, messages, strict=True):
                    c.sendall(message)
                for c, message in zip(clients, messages, strict=True):
                    assert recv_exactly(c, len(message)) == message
            # A payload bigger than the socket buffers exercises the send buffer.
            big = os.urandom(256 * 1024)
            clients[0].sendall(big)
            assert recv_exactly(clients[0], len(big)) == big
    finally:
        for c in clients:
            c.close()
        asyncore.close_all()
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == sorted(f"Incoming connection from {name!r}" for name in names)


def test_echo_server_handler_closes_when_client_leaves():
    m = {}
    server = echo_server.EchoServer(HOST4, 0, map=m)
    try:
        address = server.socket.getsockname()
        with socket.create_connection(address, timeout=DEADLINE) as c:
            c.sendall(b"ping")
            received = []

            def echoed():
                if select.select([c], [], [], 0)[0]:
                    received.append(c.recv(100))
                return b"".join(received) == b"ping"

            loop_until(echoed, map=m)
            assert len(m) == 2
            handler = next(d for d in m.values() if d is not server)
            assert isinstance(handler, echo_server.EchoHandler)
            assert isinstance(handler, asyncore.dispatcher_with_send)
        loop_until(lambda: len(m) == 1, map=m)
        assert list(m.values()) == [server]
    finally:
        asyncore.close_all(map=m)


def _read_line(stream, deadline=DEADLINE):
    """Read one line from a subprocess pipe without blocking past the deadline."""
    data = b""
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], deadline)
        assert ready, f"no complete line from the subprocess within {deadline}s: {data!r}"
        chunk = os.read(stream.fileno(), 1)
        assert chunk, f"subprocess closed its output: {data!r}"
        data += chunk
    return data.decode()


def _default_sigint():
    # A shell starts background jobs with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the default back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    "host, shown",
    [
        pytest.param(HOST4, HOST4, id="ipv4"),
        pytest.param(
            HOST6,
            f"[{HOST6}]",
            id="ipv6",
            marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback"),
        ),
    ],
)
def test_echo_server_main_as_a_script(core, host, shown):
    # The README's quick start: the banner names an address a client can be
    # pointed at (an IPv6 one in brackets), and Ctrl-C stops the server
    # quietly, with exit status 0 and no traceback.
    env = dict(os.environ)
    env.pop("ASYNCORE_NO_EXTENSIONS", None)
    if core == "pure":
        env["ASYNCORE_NO_EXTENSIONS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-P", str(EXAMPLES / "echo_server.py"), host, "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_default_sigint,
    )
    try:
        banner = _read_line(proc.stdout)
        assert banner.startswith(f"Serving on {shown}:")
        port = int(banner.rsplit(":", 1)[1])
        clients = [socket.create_connection((host, port), timeout=DEADLINE) for _ in range(3)]
        try:
            for i, c in enumerate(clients):
                message = b"hello %d" % i
                c.sendall(message)
                assert recv_exactly(c, len(message)) == message
            for _ in clients:
                assert _read_line(proc.stdout).startswith("Incoming connection from (")
        finally:
            for c in clients:
                c.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0
    if core != "stdlib":
        assert err == b""


def test_echo_server_main_in_process(capsys):
    # main() blocks in asyncore.loop(); an ExitNow raised from a handler ends it.
    result = []

    class Stopper(asyncore.dispatcher):
        def readable(self):
            return False

        def writable(self):
            return True

        def handle_write(self):
            if "Serving on" in capsys.readouterr().out:
                raise asyncore.ExitNow

    stopper_socket = socket.socket()

    def run():
        try:
            result.append(echo_server.main([HOST4, "0"]))
        except asyncore.ExitNow:
            result.append("stopped")

    Stopper(stopper_socket)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert result == ["stopped"]
    assert asyncore.socket_map == {}


# --------------------------------------------------------------------------
# idle_timeout_server (issue 14: timers)
# --------------------------------------------------------------------------

idle_timeout_server = load_example("idle_timeout_server")


@pytest.mark.cyasyncore_only
def test_idle_timeout_server_closes_only_idle_connections(use_poll, capsys):
    m = {}
    server = idle_timeout_server.IdleEchoServer(HOST4, 0, idle=0.5, map=m)
    address = server.socket.getsockname()[:2]
    busy = socket.create_connection(address, timeout=DEADLINE)
    quiet = socket.create_connection(address, timeout=DEADLINE)
    try:
        loop_until(lambda: len(m) == 3, map=m, use_poll=use_poll)
        echoed = bytearray()

        def has(n):
            if select.select([busy], [], [], 0)[0]:
                echoed.extend(busy.recv(4096))
            return len(echoed) >= n

        # The busy client keeps talking; each echo resets its timer.
        sent = 0
        while len(m) == 3:
            busy.sendall(b"ping")
            sent += 4
            loop_until(lambda n=sent: len(m) < 3 or has(n), map=m, use_poll=use_poll)
        # The quiet one was closed by its timer: the server sees EOF on it.
        assert quiet.recv(1) == b""
        busy.sendall(b"still here")
        loop_until(lambda: has(sent + 10), map=m, use_poll=use_poll)
        assert bytes(echoed) == b"ping" * (sent // 4) + b"still here"
    finally:
        busy.close()
        quiet.close()
        asyncore.close_all(m)
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("Closing idle connection from ") for line in lines) == 1


@pytest.mark.cyasyncore_only
def test_idle_timeout_server_main_as_a_script(core):
    env = dict(os.environ)
    env.pop("ASYNCORE_NO_EXTENSIONS", None)
    if core == "pure":
        env["ASYNCORE_NO_EXTENSIONS"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-P", str(EXAMPLES / "idle_timeout_server.py"), HOST4, "0",
         "--idle", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        banner = _read_line(proc.stdout)
        port = int(banner.rsplit(":", 1)[1])
        with socket.create_connection((HOST4, port), timeout=DEADLINE) as c:
            c.sendall(b"hello")
            assert recv_exactly(c, 5) == b"hello"
            # Silent now: the server closes it after its idle timeout.
            assert c.recv(1) == b""
        assert _read_line(proc.stdout).startswith("Incoming connection from (")
        assert _read_line(proc.stdout).startswith("Closing idle connection from (")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=DEADLINE)
    assert err == b""
