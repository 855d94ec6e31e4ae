"""Stress tests: opt-in, long, and run on both cores.

The files here are named ``stress_*.py`` rather than ``test_*.py``, so the
ordinary run (``make test``, which collects ``tests/``) and the oracle run
never pick them up, with no skipped-test noise either; ``make stress`` names
them explicitly (``-o python_files='stress_*.py'``).  Unlike a skip behind
an environment variable, there is nothing to forget to set in CI.

The suite's ``core`` fixture is overridden so each stress test runs once per
core named in ``ASYNCORE_STRESS_CORES`` (default ``compiled,pure``, as
``make stress`` passes; ``compiled`` alone is the quick check of the
extension); under python3.11 it runs against the stdlib modules, which gives
figures to compare with.
"""

import os
import sys

import pytest

# As in tests/conftest.py: under 3.11 the stdlib modules are the subject.
ORACLE = sys.version_info < (3, 12)

if ORACLE:
    STRESS_CORES = ["stdlib"]
else:
    _wanted = os.environ.get("ASYNCORE_STRESS_CORES", "compiled,pure")
    STRESS_CORES = [c for c in _wanted.split(",") if c]


@pytest.fixture(params=STRESS_CORES, autouse=True)
def core(request):
    if ORACLE:
        yield "stdlib"
        return
    from support import using_core

    with using_core(request.param):
        yield request.param
