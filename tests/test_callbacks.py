"""fastnn.callbacks with Sequential.fit: EarlyStopping (stops, restores the best weights and
batch-norm statistics), ModelCheckpoint ({epoch} and log-key formatting, best-only, exact
resumption with load_checkpoint + fit(initial_epoch, rng_state)), LambdaCallback, Callback hooks."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import randn

import fastnn
from fastnn import Sequential
from fastnn.callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint
from fastnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD, Adam
from fastnn.schedules import CosineDecay

LOSS = SoftmaxCrossEntropy()


def mlp(seed=0):
    return Sequential([Dense(8, 32, seed=seed + 1), BatchNorm(32), ReLU(),
                       Dropout(0.1, seed=seed + 2), Dense(32, 3, seed=seed + 3)])


def cnn(seed=0):
    return Sequential([Conv2D(1, 3, 3, padding=1, seed=seed + 1), BatchNorm(3), ReLU(),
                       MaxPool2D(2), Flatten(), Dropout(0.2, seed=seed + 2),
                       Dense(3 * 4 * 4, 4, seed=seed + 3)], input_shape=(1, 8, 8))


def blobs(rng, n=120):
    centers = rng.standard_normal((3, 8)) * 3
    y = rng.integers(0, 3, n)
    return (centers[y] + rng.standard_normal((n, 8))).astype(np.float32), y


class Snapshots(LambdaCallback):
    """Weights and batch-norm statistics at the end of every epoch."""

    def __init__(self):
        super().__init__(self._record)
        self.weights, self.states, self.logs = [], [], []

    def _record(self, epoch, logs):
        self.weights.append(self.model.parameters().data.copy())
        self.states.append([{k: a.copy() for k, a in layer.state.items()}
                            for layer in self.model.layers])
        self.logs.append(logs)


def assert_states_equal(model, states):
    for layer, st in zip(model.layers, states):
        for k in st:
            np.testing.assert_array_equal(layer.state[k], st[k])


# ---------------------------------------------------------------- EarlyStopping

def test_early_stopping_stops_after_patience_and_restores_best(backend_name, rng):
    x, y = blobs(rng)
    m = mlp()
    snap = Snapshots()
    # training loss falls every epoch, so in "max" mode epoch 0 stays the best
    es = EarlyStopping(monitor="loss", mode="max", patience=2)
    h = m.fit(x, y, loss=LOSS, optimizer=Adam(m.parameters(), 1e-2), epochs=20, batch_size=16,
              seed=0, verbose=0, callbacks=[es, snap])
    assert len(h.history["loss"]) == 3  # epoch 0 best, then 2 epochs without improvement
    assert es.stopped_epoch == 2
    assert h.history["loss"][0] > h.history["loss"][1] > h.history["loss"][2]
    np.testing.assert_array_equal(m.parameters().data, snap.weights[0])
    assert_states_equal(m, snap.states[0])
    assert not np.array_equal(snap.weights[0], snap.weights[2])


def test_early_stopping_on_val_loss_restores_the_minimum(backend_name, rng):
    # memorising random labels: validation loss rises after a few epochs
    x = randn(rng, 16, 8)
    y = rng.integers(0, 3, 16)
    xv, yv = randn(rng, 32, 8), rng.integers(0, 3, 32)
    m = mlp()
    snap = Snapshots()
    es = EarlyStopping(patience=3)  # monitor val_loss, mode min, restore_best_weights=True
    h = m.fit(x, y, loss=LOSS, optimizer=Adam(m.parameters(), 3e-2), epochs=60, batch_size=8,
              validation_data=(xv, yv), seed=0, verbose=0, callbacks=[es, snap])
    n = len(h.history["val_loss"])
    assert n < 60, "expected an early stop"
    best = int(np.argmin(h.history["val_loss"]))
    assert n == best + 1 + 3
    np.testing.assert_array_equal(m.parameters().data, snap.weights[best])
    assert_states_equal(m, snap.states[best])
    ev = m.evaluate(xv, yv, loss=LOSS)
    assert ev["loss"] == pytest.approx(h.history["val_loss"][best], rel=1e-6)


def test_early_stopping_without_restore_keeps_last_weights(rng):
    x, y = blobs(rng)
    m = mlp()
    snap = Snapshots()
    es = EarlyStopping(monitor="loss", mode="max", patience=1, restore_best_weights=False)
    h = m.fit(x, y, loss=LOSS, optimizer=Adam(m.parameters(), 1e-2), epochs=10, batch_size=16,
              seed=0, verbose=0, callbacks=[es, snap])
    assert len(h.history["loss"]) == 2
    np.testing.assert_array_equal(m.parameters().data, snap.weights[-1])


def test_early_stopping_does_not_stop_while_improving(rng):
    x, y = blobs(rng)
    m = mlp()
    es = EarlyStopping(monitor="loss", patience=1)
    h = m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters(), 0.05), epochs=4, batch_size=16,
              seed=0, verbose=0, callbacks=[es])
    assert len(h.history["loss"]) == 4 and es.stopped_epoch is None


def test_early_stopping_min_delta(rng):
    x, y = blobs(rng)
    m = mlp()
    # loss improvements are far below 100: every epoch counts as no improvement
    es = EarlyStopping(monitor="loss", patience=2, min_delta=100.0)
    h = m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters(), 0.05), epochs=10, batch_size=16,
              seed=0, verbose=0, callbacks=[es])
    assert len(h.history["loss"]) == 3


def test_early_stopping_auto_mode():
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="accuracy").mode == "max"
    assert EarlyStopping(monitor="val_loss").mode == "min"


def test_early_stopping_errors(rng):
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    x, y = blobs(rng, n=20)
    m = mlp()
    with pytest.raises(ValueError, match="monitor"):  # no validation: no val_loss
        m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters()), verbose=0,
              callbacks=[EarlyStopping(monitor="val_loss")])


@pytest.mark.parametrize("patience", [-1, "2", 1.5])
def test_early_stopping_bad_patience(patience):
    with pytest.raises((ValueError, TypeError), match="patience"):
        EarlyStopping(patience=patience)


# ---------------------------------------------------------------- ModelCheckpoint

def test_checkpoint_writes_one_file_per_epoch(backend_name, tmp_path, rng):
    x, y = blobs(rng, n=60)
    m = mlp()
    snap = Snapshots()
    ck = ModelCheckpoint(str(tmp_path / "ck" / "epoch-{epoch:02d}.npz"))  # directory created
    m.fit(x, y, loss=LOSS, optimizer=Adam(m.parameters(), 1e-2), epochs=3, batch_size=16,
          seed=0, verbose=0, callbacks=[ck, snap])
    names = sorted(os.listdir(tmp_path / "ck"))
    assert names == ["epoch-01.npz", "epoch-02.npz", "epoch-03.npz"]
    assert ck.saved == [str(tmp_path / "ck" / n) for n in names]
    for i, name in enumerate(names):
        m2, opt, extra = fastnn.load_checkpoint(tmp_path / "ck" / name)
        np.testing.assert_array_equal(m2.parameters().data, snap.weights[i])
        assert_states_equal(m2, snap.states[i])
        assert extra["epoch"] == i + 1
        assert isinstance(opt, Adam) and opt.steps == 4 * (i + 1)
        assert extra["fit_rng_state"]["bit_generator"] == "PCG64"


def test_checkpoint_formats_log_keys(tmp_path, rng):
    x, y = blobs(rng, n=60)
    m = mlp()
    ck = ModelCheckpoint(str(tmp_path / "m-{epoch}-{val_loss:.4f}-{accuracy:.3f}.npz"),
                         save_optimizer=False)
    h = m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters(), 0.05), epochs=2, batch_size=16,
              validation_split=0.2, seed=0, verbose=0, callbacks=[ck])
    expected = sorted(f"m-{e + 1}-{h.history['val_loss'][e]:.4f}-{h.history['accuracy'][e]:.3f}.npz"
                      for e in range(2))
    assert sorted(os.listdir(tmp_path)) == expected
    _, opt, _ = fastnn.load_checkpoint(tmp_path / expected[0])
    assert opt is None


def test_checkpoint_save_best_only(tmp_path, rng):
    x = randn(rng, 16, 8)
    y = rng.integers(0, 3, 16)
    xv, yv = randn(rng, 32, 8), rng.integers(0, 3, 32)
    m = mlp()
    ck = ModelCheckpoint(str(tmp_path / "best-{epoch}.npz"), save_best_only=True)
    h = m.fit(x, y, loss=LOSS, optimizer=Adam(m.parameters(), 3e-2), epochs=15, batch_size=8,
              validation_data=(xv, yv), seed=0, verbose=0, callbacks=[ck])
    vl = h.history["val_loss"]
    improved = [e + 1 for e in range(len(vl)) if vl[e] < min(vl[:e], default=np.inf)]
    assert sorted(os.listdir(tmp_path)) == sorted(f"best-{e}.npz" for e in improved)
    assert len(improved) < len(vl)  # some epochs did not improve (so nothing was written)


def test_checkpoint_best_only_maximises_accuracy(tmp_path):
    ck = ModelCheckpoint(str(tmp_path / "e{epoch}.npz"), save_best_only=True,
                         monitor="val_accuracy")
    ck.model = Sequential([Dense(2, 2)])
    for epoch, acc in enumerate([0.3, 0.5, 0.4, 0.9]):
        ck.on_epoch_end(epoch, {"val_accuracy": acc})
    assert sorted(os.listdir(tmp_path)) == ["e1.npz", "e2.npz", "e4.npz"]


def test_checkpoint_best_only_with_missing_monitor_raises(tmp_path, rng):
    x, y = blobs(rng, n=20)
    m = mlp()
    with pytest.raises(ValueError, match="monitor"):
        m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters()), verbose=0, epochs=1,
              callbacks=[ModelCheckpoint(str(tmp_path / "x.npz"), save_best_only=True)])


@pytest.mark.parametrize("k", [1, 2])
def test_resume_from_checkpoint_is_bitwise_equal(backend_name, tmp_path, rng, k):
    x = randn(rng, 40, 1, 8, 8)
    y = rng.integers(0, 4, 40)
    epochs = 3

    def optimizer(m):
        return Adam(m.parameters(), lr=CosineDecay(1e-2, total_steps=15, warmup_steps=2))

    full = cnn()
    ck = ModelCheckpoint(str(tmp_path / "ck-{epoch}.npz"))
    h_full = full.fit(x, y, loss=LOSS, optimizer=optimizer(full), epochs=epochs, batch_size=8,
                      validation_split=0.2, seed=123, verbose=0, callbacks=[ck])

    m, opt, extra = fastnn.load_checkpoint(tmp_path / f"ck-{k}.npz")
    assert extra["epoch"] == k
    h = m.fit(x, y, loss=LOSS, optimizer=opt, epochs=epochs, batch_size=8, validation_split=0.2,
              seed=123, verbose=0, initial_epoch=k, rng_state=extra["fit_rng_state"])
    np.testing.assert_array_equal(m.parameters().data, full.parameters().data)
    for a, b in zip(m.layers, full.layers):
        for key in a.state:
            np.testing.assert_array_equal(a.state[key], b.state[key])
    assert h.epoch == list(range(k, epochs))
    for key in h_full.history:
        assert h.history[key] == h_full.history[key][k:]

    # without the saved shuffling state the continuation differs (the test can fail)
    m3, opt3, _ = fastnn.load_checkpoint(tmp_path / f"ck-{k}.npz")
    m3.fit(x, y, loss=LOSS, optimizer=opt3, epochs=epochs, batch_size=8, validation_split=0.2,
           seed=123, verbose=0, initial_epoch=k)
    assert not np.array_equal(m3.parameters().data, full.parameters().data)


# ---------------------------------------------------------------- LambdaCallback, Callback

def test_lambda_callback_called_per_epoch_with_logs(backend_name, rng):
    x, y = blobs(rng, n=60)
    calls = []
    m = mlp()
    h = m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters(), 0.05), epochs=3, batch_size=16,
              validation_split=0.2, seed=0, verbose=0,
              callbacks=[LambdaCallback(lambda epoch, logs: calls.append((epoch, logs)))])
    assert [e for e, _ in calls] == [0, 1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [logs[key] for _, logs in calls] == h.history[key]


def test_lambda_callback_logs_are_a_copy(rng):
    x, y = blobs(rng, n=30)
    m = mlp()

    def vandal(epoch, logs):
        logs["loss"] = -1.0
        logs["injected"] = 1

    h = m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters()), epochs=2, verbose=0,
              callbacks=[LambdaCallback(vandal)])
    assert all(v > 0 for v in h.history["loss"]) and "injected" not in h.history


def test_lambda_callback_can_stop_training(rng):
    x, y = blobs(rng, n=30)
    m = mlp()

    def stop(epoch, logs):
        if epoch == 1:
            m.stop_training = True

    h = m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters()), epochs=10, verbose=0,
              callbacks=[LambdaCallback(stop)])
    assert len(h.history["loss"]) == 2


def test_lambda_callback_rejects_non_callable():
    with pytest.raises(TypeError, match="on_epoch_end"):
        LambdaCallback(on_epoch_end=42)


def test_callback_hooks_order_and_attributes(rng):
    events = []

    class Recorder(Callback):
        def on_train_begin(self):
            events.append(("begin", self.model, self.optimizer))

        def on_epoch_end(self, epoch, logs):
            events.append(("epoch", epoch))

        def on_train_end(self):
            events.append(("end",))

    x, y = blobs(rng, n=30)
    m = mlp()
    opt = SGD(m.parameters())
    m.fit(x, y, loss=LOSS, optimizer=opt, epochs=2, verbose=0, callbacks=[Recorder()])
    assert events == [("begin", m, opt), ("epoch", 0), ("epoch", 1), ("end",)]


def test_callbacks_must_be_callback_instances(rng):
    x, y = blobs(rng, n=20)
    m = mlp()
    with pytest.raises(TypeError, match="callbacks"):
        m.fit(x, y, loss=LOSS, optimizer=SGD(m.parameters()), verbose=0,
              callbacks=[lambda epoch, logs: None])
