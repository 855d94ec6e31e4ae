#!/usr/bin/env bash
# tools/coexistence.sh PYTHON [OUR_WHEEL]
#
# The proof that cyasyncore is the asyncore/asynchat that imports whatever
# else pip installs or removes (README, "Living with pyasyncore").  In fresh
# venvs made by PYTHON, with pip's own resolver and the real distributions
# from PyPI (pyftpdlib 2.x, which requires pyasyncore/pyasynchat; standard-smtpd,
# which requires standard-asyncore/standard-asynchat), every scenario of
# issue 13 is played and checked: which distribution owns the asyncore and
# asynchat that load, that our compiled core runs, that `python -m asyncore`
# agrees, and that pyftpdlib serves a STOR/RETR round trip (standard-smtpd a
# message).  Uninstalling either side must leave the other working.  Then
# pyftpdlib's own test suite, from its sdist, runs against our compiled core,
# our pure core and pyasyncore (loaded through ASYNCORE_NO_PRECEDENCE) in one
# venv: every test that passes on pyasyncore must pass on both our cores.
# Everything is downloaded once, then installed offline from that folder.
set -euo pipefail
py=$1
here=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/cyasyncore-coexist.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
t0=$(date +%s)
check=$here/tools/coexistence_check.py

wheel=${2:-}
if [ -z "$wheel" ]; then
  echo "== building our wheel"
  "$py" -m pip wheel -q --no-deps -w "$scratch/ours" "$here" >/dev/null
  wheel=$(ls "$scratch"/ours/cyasyncore-*.whl)
fi
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")

# pyftpdlib publishes only an sdist: build its wheels once (2.1.0 too, for
# the upgrade scenario), and keep the sdist for its test suite.
echo "== fetching the others from PyPI"
others=$scratch/others
quiet() { grep -v -e '^WARNING: Location' -e '^$' >&2 || true; }
for v in 2.2.0 2.1.0; do
  "$py" -m pip wheel -q --no-deps -w "$others" "pyftpdlib==$v" 2>&1 | quiet
done
"$py" -m pip download -q --no-deps --no-binary :all: -d "$scratch/sdist" pyftpdlib==2.2.0 2>&1 | quiet
"$py" -m pip download -q -d "$others" pyasyncore pyasynchat standard-asyncore standard-asynchat \
  standard-smtpd psutil pyopenssl pytest mypy 2>&1 | quiet
cp "$wheel" "$others/"

venv=$scratch/venv
vpy=$venv/bin/python
fresh() {
  echo
  echo "== $1 ($(( $(date +%s) - t0 )) s)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
}
pip_() {
  echo "  \$ pip $*"
  "$vpy" -m pip --disable-pip-version-check -q "$@" --no-index --find-links "$others" 2>&1 \
    | sed 's/^/    pip: /'
  return "${PIPESTATUS[0]}"
}
uninstall() {
  echo "  \$ pip uninstall -y $*"
  "$vpy" -m pip --disable-pip-version-check -q uninstall -y "$@" 2>&1 | sed 's/^/    pip: /'
  return "${PIPESTATUS[0]}"
}
installed() {
  "$vpy" -m pip --disable-pip-version-check list 2>/dev/null | awk 'NR > 2 {print $1}' | tr '\n' ' '
}
has() { installed | tr ' ' '\n' | grep -qix "$1"; }
# run_check ARGS...: the check script in the venv, from a folder with nothing to import.
run_check() { (cd "$scratch" && "$vpy" -P "$check" "$@"); }
ours() {
  run_check --asyncore cyasyncore --asynchat cyasyncore --core compiled "$@"
  local report
  report=$(cd "$scratch" && "$vpy" -P -m asyncore) || {
    echo "FAIL: python -m asyncore disagrees:"; echo "$report"; exit 1
  }
  echo "    python -m asyncore: $(echo "$report" | head -1), $(echo "$report" | grep -c 'also present') other copies named, exit 0"
}
rivals_named() {
  local report
  report=$(cd "$scratch" && "$vpy" -P -m asyncore)
  for dist in "$@"; do
    echo "$report" | grep -q "also present, not imported: .*($dist " \
      || { echo "FAIL: python -m asyncore does not name $dist:"; echo "$report"; exit 1; }
  done
  echo "$report" | grep -q "cyasyncore's comes first" \
    || { echo "FAIL: python -m asyncore does not say ours comes first"; exit 1; }
}

# -- Row 1, then reinstalls and upgrades of the others, then row 2, then row 5
# with cyasyncore installed last.
fresh "row 1: pip install pyftpdlib, then pip install cyasyncore"
pip_ install pyftpdlib
pip_ install cyasyncore
ours --ftp
rivals_named pyasyncore pyasynchat
# Static tools: mypy must find our stubs (pyasyncore ships none).
pip_ install mypy
printf 'import asynchat\nimport asyncore\n\nreveal_type(asyncore.CORE)\nreveal_type(asynchat.async_chat.push)\n' \
  >"$scratch/typed.py"
typed=$(cd "$scratch" && "$venv/bin/mypy" --no-incremental --strict typed.py 2>&1) || true
echo "$typed" | sed 's/^/    mypy: /'
echo "$typed" | grep -qE 'Revealed type is "(builtins\.)?str"' \
  || { echo "FAIL: mypy did not take asyncore.CORE from our stub"; exit 1; }
uninstall mypy
echo "  -- reinstall and upgrade the others"
pip_ install --force-reinstall pyasyncore pyasynchat
pip_ install --upgrade --force-reinstall pyftpdlib
ours --ftp
echo "  -- row 2: pip uninstall pyasyncore pyasynchat"
uninstall pyasyncore pyasynchat
ours --ftp
echo "  -- the others back, then pip uninstall cyasyncore (row 5, cyasyncore installed last)"
pip_ install pyasyncore pyasynchat
uninstall cyasyncore
run_check --asyncore pyasyncore --asynchat pyasynchat --ftp

# -- Row 3, then row 5 with cyasyncore installed first, then the opt-out.
fresh "row 3: pip install cyasyncore, then pip install pyftpdlib"
pip_ install cyasyncore
pip_ install pyftpdlib
has pyasyncore || { echo "FAIL: pyftpdlib did not pull in pyasyncore"; exit 1; }
ours --ftp
rivals_named pyasyncore pyasynchat
echo "  -- ASYNCORE_NO_PRECEDENCE=1: pyasyncore loads, for comparison"
ASYNCORE_NO_PRECEDENCE=1 run_check --asyncore pyasyncore --asynchat pyasynchat --ftp
echo "  -- start-up: the modules python -X importtime -c pass imports, with and without cyasyncore"
startup() { (cd "$scratch" && "$vpy" -X importtime -c pass 2>&1 | awk -F'|' '{gsub(/^ +| +$/, "", $3); print $3}' | sort); }
startup >"$scratch/with.txt"
echo "  -- row 5: pip uninstall cyasyncore"
uninstall cyasyncore
run_check --asyncore pyasyncore --asynchat pyasynchat --ftp
startup >"$scratch/without.txt"
# Python 3.13's site.py decodes every .pth file as utf-8-sig, which imports
# encodings.utf_8_sig the first time; any .pth file costs that (a venv with
# setuptools' distutils-precedence.pth or an editable install already has it).
# Nothing else may differ.
added=$(comm -13 "$scratch/without.txt" "$scratch/with.txt" | grep -vx 'encodings.utf_8_sig' || true)
removed=$(comm -23 "$scratch/without.txt" "$scratch/with.txt")
[ -z "$added$removed" ] || { echo "FAIL: cyasyncore changes what start-up imports:"; \
  diff "$scratch/without.txt" "$scratch/with.txt"; exit 1; }
echo "    ok: start-up imports $(wc -l <"$scratch/without.txt") modules without cyasyncore, $(wc -l <"$scratch/with.txt") with" \
  "$(comm -13 "$scratch/without.txt" "$scratch/with.txt" | sed 's/^/(+ /; s/$/, the .pth decoding)/')"
echo "  -- pip install cyasyncore again"
pip_ install cyasyncore
ours --ftp

# -- Row 4: pip repairs a --no-deps install by pulling in pyasyncore.
fresh "row 4: pip install cyasyncore, pip install --no-deps pyftpdlib, later pip install --upgrade pyftpdlib"
pip_ install cyasyncore
pip_ install --no-deps pyftpdlib==2.1.0
ours --ftp
pip_ install --upgrade pyftpdlib
has pyasyncore && has pyasynchat || { echo "FAIL: the upgrade did not pull in pyasyncore/pyasynchat"; exit 1; }
ours --ftp
rivals_named pyasyncore pyasynchat

# -- Row 6: standard-smtpd and the standard-* family, both uninstall directions.
fresh "row 6: pip install cyasyncore, then pip install standard-smtpd"
pip_ install cyasyncore
pip_ install standard-smtpd
has standard-asyncore || { echo "FAIL: standard-smtpd did not pull in standard-asyncore"; exit 1; }
ours --smtp
rivals_named standard-asyncore standard-asynchat
echo "  -- pip uninstall standard-asyncore standard-asynchat"
uninstall standard-asyncore standard-asynchat
ours --smtp
echo "  -- the others back, then pip uninstall cyasyncore"
pip_ install standard-asyncore standard-asynchat
uninstall cyasyncore
run_check --asyncore standard-asyncore --asynchat standard-asynchat --smtp

# -- pyftpdlib's own suite on our two cores and on pyasyncore, in one venv.
fresh "pyftpdlib 2.2.0's test suite: our compiled core, our pure core, pyasyncore"
pip_ install cyasyncore pyftpdlib psutil pyopenssl pytest
tar -xzf "$scratch"/sdist/pyftpdlib-*.tar.gz -C "$scratch"
suite=$(ls -d "$scratch"/pyftpdlib-*/)
declare -A passed
for run in compiled pure pyasyncore; do
  case $run in
    compiled) env=(); want=(--asyncore cyasyncore --asynchat cyasyncore --core compiled) ;;
    pure) env=(ASYNCORE_NO_EXTENSIONS=1); want=(--asyncore cyasyncore --asynchat cyasyncore --core pure) ;;
    pyasyncore) env=(ASYNCORE_NO_PRECEDENCE=1); want=(--asyncore pyasyncore --asynchat pyasynchat) ;;
  esac
  (cd "$scratch" && env "${env[@]}" "$vpy" -P "$check" "${want[@]}")
  # Its own addopts want pytest-instafail and xdist, which change nothing of
  # what is tested: replaced by plain options and a junit report to count.
  # GITHUB_ACTIONS=1 runs it as pyftpdlib's own CI does: that skips the
  # few tests its author marks "may fail on CI".  Without it, the FTPS
  # test_nlst failed here now and then on pyasyncore as on our cores,
  # leaving its server thread behind, and pyOpenSSL's next handshake
  # crashed the interpreter (SIGSEGV) in about half the runs.
  # test_passive_ports is left out: it wants one of 100 fixed ports in
  # 40000-59800, inside Linux's ephemeral range, free; on a machine running
  # other test suites it failed now and then on all three alike.
  # Failing tests are compared below; a run that ends without its report
  # (a crash) fails here, with the end of its log.
  (cd "$suite" && env GITHUB_ACTIONS=1 "${env[@]}" "$vpy" -X faulthandler -m pytest tests -q -p no:cacheprovider \
     -o addopts= -k 'not test_passive_ports or test_passive_ports_busy' --junitxml="$scratch/$run.xml" >"$scratch/$run.log" 2>&1) || true
  [ -s "$scratch/$run.xml" ] || { echo "FAIL: pyftpdlib's suite on $run ended without a report:"; \
    tail -60 "$scratch/$run.log"; exit 1; }
  echo "    $run: $(tail -1 "$scratch/$run.log")"
done
"$vpy" - "$scratch" <<'PY'
import sys
import xml.etree.ElementTree as ET

scratch = sys.argv[1]


def outcomes(run):
    result = {}
    for case in ET.parse(f"{scratch}/{run}.xml").iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        result[name] = (
            "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        )
    return result


runs = {run: outcomes(run) for run in ("compiled", "pure", "pyasyncore")}
counts = {run: sum(v == "passed" for v in o.values()) for run, o in runs.items()}
print("    passed: " + ", ".join(f"{run} {n}" for run, n in counts.items()))
reference = runs["pyasyncore"]
bad = False
for run in ("compiled", "pure"):
    lost = sorted(t for t, v in reference.items() if v == "passed" and runs[run].get(t) != "passed")
    if lost:
        bad = True
        print(f"FAIL: passes on pyasyncore, not on our {run} core: {lost}")
if not counts["pyasyncore"]:
    bad = True
    print("FAIL: no test passed on pyasyncore: the suite did not run")
sys.exit(1 if bad else 0)
PY

echo
echo "== coexistence: every scenario holds ($(( $(date +%s) - t0 )) s)"
