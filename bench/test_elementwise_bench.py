"""Elementwise and memory-bound kernels: softmax cross-entropy, sigmoid, the Adam update.

adam_step updates in place: the timed rounds drift (each step runs on the state the previous one
left, with the same gradient), as in a training loop; the time per call does not depend on it.
"""

import pytest
from _workloads import params


@pytest.mark.parametrize("workload,impl", params("softmax_ce_fb"))
def test_softmax_ce_fb(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("sigmoid_fb"))
def test_sigmoid_fb(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("adam_step"))
def test_adam_step(bench_workload, workload, impl):
    bench_workload(workload, impl)
