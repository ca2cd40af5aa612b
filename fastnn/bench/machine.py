"""The machine the workloads run on: thread counts, BLAS, CPU, versions and environment, and its
measured limits (sgemm GFLOP/s and memory bandwidth) for the roofline column."""

from __future__ import annotations

import importlib
import os
import platform

import numpy as np

from .. import backend
from .impls import imported_torch, torch_module
from .timing import elapsed


def set_threads(n: int, torch: bool = True) -> None:
    """Pin fastnn (Numba, OpenMP, BLAS) and, when it imports, torch to n threads."""
    backend.set_num_threads(n)
    if torch and torch_module() is not None:
        torch_module().set_num_threads(n)


def thread_info() -> dict:
    info = {"fastnn": backend.get_num_threads(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()}
    for name in ("numba", "cython"):
        if name in backend.available():
            info[name] = importlib.import_module(f"fastnn._{name}").get_num_threads()
    torch = imported_torch()
    if torch is not None:
        info["torch"] = torch.get_num_threads()
    return info


def blas_info() -> list[dict]:
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture")
    out = []
    for i in backend.blas_info():
        d = {k: i.get(k) for k in keep}
        d["library"] = os.path.basename(i.get("filepath", ""))
        out.append(d)
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_vars() -> dict:
    prefixes = ("OPENBLAS_", "OMP_", "MKL_", "NUMBA_", "FASTNN_", "GOMP_")
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(prefixes)}


def versions() -> dict:
    import numba

    import fastnn

    v = {"fastnn": fastnn.__version__, "python": platform.python_version(),
         "numpy": np.__version__, "numba": numba.__version__}
    torch = imported_torch()
    if torch is not None:
        v["torch"] = torch.__version__
    return v


def header_lines() -> list[str]:
    """What ran: CPU, threads, BLAS, versions, environment (for reports and pytest headers)."""
    blas = "; ".join(f"{b['internal_api']} {b['version'] or ''} threads={b['num_threads']}"
                     f"{' arch=' + b['architecture'] if b.get('architecture') else ''}"
                     f" ({b['library']})" for b in blas_info())
    threads = ", ".join(f"{k} {v}" for k, v in thread_info().items())
    lines = [f"cpu: {cpu_model()}; threads: {threads}", f"blas/openmp: {blas}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
             f"backends: {backend.available()}; load average {os.getloadavg()[0]:.2f}"]
    env = env_vars()
    lines.append("env: " + (" ".join(f"{k}={v}" for k, v in env.items()) or "(none)"))
    if any(k in env for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        lines.append("note: the issue's targets are measured with OPENBLAS_CORETYPE and "
                     "OPENBLAS_L2_SIZE unset")
    return lines


def measure_sgemm(n: int = 2048, repeat: int = 3) -> float:
    """Peak float32 GEMM GFLOP/s of the machine with fastnn's thread count (BLAS's own pool,
    which fastnn may hold at one thread, gets them for the measurement; best of `repeat` after a
    warm-up)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    with threadpool_limits(limits=backend.get_num_threads(), user_api="blas"):
        np.matmul(a, b, out=c)
        best = min(elapsed(lambda: np.matmul(a, b, out=c)) for _ in range(repeat))
    return 2.0 * n**3 / best / 1e9


prange = range  # numba.prange once stream_kernel() has imported Numba


def _stream_add(a, b):
    """a += b: reads two arrays and writes one in place (so no write-allocate traffic), the
    access pattern of the optimizer and backward elementwise kernels."""
    for i in prange(a.size):
        a[i] += b[i]


_stream_jit = None


def stream_kernel():
    """_stream_add compiled by Numba (parallel, cached), or None without Numba."""
    global _stream_jit, prange
    if _stream_jit is None:
        try:
            import numba
        except ImportError:
            return None
        prange = numba.prange
        _stream_jit = numba.njit(parallel=True, nogil=True, cache=True)(_stream_add)
    return _stream_jit


def measure_bandwidth(threads: int, nbytes: int = 256 << 20, repeat: int = 5) -> float:
    """DRAM bandwidth in GB/s, best of `repeat`: a += b on two arrays of `nbytes` each (far beyond
    the caches), 3 * nbytes moved, on Numba's threads (set to `threads` by set_threads; NumPy
    on one thread without Numba). np.copyto read 30-60% lower here than the kernels reach."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.ones_like(a)
    kernel = stream_kernel()
    run = (lambda: np.add(a, b, out=a)) if kernel is None else (lambda: kernel(a, b))
    run()
    return 3.0 * nbytes / min(elapsed(run) for _ in range(repeat)) / 1e9
