"""The core chosen on a free-threaded interpreter, simulated.

These machines have no free-threaded Python (3.13t, 3.14t...), so a fresh
interpreter is made to look like one before it imports asyncore: either its
``sys._is_gil_enabled()`` says the GIL is off, or, with that probe gone,
``sysconfig`` says the build has ``Py_GIL_DISABLED``.  Without the GIL the
pure core must be chosen, the extension never imported (importing it would
turn the GIL back on for the whole process), the dispatcher classes left
plain, and ``asyncore._core.why()`` must say so; with the GIL held, a
free-threaded build is like any other.  The GitHub workflow runs the suite
on real free-threaded builds as well.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.cyasyncore_only

# Applied in the child before asyncore is imported.
GIL_OFF = "sys._is_gil_enabled = lambda: False"
GIL_ON_FREE_THREADED_BUILD = textwrap.dedent(
    """
    import sysconfig
    _real = sysconfig.get_config_var
    sysconfig.get_config_var = lambda name: 1 if name == "Py_GIL_DISABLED" else _real(name)
    sys._is_gil_enabled = lambda: True
    """
)
NO_PROBE_FREE_THREADED_BUILD = textwrap.dedent(
    """
    import sysconfig
    _real = sysconfig.get_config_var
    sysconfig.get_config_var = lambda name: 1 if name == "Py_GIL_DISABLED" else _real(name)
    if hasattr(sys, "_is_gil_enabled"):
        del sys._is_gil_enabled
    """
)

# Report what the child chose, then push one byte through a socketpair with
# the chosen core, so the choice is also a working one.
CHILD = """
import json, socket, sys
{patch}
import asyncore, asynchat
from asyncore import _core

class Reader(asyncore.dispatcher):
    got = b""
    def handle_read(self):
        self.got += self.recv(16)

a, b = socket.socketpair()
m = {{}}
r = Reader(a, map=m)
b.sendall(b"x")
asyncore.loop(timeout=5, count=1, map=m)
r.close()
b.close()
print(json.dumps({{
    "core": asyncore.CORE,
    "asynchat_core": asynchat._core.active(),
    "why": _core.why(),
    "extension_imported": "_asyncore_core" in sys.modules,
    "plain_classes": type(vars(asyncore.dispatcher)["connected"]) is bool,
    "got": r.got.decode(),
}}))
"""


def _child(patch, **env_extra):
    env = dict(os.environ)
    env.pop("ASYNCORE_NO_EXTENSIONS", None)
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-P", "-c", CHILD.format(patch=patch)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _have_extension():
    return importlib.util.find_spec("_asyncore_core") is not None


def test_without_the_gil_the_pure_core_is_chosen_and_the_extension_left_alone():
    from asyncore import _core

    got = _child(GIL_OFF)
    assert got == {
        "core": "pure",
        "asynchat_core": "pure",
        "why": _core.FREE_THREADED_REASON,
        "extension_imported": False,
        "plain_classes": True,
        "got": "x",
    }


@pytest.mark.skipif(sys.version_info < (3, 13), reason="no free-threaded builds before 3.13")
def test_without_the_probe_the_build_configuration_decides():
    from asyncore import _core

    got = _child(NO_PROBE_FREE_THREADED_BUILD)
    assert (got["core"], got["why"], got["extension_imported"]) == (
        "pure",
        _core.FREE_THREADED_REASON,
        False,
    )
    assert got["got"] == "x"


def test_a_free_threaded_build_holding_the_gil_uses_the_compiled_core():
    if not _have_extension():
        pytest.skip("the compiled core is not installed")
    got = _child(GIL_ON_FREE_THREADED_BUILD)
    assert got == {
        "core": "compiled",
        "asynchat_core": "compiled",
        "why": "the compiled extension is installed",
        "extension_imported": True,
        "plain_classes": False,
        "got": "x",
    }


def test_the_environment_variable_is_named_as_the_reason():
    got = _child("", ASYNCORE_NO_EXTENSIONS="1")
    assert (got["core"], got["why"], got["extension_imported"]) == (
        "pure",
        "ASYNCORE_NO_EXTENSIONS is set",
        False,
    )


def test_a_missing_extension_is_named_as_the_reason():
    # The import system is told the extension does not exist; the GIL is
    # said to be held, so that on a real free-threaded run only the missing
    # extension decides.
    hide = textwrap.dedent(
        """
        sys._is_gil_enabled = lambda: True
        import importlib.abc
        class _Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "_asyncore_core":
                    raise ModuleNotFoundError("No module named '_asyncore_core'", name=name)
                return None
        sys.meta_path.insert(0, _Hide())
        """
    )
    got = _child(hide)
    assert got["core"] == "pure"
    assert got["why"] == (
        "the compiled extension is not installed (a pure wheel or build)"
    )
    assert got["plain_classes"] is True
