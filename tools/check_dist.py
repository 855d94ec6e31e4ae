"""Check what a built sdist or wheel carries: python tools/check_dist.py FILE...

The sdist must be able to build from scratch and run the tests: the Cython
sources and headers, the stubs, tests and examples, but no generated C and no
build products.  A wheel carries the two packages with py.typed and their
stubs under _cyasyncore/ (never as top-level asyncore/ or asynchat/, the
paths other distributions own too) and cyasyncore.pth; a binary wheel adds
the compiled core (its four extension modules) and its stub, a pure wheel
has neither; no wheel carries sources of the build (.pyx, .pxd, headers, .c).
"""

import fnmatch
import sys
import tarfile
import zipfile

SDIST_REQUIRED = [
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "src/_asyncore_core.pyx",
    "src/_asyncore_core.pyi",
    "src/_asyncore_timers.pyx",
    "src/_asyncore_timers.pxd",
    "src/_asyncore_state.pyx",
    "src/_asyncore_state.pxd",
    "src/_asyncore_kset.pyx",
    "src/_asyncore_kset.pxd",
    "src/_asyncore_methods.pyx",
    "src/includes/*.pxd",
    "src/cyasyncore.pth",
    "src/includes/*.h",
    "src/asyncore/__init__.py",
    "src/asyncore/__init__.pyi",
    "src/asyncore/py.typed",
    "src/asynchat/__init__.py",
    "src/asynchat/__init__.pyi",
    "src/asynchat/py.typed",
    "tests/conftest.py",
    "tests/support.py",
    "tests/test_*.py",
    "examples/*.py",
]
SDIST_FORBIDDEN = [
    "*.so",
    "*.pyd",
    "*.o",
    "*.pyc",
    "src/_asyncore_core.c",
    "src/_asyncore_timers.c",
    "src/_asyncore_state.c",
    "src/_asyncore_kset.c",
    "src/_asyncore_methods.c",
    "build/*",
    "*.venv*/*",
    "*site-packages/*",
    "bench/*",
]

WHEEL_REQUIRED = [
    "cyasyncore.pth",
    "_cyasyncore/asyncore/__init__.py",
    "_cyasyncore/asyncore/__init__.pyi",
    "_cyasyncore/asyncore/__main__.py",
    "_cyasyncore/asyncore/py.typed",
    "_cyasyncore/asynchat/__init__.py",
    "_cyasyncore/asynchat/__init__.pyi",
    "_cyasyncore/asynchat/__main__.py",
    "_cyasyncore/asynchat/py.typed",
    "*.dist-info/METADATA",
]
BINARY_REQUIRED = [
    "_asyncore_core.*.so|_asyncore_core.*.pyd",
    "_asyncore_core.pyi",
    "_asyncore_timers.*.so|_asyncore_timers.*.pyd",
    "_asyncore_state.*.so|_asyncore_state.*.pyd",
    "_asyncore_kset.*.so|_asyncore_kset.*.pyd",
    "_asyncore_methods.*.so|_asyncore_methods.*.pyd",
]
WHEEL_FORBIDDEN = [
    "*.pyx",
    "*.pxd",
    "*.h",
    "*.c",
    "includes/*",
    "src/*",
    "tests/*",
    "build/*",
    "*.pyc",
    # pyasyncore, standard-asyncore and Debian install these paths: whoever
    # is installed or removed last would own or delete them.
    "asyncore/*",
    "asynchat/*",
    "_cyasyncore/__init__.py",
]
PURE_FORBIDDEN = ["_asyncore_core*", "_asyncore_timers*", "_asyncore_state*", "_asyncore_kset*",
                   "_asyncore_methods*"]


def _matches(name, pattern):
    return any(fnmatch.fnmatchcase(name, p) for p in pattern.split("|"))


def _check(names, required, forbidden):
    problems = []
    for pattern in required:
        if not any(_matches(n, pattern) for n in names):
            problems.append(f"missing: {pattern}")
    for pattern in forbidden:
        bad = [n for n in names if _matches(n, pattern)]
        if bad:
            shown = ", ".join(sorted(bad)[:5])
            if len(bad) > 5:
                shown += f" and {len(bad) - 5} more"
            problems.append(f"must not carry {pattern}: {shown}")
    return problems


def check(path):
    if path.endswith(".tar.gz"):
        with tarfile.open(path) as tar:
            # Drop the leading "cyasyncore-X.Y.Z/" folder.
            names = [
                m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name and m.isfile()
            ]
        return _check(names, SDIST_REQUIRED, SDIST_FORBIDDEN)
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as whl:
            names = [n for n in whl.namelist() if not n.endswith("/")]
        if path.endswith("-py3-none-any.whl"):
            return _check(names, WHEEL_REQUIRED, WHEEL_FORBIDDEN + PURE_FORBIDDEN)
        return _check(names, WHEEL_REQUIRED + BINARY_REQUIRED, WHEEL_FORBIDDEN)
    return [f"not a wheel or an sdist: {path}"]


def main(paths):
    failed = False
    for path in paths:
        problems = check(path)
        print(f"{'FAIL' if problems else 'ok'}: {path}")
        for problem in problems:
            print(f"  {problem}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
