#!/usr/bin/env bash
# tools/venv.sh PYTHON [EXTRAS] -- make (or reuse) .venv/<name> for PYTHON,
# install this project into it (compiling the extension) with the given
# extras, and print the venv's python.  Progress and pip's complaints go to
# stderr, so the one line on stdout is the path.
#
# The project is built exactly once per call, without build isolation: the
# build requirements are installed into the venv itself (read from
# pyproject.toml, so they cannot drift from it).  An isolated build would
# set up a throw-away environment and compile the whole extension from
# scratch every time; this one reuses build/ and the generated C when
# nothing changed, which makes a re-run a matter of seconds.
set -euo pipefail
py=$1
extras=${2:-}
name=$("$py" -c 'import sys; print("py%d.%d" % sys.version_info[:2])')
venv=.venv/$name
t0=$(date +%s)
say() { echo "   [$name $(( $(date +%s) - t0 ))s] $*" >&2; }
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv with $py"
  "$py" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
mapfile -t build_requires < <("$venv/bin/python" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))')
say "build requirements: ${build_requires[*]}"
"${pip[@]}" "${build_requires[@]}" >&2
spec=.
[ -n "$extras" ] && spec=".[$extras]"
say "building and installing ${spec} (compiled core; unchanged sources are not recompiled)"
# --force-reinstall would reinstall every dependency too; the project itself
# is a local directory, which pip always rebuilds and reinstalls.
"${pip[@]}" --no-build-isolation "$spec" >&2
say "installed: $("$venv/bin/python" -P -c 'import asyncore; print(asyncore.__file__)')"
echo "$venv/bin/python"
