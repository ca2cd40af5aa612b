"""cold_start: a new process imports, builds the MNIST CNN and runs one training step; with a
warm Numba cache (filled by one untimed run) and a cold one (a fresh NUMBA_CACHE_DIR per round).
Only numba (and auto, if it picks Numba kernels) compile; torch has no such cache.
Under --benchmark-disable (a smoke run) only `auto` with a warm cache runs: a cold Numba
compile takes tens of seconds."""

import pytest
from _workloads import record_settings

from fastnn import bench as B


@pytest.mark.parametrize("cache", B.COLD_START_CACHES, ids=["warm", "cold"])
@pytest.mark.parametrize("impl", B.cold_start_impls())
def test_cold_start(benchmark, request, tmp_path, impl, cache):
    reason = B.unavailable_reason(impl)
    if reason:
        pytest.skip(reason)
    if impl == "torch" and cache == "cold cache":
        pytest.skip("torch has no Numba cache: its cold start is the warm one")
    if benchmark.disabled and (impl, cache) != ("auto", "warm cache"):
        pytest.skip("smoke run (--benchmark-disable): only auto with a warm cache")
    threads = request.config.getoption("--threads")
    warm = tmp_path / "warm"
    if cache == "warm cache":
        B.cold_start_seconds(impl, str(warm), threads)  # fill the cache, untimed
    rounds = iter(range(1000))

    def setup():
        d = warm if cache == "warm cache" else tmp_path / f"cold{next(rounds)}"
        return (impl, str(d), threads), {}

    benchmark.group = f"cold_start[{cache}]"
    record_settings(benchmark, workload="cold_start", shape=cache, impl=impl)
    benchmark.pedantic(B.cold_start_seconds, setup=setup, rounds=3, iterations=1)
