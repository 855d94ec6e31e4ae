#!/usr/bin/env bash
# tools/coexistence.sh PYTHON [OUR_WHEEL]
#
# What happens when cyasyncore shares a venv with the other redistributions of
# asyncore/asynchat (pyasyncore + pyasynchat, standard-asyncore +
# standard-asynchat), which install the same top-level import names.  For
# each pair and each install order: which files win, what `python -m
# asyncore` says, and what uninstalling one distribution does to the other.
# The findings are written up in the README; this script re-derives them.
set -uo pipefail
py=$1
here=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d "${TMPDIR:-/tmp}/cyasyncore-coexist.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

wheel=${2:-}
if [ -z "$wheel" ]; then
  "$py" -m pip wheel -q --no-deps -w "$scratch/ours" "$here" >/dev/null
  wheel=$(ls "$scratch"/ours/cyasyncore-*.whl)
fi

# Fetch the others once; every scenario then installs offline from here.
"$py" -m pip download -q --dest "$scratch/others" \
  pyasyncore pyasynchat standard-asyncore standard-asynchat 2>&1 | grep -v '^WARNING: Location' >&2
pipi() {
  "$1" -m pip install -q --no-index --find-links "$scratch/others" "${@:2}" 2>&1 \
    | grep -v '^$' | sed 's/^/    pip: /'
  return "${PIPESTATUS[0]}"
}

report() {
  # Which distribution's asyncore/asynchat are imported, and are they whole?
  local vpy=$1
  (cd "$scratch" && "$vpy" -P - <<'PY'
import importlib, sys, warnings
warnings.simplefilter("ignore")
for name in ("asyncore", "asynchat"):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:
        print(f"    import {name}: FAILS: {type(exc).__name__}: {exc}")
        continue
    origin = getattr(mod, "__file__", None)
    if origin is None:
        print(f"    import {name}: a namespace package (no __init__.py left): "
              f"has dispatcher={hasattr(mod, 'dispatcher')}")
        continue
    ours = hasattr(mod, "CORE") if name == "asyncore" else hasattr(mod.asyncore, "CORE")
    print(f"    import {name}: {'cyasyncore' if ours else 'the other one'}'s __init__.py"
          + (f", CORE={mod.CORE}" if name == "asyncore" and ours else ""))
PY
  )
  local main
  main=$(cd "$scratch" && "$vpy" -P -m asyncore 2>&1 | tr '\n' ' ')
  echo "    python -m asyncore: ${main:0:200}"
  echo "    installed: $("$vpy" -m pip list 2>/dev/null | grep -iE 'asyncore|asynchat' | awk '{print $1}' | tr '\n' ' ')"
}

run() {
  local first=$1 second=$2 then_uninstall=$3
  local venv=$scratch/venv
  rm -rf "$venv"
  "$py" -m venv "$venv"
  local vpy=$venv/bin/python
  echo "== install [$first] then [$second]"
  # shellcheck disable=SC2086
  pipi "$vpy" $first || exit 1
  # shellcheck disable=SC2086
  pipi "$vpy" $second || exit 1
  report "$vpy"
  echo "  -- pip uninstall -y $then_uninstall"
  # shellcheck disable=SC2086
  "$vpy" -m pip uninstall -q -y $then_uninstall 2>&1 | sed 's/^/    pip: /'
  report "$vpy"
  echo "  -- pip install --force-reinstall --no-deps $wheel"
  pipi "$vpy" --force-reinstall --no-deps "$wheel" || exit 1
  report "$vpy"
}

others=("pyasyncore pyasynchat" "standard-asyncore standard-asynchat")
for other in "${others[@]}"; do
  for removed in "$other" cyasyncore; do
    run "$wheel" "$other" "$removed"
    run "$other" "$wheel" "$removed"
  done
done
