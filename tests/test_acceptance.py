"""Acceptance: real accuracy on the full MNIST (../shared/data/mnist.npz), fixed recipes and the
`fastnn train` defaults. Marked slow (minutes); `pytest tests -m "not slow"` leaves them out.

The full fixed-recipe CNN run (3 epochs) is long for CI on two cores; CI runs 1 epoch of it with a
bar measured the same way, and `FASTNN_FULL_ACCEPTANCE=1 pytest tests/test_acceptance.py` runs all
three epochs against the issue's bar."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, REPORT

import fastnn
from fastnn import cli, recipes
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import Adam

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist.npz"
FULL = os.environ.get("FASTNN_FULL_ACCEPTANCE") == "1"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist():
    if not DATA.exists():
        if IN_CI:
            pytest.fail(f"CI needs the MNIST file at {DATA}")
        pytest.skip(f"no MNIST file at {DATA} (the acceptance runs need ../shared/data)")
    return fastnn.datasets.mnist(DATA)


def train_fixed(name, model, mnist, epochs):
    (x_train, y_train), (x_test, y_test) = mnist
    loss = SoftmaxCrossEntropy()
    t0 = time.perf_counter()
    model.fit(x_train, y_train, loss=loss, optimizer=Adam(model.parameters(), lr=1e-3),
              epochs=epochs, batch_size=64, seed=0, verbose=0)
    took = time.perf_counter() - t0
    acc = model.evaluate(x_test, y_test, loss=loss)["accuracy"]
    REPORT.append(f"{name}, {epochs} epochs: test accuracy {acc:.4f}, training {took:.0f} s "
                  f"(backend {fastnn.backend.current()}, {fastnn.backend.get_num_threads()} threads)")
    return acc


def test_fixed_recipe_mlp_5_epochs(mnist):
    """MLP 784-512-256-10, Adam(1e-3), batch 64, 5 epochs: >= 97.7% (PyTorch: 97.84-98.12%)."""
    acc = train_fixed("fixed MLP", recipes.mlp(seed=0, dropout=0), mnist, epochs=5)
    assert acc >= 0.977, acc


def test_fixed_recipe_cnn(mnist):
    """The issue's CNN, Adam(1e-3), batch 64: >= 98.7% after 3 epochs (PyTorch: 98.75-98.94%);
    in CI one epoch, >= 98.0%."""
    epochs, bar = (3, 0.987) if FULL else (1, 0.980)
    acc = train_fixed("fixed CNN", recipes.cnn(seed=0, batchnorm=False, dropout=0), mnist, epochs)
    assert acc >= bar, (epochs, acc)


@pytest.mark.parametrize("model,epochs,bar", [("mlp", 5, 0.983), ("cnn", 3, 0.992)])
def test_fastnn_train_defaults_on_full_mnist(mnist, tmp_path, monkeypatch, model, epochs, bar):
    """`fastnn train --model M --dataset mnist --epochs E` with its default recipe."""
    monkeypatch.setenv("FASTNN_DATA_DIR", str(DATA.parent))
    rc = cli.main(["train", "--model", model, "--dataset", "mnist", "--epochs", str(epochs),
                   "--out", str(tmp_path), "--verbose", "0"])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    REPORT.append(f"fastnn train --model {model} --dataset mnist --epochs {epochs}: test accuracy "
                  f"{metrics['test_accuracy']:.4f}, training {metrics['train_seconds']:.0f} s")
    assert metrics["test_accuracy"] >= bar, metrics
    assert (tmp_path / "model.npz").exists() and (tmp_path / "history.json").exists()
    model_back = fastnn.load(tmp_path / "model.npz")
    assert np.isfinite(model_back.parameters().data).all()
