#!/usr/bin/env bash
# bench/setup.sh -- everything the bench needs, from a fresh clone; cheap when
# nothing changed (a warm machine pays a few seconds).
#   bench/.venv-cy          newest Python 3.12+: cyasyncore built from this
#                           tree, uvloop, matplotlib (also runs the driver)
#   bench/.venv-pyasyncore  the same Python with the PyPI backports, which
#                           install the same top-level names asyncore/asynchat
#   bench/build/            the C reference server and the load generator
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "bench setup: $*" >&2; }

py=${BENCH_PYTHON:-$(tools/find_pythons.sh | sed -n 1p)}
[ -n "$py" ] || exit 1

make_venv() {  # make_venv DIR PACKAGE... ; installs only what doesn't import
  local dir=$1; shift
  if [ ! -x "$dir/bin/python" ]; then
    log "creating $dir with $py"
    "$py" -m venv "$dir"
  fi
  local missing=()
  for pkg in "$@"; do
    "$dir/bin/python" -c "import importlib.metadata as m; m.version('$pkg')" 2>/dev/null \
      || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} into $dir"
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" >&2
  fi
}

make_venv bench/.venv-cy uvloop matplotlib cython setuptools
make_venv bench/.venv-pyasyncore pyasyncore pyasynchat

# Build our package from a copy of the tree, so that a build running here
# never trips over one that `make test` runs in the work tree at the same time,
# and generated C from the work tree can never be mistaken for fresh.
mkdir -p bench/build
src=bench/build/pkg-src
rm -rf "$src.new"
mkdir -p "$src.new"
tar -c --exclude='*.so' --exclude='*.c' --exclude='__pycache__' --exclude='*.egg-info' \
    --exclude='*.html' src setup.py pyproject.toml $(ls README.md LICENSE* MANIFEST.in 2>/dev/null) \
  | tar -x -C "$src.new"
stamp=$(cd "$src.new" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
# The stamp names the sources of the last install, compiled or pure-only: an
# unchanged tree is not rebuilt either way.
if [ "$(cat bench/.venv-cy/.cyasyncore-stamp 2>/dev/null)" = "$stamp" ] \
   && bench/.venv-cy/bin/python -P -c 'import asyncore' 2>/dev/null; then
  rm -rf "$src.new"
else
  log "building cyasyncore from the work tree into bench/.venv-cy"
  rm -rf "$src"
  mv "$src.new" "$src"
  rm -f bench/.venv-cy/.cyasyncore-stamp
  install() {
    (cd "$src" && ../../.venv-cy/bin/python -m pip install -q --disable-pip-version-check \
       --no-deps --no-build-isolation --force-reinstall .) >>bench/build/pkg-build.log 2>&1
  }
  : > bench/build/pkg-build.log
  if install; then
    echo "$stamp" > bench/.venv-cy/.cyasyncore-stamp
  else
    log "WARNING: the compiled core did not build (see bench/build/pkg-build.log):"
    grep -E '[A-Za-z]*Error: |error: ' bench/build/pkg-build.log | grep -v metadata-generation \
      | tail -n 3 | sed 's/^ */    /' >&2
    # Never bench a stale build.  A pure-only build still lets the pure rows
    # run; the compiled rows then fail with the reason in the table.
    bench/.venv-cy/bin/python -m pip uninstall -q -y cyasyncore >/dev/null 2>&1 || true
    if ASYNCORE_NO_EXTENSIONS=1 install; then
      echo "$stamp" > bench/.venv-cy/.cyasyncore-stamp
      log "installed the pure core only"
    else
      log "WARNING: cyasyncore did not build at all; its rows will fail"
    fi
  fi
fi

for prog in echo_server loadgen; do
  if [ ! bench/build/$prog -nt bench/c/$prog.c ]; then
    log "compiling bench/c/$prog.c"
    cc -O2 -Wall -Wextra -o bench/build/$prog bench/c/$prog.c
  fi
done
