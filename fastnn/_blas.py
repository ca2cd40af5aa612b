"""Direct access to NumPy's own BLAS (its cblas_sgemm), so compiled kernels can run GEMMs inside
their own OpenMP threads.

Why: NumPy's OpenBLAS keeps its own pthreads pool, which spins for a while after every GEMM; on a
2-core machine an OpenMP kernel that runs next finds its second core taken (and BLAS, in turn, finds
the OpenMP threads spinning). Measured here: the ReLU backward after a GEMM went from 11 µs to
745 µs, the MLP training step from 2.7 ms (1 thread) to 4.8 ms (2 threads). With the GEMM called
from our own threads, one pool owns the cores, and a layer can run its GEMM and its epilogue per
chunk of the batch in one parallel region (the data stays in cache between them).

`sgemm_pointer()` finds the symbol in the BLAS library NumPy loaded (via threadpoolctl), checks it
on a small product against `np.matmul`, and returns its address, or 0 when there is none usable
(another BLAS without a CBLAS symbol, `FASTNN_DIRECT_BLAS=0`): the kernels then use `np.matmul`.
Every integer argument is passed as a 64-bit value, which is right for both the LP64 and the
ILP64 interface on x86-64 and AArch64 (a 32-bit callee reads the low half of the register or
stack slot).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

_SYMBOLS = [p + "cblas_sgemm" + s for p in ("", "scipy_") for s in ("", "64_", "_64")]
_I = ctypes.c_longlong
_SGEMM_ARGS = [ctypes.c_int, ctypes.c_int, ctypes.c_int, _I, _I, _I, ctypes.c_float,
               ctypes.c_void_p, _I, ctypes.c_void_p, _I, ctypes.c_float, ctypes.c_void_p, _I]
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

_found: dict | None = None


def _blas_libraries() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return []
    return [i for i in threadpool_info() if i.get("user_api") == "blas" and i.get("filepath")]


def _check(fn) -> bool:
    """The symbol computes a row-major product with both transposes right (odd sizes)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((7, 5), dtype=np.float32)
    b = rng.standard_normal((6, 5), dtype=np.float32)  # used transposed
    c = np.full((7, 6), 3.0, np.float32)
    fn(ROW_MAJOR, NO_TRANS, TRANS, 7, 6, 5, 2.0, a.ctypes.data, 5, b.ctypes.data, 5, 0.5,
       c.ctypes.data, 6)
    return bool(np.allclose(c, 2.0 * (a @ b.T) + 1.5, rtol=1e-5, atol=1e-5))


def _find() -> dict:
    if os.environ.get("FASTNN_DIRECT_BLAS", "1").strip() == "0":
        return {"pointer": 0, "reason": "FASTNN_DIRECT_BLAS=0"}
    for info in _blas_libraries():
        try:
            lib = ctypes.CDLL(info["filepath"])
        except OSError:
            continue
        for name in _SYMBOLS:
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            fn.argtypes, fn.restype = _SGEMM_ARGS, None
            if _check(fn):
                return {"pointer": ctypes.cast(fn, ctypes.c_void_p).value, "symbol": name,
                        "library": info["filepath"], "internal_api": info.get("internal_api"),
                        "_keep": lib}
    return {"pointer": 0, "reason": "no CBLAS sgemm found in NumPy's BLAS library"}


def sgemm_info() -> dict:
    """{"pointer": address or 0, "symbol", "library" | "reason"} for NumPy's cblas_sgemm."""
    global _found
    if _found is None:
        _found = _find()
    return _found


def sgemm_pointer() -> int:
    """The address of NumPy's cblas_sgemm, or 0 when the kernels must use np.matmul."""
    return int(sgemm_info()["pointer"] or 0)
