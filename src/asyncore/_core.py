"""Chooses the core that runs the loop and dispatch.

Two cores export the same names: the compiled ``_asyncore_core`` and the
pure-Python ``asyncore._core_py``.  At import the compiled one is used unless
it is missing or ``ASYNCORE_NO_EXTENSIONS`` is set to anything non-empty.
``use()`` switches the active core at run time; the test suite calls it to
run every test against both.
"""

import importlib
import os
import sys

# What every core must provide (checked by the tests).
EXPORTS = (
    "NAME",
    "HAS_POLL",
    "backend",
    "read",
    "write",
    "_exception",
    "readwrite",
    "poll",
    "poll2",
    "loop",
    "chat_consume",
)

CORE_NAMES = ("compiled", "pure")
_MODULES = {"compiled": "_asyncore_core", "pure": "asyncore._core_py"}

_active = None


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


# Why default() chose the pure core, or None when it chose the compiled one;
# ``python -m asyncore`` reports it.
pure_reason = None


def default():
    """The core used at import: compiled where possible, unless told otherwise."""
    global pure_reason
    if os.environ.get("ASYNCORE_NO_EXTENSIONS"):
        pure_reason = "ASYNCORE_NO_EXTENSIONS is set"
        return load("pure")
    try:
        module = load("compiled")
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name == _MODULES["compiled"]:
            pure_reason = "the compiled extension is not installed (a pure wheel or build)"
        else:
            pure_reason = f"the compiled extension failed to import: {type(exc).__name__}: {exc}"
        return load("pure")
    pure_reason = None
    return module


def hooks():
    """The compiled core's module for the dispatcher classes, or None.

    The classes install its descriptors (see ``_asyncore_core.Watched``) so
    that a kernel interest set sees their state change.  They are installed
    whenever the extension can be imported, whichever core is active, so
    switching cores never changes a class; with ASYNCORE_NO_EXTENSIONS set
    the extension is not imported at all and the classes stay plain.
    """
    if os.environ.get("ASYNCORE_NO_EXTENSIONS"):
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
    global _active
    module = load(name) if isinstance(name, str) else name
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
