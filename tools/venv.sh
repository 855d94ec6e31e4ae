#!/usr/bin/env bash
# tools/venv.sh PYTHON [EXTRAS] -- make (or reuse) .venv/<name> for PYTHON,
# install this project into it (compiling the extension) with the given
# extras, and print the venv's python.  All output but the path goes to stderr.
set -euo pipefail
py=$1
extras=${2:-}
name=$("$py" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')
venv=.venv/$name
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi
spec=.
[ -n "$extras" ] && spec=".[$extras]"
# --force-reinstall of the project only: the installed copy must be this tree.
"$venv/bin/python" -m pip install -q "$spec" >&2
"$venv/bin/python" -m pip install -q --no-deps --force-reinstall --no-build-isolation . >&2 2>/dev/null \
  || "$venv/bin/python" -m pip install -q --no-deps --force-reinstall . >&2
echo "$venv/bin/python"
