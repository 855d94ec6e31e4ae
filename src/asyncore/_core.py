"""Chooses the core that runs the loop and dispatch.

Two cores export the same names: the compiled ``_asyncore_core`` and the
pure-Python ``asyncore._core_py``.  At import the compiled one is used unless
it is missing, ``ASYNCORE_NO_EXTENSIONS`` is set to anything non-empty, or
the interpreter runs without the GIL (a free-threaded build: see
``gil_disabled()``); ``why()`` says which of these decided.  ``use()``
switches the active core at run time; the test suite calls it to run every
test against both.
"""

import importlib
import os
import sys

# What every core must provide (checked by the tests).
EXPORTS = (
    "NAME",
    "backend",
    "read",
    "write",
    "_exception",
    "readwrite",
    "poll",
    "poll2",
    "loop",
    "chat_consume",
    # Timers and hand-overs (issue 14): the functions take the map resolved
    # and the arguments as a tuple; ``timers`` is the module the passes use.
    "Timer",
    "call_later",
    "call_every",
    "call_soon_threadsafe",
    "close_timers",
    "timers",
)

CORE_NAMES = ("compiled", "pure")
_MODULES = {"compiled": "_asyncore_core", "pure": "asyncore._core_py"}

_active = None
# Why the active core is the one it is, for why() (and ``python -m asyncore``).
_reason = "not chosen yet"

# The free-threaded decision (README, "Free-threaded Python"): the compiled
# core keeps borrowed pointers to channels in registries shared by every
# thread's loop, follows maps through a dict watcher and reads type version
# tags, all of which are sound only while the GIL serialises the threads.
# Importing the extension on a free-threaded interpreter would make CPython
# turn the GIL back on for the whole process, so it is not imported there.
FREE_THREADED_REASON = (
    "this interpreter runs without the GIL (free-threaded build), and the "
    "compiled core relies on the GIL; importing it would turn the GIL back on "
    "for the whole process"
)


def gil_disabled():
    """Whether this interpreter runs without the GIL at this moment.

    A free-threaded build (3.13t, 3.14t...) started with ``PYTHON_GIL=1`` or
    ``-X gil=1`` holds the GIL like any other build, and there the compiled
    core is safe.
    """
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_enabled is not None:
        return not is_enabled()
    if sys.version_info < (3, 13):
        return False    # no free-threaded builds before 3.13
    # The probe is a CPython detail: without it, trust how the build was made.
    import sysconfig

    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def load(name):
    """Import and return the core called ``name`` ("compiled" or "pure")."""
    try:
        module = importlib.import_module(_MODULES[name])
    except KeyError:
        raise ValueError(f"unknown core {name!r}; expected one of {CORE_NAMES}") from None
    missing = [n for n in EXPORTS if not hasattr(module, n)]
    if missing:
        raise ImportError(f"core {name!r} ({module.__file__}) lacks {missing}")
    return module


def _choose():
    """(core name, reason) for the core used at import."""
    if os.environ.get("ASYNCORE_NO_EXTENSIONS"):
        return "pure", "ASYNCORE_NO_EXTENSIONS is set"
    if gil_disabled():
        return "pure", FREE_THREADED_REASON
    try:
        load("compiled")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == _MODULES["compiled"]:
            return "pure", "the compiled extension is not installed (a pure wheel or build)"
        return "pure", f"the compiled extension failed to import: {type(exc).__name__}: {exc}"
    return "compiled", "the compiled extension is installed"


# Why default() chose the pure core, or None when it chose the compiled one;
# ``python -m asyncore`` reports it.
pure_reason = None


def default():
    """The core used at import: compiled where possible, unless told otherwise."""
    global _reason, pure_reason
    name, _reason = _choose()
    pure_reason = _reason if name == "pure" else None
    return load(name)


def why():
    """One line saying why the active core is the one it is."""
    return _reason


def hooks():
    """The compiled core's module for the dispatcher classes, or None.

    The classes install its descriptors (see ``_asyncore_core.Watched``) so
    that a kernel interest set sees their state change.  They are installed
    whenever the extension can be imported, whichever core is active, so
    switching cores never changes a class; with ASYNCORE_NO_EXTENSIONS set
    the extension is not imported at all and the classes stay plain, and
    so on an interpreter without the GIL (see FREE_THREADED_REASON).
    """
    if os.environ.get("ASYNCORE_NO_EXTENSIONS") or gil_disabled():
        return None
    try:
        return importlib.import_module(_MODULES["compiled"])
    except ImportError:
        return None


def active():
    """Name of the active core."""
    return _active.NAME


def use(name):
    """Make ``name`` the active core of the asyncore and asynchat modules."""
    global _active, _reason
    module = load(name) if isinstance(name, str) else name
    if _active is not module:
        _reason = "chosen at run time through asyncore._core.use()"
    _active = module
    asyncore = sys.modules.get("asyncore")
    if asyncore is not None:
        asyncore._install_core(module)
    asynchat = sys.modules.get("asynchat")
    if asynchat is not None and hasattr(asynchat, "_install_core"):
        asynchat._install_core(module)
    return module


def init():
    """Pick the default core; called once by ``asyncore`` at import."""
    global _active
    _active = default()
    return _active
