"""Build script: declares the compiled core.

Any non-empty ASYNCORE_NO_EXTENSIONS builds without it (the pure wheel); the
package then runs on its pure-Python core.
"""

import os
import re

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

NO_EXTENSIONS = bool(os.environ.get("ASYNCORE_NO_EXTENSIONS"))
# ASYNCORE_DEBUG=1 compiles without optimisation and with debug information,
# for stepping through the core in gdb; behaviour is the same as a release build.
DEBUG = bool(os.environ.get("ASYNCORE_DEBUG"))


def flags_stamp(compile_args):
    """A file that changes when the compiler flags do.

    Builds without isolation (tools/venv.sh) reuse build/, where setuptools
    recompiles only sources newer than the module; listing this file among
    the extension's dependencies makes a debug, sanitizer or release build
    never pass for one of the others.
    """
    path = os.path.join("build", "ext-flags.txt")
    text = repr((compile_args, os.environ.get("CFLAGS"), os.environ.get("LDFLAGS")))
    try:
        with open(path) as f:
            if f.read() == text:
                return path
    except OSError:
        pass
    os.makedirs("build", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    compile_args = []
    if os.name != "nt":
        compile_args = ["-O0", "-g"] if DEBUG else ["-O2"]
        # Python's own CFLAGS carry -g, which makes the installed module
        # about six times its size; a release build drops the debug info
        # unless the builder asked for it in CFLAGS (make asan does).
        if not DEBUG and not any(
            flag.startswith("-g") and flag != "-g0"
            for flag in os.environ.get("CFLAGS", "").split()
        ):
            compile_args.append("-g0")
    # The compiled core and the units it cimports, which share declarations
    # through their .pxd files with dependencies one way (issue 15).  The
    # flags stamp is in every unit's dependencies, so none passes for
    # another build's.
    units = [
        "_asyncore_core",      # the loop, its passes and dispatch
        "_asyncore_timers",    # timers and hand-overs (issue 14)
        "_asyncore_state",     # the descriptors on our classes
        "_asyncore_kset",      # the kernel interest sets (cimports the state unit)
        "_asyncore_methods",   # our classes' methods in C (cimports the state unit)
    ]
    stamp = flags_stamp(compile_args)
    modules = [
        Extension(
            name,
            [f"src/{name}.pyx"],
            include_dirs=["src/includes"],
            extra_compile_args=compile_args,
            depends=[stamp],
        )
        for name in units
    ]
    built = cythonize(
        modules,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )
    for extension in built:
        for source in extension.sources:
            if source.endswith(".c"):
                bare_traceback_names(source)
    return built


# Cython names a function in the tracebacks it makes "module.Class.name";
# Python's own frames carry just "name" (co_name).  asyncore's compiled
# functions must appear under their own names, as 3.11's did (handle_error()'s
# log line names them), so the generated C gets Python's convention.  The
# substitution is idempotent: a generated file that is reused is left as it is.
# The core's C bodies of read(), write(), _exception() and readwrite(),
# which the passes call directly, go by the names of the functions they are.
_TRACEBACK_CALL = re.compile(r'__Pyx_AddTraceback\("(?:[A-Za-z_][A-Za-z0-9_]*\.)*([A-Za-z_][A-Za-z0-9_]*)"')
_DISPATCH_NAMES = {"_read": "read", "_write": "write", "_expt": "_exception", "_readwrite": "readwrite"}


def _bare(match):
    name = match.group(1)
    return '__Pyx_AddTraceback("%s"' % _DISPATCH_NAMES.get(name, name)


def bare_traceback_names(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fixed = _TRACEBACK_CALL.sub(_bare, text)
    if fixed != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(fixed)


PTH = os.path.join("src", "cyasyncore.pth")
# The folder cyasyncore.pth puts first: _cyasyncore/ beside it once installed.
PTH_FOLDER = 'os.path.join(sitedir, "_cyasyncore")'


class build_py_with_core_stub(build_py):
    """Ship cyasyncore.pth, and the compiled core's stub beside the extension.

    Both belong at the top of site-packages, outside any package, where
    setuptools copies nothing by itself.  cyasyncore.pth puts _cyasyncore/
    (where asyncore and asynchat are installed, see pyproject.toml) on
    sys.path ahead of site-packages.  A pure build leaves the stub out: a
    stub for a module that is not installed would make type checkers believe
    it importable.
    """

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            self._write_editable_pth()
        else:
            self.copy_file(PTH, os.path.join(self.build_lib, "cyasyncore.pth"))
        if not NO_EXTENSIONS:
            self.copy_file(
                os.path.join("src", "_asyncore_core.pyi"),
                os.path.join(self.build_lib, "_asyncore_core.pyi"),
            )

    def _write_editable_pth(self):
        """An editable install: the same .pth, pointing at this checkout's src/.

        setuptools' editable finder maps only _cyasyncore.asyncore, and
        appends itself after site-packages, so `import asyncore` would find
        nothing or another distribution's files.  The folder that holds
        src/asyncore and src/asynchat goes first instead.  setuptools
        builds an editable wheel from what lands in install_lib (its
        unpacked wheel); the build_lib of an editable build is discarded.
        """
        with open(PTH, encoding="utf-8") as f:
            text = f.read()
        if PTH_FOLDER not in text:
            raise RuntimeError(f"{PTH} no longer names {PTH_FOLDER}")
        here = os.path.abspath("src")
        text = text.replace(PTH_FOLDER, repr(here))
        target = self.get_finalized_command("install").install_lib
        os.makedirs(target, exist_ok=True)
        with open(os.path.join(target, "cyasyncore.pth"), "w", encoding="utf-8") as f:
            f.write(f"# Editable install: {here}\n{text}")


setup(ext_modules=extensions(), cmdclass={"build_py": build_py_with_core_stub})
