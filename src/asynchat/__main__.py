"""``python -m asynchat``: the same report as ``python -m asyncore``.

It runs our asyncore/__main__.py by path rather than importing
``asyncore.__main__``, so that it reports even when the ``asyncore`` this
Python finds is another distribution's, which has no ``__main__``.
"""

import pathlib
import runpy
import sys

_REPORT = pathlib.Path(__file__).resolve().parent.parent / "asyncore" / "__main__.py"


def main():
    report = runpy.run_path(str(_REPORT), run_name="asyncore._report")
    return report["main"](prog="python -m asynchat")


if __name__ == "__main__":
    sys.exit(main())
