"""pytest-benchmark suites for the speed issue: `pytest bench/` (`--threads N`, default 2).

The workloads (shapes, inputs, each implementation's step) come from `fastnn.bench`, which the
`fastnn bench` command uses too. Every benchmark checks its result against the NumPy reference
once and warms the kernel up (JIT compiles, caches) before timing.
"""

from __future__ import annotations

import pytest

from _workloads import record_settings

from fastnn import bench as B


def pytest_addoption(parser):
    parser.addoption("--threads", type=int, default=2,
                     help="threads for every implementation: Numba, OpenMP, BLAS and torch "
                          "(default 2)")


def pytest_configure(config):
    B.set_threads(config.getoption("--threads"))


def pytest_report_header(config):
    return [f"fastnn bench suites: --threads {config.getoption('--threads')}", *B.header_lines()]


@pytest.fixture
def bench_workload(benchmark):
    """`bench_workload(workload, impl)`: check, warm up, then time one call of the workload."""

    def run(w: B.Workload, impl: str) -> None:
        try:
            case, err = B.checked_case(w, impl, warmup=0 if benchmark.disabled else 2)
        except B.Unavailable as exc:
            pytest.skip(str(exc))
        benchmark.group = w.id
        record_settings(benchmark, workload=w.name, shape=w.shape, impl=impl, flops=w.flops,
                        bytes=w.bytes, max_rel_error=err)
        with B.activate(impl):
            benchmark(case.run)

    return run
