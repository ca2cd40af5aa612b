"""Build fastnn's Cython kernels: every kernels/<topic>.pyx becomes fastnn._cython.<topic>.

Environment switches:
  FASTNN_CYTHON_DEBUG=1   turn bounds/wraparound checks back on (debug build)
  FASTNN_NO_OPENMP=1      build without OpenMP even where the compiler has it
  FASTNN_PYX_ONLY=a,b     build only kernels/a.pyx and kernels/b.pyx (development)
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent.resolve()
PROBE = """
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or ([], []) when the compiler lacks it."""
    if os.environ.get("FASTNN_NO_OPENMP") == "1" or sys.platform == "win32":
        return [], []
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        cc = "cc"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(PROBE)
        try:
            res = subprocess.run(
                [cc, "-fopenmp", str(src), "-o", str(Path(tmp) / "probe")],
                capture_output=True,
                timeout=60,
            )
        except (OSError, subprocess.SubprocessError):
            res = None
    if res is None or res.returncode != 0:
        warnings.warn(
            "fastnn: the C compiler has no OpenMP; the Cython kernels are built serial "
            "(prange runs on one thread).",
            stacklevel=1,
        )
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


def extensions():
    from Cython.Build import cythonize

    debug = os.environ.get("FASTNN_CYTHON_DEBUG") == "1"
    # Developer switch: build only some topics, e.g. FASTNN_PYX_ONLY=conv,pool
    only = {s for s in os.environ.get("FASTNN_PYX_ONLY", "").split(",") if s}
    omp_compile, omp_link = openmp_flags()
    macros = [("FASTNN_HAVE_OPENMP", "1" if omp_compile else "0")]
    # No -march=native (ties the build to this CPU) and no -ffast-math (breaks inf/NaN handling).
    cflags = ["-O3", *omp_compile]
    exts = [
        Extension(
            f"fastnn._cython.{pyx.stem}",
            [str(pyx.relative_to(HERE))],
            include_dirs=["kernels"],
            # the shared C headers: editing one rebuilds every module (cythonize tracks .pxi)
            depends=[str(h.relative_to(HERE)) for h in sorted((HERE / "kernels").glob("*.h"))],
            extra_compile_args=cflags,
            extra_link_args=omp_link,
            define_macros=macros,
        )
        for pyx in sorted((HERE / "kernels").glob("*.pyx"))
        if not only or pyx.stem in only
    ]
    return cythonize(
        exts,
        include_path=["kernels"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": not debug,
            "nonecheck": False,
            "embedsignature": True,
        },
        quiet=True,
    )


setup(ext_modules=extensions())
