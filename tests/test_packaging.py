"""What we ship around the code: the type stubs, ``python -m asyncore``, and
the installed layout.

The stub tests also run on the 3.11 oracle, where they compare our stubs with
CPython's own modules: that proves the stubs declare 3.11's whole public API
with 3.11's parameter names and defaults.  Under ``tools/test_installed.sh``
and cibuildwheel (``ASYNCORE_TEST_INSTALLED=1``) the tests run from a copy,
away from the checkout, and the installed-layout tests become mandatory.
"""

import ast
import importlib.util
import inspect
import os
import pathlib
import subprocess
import sys

import pytest

import asynchat
import asyncore

ORACLE = sys.version_info < (3, 12)
INSTALLED_RUN = bool(os.environ.get("ASYNCORE_TEST_INSTALLED"))
REPO_SRC = pathlib.Path(__file__).resolve().parent.parent / "src"

# The stub-only helpers (Protocols, aliases) that no runtime module has.
STUB_ONLY = {
    "_SocketMap",
    "_Address",
    "_ErrorHandler",
    "_Readable",
    "_Writable",
    "_Exceptional",
    "_Channel",
    "_Producer",
    "_Ts",
}
# 3.11's private names that are API all the same: programs and subclasses use them.
PRIVATE_API = {"_exception", "_collect_incoming_data", "_get_data"}
# Our additions, declared in the stub but absent from 3.11.
OURS_ONLY = {"CORE", "__version__"}


def _stub_path(module):
    """The stub beside the imported package, else (oracle) the checkout's."""
    if not ORACLE:
        beside = pathlib.Path(module.__file__).with_suffix(".pyi")
        if beside.exists():
            return beside
    return REPO_SRC / module.__name__ / "__init__.pyi"


class StubScope:
    """The names a stub declares at one level (module or class body).

    ``functions`` maps a name to its ``ast`` arguments; ``if`` blocks (the
    platform switches) are read through, as type checkers do on POSIX.
    """

    def __init__(self, body):
        self.names = set()
        self.functions = {}
        self.classes = {}
        self._read(body)

    def _read(self, body):
        for node in body:
            if isinstance(node, ast.If):
                self._read(node.body)
                self._read(node.orelse)
            elif isinstance(node, ast.FunctionDef):
                self.names.add(node.name)
                self.functions[node.name] = node.args
            elif isinstance(node, ast.ClassDef):
                self.names.add(node.name)
                self.classes[node.name] = StubScope(node.body)
            elif isinstance(node, ast.AnnAssign):
                self.names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                self.names.update(t.id for t in node.targets)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                # Only "import x as x" re-exports from a stub.
                self.names.update(a.asname for a in node.names if a.asname == a.name.split(".")[-1])


def _stub(module):
    path = _stub_path(module)
    if not path.exists():
        pytest.skip(f"no stub at {path}: not shipped with this install")
    return StubScope(ast.parse(path.read_text(encoding="utf-8")).body)


def _is_api(name):
    return not name.startswith("_") or name in PRIVATE_API


def _runtime_names(namespace):
    return {n for n in vars(namespace) if _is_api(n)}


MODULES = [pytest.param(asyncore, id="asyncore"), pytest.param(asynchat, id="asynchat")]


@pytest.mark.parametrize("module", MODULES)
def test_stub_declares_every_public_module_name(module):
    stub = _stub(module)
    missing = _runtime_names(module) - stub.names
    # Ours may expose more than 3.11 (BACKEND and the like, not typed yet);
    # what 3.11 had must all be there, which the oracle run checks.
    if not ORACLE:
        missing -= _names_beyond_311(module)
    assert not missing, f"{module.__name__} stub lacks {sorted(missing)}"


def _names_beyond_311(module):
    """Names our module has that 3.11's did not; they need not be stubbed."""
    known_311 = {
        "asyncore": {
            "EAGAIN",
            "EALREADY",
            "EBADF",
            "ECONNABORTED",
            "ECONNRESET",
            "EINPROGRESS",
            "EINVAL",
            "EISCONN",
            "ENOTCONN",
            "EPIPE",
            "ESHUTDOWN",
            "EWOULDBLOCK",
            "ExitNow",
            "_exception",
            "close_all",
            "compact_traceback",
            "dispatcher",
            "dispatcher_with_send",
            "errorcode",
            "file_dispatcher",
            "file_wrapper",
            "loop",
            "os",
            "poll",
            "poll2",
            "poll3",
            "read",
            "readwrite",
            "select",
            "socket",
            "socket_map",
            "sys",
            "time",
            "warnings",
            "write",
        },
        "asynchat": {"async_chat", "asyncore", "deque", "find_prefix_at_end", "simple_producer"},
    }[module.__name__]
    return _runtime_names(module) - known_311


@pytest.mark.cyasyncore_only
@pytest.mark.parametrize("module", MODULES)
def test_every_stubbed_module_name_exists(module):
    stub = _stub(module)
    declared = stub.names - STUB_ONLY
    if sys.platform == "win32":
        declared -= {"file_wrapper", "file_dispatcher"}
    absent = {n for n in declared if not hasattr(module, n)}
    assert not absent, f"{module.__name__} stub declares names the module lacks: {sorted(absent)}"


def _classes(module):
    stub = _stub(module)
    return [
        (name, stub.classes[name])
        for name in sorted(stub.classes)
        if name not in STUB_ONLY and hasattr(module, name)
    ]


@pytest.mark.parametrize("module", MODULES)
def test_stub_classes_declare_every_public_member(module):
    stub = _stub(module)
    for name, scope in _classes(module):
        cls = getattr(module, name)
        inherited = set()
        for base in cls.__mro__[1:]:
            base_stub = stub.classes.get(base.__name__) or _stub(asyncore).classes.get(
                base.__name__
            )
            if base_stub is not None:
                inherited |= base_stub.names
        missing = _runtime_names(cls) - scope.names - inherited
        assert not missing, f"{module.__name__}.{name} stub lacks {sorted(missing)}"


def _stub_parameters(args):
    """(name, default) pairs of a stub signature, ``self`` dropped; a default
    the stub leaves as ``...`` compares equal to anything."""
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = []
    for arg, default in zip(positional, defaults, strict=True):
        pairs.append((arg.arg, default))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        pairs.append((arg.arg, default))
    if pairs and pairs[0][0] == "self":
        pairs = pairs[1:]
    return pairs


_NO_DEFAULT = object()


def _default_value(node):
    if node is None:
        return _NO_DEFAULT
    value = ast.literal_eval(node)
    return ... if value is Ellipsis else value


def _check_signature(qualname, func, args):
    try:
        runtime = inspect.signature(func)
    except (TypeError, ValueError):
        return []  # a compiled callable without a signature: stubtest covers it
    params = [p for p in runtime.parameters.values() if p.name != "self"]
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return []  # file_wrapper's *args pass-through methods
    problems = []
    stub_params = _stub_parameters(args)
    if [p.name for p in params] != [name for name, _ in stub_params]:
        problems.append(
            f"{qualname}: stub parameters {[n for n, _ in stub_params]}, "
            f"runtime {[p.name for p in params]}"
        )
        return problems
    for p, (name, node) in zip(params, stub_params, strict=True):
        stub_default = _default_value(node)
        runtime_default = _NO_DEFAULT if p.default is p.empty else p.default
        if stub_default is ...:
            if runtime_default is _NO_DEFAULT:
                problems.append(f"{qualname}({name}): stub has a default, runtime none")
        elif stub_default != runtime_default:
            problems.append(
                f"{qualname}({name}): stub default {stub_default!r}, runtime {runtime_default!r}"
            )
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_stub_signatures_match_the_runtime(module):
    stub = _stub(module)
    problems = []
    for name, args in stub.functions.items():
        if hasattr(module, name):
            problems += _check_signature(f"{module.__name__}.{name}", getattr(module, name), args)
    for cls_name, scope in _classes(module):
        cls = getattr(module, cls_name)
        for name, args in scope.functions.items():
            if name.startswith("__") and name != "__init__":
                continue
            problems += _check_signature(f"{cls_name}.{name}", getattr(cls, name), args)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------
# python -m asyncore
# --------------------------------------------------------------------------


def _run_main(env_extra, cwd, module="asyncore", args=()):
    env = dict(os.environ, **env_extra)
    if "PYTHONPATH" not in env_extra:
        env.pop("PYTHONPATH", None)
    env.pop("ASYNCORE_NO_PRECEDENCE", None)
    return subprocess.run(
        [sys.executable, "-P", "-m", module, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _field(result, name):
    """The value of the report line ``name:`` of a ``python -m asyncore`` run."""
    for line in result.stdout.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name!r} line in:\n{result.stdout}")


@pytest.mark.cyasyncore_only
@pytest.mark.parametrize("module", ["asyncore", "asynchat"])
def test_main_reports_version_core_and_file(tmp_path, module):
    result = _run_main({}, tmp_path, module)
    assert result.returncode == 0, result.stdout + result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("cyasyncore ")
    assert first.split()[1][0].isdigit()
    assert _field(result, "core") == _default_core()
    assert _field(result, "backend")
    package = pathlib.Path(asyncore.__file__).resolve().parent
    assert _field(result, "asyncore").startswith(f"{package} (cyasyncore ")
    package = pathlib.Path(asynchat.__file__).resolve().parent
    assert _field(result, "asynchat").startswith(f"{package} (cyasyncore ")


@pytest.mark.cyasyncore_only
@pytest.mark.parametrize("module", ["asyncore", "asynchat"])
def test_main_help(tmp_path, module):
    result = _run_main({}, tmp_path, module, ["--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module} ")
    assert "ASYNCORE_NO_PRECEDENCE" in result.stdout


def _default_core():
    """The core a fresh interpreter picks in this environment."""
    from asyncore import _core

    if (
        os.environ.get("ASYNCORE_NO_EXTENSIONS")
        or _core.gil_disabled()
        or importlib.util.find_spec("_asyncore_core") is None
    ):
        return "pure"
    return "compiled"


@pytest.mark.cyasyncore_only
def test_main_reports_the_pure_core_when_extensions_are_off(tmp_path):
    result = _run_main({"ASYNCORE_NO_EXTENSIONS": "1"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _field(result, "core") == "pure"
    assert _field(result, "pure") == "because ASYNCORE_NO_EXTENSIONS is set"


def _fake_extension(tmp_path, body):
    """A folder whose _asyncore_core.py stands in for a broken extension."""
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "_asyncore_core.py").write_text(body, encoding="utf-8")
    return str(folder)


@pytest.mark.cyasyncore_only
def test_main_reports_why_the_extension_did_not_load(tmp_path):
    fake = _fake_extension(tmp_path, "raise ImportError('undefined symbol: frobnicate')\n")
    result = _run_main({"PYTHONPATH": fake}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _field(result, "core") == "pure"
    assert _field(result, "pure") == (
        "because the compiled extension failed to import: ImportError: undefined symbol: frobnicate"
    )


@pytest.mark.cyasyncore_only
def test_main_reports_a_missing_extension(tmp_path):
    fake = _fake_extension(
        tmp_path,
        "raise ModuleNotFoundError(\"No module named '_asyncore_core'\", name='_asyncore_core')\n",
    )
    result = _run_main({"PYTHONPATH": fake}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _field(result, "pure").startswith("because the compiled extension is not installed")


@pytest.mark.cyasyncore_only
def test_main_says_why_another_asynchat_loaded_and_the_fix(tmp_path):
    # A copy of asynchat ahead of ours on PYTHONPATH, as a stray checkout would be.
    rival = tmp_path / "rival"
    (rival / "asynchat").mkdir(parents=True)
    (rival / "asynchat" / "__init__.py").write_text("", encoding="utf-8")
    result = _run_main({"PYTHONPATH": str(rival)}, tmp_path)
    assert result.returncode == 1, result.stdout
    copy = rival.resolve() / "asynchat"
    assert _field(result, "asynchat") == f"{copy} (no installed distribution)"
    assert _field(result, "why") == f"{rival} is on PYTHONPATH"
    assert _field(result, "fix") == f"remove {rival} from PYTHONPATH"
    assert "not every module above is cyasyncore's" in result.stderr


# --------------------------------------------------------------------------
# the installed layout
# --------------------------------------------------------------------------


def _installed_dir():
    """The site folder cyasyncore was installed into, or skip when run from a checkout.

    The packages live in its _cyasyncore/ folder, never as site/asyncore.
    """
    package = pathlib.Path(asyncore.__file__).resolve().parent
    if "site-packages" not in package.parts:
        if INSTALLED_RUN:
            pytest.fail(f"asyncore imported from {package}, not from an installed package")
        pytest.skip("asyncore is not imported from an installed package")
    assert package.parent.name == "_cyasyncore", package
    return package.parent.parent


@pytest.mark.cyasyncore_only
def test_installed_packages_are_typed():
    site = _installed_dir()
    for package in ("asyncore", "asynchat"):
        assert (site / "_cyasyncore" / package / "py.typed").is_file()
        assert (site / "_cyasyncore" / package / "__init__.pyi").is_file()


@pytest.mark.cyasyncore_only
def test_installed_folder_comes_before_site_packages():
    site = _installed_dir()
    assert (site / "cyasyncore.pth").is_file()
    entries = [pathlib.Path(p).resolve() for p in sys.path if p]
    assert entries.index(site / "_cyasyncore") < entries.index(site)
    assert importlib.util.find_spec("asyncore").origin == asyncore.__file__
    assert importlib.util.find_spec("asynchat").origin == asynchat.__file__


# The compiled core and the units it cimports (issue 15), all top-level modules.
COMPILED_UNITS = (
    "_asyncore_core", "_asyncore_timers", "_asyncore_state", "_asyncore_kset", "_asyncore_methods",
)


@pytest.mark.cyasyncore_only
def test_installed_compiled_core_matches_the_pure_request():
    site = _installed_dir()
    specs = {name: importlib.util.find_spec(name) for name in COMPILED_UNITS}
    if os.environ.get("ASYNCORE_TEST_CORES") == "pure":
        # The pure wheel: no extension, and no stub claiming one exists.
        assert all(spec is None for spec in specs.values()), specs
        assert not (site / "_asyncore_core.pyi").exists()
    else:
        for name, spec in specs.items():
            assert spec is not None and spec.origin is not None, name
            assert pathlib.Path(spec.origin).resolve().parent == site, spec.origin
        assert (site / "_asyncore_core.pyi").is_file()


@pytest.mark.cyasyncore_only
def test_installed_run_does_not_see_the_checkout():
    if not INSTALLED_RUN:
        pytest.skip("only meaningful when the tests run from a copy (ASYNCORE_TEST_INSTALLED)")
    assert not (pathlib.Path(__file__).resolve().parent.parent / "src").exists()
    ours = _installed_dir() / "_cyasyncore"
    shadows = [
        p
        for p in sys.path
        if p and (pathlib.Path(p) / "asyncore").is_dir() and pathlib.Path(p).resolve() != ours
    ]
    assert not shadows, f"another asyncore on sys.path: {shadows}"


@pytest.mark.cyasyncore_only
def test_version_matches_the_distribution():
    from importlib import metadata

    try:
        distribution = metadata.version("cyasyncore")
    except metadata.PackageNotFoundError:
        pytest.skip("cyasyncore is not installed as a distribution")
    assert asyncore.__version__ == distribution
