"""examples/rl_cartpole.py (and its torch twin in bench/) run a few CartPole episodes with
--quick; skipped without gymnasium (the optional extra fastnn[rl]) or torch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gymnasium") is None,
                                reason="gymnasium is not installed (pip install 'fastnn[rl]')")


def _run(script: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FASTNN_NUM_THREADS="1")
    if Path(fastnn.__file__).resolve().parents[1] == ROOT:  # running from the source tree
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, script, "--quick", "--seed", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_rl_cartpole_quick():
    r = _run("examples/rl_cartpole.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "episode    20" in r.stdout
    assert "steps/s" in r.stdout and "% of the time in fastnn calls" in r.stdout


def test_rl_cartpole_torch_quick():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    r = _run("bench/rl_cartpole_torch.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "% of the time in torch calls" in r.stdout
