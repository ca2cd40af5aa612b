"""Shared constants and tiny helpers for the Numba backend."""

# Below this many elements touched, kernels run serially (no parallel region).
PARALLEL_MIN_WORK = 32768


def use_parallel(work):
    """True when `work` (elements touched) is large enough for the parallel kernel."""
    return work >= PARALLEL_MIN_WORK
