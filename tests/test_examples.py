"""The example scripts in examples/ run end to end with --quick, print their table and write their
plot; without matplotlib they still print the numbers."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["optimizer_comparison", "weight_init_comparison", "batchnorm_comparison", "overfitting"]
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _env() -> dict:
    # Tiny models: one thread is as fast, and immune to oversubscription on a busy machine.
    env = dict(os.environ, FASTNN_NUM_THREADS="1")
    # `python examples/x.py` puts examples/, not the repository, on sys.path: point the script at
    # the fastnn these tests import when that is the source tree rather than an installed copy.
    if Path(fastnn.__file__).resolve().parents[1] == ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_quick(script, tmp_path):
    out = tmp_path / "plots"  # not there yet: the script creates it
    r = _run(f"examples/{script}.py", "--quick", "--out", str(out), "--seed", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "test acc" in r.stdout  # the table of final numbers
    if not HAVE_MATPLOTLIB:
        pytest.skip("matplotlib is not installed: the script ran, but there is no PNG to check")
    png = out / f"{script}.png"
    assert png.is_file(), r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_example_without_matplotlib_still_prints_numbers(tmp_path):
    # A None entry in sys.modules makes `import matplotlib...` raise ImportError.
    code = ("import runpy, sys; sys.modules['matplotlib'] = None; sys.path.insert(0, 'examples'); "
            f"sys.argv = ['overfitting.py', '--quick', '--out', {str(tmp_path)!r}]; "
            "runpy.run_path('examples/overfitting.py', run_name='__main__')")
    r = _run("-c", code)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "matplotlib is not installed" in r.stdout
    assert "test acc" in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_example_bad_data_path_is_a_clear_error(tmp_path):
    r = _run("examples/overfitting.py", "--quick", "--data", str(tmp_path / "missing.npz"),
             "--out", str(tmp_path))
    assert r.returncode != 0
    assert "--data" in r.stderr and "missing.npz" in r.stderr
    assert "Traceback" not in r.stderr
