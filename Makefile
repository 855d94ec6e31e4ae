# cyasyncore developer commands.  Each target does its own set-up (a virtual
# environment per Python version under .venv/, build, install), so a fresh
# clone needs nothing but Python 3.12+ and a C compiler.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Interpreters to test with; override with PYTHONS="/path/a /path/b".
PYTHONS ?= $(shell tools/find_pythons.sh 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: help test test-oracle bench lint clean

help:
	@echo "make test         build, install and run the tests on every Python 3.12+ found, both cores"
	@echo "make test-oracle  run the same tests against python3.11's own asyncore/asynchat"
	@echo "make bench        the benchmark comparison (quick version)"
	@echo "make lint         ruff and cython-lint"
	@echo "make clean        remove build products and virtual environments"

define need_pythons
	@[ -n "$(PYTHONS)" ] || { tools/find_pythons.sh; exit 1; }
endef

test:
	$(need_pythons)
	@for py in $(PYTHONS); do \
	  echo "== tests on $$py"; \
	  vpy=$$(tools/venv.sh "$$py" test); \
	  $$vpy -c 'import asyncore, sys; print("asyncore", asyncore.__file__, "core:", asyncore.CORE)'; \
	  $$vpy -P -m pytest $(PYTEST_ARGS) || exit 1; \
	done

# The suite run against CPython 3.11's modules: proves the tests encode 3.11.
test-oracle:
	@py=$$(command -v python3.11 || true); \
	[ -n "$$py" ] || { echo "error: python3.11 not found; the oracle needs it" >&2; exit 1; }; \
	[ -x .venv/oracle/bin/python ] || $$py -m venv .venv/oracle; \
	.venv/oracle/bin/python -m pip install -q pytest pytest-timeout hypothesis; \
	.venv/oracle/bin/python -P -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build dist wheelhouse .venv src/*.egg-info src/_asyncore_core.c src/*.so src/*.html
	find . -name __pycache__ -prune -exec rm -rf {} +

# ---- bench targets (owned by bench/) ----

# ---- stress and sanitizer targets (owned by the fault suite) ----

# ---- packaging and lint targets (owned by packaging) ----
