"""fastnn.dlfs against the book's own code: one training step of the book's SimpleConvNet (ch07:
conv 30 5x5, hidden 100; gradient = forward + backward, then the book's Adam update) at batch 100
on real MNIST images. The book's code comes from a checkout given as DLFS_BOOK=/path (it is not
part of fastnn); without it these benchmarks skip.

    DLFS_BOOK=/path/to/deep-learning-from-scratch pytest bench/test_dlfs_bench.py --threads 1

`test_dlfs_step_speedup` times both in one process, interleaved, and prints the ratio."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _workloads import record_settings

import fastnn.dlfs as dlfs

BOOK = os.environ.get("DLFS_BOOK")
pytestmark = pytest.mark.skipif(
    not BOOK, reason="DLFS_BOOK is not set: point it at a checkout of "
                     "https://github.com/oreilly-japan/deep-learning-from-scratch")


def _book_classes():
    """The book's SimpleConvNet and Adam, imported from DLFS_BOOK with its own `common`."""
    root = Path(BOOK).expanduser().resolve()
    if not (root / "ch07" / "simple_convnet.py").is_file():
        pytest.fail(f"DLFS_BOOK={BOOK!r}: no ch07/simple_convnet.py there")
    mine = [k for k in sys.modules if k == "common" or k.startswith("common.")
            or k == "simple_convnet"]
    saved = {k: sys.modules.pop(k) for k in mine}
    path = list(sys.path)
    sys.path[:0] = [str(root / "ch07"), str(root)]
    try:
        import common.optimizer
        import simple_convnet
        return simple_convnet.SimpleConvNet, common.optimizer.Adam
    finally:
        sys.path[:] = path
        for k in [k for k in sys.modules if k == "common" or k.startswith("common.")
                  or k == "simple_convnet"]:
            del sys.modules[k]
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def batch():
    (x, t), _ = dlfs.dataset.load_mnist(flatten=False, small=True)
    return x[:100], t[:100]


def _step(impl, batch):
    """A warmed-up closure running one step (gradient + Adam update) of `impl`."""
    x, t = batch
    if impl == "book":
        net_cls, adam_cls = _book_classes()
    else:
        net_cls, adam_cls = dlfs.SimpleConvNet, dlfs.optimizer.Adam
    np.random.seed(0)
    net, opt = net_cls(), adam_cls(lr=0.001)

    def step():
        opt.update(net.params, net.gradient(x, t))

    for _ in range(2):  # JIT compiles, workspaces, BLAS warm-up
        step()
    return step


@pytest.mark.benchmark(group="dlfs SimpleConvNet step, batch 100")
@pytest.mark.parametrize("impl", ["fastnn.dlfs", "book"])
def test_dlfs_simple_convnet_step(benchmark, batch, impl):
    step = _step(impl, batch)
    record_settings(benchmark, workload="SimpleConvNet gradient + Adam", batch=100, impl=impl)
    benchmark(step)


def test_dlfs_step_speedup(batch, capsys):
    """Median of interleaved steps of both, in this process: the speedup the README quotes."""
    steps = {"fastnn.dlfs": _step("fastnn.dlfs", batch), "book": _step("book", batch)}
    times = {k: [] for k in steps}
    for _ in range(15):
        for k, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - t0)
    ours, theirs = (float(np.median(times[k])) for k in ("fastnn.dlfs", "book"))
    with capsys.disabled():
        print(f"\nSimpleConvNet step (gradient + Adam, batch 100): fastnn.dlfs {ours * 1e3:.1f} ms,"
              f" the book's code {theirs * 1e3:.1f} ms: {theirs / ours:.1f}x")
    assert ours < theirs
