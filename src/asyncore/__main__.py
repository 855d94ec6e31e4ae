"""``python -m asyncore`` (and ``python -m asynchat``): which asyncore is this?

Several distributions install an ``asyncore`` and an ``asynchat``
(pyasyncore, pyasynchat, standard-asyncore, standard-asynchat, Debian's
packages, this one).  This command says which files ``import asyncore`` and
``import asynchat`` load, which distribution owns them, how the loop runs
(core and backend, and why the pure core when it is), which other copies
are on ``sys.path`` and why ours come first, or, when they do not, why and
the one command that fixes it.  It exits 1 when either module is not
cyasyncore's.

It imports nothing of ours by relative import: ``python -m asynchat`` runs
this file by path, whichever ``asyncore`` the interpreter finds.
"""

import argparse
import importlib
import os
import pathlib
import sys

NAMES = ("asyncore", "asynchat")
OPT_OUT = "ASYNCORE_NO_PRECEDENCE"
REPAIR = "pip install --force-reinstall --no-deps cyasyncore"

# This file is <folder>/asyncore/__main__.py; our asynchat is its sibling.
OUR_FOLDER = pathlib.Path(__file__).resolve().parent.parent


def _ours(name):
    return OUR_FOLDER / name


def _package_of(module):
    """The folder of a package (or the file of a module) that was imported."""
    origin = getattr(module, "__file__", None)
    if origin is None:
        return None
    path = pathlib.Path(origin).resolve()
    return path.parent if path.name == "__init__.py" else path


def _candidates(name):
    """Every copy of ``name`` on sys.path, in the order import would try them.

    Each is (sys.path entry, package folder or module file); a folder with no
    ``__init__.py`` (what an uninstall leaves behind) is no candidate.
    """
    found = []
    for entry in sys.path:
        base = pathlib.Path(entry or os.getcwd())
        for path in (base / name / "__init__.py", base / f"{name}.py"):
            if path.is_file():
                resolved = path.resolve()
                found.append((entry, resolved.parent if path.name == "__init__.py" else resolved))
                break
    return found


def _owners():
    """Map each installed file (resolved) to the distribution that lists it."""
    from importlib import metadata

    owners = {}
    for dist in metadata.distributions():
        label = f"{dist.metadata['Name']} {dist.version}"
        for file in dist.files or ():
            if file.name == "__init__.py" or file.suffix == ".py":
                try:
                    owners[pathlib.Path(dist.locate_file(file)).resolve()] = label
                except OSError:
                    continue
    return owners


def _owner(owners, package):
    file = package / "__init__.py" if package.is_dir() else package
    return owners.get(file, "no installed distribution")


def _why_first(entry):
    """Why a sys.path entry comes before cyasyncore's folder, and the fix."""
    if not entry or pathlib.Path(entry).resolve() == pathlib.Path.cwd().resolve():
        return "it is in the current directory (sys.path[0])", "run from another directory"
    python_path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if entry in python_path:
        return f"{entry} is on PYTHONPATH", f"remove {entry} from PYTHONPATH"
    if sys.argv and sys.argv[0] and pathlib.Path(entry).resolve() == (
        pathlib.Path(sys.argv[0]).resolve().parent
    ):
        return "it is in the script's folder (sys.path[0])", "move it out of the script's folder"
    import site

    if entry == getattr(site, "USER_SITE", None):
        return (
            f"{entry} is the user site (pip install --user), which comes before {OUR_FOLDER}",
            "pip install --user cyasyncore",
        )
    return f"sys.path lists {entry} before {OUR_FOLDER}", REPAIR


def _explain(name, module, owners, lines):
    """Append the report for one module; return whether it is ours."""
    loaded = _package_of(module)
    ours = loaded is not None and loaded == _ours(name)
    where = loaded if loaded is not None else "a namespace package with no __init__.py"
    owner = _owner(owners, loaded) if loaded is not None else "no installed distribution"
    lines.append(f"{name + ':':9} {where} ({owner})")
    others = [path for _, path in _candidates(name) if path != loaded]
    for path in others:
        if path == _ours(name):
            continue
        lines.append(f"{'':9} also present, not imported: {path} ({_owner(owners, path)})")
    if ours and any(path != _ours(name) for path in others):
        lines.append(
            f"{'':9} cyasyncore's comes first: cyasyncore.pth puts {OUR_FOLDER} "
            "ahead of its site-packages"
        )
    return ours


def _diagnose(name, module, lines):
    """Why ``name`` is not ours, and the one command that fixes it."""
    if not _ours(name).is_dir():
        lines.append(f"why:      cyasyncore's {name} is not installed ({_ours(name)} is missing)")
        lines.append(f"fix:      {REPAIR}")
        return
    if os.environ.get(OPT_OUT):
        lines.append(f"why:      {OPT_OUT} is set, so other copies come first")
        lines.append(f"fix:      unset {OPT_OUT}")
        return
    if module is None:
        lines.append(f"why:      cyasyncore's {name} is installed but fails to import (above)")
        lines.append(f"fix:      {REPAIR}")
        return
    loaded = _package_of(module)
    entry = next((e for e, path in _candidates(name) if path == loaded), None)
    if entry is None:
        lines.append(f"why:      {name} was loaded from outside sys.path (by a custom importer)")
        lines.append(f"fix:      {REPAIR}")
        return
    reason, fix = _why_first(entry)
    lines.append(f"why:      {reason}")
    lines.append(f"fix:      {fix}")


def _core_lines(asyncore, lines):
    core = getattr(asyncore, "CORE", None)
    lines.append(f"core:     {core or 'unknown (not cyasyncore)'}")
    if core == "pure":
        selector = getattr(asyncore, "_core", None)
        reason = getattr(selector, "pure_reason", None) or "chosen with _core.use('pure')"
        lines.append(f"pure:     because {reason}")
    lines.append(f"backend:  {getattr(asyncore, 'BACKEND', 'unknown')}")


def _version(asyncore, owners):
    """The version of the distribution whose asyncore loaded."""
    loaded = _package_of(asyncore)
    owner = _owner(owners, loaded) if loaded is not None else None
    if owner and owner.startswith("cyasyncore "):
        return owner
    version = getattr(asyncore, "__version__", None)
    if loaded == _ours("asyncore") and version:
        # An editable install or a checkout on PYTHONPATH: no RECORD lists it.
        return f"cyasyncore {version} (from {OUR_FOLDER}, not an installed copy)"
    return f"not cyasyncore: {owner or 'unknown'}"


def main(argv=None, prog=None):
    parser = argparse.ArgumentParser(
        prog=prog or "python -m asyncore",
        description=(
            "Say which asyncore and asynchat this Python imports: the files, the "
            "distribution that owns them, the core and backend of the loop (and why "
            "the pure core when it runs), other copies on sys.path and why ours come "
            f"first. Exits 1 when either module is not cyasyncore's. {OPT_OUT}=1 lets "
            "another installed copy load instead; ASYNCORE_NO_EXTENSIONS=1 forces the "
            "pure core."
        ),
    )
    parser.parse_args(argv)

    owners = _owners()
    modules = {}
    lines = []
    for name in NAMES:
        try:
            modules[name] = importlib.import_module(name)
        except Exception as exc:
            modules[name] = exc
    asyncore = modules["asyncore"]
    if isinstance(asyncore, Exception):
        lines.append(f"asyncore: fails to import: {type(asyncore).__name__}: {asyncore}")
    else:
        lines.insert(0, _version(asyncore, owners))
        _core_lines(asyncore, lines)
    ok = True
    for name in NAMES:
        module = modules[name]
        if isinstance(module, Exception):
            lines.append(f"{name + ':':9} fails to import: {type(module).__name__}: {module}")
            ok = False
            _diagnose(name, None, lines)
            continue
        if not _explain(name, module, owners, lines):
            ok = False
            _diagnose(name, module, lines)
    lines.append(f"python:   {sys.version.split()[0]} ({sys.executable})")
    print("\n".join(lines))
    if not ok:
        print("warning: not every module above is cyasyncore's (see why/fix)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
