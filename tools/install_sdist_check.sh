#!/usr/bin/env bash
# tools/install_sdist_check.sh PYTHON SDIST
#
# Install the sdist into a fresh venv (pip builds it from scratch in an
# isolated environment with the Cython of the build requirements) and check,
# away from this checkout, that the compiled core is the one that loads.
set -euo pipefail
py=$1
sdist=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/cyasyncore-sdist.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
"$py" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install -q --upgrade pip
"$scratch/venv/bin/python" -m pip install -q "$sdist"
cd "$scratch"
"$scratch/venv/bin/python" -P -c 'import asyncore; assert asyncore.CORE == "compiled", asyncore.CORE'
"$scratch/venv/bin/python" -P -m asyncore
