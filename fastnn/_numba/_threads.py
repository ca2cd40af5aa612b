"""Thread control for the Numba backend (the parallel kernels' thread pool)."""

import numba


def set_num_threads(n: int) -> None:
    """Use n threads in parallel kernels, capped by NUMBA_NUM_THREADS (read at import)."""
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def get_num_threads() -> int:
    return numba.get_num_threads()
