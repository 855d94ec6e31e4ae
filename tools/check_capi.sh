#!/usr/bin/env bash
# tools/check_capi.sh PYTHON... -- build the compiled core (all its units) for each PYTHON
# with every deprecation made an error, so that what the next CPython will
# remove fails CI before it fails a user's build:
# - Cython's own warnings (-Werror), which include its deprecations;
# - the C compiler's -Werror=deprecated-declarations: CPython marks the API
#   it is going to remove with Py_DEPRECATED, so using it warns first;
# - -Werror=implicit-function-declaration: a function CPython has already
#   removed is merely undeclared, which older GCCs only warn about; and
#   incompatible-pointer-types / int-conversion, for a changed signature.
# The build is the real one (setup.py, the build requirements of
# pyproject.toml), run in a copy of the tree so no stale object in build/
# is reused.  GCC and Clang only (the flags are theirs).
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: tools/check_capi.sh PYTHON..." >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
flags="-Werror=deprecated-declarations -Werror=implicit-function-declaration"
flags="$flags -Werror=incompatible-pointer-types -Werror=int-conversion"
for py in "$@"; do
  name=$("$py" -c 'import sys, sysconfig
print("py%d.%d%s" % (*sys.version_info[:2], "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""))')
  venv=.venv/capi-$name
  echo "== C-API check on $py ($name)"
  [ -x "$venv/bin/python" ] || { "$py" -m venv "$venv"; "$venv/bin/python" -m pip install -q --upgrade pip; }
  # The build requirements exactly as pyproject.toml states them (with their
  # per-Python markers), newest versions: what an isolated build would get.
  reqs=()
  while IFS= read -r req; do
    reqs+=("$req")
  done < <("$venv/bin/python" -c 'import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))')
  "$venv/bin/python" -m pip install -q --upgrade "${reqs[@]}"
  "$venv/bin/python" -c 'import Cython; print("Cython", Cython.__version__)'
  work=$(mktemp -d "${TMPDIR:-/tmp}/cyasyncore-capi.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  # Every compiled unit (issue 15: the core and the units it cimports).
  for unit in src/_asyncore_*.pyx; do
    "$venv/bin/cython" -3 -Werror -I src/includes -o "$work/check.c" "$unit"
  done
  mkdir "$work/src"
  tar --exclude='.venv*' --exclude=build --exclude=dist --exclude=wheelhouse --exclude=.git \
    --exclude='*.so' --exclude=__pycache__ --exclude='src/_asyncore_*.c' -cf - . \
    | tar -xf - -C "$work/src"
  CFLAGS="$flags" "$venv/bin/python" -m pip wheel -q --no-deps --no-build-isolation \
    --no-cache-dir -w "$work/dist" "$work/src"
  ls "$work/dist"
  rm -rf "$work"
  trap - EXIT
done
echo "== C-API check passed: no deprecated or undeclared CPython API in use"
