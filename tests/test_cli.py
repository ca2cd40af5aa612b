"""The command line: `fastnn train` (in process, on the bundled mnist-small and on a PATH.npz),
`fastnn info`, `--help`, error exits, and `python -m fastnn` in a subprocess."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CHILD_CWD, child_env

import fastnn
from fastnn import backend, cli
from fastnn.losses import SoftmaxCrossEntropy

ROOT = Path(__file__).resolve().parents[1]


def run_main(argv):
    """(exit code, stdout, stderr) of cli.main(argv) in this process; SystemExit is an exit code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"  # does not exist yet: train creates it
    before = (backend.current(), backend.get_num_threads())
    code, stdout, stderr = run_main(["train", "--model", "mlp", "--epochs", "1", "--out", str(out),
                                     "--verbose", "0"])
    assert (backend.current(), backend.get_num_threads()) == before
    return code, stdout, stderr, out


def test_train_exits_zero_and_prints_summary_and_accuracy(mnist_run):
    code, stdout, stderr, _ = mnist_run
    assert code == 0, stderr
    assert "Total parameters" in stdout and "Dense" in stdout
    assert "test accuracy" in stdout and "wrote" in stdout


def test_train_writes_model_history_metrics(mnist_run):
    _, stdout, _, out = mnist_run
    files = set(os.listdir(out))
    assert {"model.npz", "history.json", "metrics.json"} <= files
    assert not any(f.startswith(".") for f in files)  # no temporary or probe files left
    if "curves.png" not in files:
        assert "matplotlib" in stdout  # the one-line notice instead of the plot
    history = json.loads((out / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 1 for v in history.values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85
    assert 0 < metrics["test_loss"] < 1.0
    assert metrics["model"] == "mlp" and metrics["dataset"] == "mnist-small"
    assert metrics["epochs"] == 1


def test_train_model_file_loads_and_reproduces_the_metrics(mnist_run):
    _, _, _, out = mnist_run
    model = fastnn.load(out / "model.npz")
    _, (x_test, y_test) = fastnn.datasets.mnist_small()
    r = model.evaluate(x_test, y_test, loss=SoftmaxCrossEntropy())
    metrics = json.loads((out / "metrics.json").read_text())
    assert r["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert r["loss"] == pytest.approx(metrics["test_loss"], rel=1e-5)
    m2, opt, _ = fastnn.load_checkpoint(out / "model.npz")
    assert type(opt).__name__ == "Adam" and opt.steps > 0


def _write_dataset(path, rng, n_train=400, n_test=100, classes=3):
    def make(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for c in range(classes):  # class c: a bright 8x8 block in its own place
            x[y == c, 2 + 8 * c : 10 + 8 * c, 4:12] = 250
        return x, y.astype(np.int64)

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


def test_train_on_a_dataset_file(tmp_path, rng):
    data = tmp_path / "toy.npz"
    _write_dataset(data, rng)
    out = tmp_path / "out"
    code, stdout, stderr = run_main(["train", "--model", "mlp", "--dataset", str(data),
                                     "--epochs", "3", "--lr", "0.005", "--batch-size", "32",
                                     "--optimizer", "adamw", "--seed", "1", "--out", str(out),
                                     "--verbose", "0"])
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == str(data)
    assert metrics["test_accuracy"] > 0.9
    assert "400 samples" in stdout
    model = fastnn.load(out / "model.npz")
    assert model.predict(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


@pytest.mark.parametrize("blocker", ["file", "nested"])
def test_unwritable_out_exits_2_with_a_message(tmp_path, blocker):
    f = tmp_path / "a_file"
    f.write_text("not a directory")
    out = f / "run" if blocker == "file" else f / "x" / "y"
    code, stdout, stderr = run_main(["train", "--model", "mlp", "--epochs", "1", "--out", str(out),
                                     "--verbose", "0"])
    assert code == 2
    assert "--out" in stderr and str(out) in stderr
    assert "Total parameters" not in stdout  # failed before loading data or training
    assert os.listdir(tmp_path) == ["a_file"]


def test_info_prints_version_backends_threads(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert fastnn.__version__ in out
    line = next(ln for ln in out.splitlines() if ln.startswith("backends available:"))
    for name in backend.available():
        assert name in line
    assert "threads:" in out
    if "numba" in backend.available():
        assert "cache" in out


def test_help_lists_commands_and_options():
    code, out, _ = run_main(["--help"])
    assert code == 0
    assert "train" in out and "info" in out
    code, out, _ = run_main(["train", "--help"])
    assert code == 0
    for opt in ("--model", "--dataset", "--epochs", "--batch-size", "--optimizer", "--lr",
                "--weight-decay", "--seed", "--backend", "--threads", "--out", "--verbose"):
        assert opt in out, opt
    for choice in ("mlp", "cnn", "sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"):
        assert choice in out, choice


def test_no_command_prints_help_and_exits_2():
    code, out, _ = run_main([])
    assert code == 2 and "train" in out


@pytest.mark.parametrize("argv,opt", [
    (["train", "--model", "rnn"], "--model"),
    (["train", "--optimizer", "lbfgs"], "--optimizer"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "-4"], "--batch-size"),
    (["train", "--backend", "cuda"], "--backend"),
    (["train", "--lr", "fast"], "--lr"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_arguments_exit_2_naming_the_option(argv, opt):
    code, _, err = run_main(argv)
    assert code == 2
    assert opt in err


@pytest.mark.parametrize("argv,opt", [
    (["--lr", "-1"], "--lr"),
    (["--validation-split", "1.5"], "--validation-split"),
    (["--dataset", "/nonexistent/data.npz"], "--dataset"),
], ids=["negative_lr", "validation_split", "missing_dataset"])
def test_bad_option_values_exit_2(tmp_path, argv, opt):
    code, _, err = run_main(["train", "--model", "mlp", "--epochs", "1", "--verbose", "0",
                             "--out", str(tmp_path / "out"), *argv])
    assert code == 2
    assert opt in err


def test_bench_command_exists():
    code, out, _ = run_main(["bench", "--help"])
    assert code == 0 and "bench" in out


def test_console_script_is_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["fastnn"] == "fastnn.cli:main"


def _env():
    return child_env()


def test_python_dash_m_help_subprocess():
    r = subprocess.run([sys.executable, "-m", "fastnn", "--help"], capture_output=True, text=True,
                       env=_env(), cwd=CHILD_CWD, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout and "info" in r.stdout
    assert "Traceback" not in r.stderr


def test_python_dash_m_exit_code_propagates(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    r = subprocess.run([sys.executable, "-m", "fastnn", "train", "--out", str(f / "run")],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert "--out" in r.stderr and "Traceback" not in r.stderr
