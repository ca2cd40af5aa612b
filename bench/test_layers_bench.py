"""Layers, forward and backward: dense, the two convolutions of the MNIST CNN, the textbook
network's fused first block (conv, ReLU, max pooling), max pooling."""

import pytest
from _workloads import params


@pytest.mark.parametrize("workload,impl", params("dense_fb"))
def test_dense_fb(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("conv1_fb"))
def test_conv1_fb(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("conv2_fb"))
def test_conv2_fb(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("convpool_fb"))
def test_convpool_fb(bench_workload, workload, impl):
    bench_workload(workload, impl)


@pytest.mark.parametrize("workload,impl", params("maxpool_fb"))
def test_maxpool_fb(bench_workload, workload, impl):
    bench_workload(workload, impl)
