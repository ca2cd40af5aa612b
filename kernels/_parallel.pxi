# fastnn Cython kernels: shared thread protocol.  Every kernels/<topic>.pyx starts with
#
#     include "_parallel.pxi"
#
# (setup.py passes include_path=["kernels"], so the include is found from any .pyx there).
# It gives each extension module:
#   _nthreads            module-level `cdef int`, default os.cpu_count() or 1 at import
#   _set_num_threads(n)  Python-level setter (n < 1 is clamped to 1)
#   _get_num_threads()   Python-level getter
#   OPENMP               Python bool: built with OpenMP (C macro FASTNN_HAVE_OPENMP from setup.py)
#   PARALLEL_MIN_WORK    compile-time constant 32768 (anonymous cdef enum; not visible from Python)
#
# Usage rule in every kernel: if the elements touched >= PARALLEL_MIN_WORK (and _nthreads > 1),
# run `for i in prange(n, schedule="static", num_threads=_nthreads)` (inside `with nogil:`);
# otherwise a plain `for i in range(n)` (no parallel region at all).  Put the loop body in a
# `cdef inline void ... noexcept nogil` helper so both paths share it.  Reductions: fixed-size
# blocks of partials combined in a fixed order (the grouping never depends on the thread count).
# Directives (boundscheck, wraparound, cdivision, ...) are set by setup.py only: never in the .pyx.
# `include` works with Cython 3.3 (checked); each module gets its own copy of these names.
#
# Vectorisation notes (gcc -O3, SSE2 baseline; check with -fopt-info-vec on the generated .c):
# - CPython's CFLAGS add -fwrapv: `int` index arithmetic in an inner loop (x[k + 2 * ow]) can make
#   gcc's vectorised loop fall back to its scalar version at run time. Step pointers instead.
# - Branches kill vectorisation: Cython's `and`/`or` short-circuit (use `&`/`|` on bints), and a
#   float select whose arms differ by arithmetic (or a clamp to a constant) is not if-converted
#   under the default -ftrapping-math; select on values computed before, or use bit masks.
# - libm's expf/logf are scalar calls; a loop that calls them runs at ~4 ns per element.

from cython.parallel cimport prange
import os as _fastnn_os

cdef extern from *:
    """
    #ifndef FASTNN_HAVE_OPENMP
    #define FASTNN_HAVE_OPENMP 0
    #endif
    """
    int FASTNN_HAVE_OPENMP

cdef enum:
    PARALLEL_MIN_WORK = 32768

OPENMP = bool(FASTNN_HAVE_OPENMP)

cdef int _nthreads = max(1, _fastnn_os.cpu_count() or 1)


def _set_num_threads(int n):
    """Set the number of OpenMP threads this module's parallel loops use (n < 1 means 1)."""
    global _nthreads
    _nthreads = n if n > 0 else 1


def _get_num_threads():
    """Number of threads this module's parallel loops use."""
    return _nthreads
