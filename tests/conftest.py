"""Shared fixtures: the backend parameter, random arrays, numerical gradients."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

import fastnn
from fastnn import backend

ALL_BACKENDS = ("numpy", "numba", "cython")
COMPILED = ("numba", "cython")
IN_CI = os.environ.get("CI", "").lower() == "true"


CHILD_CWD = tempfile.gettempdir()


def child_env(**extra) -> dict:
    """The environment for a Python subprocess that must import the fastnn these tests import:
    the installed package in CI (its compiled extensions), not the source tree a subprocess
    started in the repository would otherwise find first. Run it with cwd=CHILD_CWD too:
    `python -c` puts its working directory first on sys.path."""
    from pathlib import Path

    pkg_root = str(Path(fastnn.__file__).resolve().parents[1])
    env = dict(os.environ, **{k: str(v) for k, v in extra.items()})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p)
    return env


def run_across_threads(script: str, name: str):
    """Run `script` (python -c, argv[1] = backend name) in a fresh process whose Numba pool can
    have 3 threads (NUMBA_NUM_THREADS caps it at import), for tests that compare a kernel's bits
    on 1, 2 and 3 threads; returns the CompletedProcess after checking it exited 0."""
    import subprocess
    import sys

    env = child_env(NUMBA_NUM_THREADS="3")
    env.pop("FASTNN_NUM_THREADS", None)
    res = subprocess.run([sys.executable, "-c", script, name], capture_output=True, text=True,
                         env=env, timeout=300, cwd=CHILD_CWD)
    assert res.returncode == 0, res.stderr
    return res


def _require(name: str) -> None:
    if name in backend.available():
        return
    reason = backend.unavailable().get(name, "unknown")
    if IN_CI:
        pytest.fail(f"backend {name!r} must be built in CI but is missing: {reason}")
    pytest.skip(f"backend {name!r} not available here: {reason}")


@pytest.fixture(params=ALL_BACKENDS)
def backend_name(request):
    """Each test using this runs once per backend, with that backend selected."""
    _require(request.param)
    with backend.using(request.param):
        yield request.param


@pytest.fixture(params=COMPILED)
def compiled_backend(request):
    _require(request.param)
    with backend.using(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def randn(rng, *shape, scale=1.0, dtype=np.float32):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def numerical_grad(f, x: np.ndarray, eps: float = 1e-6, max_points: int = 60,
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of the scalar f() with respect to x (float64, perturbed in place) at up
    to max_points coordinates; returns (flat indices, gradient values)."""
    flat = x.reshape(-1)
    if flat.size <= max_points:
        idx = np.arange(flat.size)
    else:
        idx = (rng or np.random.default_rng(0)).choice(flat.size, max_points, replace=False)
    g = np.empty(idx.size)
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        g[k] = (fp - fm) / (2 * eps)
    return idx, g


def assert_grad_close(analytic: np.ndarray, idx: np.ndarray, numeric: np.ndarray, tol=1e-6):
    a = analytic.reshape(-1)[idx]
    scale = max(1.0, float(np.abs(numeric).max(initial=0.0)))
    err = float(np.abs(a - numeric).max(initial=0.0)) / scale
    assert err < tol, f"max relative gradient error {err:.3g} >= {tol}"


# Measured results worth seeing in the CI log (accuracies, wall times): tests append lines here and
# they are printed at the end of the run, pass or fail.
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter):
    if REPORT:
        terminalreporter.section("fastnn measurements")
        for line in REPORT:
            terminalreporter.write_line(line)


def pytest_report_header(config):
    return [
        f"fastnn {fastnn.__version__}: backends available {backend.available()}, "
        f"missing {backend.unavailable()}, threads {backend.get_num_threads()}"
    ]
