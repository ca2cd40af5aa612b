"""Thread control for the Cython backend: every extension module keeps its own OpenMP thread
count (`_nthreads`, see kernels/_parallel.pxi); these functions set and read them all together."""

import importlib

_TOPICS = ("conv", "pool", "dense", "activations", "losses", "optim", "norm", "dropout")
_modules: list = []


def _extensions() -> list:
    """The compiled topic modules, imported once (the package __init__ already imported them)."""
    if not _modules:
        _modules.extend(importlib.import_module(f"{__package__}.{t}") for t in _TOPICS)
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
