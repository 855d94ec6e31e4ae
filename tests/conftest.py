"""Test harness shared by every test module.

Every test runs once per core (``compiled`` and ``pure``).  A missing
compiled core is an error, not a silent skip; set ``ASYNCORE_TEST_CORES=pure``
to test an install that has no extension on purpose (the pure wheel).  On an
interpreter running without the GIL only the pure core is tested, as only it
is used there.

Run under python3.11 the suite becomes its own oracle: ``asyncore`` and
``asynchat`` are then CPython's originals, the only core is ``stdlib``, and
tests marked ``cyasyncore_only`` are skipped.  ``make test-oracle`` does this
to prove that the tests encode 3.11's behaviour and nothing of ours.

Tests marked ``compiled_only`` are about the compiled core itself (its
kernel set, its timer unit) or drive every core themselves: they run once,
under ``compiled``, and are skipped where that core is not under test.

The loop-mode axis is the ``use_poll`` fixture (``select`` and ``poll``,
from ``support.LOOP_MODES``): a test that takes it runs in both modes.
"""

import gc
import os
import sys
import threading
import warnings

import pytest

ORACLE = sys.version_info < (3, 12)

if ORACLE:
    # 3.11 warns on import; swallow it once so filterwarnings=error holds.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asynchat  # noqa: F401
        import asyncore  # noqa: F401
    CORES = ["stdlib"]
else:
    import asynchat  # noqa: F401
    from asyncore import _core

    _wanted = os.environ.get("ASYNCORE_TEST_CORES", "")
    # Without the GIL the compiled core is never used (asyncore._core), and
    # importing it would turn the GIL back on for the rest of the run.
    _usable = [c for c in _core.CORE_NAMES if c != "compiled" or not _core.gil_disabled()]
    CORES = [c for c in _wanted.split(",") if c] or _usable

from support import LOOP_MODE_IDS, LOOP_MODES  # noqa: E402  (after the 3.11 import above)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "cyasyncore_only: tests of cyasyncore's own additions; skipped on the 3.11 oracle",
    )
    config.addinivalue_line(
        "markers",
        "compiled_only: tests of the compiled core (or driving every core themselves); "
        "collected once, under the compiled core",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc):
    # A compiled-only test parametrizes the core itself, as a parametrize
    # mark, which takes precedence over the core fixture's own params.
    # (Marked first, before pytest's hooks read the marks.)
    if ORACLE or metafunc.definition.get_closest_marker("compiled_only") is None:
        return
    if "compiled" in CORES:
        cores = ["compiled"]
    else:
        skip = pytest.mark.skip(reason="about the compiled core, which is not under test")
        cores = [pytest.param("compiled", marks=skip)]
    metafunc.definition.add_marker(pytest.mark.parametrize("core", cores, indirect=True))


def pytest_collection_modifyitems(config, items):
    if not ORACLE:
        return
    skip = pytest.mark.skip(reason="cyasyncore addition; not part of 3.11")
    for item in items:
        # A compiled-only test is a cyasyncore addition by definition.
        if "cyasyncore_only" in item.keywords or "compiled_only" in item.keywords:
            item.add_marker(skip)


# Session-scoped, so pytest runs all of one core's tests, then the other's:
# switching cores exchanges methods on our classes (asyncore._install_methods),
# and doing that around every test would use up the classes' version tags.
@pytest.fixture(params=CORES, autouse=True, scope="session")
def core(request):
    """Run the test against one core; yields its name."""
    if ORACLE:
        yield "stdlib"
        return
    from support import using_core

    with using_core(request.param):
        yield request.param


@pytest.fixture(params=LOOP_MODES, ids=LOOP_MODE_IDS)
def use_poll(request):
    """Run the test with ``use_poll=False`` (select) and ``use_poll=True`` (poll)."""
    return request.param


def _open_fds():
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: descriptor accounting is skipped
        return None


def _new_fds(before):
    after = _open_fds()
    if before is None or after is None:
        return []
    return sorted(after - before, key=int)


@pytest.fixture(autouse=True)
def leak_guard(core):
    """Fail a test that leaves channels in the global map, threads, or descriptors."""
    import asyncore

    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    saved_map = asyncore.socket_map
    yield
    # A test that rebinds asyncore.socket_map must put it back.
    rebound = asyncore.socket_map is not saved_map
    asyncore.socket_map = saved_map
    leftover = dict(asyncore.socket_map)
    if leftover:
        asyncore.close_all(ignore_all=True)
    new_threads = [t for t in threading.enumerate() if t not in threads_before]
    for t in new_threads:
        t.join(5.0)
    leaked_threads = [t for t in new_threads if t.is_alive()]
    leaked_fds = _new_fds(fds_before)
    if leaked_fds:
        # Sockets dropped without close() are freed by the collector; only
        # what survives a collection is a leak.  (Collecting after every
        # test would triple the suite's run time.)
        gc.collect()
        leaked_fds = _new_fds(fds_before)
    problems = []
    if rebound:
        problems.append("asyncore.socket_map was rebound and not restored")
    if leftover:
        problems.append(f"channels left in asyncore.socket_map: {leftover!r}")
    if leaked_threads:
        problems.append(f"threads still running: {leaked_threads!r}")
    if leaked_fds:
        details = []
        for fd in leaked_fds:
            try:
                details.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
            except OSError:
                details.append(fd)
        problems.append(f"descriptors leaked: {details}")
    if problems:
        pytest.fail("; ".join(problems))


# Outcomes counted per core, for the closing lines of a run: pytest's own
# summary adds both cores together, and `make test` prints one line per
# Python and core at the very end (it passes ASYNCORE_TEST_SUMMARY, a file
# the lines are appended to).
_core_of = {}
_outcomes = {}


def pytest_collection_finish(session):
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        # (A compiled-only test in a run without that core counts for none.)
        if params.get("core") in CORES:
            _core_of[item.nodeid] = params["core"]


def pytest_runtest_logreport(report):
    core = _core_of.get(report.nodeid)
    if core is None:
        return
    counts = _outcomes.setdefault(core, {"seconds": 0.0})
    counts["seconds"] += report.duration
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        else:
            outcome = report.outcome
    elif report.failed:
        outcome = "error"
    elif report.skipped:
        outcome = "skipped"
    else:
        return
    counts[outcome] = counts.get(outcome, 0) + 1


def _core_line(core, counts):
    order = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
    parts = [f"{counts[k]} {k}" for k in order if counts.get(k)]
    return f"{core} core: {', '.join(parts) or 'nothing ran'} ({counts['seconds']:.0f} s)"


def pytest_terminal_summary(terminalreporter):
    if not _outcomes:
        return
    terminalreporter.write_sep("-", "per core")
    python = "Python %d.%d.%d" % sys.version_info[:3]
    lines = [_core_line(core, _outcomes[core]) for core in sorted(_outcomes)]
    for line in lines:
        terminalreporter.write_line(line)
    path = os.environ.get("ASYNCORE_TEST_SUMMARY")
    if path:
        with open(path, "a") as f:
            f.writelines(f"{python}, {line}\n" for line in lines)
