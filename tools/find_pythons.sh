#!/usr/bin/env bash
# Print the path of every working CPython >= 3.12 interpreter found, one per
# line, newest first; exit 1 with a message when there is none.
#
# Looks on PATH (python3.N), then in pyenv's versions folder, because on our
# machines plain python3 is 3.11 and the newer ones are installed by pyenv
# without being on PATH (the pyenv shims exist but refuse to run).
set -u
wanted=${ASYNCORE_PYTHONS:-"3.15 3.14 3.13 3.12"}
found=0
for v in $wanted; do
  for cand in "$(command -v "python$v" 2>/dev/null)" \
              "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/"python$v"; do
    [ -n "$cand" ] && [ -x "$cand" ] || continue
    got=$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    if [ "$got" = "$v" ]; then
      echo "$cand"
      found=1
      break
    fi
  done
done
if [ "$found" = 0 ]; then
  echo "error: no Python 3.12 or newer found (looked for python3.12 to python3.15 on PATH and under ~/.pyenv/versions)." >&2
  echo "       Install one (for example 'pyenv install 3.12') or name it: make test PYTHONS=/path/to/python3.12" >&2
  exit 1
fi
