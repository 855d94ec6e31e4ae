#!/usr/bin/env bash
# tools/test_installed.sh PYTHON ARTIFACT [CORES [PYTEST_ARG...]]
#
# Install ARTIFACT (a wheel or an sdist) with its test extra into a fresh
# venv made by PYTHON, and run the test suite against that install: the
# tests, the examples they run and pyproject.toml (the pytest settings) are
# copied into a scratch folder and run from there with -P, so `import
# asyncore` can only find the installed package, never this checkout's src/.
# CORES (e.g. "pure") is passed on as ASYNCORE_TEST_CORES; empty, conftest
# wants both cores.  Any further arguments go to pytest.
set -euo pipefail
py=$1
artifact=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
cores=${3:-}
shift $(($# < 3 ? $# : 3))
here=$(cd "$(dirname "$0")/.." && pwd)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/cyasyncore-installed.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

"$py" -m venv "$scratch/venv"
vpy=$scratch/venv/bin/python
[ -x "$vpy" ] || vpy=$scratch/venv/Scripts/python.exe
"$vpy" -m pip install -q --upgrade pip
"$vpy" -m pip install -q "$artifact[test]"

mkdir "$scratch/run"
cp -R "$here/tests" "$here/examples" "$here/pyproject.toml" "$scratch/run/"
find "$scratch/run" -name __pycache__ -prune -exec rm -rf {} +
cd "$scratch/run"
export ASYNCORE_TEST_INSTALLED=1
if [ -n "$cores" ]; then
  export ASYNCORE_TEST_CORES=$cores
fi
"$vpy" -P -m asyncore
"$vpy" -P -m pytest -q "$@"
