"""Backend registry: which implementation (numpy, numba, cython) runs each kernel, and how many
threads every backend and BLAS may use together.

`FASTNN_BACKEND` sets the start-up choice (default "auto": per kernel, the fastest available).
`FASTNN_NUM_THREADS` sets the start-up thread count (default: the cores this process may use).
`FASTNN_WINOGRAD=0` starts with the compiled backends' Winograd convolutions off (`set_winograd`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
import warnings
from collections.abc import Callable, Iterator

NAMES = ("numpy", "numba", "cython")
_MODULES = {"numpy": "fastnn.reference", "numba": "fastnn._numba", "cython": "fastnn._cython"}

# "auto": the preferred order per kernel, fastest first, as measured by `fastnn bench
# --write-auto-order` (fastnn/data/auto_order.json, shipped; FASTNN_AUTO_ORDER=PATH reads another
# such file). Kernels it does not name take the default order.
_AUTO_ORDER_DEFAULT = ("cython", "numba", "numpy")
AUTO_ORDER_FILE = os.path.join(os.path.dirname(__file__), "data", "auto_order.json")


def load_auto_order(path: str | None = None) -> dict[str, tuple[str, ...]]:
    """The per-kernel order of an auto-order file ({} when there is none or it is unreadable:
    auto then prefers cython, numba, numpy for every kernel)."""
    import json

    path = path or os.environ.get("FASTNN_AUTO_ORDER") or AUTO_ORDER_FILE
    try:
        with open(path, encoding="utf-8") as f:
            order = json.load(f)["order"]
        return {str(k): tuple(str(b) for b in v if b in NAMES) for k, v in order.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


AUTO_ORDER: dict[str, tuple[str, ...]] = load_auto_order()

_lock = threading.RLock()
_loaded: dict[str, object] = {}
_errors: dict[str, str] = {}
_current = "auto"
_table: dict[str, Callable] = {}
_num_threads: int | None = None
_winograd = os.environ.get("FASTNN_WINOGRAD", "1").strip().lower() not in ("0", "false", "off")
_blas_threads: int | None = None  # what BLAS's own pool was last set to


class BackendError(ValueError):
    """A backend was asked for that does not exist or does not work in this install."""


def _load(name: str):
    """Import a backend package once; remember why it failed if it did."""
    if name in _loaded:
        return _loaded[name]
    if name in _errors:
        return None
    with _lock:
        if name in _loaded or name in _errors:
            return _loaded.get(name)
        try:
            mod = importlib.import_module(_MODULES[name])
        except Exception as exc:  # ImportError, or numba failing to initialise
            _errors[name] = f"{type(exc).__name__}: {exc}"
            return None
        if _num_threads is not None:
            mod.set_num_threads(_num_threads)
        if hasattr(mod, "set_winograd"):
            mod.set_winograd(_winograd)
        _loaded[name] = mod
        return mod


def available() -> list[str]:
    """The backends that work in this install, in the order numpy, numba, cython."""
    return [n for n in NAMES if _load(n) is not None]


def unavailable() -> dict[str, str]:
    """Backends that failed to load, with the reason."""
    available()
    return dict(_errors)


def current() -> str:
    """The selected backend: "auto", "numpy", "numba" or "cython"."""
    return _current


def use(name: str) -> None:
    """Select the backend for every kernel: "numpy", "numba", "cython" or "auto"."""
    global _current
    if not isinstance(name, str) or name not in (*NAMES, "auto"):
        raise BackendError(
            f"backend: expected one of {', '.join(repr(n) for n in (*NAMES, 'auto'))}, got {name!r}"
        )
    if name != "auto" and _load(name) is None:
        raise BackendError(
            f"backend: {name!r} is not available in this install ({_errors.get(name)}); "
            f"available: {available()}"
        )
    with _lock:
        _current = name
        _table.clear()
        _apply_blas_threads()


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """Run a block on one backend, then restore the previous choice."""
    previous = _current
    use(name)
    try:
        yield
    finally:
        use(previous)


def resolve(kernel: str) -> str:
    """The backend that runs `kernel` under the current choice."""
    if _current != "auto":
        return _current
    for name in AUTO_ORDER.get(kernel, _AUTO_ORDER_DEFAULT):
        if _load(name) is not None and hasattr(_loaded[name], kernel):
            return name
    return "numpy"


def impl(kernel: str) -> Callable:
    """The function that runs `kernel` now (cached until the next `use`)."""
    fn = _table.get(kernel)
    if fn is None:
        fn = getattr(_load(resolve(kernel)), kernel)
        _table[kernel] = fn
    return fn


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """The threads that every backend and BLAS may use together."""
    return _num_threads if _num_threads is not None else _default_threads()


def set_num_threads(n: int) -> None:
    """Let Numba, OpenMP (Cython) and BLAS each use `n` threads; they run one after another, so
    the cores are never oversubscribed (see `blas_threads` for BLAS's own pool)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive integer, got {n!r}")
    with _lock:
        _num_threads = n
        for mod in _loaded.values():
            mod.set_num_threads(n)
        _apply_blas_threads()


def winograd() -> bool:
    """Whether the compiled backends run 3x3, stride-1 convolutions with >= 8 input and output
    channels as Winograd F(2x2, 3x3) (see `set_winograd`)."""
    return _winograd


def set_winograd(enabled: bool) -> None:
    """Winograd F(2x2, 3x3) for the compiled backends' 3x3, stride-1 convolutions with >= 8
    input and output channels: on by default (2.25x fewer multiplies; FASTNN_WINOGRAD=0 starts
    with it off). Its rounding error is bounded normwise, not per element: on typical activations
    and weights it stays within ~1e-6 relative, but inputs that mix magnitudes ~1e6 apart in one
    tile can lose a few significant digits where the im2col + GEMM path would not. Columns kept
    by a forward pass under the other setting are recomputed, never misread."""
    global _winograd
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled: expected True or False, got {enabled!r}")
    with _lock:
        _winograd = enabled
        for mod in _loaded.values():
            if hasattr(mod, "set_winograd"):
                mod.set_winograd(enabled)


def gemm_in_own_threads() -> bool:
    """Whether the selected backend runs its GEMMs through NumPy's BLAS called from its own
    threads (Cython or Numba, when NumPy's BLAS exports cblas_sgemm: see fastnn._blas)."""
    name = resolve("dense_forward")
    if name not in ("cython", "numba"):
        return False
    mod = _load(name)
    return mod is not None and mod.direct_blas()


def blas_threads() -> int:
    """The threads of BLAS's own pool: 1 while the selected backend calls BLAS from its own
    threads (two pools taking turns on the same cores would spin against each other), else
    `get_num_threads()`. Kept in force by `use` and `set_num_threads`; this is global to the
    process, so `use("numpy")` gives NumPy's matmul its threads back."""
    return 1 if gemm_in_own_threads() else get_num_threads()


def _apply_blas_threads() -> None:
    global _blas_threads
    want = blas_threads()
    if want == _blas_threads:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return
    threadpool_limits(limits=want, user_api="blas")
    _blas_threads = want


def blas_info() -> list[dict]:
    """What threadpoolctl sees: the BLAS library in use, its threading layer and thread count."""
    from threadpoolctl import threadpool_info

    return [i for i in threadpool_info() if i.get("user_api") in ("blas", "openmp")]


def _startup() -> None:
    """Apply FASTNN_BACKEND / FASTNN_NUM_THREADS; warn once if a compiled backend is missing."""
    global _current
    missing = []
    if _load("cython") is None:
        missing.append(f"cython ({_errors['cython']}; reinstall with `pip install .`)")
    if importlib.util.find_spec("numba") is None:
        _errors["numba"] = "ModuleNotFoundError: numba is not installed"
        missing.append("numba (not installed)")
    if missing:
        warnings.warn(
            "fastnn: backend(s) not available, falling back: " + "; ".join(missing),
            RuntimeWarning,
            stacklevel=3,
        )
    wanted = os.environ.get("FASTNN_BACKEND", "auto").strip().lower() or "auto"
    try:
        use(wanted)
    except BackendError as exc:
        warnings.warn(f"fastnn: FASTNN_BACKEND={wanted!r} ignored: {exc}", RuntimeWarning,
                      stacklevel=3)
        _current = "auto"
    threads = os.environ.get("FASTNN_NUM_THREADS")
    if threads:
        try:
            set_num_threads(int(threads))
        except ValueError:
            warnings.warn(f"fastnn: FASTNN_NUM_THREADS={threads!r} ignored: expected a positive "
                          "integer", RuntimeWarning, stacklevel=3)


_startup()
