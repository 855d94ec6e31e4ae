"""``python -m asyncore``: say which asyncore this is and how it runs.

With several packages claiming the ``asyncore`` import name (pyasyncore,
standard-asyncore, this one), the quickest answer to "which one did I get?"
is the version, the active core and poller backend, and the file imported.
"""

import sys

import asyncore


def _version():
    version = getattr(asyncore, "__version__", None)
    if version:
        return version
    from importlib import metadata

    try:
        return metadata.version("cyasyncore")
    except metadata.PackageNotFoundError:
        return "unknown (not installed as a distribution)"


def main():
    print(f"cyasyncore {_version()}")
    print(f"core:    {getattr(asyncore, 'CORE', 'unknown')}")
    print(f"backend: {getattr(asyncore, 'BACKEND', 'unknown')}")
    print(f"file:    {asyncore.__file__}")
    print(f"python:  {sys.version.split()[0]} ({sys.executable})")
    if not hasattr(asyncore, "CORE"):
        # pyasyncore and standard-asyncore install the same asyncore/__init__.py
        # path as we do; whichever was installed last owns that file.
        print(
            "warning: this asyncore/__init__.py is not cyasyncore's; another "
            "distribution installed over it (pip install --force-reinstall cyasyncore)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
