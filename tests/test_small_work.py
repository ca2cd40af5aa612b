"""The small-work policy: a small network's step runs on the calling thread and never wakes a
thread pool (Numba's, OpenMP's or BLAS's), so whatever else runs on the machine it never waits
for a descheduled worker. Checked by counting the process's threads: pools start their workers
on first use, so a step that created none never entered a parallel region."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import CHILD_CWD, _require, child_env

_PROBE = r"""
import os, sys
import numpy as np
import fastnn
from fastnn import backend
from fastnn.layers import Dense, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import Adam

def threads():
    return len(os.listdir("/proc/self/task"))

backend.use(sys.argv[1])
backend.set_num_threads(2)
rng = np.random.default_rng(0)
model = fastnn.Sequential([Dense(4, 64, seed=1), ReLU(), Dense(64, 64, seed=2), ReLU(),
                           Dense(64, 2, seed=3)])
opt, loss = Adam(model.parameters()), SoftmaxCrossEntropy()
x, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 2, 32)
obs = x[:1].copy()
model.train_on_batch(x, y, loss=loss, optimizer=opt)  # compiles (Numba) and plans
before = threads()
for _ in range(200):
    model.train_on_batch(x, y, loss=loss, optimizer=opt)
    model.predict_on_batch(obs)
model.fit(x, y, loss=loss, optimizer=opt, epochs=2, batch_size=8, verbose=0)
small = threads()
big = rng.standard_normal((512, 1024)).astype(np.float32)  # large work: the pool must start
fastnn.kernels.relu(big)
fastnn.kernels.dense_forward(big, rng.standard_normal((1024, 512)).astype(np.float32),
                             np.zeros(512, np.float32))
print(before, small, threads())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.parametrize("name", ["cython", "numba"])
def test_small_network_steps_start_no_worker_thread(name):
    _require(name)
    res = subprocess.run([sys.executable, "-c", _PROBE, name], capture_output=True, text=True,
                         timeout=600, env=child_env(FASTNN_NUM_THREADS="2"), cwd=CHILD_CWD)
    assert res.returncode == 0, res.stderr
    before, small, big = map(int, res.stdout.split())
    assert small == before, f"a small step started {small - before} worker thread(s)"
    assert big > small, "the probe is blind: a large kernel started no worker thread"
