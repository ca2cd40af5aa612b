"""Thread and BLAS control for the Numba backend (the parallel kernels' thread pool, and whether
the GEMMs call NumPy's cblas_sgemm from that pool: fastnn/_numba/_gemm.py)."""

import numba

from ._gemm import sgemm_pointer


def set_num_threads(n: int) -> None:
    """Use n threads in parallel kernels, capped by NUMBA_NUM_THREADS (read at import)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_num_threads() -> int:
    return numba.get_num_threads()


def direct_blas() -> bool:
    """Whether the GEMMs run through NumPy's cblas_sgemm in our own threads (BLAS's own pool then
    must stay at one thread); otherwise they go through np.matmul and BLAS's threads."""
    return sgemm_pointer() != 0
