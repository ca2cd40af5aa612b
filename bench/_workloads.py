"""Helpers of the suites: parameters, one (workload, implementation) pair per test, workload-major
so the NumPy reference of a workload is computed once (fastnn.bench caches the last one); and
what to record in each benchmark's extra_info."""

import pytest

from fastnn import bench as B


def params(name: str) -> list:
    return [pytest.param(w, impl, id=f"{w.key}-{impl}")
            for w in B.workloads([name]) for impl in w.impls()]


def record_settings(benchmark, **info) -> None:
    """What ran, in the saved JSON: threads per library, BLAS, plus anything given."""
    benchmark.extra_info.update(info)
    benchmark.extra_info["threads"] = B.thread_info()
    benchmark.extra_info["blas"] = [f"{b['internal_api']} {b['version']} threads={b['num_threads']}"
                                    for b in B.blas_info()]
