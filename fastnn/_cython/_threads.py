"""Thread and BLAS set-up for the Cython backend: every extension module keeps its own OpenMP
thread count (`_nthreads`, see kernels/_parallel.pxi), and the modules that multiply matrices keep
the address of NumPy's cblas_sgemm (kernels/_gemm.pxi); these functions set them all together."""

import importlib

from .. import _blas

_TOPICS = ("conv", "convpool", "pool", "dense", "activations", "losses", "optim", "norm", "dropout")
_modules: list = []


def _extensions() -> list:
    """The compiled topic modules, imported once, with the BLAS pointer set in those that GEMM."""
    if not _modules:
        mods = [importlib.import_module(f"{__package__}.{t}") for t in _TOPICS]
        address = _blas.sgemm_pointer()
        for mod in mods:
            if hasattr(mod, "_set_sgemm"):
                mod._set_sgemm(address)
            if hasattr(mod, "CONV_COLS_LAYOUT"):  # conv's per-image GEMMs need the pointer
                mod.CONV_COLS_LAYOUT = "planes" if address else "rows"
        _modules.extend(mods)
    return _modules


def set_num_threads(n: int) -> None:
    """Let every Cython kernel's parallel loops use `n` OpenMP threads (n >= 1)."""
    n = max(1, int(n))
    for mod in _extensions():
        mod._set_num_threads(n)


def get_num_threads() -> int:
    """The thread count the Cython kernels use (the same in every module)."""
    return int(_extensions()[0]._get_num_threads())


def openmp_enabled() -> bool:
    """Whether the extensions were compiled with OpenMP (otherwise prange runs serially)."""
    return all(bool(mod.OPENMP) for mod in _extensions())


def direct_blas() -> bool:
    """Whether the GEMMs run through NumPy's cblas_sgemm in our own threads (BLAS's own pool then
    must stay at one thread); otherwise they go through np.matmul and BLAS's threads."""
    return all(mod._has_sgemm() for mod in _extensions() if hasattr(mod, "_has_sgemm"))
