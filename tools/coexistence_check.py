"""Run inside a scenario venv of tools/coexistence.sh: which asyncore loads, and does it work?

    python -P coexistence_check.py --asyncore DIST --asynchat DIST [--core CORE] [--ftp] [--smtp]

DIST is the distribution that must own the imported module (cyasyncore,
pyasyncore, standard-asyncore...); --core the asyncore.CORE cyasyncore must
run.  --ftp serves a pyftpdlib FTP server on loopback and checks a STOR then
RETR round trip of 256 KiB through it; --smtp sends a message through a
standard-smtpd SMTPServer (both are asyncore/asynchat programs).  Exits non-zero
with the reason on the first thing that does not hold.
"""

import argparse
import importlib
import logging
import os
import pathlib
import sys
import tempfile
import threading
from importlib import metadata

TIMEOUT = 20.0


def owner(path):
    """The distribution whose RECORD lists ``path``, or None."""
    path = pathlib.Path(path).resolve()
    for dist in metadata.distributions():
        for file in dist.files or ():
            if file.name == path.name and pathlib.Path(dist.locate_file(file)).resolve() == path:
                return dist.metadata["Name"]
    return None


def check_module(name, want):
    module = importlib.import_module(name)
    origin = getattr(module, "__file__", None)
    if origin is None:
        sys.exit(f"FAIL: {name} is a namespace package with no __init__.py (an uninstall left it)")
    got = owner(origin)
    if got is None or got.lower() != want.lower():
        sys.exit(f"FAIL: {name} loaded from {origin}, owned by {got}; wanted {want}")
    if not hasattr(module, "dispatcher" if name == "asyncore" else "async_chat"):
        sys.exit(f"FAIL: {name} from {origin} lacks its classes")
    return module


def loop_in_thread(step, stop):
    """Run ``step()`` (one pass of a server's loop) in a thread until ``stop`` is set."""

    def run():
        while not stop.is_set():
            step()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def ftp_round_trip():
    import ftplib

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    home = tempfile.mkdtemp()
    authorizer = DummyAuthorizer()
    authorizer.add_user("user", "secret", home, perm="elradfmw")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer})
    # Its per-session INFO lines would drown the scenario log; a handler of
    # our own also stops its loop from installing its console handler.
    logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())
    logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
    server = FTPServer(("127.0.0.1", 0), handler)
    port = server.socket.getsockname()[1]
    stop = threading.Event()
    # The server's own loop, one pass at a time (serve_forever() would log a
    # banner each pass).
    thread = loop_in_thread(lambda: server.ioloop.loop(timeout=0.05, blocking=False), stop)
    payload = os.urandom(256 * 1024)
    try:
        with ftplib.FTP() as ftp:
            ftp.connect("127.0.0.1", port, timeout=TIMEOUT)
            ftp.login("user", "secret")
            with tempfile.TemporaryFile() as f:
                f.write(payload)
                f.seek(0)
                ftp.storbinary("STOR blob", f)
            chunks = []
            ftp.retrbinary("RETR blob", chunks.append)
            ftp.quit()
    finally:
        stop.set()
        thread.join(TIMEOUT)
        server.close_all()
    if b"".join(chunks) != payload:
        sys.exit("FAIL: the FTP RETR did not return what STOR sent")
    if pathlib.Path(home, "blob").read_bytes() != payload:
        sys.exit("FAIL: the FTP server stored something else")
    return "ftp STOR/RETR 256 KiB ok"


def smtp_round_trip():
    import smtplib
    import warnings

    with warnings.catch_warnings():
        # standard-smtpd warns on import that smtpd left the standard library.
        warnings.simplefilter("ignore", DeprecationWarning)
        import smtpd

    import asyncore

    received = []

    class Server(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            received.append((mailfrom, rcpttos, data))

    server = Server(("127.0.0.1", 0), None)
    port = server.socket.getsockname()[1]
    stop = threading.Event()
    thread = loop_in_thread(lambda: asyncore.loop(timeout=0.05, count=1), stop)
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
            client.sendmail("a@example.org", ["b@example.org"], "Subject: hi\r\n\r\nhello\r\n")
    finally:
        stop.set()
        thread.join(TIMEOUT)
        asyncore.close_all()
    if len(received) != 1 or received[0][1] != ["b@example.org"] or b"hello" not in received[0][2]:
        sys.exit(f"FAIL: smtpd received {received!r}")
    return "smtpd message ok"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--asyncore", required=True)
    parser.add_argument("--asynchat", required=True)
    parser.add_argument("--core")
    parser.add_argument("--ftp", action="store_true")
    parser.add_argument("--smtp", action="store_true")
    args = parser.parse_args()

    asyncore = check_module("asyncore", args.asyncore)
    asynchat = check_module("asynchat", args.asynchat)
    if asynchat.asyncore is not asyncore:
        sys.exit(f"FAIL: asynchat uses {asynchat.asyncore.__file__}, not {asyncore.__file__}")
    said = [f"asyncore from {args.asyncore}", f"asynchat from {args.asynchat}"]
    if args.core:
        core = getattr(asyncore, "CORE", None)
        if core != args.core:
            sys.exit(f"FAIL: asyncore.CORE is {core!r}, wanted {args.core!r}")
        said.append(f"CORE={core}")
    if args.ftp:
        said.append(ftp_round_trip())
    if args.smtp:
        said.append(smtp_round_trip())
    print("    ok: " + ", ".join(said))


if __name__ == "__main__":
    main()
