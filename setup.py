"""Build avicore's Cython kernels.

Every ``src_cython/<name>.pyx`` becomes the extension module ``avicore._cy.<name>``.

Environment switches
--------------------
AVICORE_NO_OPENMP=1     build without OpenMP (``prange`` loops then run serially).
AVICORE_CYTHON_DEBUG=1  turn Cython's bounds/wraparound/initialisation checks back on.
AVICORE_PORTABLE=1      do not add ``-march=native`` (for binaries that must run on another CPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from Cython import __version__ as cython_version
from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src_cython"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _compiler_accepts(flags: list[str], source: str) -> bool:
    """Compile (and link) a tiny C program with ``flags``; True if the compiler accepts it."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()
    if shutil.which(cc[0]) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "probe.c"
        c_file.write_text(source)
        cmd = [*cc, *flags, str(c_file), "-o", str(Path(tmp) / "probe")]
        try:
            result = subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0


OPENMP_PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
}
"""


def _openmp_flags() -> tuple[list[str], list[str]]:
    if _flag("AVICORE_NO_OPENMP"):
        print("avicore build: OpenMP disabled by AVICORE_NO_OPENMP; prange loops run serially.")
        return [], []
    if sys.platform == "win32":
        return ["/openmp"], []
    if _compiler_accepts(["-fopenmp"], OPENMP_PROBE):
        return ["-fopenmp"], ["-fopenmp"]
    print("avicore build: the C compiler does not support OpenMP; prange loops run serially.")
    return [], []


def _optimisation_flags() -> list[str]:
    if sys.platform == "win32":
        return ["/O2"]
    flags = ["-O3", "-fno-math-errno"]
    if not _flag("AVICORE_PORTABLE") and _compiler_accepts(["-march=native"], "int main(void){return 0;}"):
        flags.append("-march=native")
    return flags


def _extensions() -> list[Extension]:
    omp_compile, omp_link = _openmp_flags()
    compile_args = _optimisation_flags() + omp_compile
    macros = [
        ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
        ("AVICORE_CYTHON_VERSION", f'"{cython_version}"'),
        ("AVICORE_COMPILE_FLAGS", '"' + " ".join(compile_args) + '"'),
    ]
    return [
        Extension(
            f"avicore._cy.{pyx.stem}",
            [str(pyx.relative_to(ROOT))],
            include_dirs=[np.get_include(), str(SRC.relative_to(ROOT))],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=omp_link,
        )
        for pyx in sorted(SRC.glob("*.pyx"))
    ]


def _write_ziggurat_header() -> None:
    """Generate src_cython/_ziggurat.h from the one copy of the tables, avicore/kernels/_ziggurat_tables.py (loaded
    by path: importing avicore is not needed to build it). Rewritten only when its text changes, so an unchanged
    header does not trigger a rebuild."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_avicore_ziggurat_tables",
                                                  ROOT / "avicore" / "kernels" / "_ziggurat_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    header = SRC / "_ziggurat.h"
    text = tables.c_header()
    if not header.exists() or header.read_text() != text:
        header.write_text(text)


_write_ziggurat_header()
debug = _flag("AVICORE_CYTHON_DEBUG")
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": not debug,
    "embedsignature": True,
}

setup(
    ext_modules=cythonize(
        _extensions(),
        compiler_directives=directives,
        include_path=[str(SRC)],
        nthreads=0,
        quiet=True,
    ),
)
