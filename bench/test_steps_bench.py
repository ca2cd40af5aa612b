"""Whole training steps (forward, softmax-CE, backward, Adam) of the issue's three models."""

import pytest
from _workloads import params


@pytest.mark.parametrize("workload,impl", params("mlp_step"))
def test_mlp_step(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("cnn_step"))
def test_cnn_step(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("textbook_cnn_step"))
def test_textbook_cnn_step(bench_workload, workload, impl):
    bench_workload(workload, impl)
