"""Timing: seconds per call of a case (`time_call`), and the cold start of a new process."""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from .impls import FASTNN_IMPLS, TORCH_IMPLS

COLD_START_CACHES = ("warm cache", "cold cache")


def elapsed(fn) -> float:
    """Wall seconds of one call of `fn`."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_call(run: Callable[[], object], repeat: int = 15, min_time: float = 0.02,
              budget: float = 3.0) -> list[float]:
    """Seconds per call, one per sample: `repeat` samples of enough calls to last `min_time` each
    (fewer samples, at least 3, when they would take longer than `budget`). GC is off meanwhile."""
    once = elapsed(run)
    number = max(1, int(min_time / max(once, 1e-9)))
    repeat = max(min(3, repeat), min(repeat, int(budget / max(once * number, 1e-9))))
    enabled = gc.isenabled()
    gc.disable()
    try:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                run()
            samples.append((time.perf_counter() - t0) / number)
    finally:
        if enabled:
            gc.enable()
    return samples


def time_interleaved(runs: dict, activate, repeat: int = 15, min_time: float = 0.02,
                     budget: float = 3.0, rounds: int = 3, settle: float = 0.1) -> dict:
    """{impl: seconds per call, one per sample} for every `runs[impl]`, taken in `rounds` visits
    of repeat/rounds samples each, the implementations in turn (the order rotating each round),
    so that a machine whose speed drifts during the run (shared hosts do) slows every
    implementation alike and their ratios stay fair. Each visit starts with `activate(impl)`,
    a pause of `settle` seconds (the thread pools the previous implementation used stop
    spinning: OpenBLAS's and torch's would otherwise take cores from this one) and an untimed
    warm-up call."""
    impls = list(runs)
    number, total = {}, repeat
    for impl in impls:
        with activate(impl):
            once = elapsed(runs[impl])
        number[impl] = max(1, int(min_time / max(once, 1e-9)))
        total = min(total, max(min(3, repeat), int(budget / max(once * number[impl], 1e-9))))
    rounds = max(1, min(rounds, total))
    samples = {impl: [] for impl in impls}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            per_visit = total // rounds + (1 if r < total % rounds else 0)
            for impl in impls[r % len(impls):] + impls[: r % len(impls)]:
                run, n = runs[impl], number[impl]
                with activate(impl):
                    time.sleep(settle)
                    run()
                    for _ in range(per_visit):
                        t0 = time.perf_counter()
                        for _ in range(n):
                            run()
                        samples[impl].append((time.perf_counter() - t0) / n)
    finally:
        if enabled:
            gc.enable()
    return samples


# --- cold start: a new process imports, builds the CNN, runs one step ---------------------------

_COLD_FASTNN = """
import numpy as np, fastnn
from fastnn import recipes
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import Adam
model = recipes.cnn(seed=0, batchnorm=False, dropout=0.0)
rng = np.random.default_rng(0)
x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
model.train_on_batch(x, y, loss=SoftmaxCrossEntropy(), optimizer=Adam(model.parameters()))
"""
_PEAK_KB = """
def _peak_kb():  # this process's own peak (ru_maxrss would include the launching process's:
    try:          # Linux carries it across exec)
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM")).split()[1])
    except (OSError, StopIteration):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""
_RSS_FASTNN = _PEAK_KB + """
import sys
import numpy as np, fastnn
from fastnn import recipes
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import Adam
model = recipes.cnn(seed=0, batchnorm=False, dropout=0.0)
rng = np.random.default_rng(0)
x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
opt, loss = Adam(model.parameters()), SoftmaxCrossEntropy()
for _ in range(int(sys.argv[2])):
    model.train_on_batch(x, y, loss=loss, optimizer=opt)
print(_peak_kb())
"""
_COLD_TORCH = """
import sys, torch
from torch import nn
torch.set_num_threads(int(sys.argv[1]))
net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
opt.zero_grad(); nn.functional.cross_entropy(net(x), y).backward(); opt.step()
"""


def cold_start_seconds(impl: str, cache_dir: str, threads: int) -> float:
    """Wall time of a new Python process that imports, builds the MNIST CNN and runs one training
    step on `impl`, with NUMBA_CACHE_DIR=cache_dir (empty: cold; filled by a previous run: warm)."""
    import fastnn

    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, FASTNN_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(fastnn.__file__)), env.get("PYTHONPATH")) if p)
    if impl in FASTNN_IMPLS:
        env["FASTNN_BACKEND"] = impl
    code = _COLD_TORCH if impl in TORCH_IMPLS else _COLD_FASTNN
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(threads)], env=env,
                          capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"cold_start {impl}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return took


_RSS_TORCH_STEPS = _PEAK_KB + """
for _ in range(int(sys.argv[2])):
    opt.zero_grad(); nn.functional.cross_entropy(net(x), y).backward(); opt.step()
print(_peak_kb())
"""


def peak_rss_mb(impl: str, threads: int, steps: int = 50) -> float:
    """Peak resident memory (MB, ru_maxrss) of a new process that imports, builds the MNIST CNN
    and runs `steps` training steps (batch 64) on `impl` (Numba's cache as it is)."""
    import fastnn

    env = dict(os.environ, FASTNN_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(fastnn.__file__)), env.get("PYTHONPATH")) if p)
    if impl in FASTNN_IMPLS:
        env["FASTNN_BACKEND"] = impl
    code = _COLD_TORCH + _RSS_TORCH_STEPS if impl in TORCH_IMPLS else _RSS_FASTNN
    proc = subprocess.run([sys.executable, "-c", code, str(threads), str(steps)], env=env,
                          capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"peak RSS {impl}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return int(proc.stdout.split()[-1]) / 1024.0


def cold_start_impls() -> list[str]:
    return [*FASTNN_IMPLS, "torch"]


def time_cold_start(impl: str, cache: str, threads: int, repeat: int = 3) -> float:
    """Median wall seconds; "warm cache" fills the cache once first, "cold cache" uses a fresh
    one for every run."""
    times = []
    with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as warm_dir:
        if cache == "warm cache":
            cold_start_seconds(impl, warm_dir, threads)
        for _ in range(repeat):
            if cache == "warm cache":
                times.append(cold_start_seconds(impl, warm_dir, threads))
            else:
                with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as d:
                    times.append(cold_start_seconds(impl, d, threads))
    return statistics.median(times)
