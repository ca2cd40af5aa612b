"""Soak: many training steps with resident memory (RSS) flat after warm-up.

- In the default run: 2,000 `train_on_batch` steps of a small MLP (with batch norm and dropout,
  Adam) on every backend, plus `predict_on_batch` / `evaluate` calls along the way; RSS may grow by
  less than 5 MB after the warm-up (the first 10% of the steps).
- Marked `slow`, run on demand: 20,000 steps of the MNIST MLP (784-512-256-10, dropout 0.2, Adam)
  on the default backend, RSS growth after warm-up under 5 MB:

      FASTNN_SOAK=1 pytest tests/test_soak.py -m slow -p no:cacheprovider

  (FASTNN_SOAK_STEPS overrides the 20,000.)

Each soak runs in a fresh interpreter, so pytest's own allocations do not blur the figures; the
RSS figures are printed in the "fastnn measurements" section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ALL_BACKENDS, CHILD_CWD, REPORT

from fastnn import backend

HERE = Path(__file__).resolve().parent
LIMIT_MB = 5.0

SOAK = r'''
import json, os, sys, time
import numpy as np
from fastnn import Sequential, backend, recipes
from fastnn.layers import BatchNorm, Dense, Dropout, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import Adam

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def soak(model, x, y, steps, batch=32):
    loss, opt = SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3)
    n = len(x)
    warm = max(200, steps // 10)
    every = max(50, steps // 100)
    samples, t0 = [], time.perf_counter()
    for s in range(steps):
        i = (s * batch) % (n - batch)
        value = model.train_on_batch(x[i : i + batch], y[i : i + batch], loss=loss, optimizer=opt)
        if not np.isfinite(value):
            raise FloatingPointError(f"loss {value} at step {s}")
        if s % every == 0:
            model.predict_on_batch(x[:64])
            samples.append((s, rss_mb()))
        if s % (every * 10) == 0:
            model.evaluate(x[:256], y[:256], loss=loss)
    samples.append((steps, rss_mb()))
    base = [r for s, r in samples if s >= warm][0]
    after = [r for s, r in samples if s >= warm]
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1),
            "start_mb": round(samples[0][1], 1), "warm_mb": round(base, 1),
            "end_mb": round(samples[-1][1], 1), "max_mb": round(max(after), 1),
            "growth_mb": round(max(after) - base, 2)}


mode, steps = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
out = {}
if mode == "small":
    x = rng.standard_normal((2048, 64)).astype(np.float32)
    y = rng.integers(0, 10, 2048)
    for name in sys.argv[3].split(","):
        backend.use(name)
        model = Sequential([Dense(64, 128, seed=1), BatchNorm(128), ReLU(), Dropout(0.2, seed=2),
                            Dense(128, 64, seed=3), ReLU(), Dense(64, 10, seed=4)])
        out[name] = soak(model, x, y, steps)
else:
    x = rng.random((4096, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 4096)
    out[backend.current()] = soak(recipes.mlp(seed=0), x, y, steps)
print(json.dumps(out))
'''


def run_soak(mode: str, steps: int, names=()) -> dict:
    import fastnn

    pkg_root = str(Path(fastnn.__file__).resolve().parents[1])
    env = dict(os.environ, FASTNN_NUM_THREADS=os.environ.get("FASTNN_NUM_THREADS", "1"),
               PYTHONPATH=os.pathsep.join([pkg_root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", SOAK, mode, str(steps), ",".join(names)],
                          env=env, capture_output=True, text=True, timeout=3600, cwd=CHILD_CWD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(results: dict, label: str) -> None:
    for name, r in results.items():
        REPORT.append(f"soak {label} ({name}): {r['steps']:,} steps in {r['seconds']} s; RSS "
                      f"{r['start_mb']} MB at start, {r['warm_mb']} MB after warm-up, "
                      f"{r['end_mb']} MB at the end (max {r['max_mb']}), "
                      f"growth {r['growth_mb']} MB")
    grown = {n: r["growth_mb"] for n, r in results.items() if r["growth_mb"] >= LIMIT_MB}
    assert not grown, f"RSS grew by >= {LIMIT_MB} MB after warm-up: {grown}"


def test_soak_2000_steps_small_mlp_every_backend():
    names = [b for b in ALL_BACKENDS if b in backend.available()]
    check(run_soak("small", 2000, names), "small MLP")


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FASTNN_SOAK") != "1",
                    reason="the 20,000-step soak runs with "
                           "FASTNN_SOAK=1 pytest tests/test_soak.py -m slow")
def test_soak_20000_steps_mnist_mlp():
    steps = int(os.environ.get("FASTNN_SOAK_STEPS", "20000"))
    check(run_soak("mnist-mlp", steps), "MNIST MLP")
