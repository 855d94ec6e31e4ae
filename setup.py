"""Build script: declares the compiled core.

Any non-empty ASYNCORE_NO_EXTENSIONS builds without it (the pure wheel); the
package then runs on its pure-Python core.
"""

import os

from setuptools import Extension, setup

NO_EXTENSIONS = bool(os.environ.get("ASYNCORE_NO_EXTENSIONS"))
# ASYNCORE_DEBUG=1 compiles with assertions and the core's debug counters.
DEBUG = bool(os.environ.get("ASYNCORE_DEBUG"))


def extensions():
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    macros = [("CYASYNCORE_DEBUG", "1" if DEBUG else "0")]
    compile_args = []
    if os.name != "nt":
        compile_args = ["-O0", "-g"] if DEBUG else ["-O2"]
    ext = Extension(
        "_asyncore_core",
        ["src/_asyncore_core.pyx"],
        include_dirs=["src/includes"],
        define_macros=macros,
        extra_compile_args=compile_args,
    )
    return cythonize(
        [ext],
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions())
