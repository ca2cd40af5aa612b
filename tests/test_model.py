"""fastnn.Sequential (flat parameter buffer, fusion, forward/backward/predict, summary, fit,
evaluate, train_on_batch, predict_on_batch) and the loss classes, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randn

import fastnn
from fastnn import Sequential
from fastnn.callbacks import LambdaCallback
from fastnn.layers import (BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid,
                           Tanh)
from fastnn.losses import MeanSquaredError, SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy
from fastnn.optim import SGD, Adam

# ---------------------------------------------------------------- helpers


def blobs(rng, n=240, d=8, c=3, spread=1.0):
    """A linearly separable-ish synthetic classification set (float32 x, int64 y)."""
    centers = rng.standard_normal((c, d)) * 3
    y = rng.integers(0, c, n)
    x = centers[y] + rng.standard_normal((n, d)) * spread
    return x.astype(np.float32), y.astype(np.int64)


def mlp(seed=0, dropout=0.0, bn=False):
    layers = [Dense(8, 16, seed=seed + 1)]
    layers += [BatchNorm(16)] if bn else []
    layers += [ReLU()]
    layers += [Dropout(dropout, seed=seed + 2)] if dropout else []
    layers += [Dense(16, 3, seed=seed + 3)]
    return Sequential(layers)


def small_cnn(seed=0):
    return Sequential([Conv2D(1, 3, 3, padding=1, seed=seed + 1), BatchNorm(3), ReLU(),
                       MaxPool2D(2), Flatten(), Dropout(0.25, seed=seed + 2),
                       Dense(3 * 4 * 4, 4, seed=seed + 3)], input_shape=(1, 8, 8))


def softmax64(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce64(logits, labels):
    p = softmax64(logits)
    n = len(labels)
    return float(-np.log(p[np.arange(n), labels]).mean())


def layer_views(model):
    return [(layer, name) for layer in model.layers for name in layer.params]


# ---------------------------------------------------------------- construction, flat buffer

def test_parameters_are_views_into_one_flat_buffer():
    m = Sequential([Conv2D(1, 2, 3, seed=0), BatchNorm(2), ReLU(), Flatten(),
                    Dense(2 * 4 * 4, 5, seed=1), ReLU(), Dense(5, 3, seed=2)])
    P = m.parameters()
    assert m.parameters() is P
    assert P.data.dtype == P.grad.dtype == np.float32 and P.data.ndim == 1
    assert P.data.flags.c_contiguous and P.grad.flags.c_contiguous
    expected = sum(p.size for layer in m.layers for p in layer.params.values())
    assert P.size == expected == 2 * 9 + 2 + 2 + 2 + 32 * 5 + 5 + 5 * 3 + 3
    assert len(P) == 8
    for layer, name in layer_views(m):
        assert np.shares_memory(layer.params[name], P.data), name
        assert np.shares_memory(layer.grads[name], P.grad), name
    # writing the flat buffer changes the layers' parameters
    P.data[...] = 0.25
    for layer, name in layer_views(m):
        np.testing.assert_array_equal(layer.params[name], np.float32(0.25))
    # writing a layer's parameter changes the flat buffer
    m.layers[4].params["W"][0, 0] = 7.0
    assert np.count_nonzero(P.data == 7.0) == 1
    # qualified names and views from iteration
    names = [q for q, _, _ in P]
    assert names == ["0.W", "0.b", "1.gamma", "1.beta", "4.W", "4.b", "6.W", "6.b"]


def test_backward_writes_gradients_into_the_flat_grad(backend_name, rng):
    m = mlp(bn=True)
    P = m.parameters()
    x, y = blobs(rng, n=10)
    loss = SoftmaxCrossEntropy()
    loss.forward(m.forward(x), y)
    m.backward(loss.backward())
    total = sum(float(np.abs(layer.grads[name]).sum()) for layer, name in layer_views(m))
    assert total > 0
    assert float(np.abs(P.grad).sum()) == pytest.approx(total, rel=1e-6)
    for q, p, g in P:
        assert np.shares_memory(g, P.grad)
    P.zero_grad()
    for layer, name in layer_views(m):
        np.testing.assert_array_equal(layer.grads[name], 0)


def test_parameters_stay_views_after_fit(backend_name, rng):
    m = mlp()
    x, y = blobs(rng, n=40)
    opt = Adam(m.parameters(), lr=1e-2)
    m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=opt, epochs=1, batch_size=8, verbose=0)
    for layer, name in layer_views(m):
        assert np.shares_memory(layer.params[name], m.parameters().data)
        assert np.shares_memory(layer.grads[name], m.parameters().grad)


@pytest.mark.parametrize("layers,exc,arg", [
    ([], ValueError, "layers"),
    ([Dense(2, 2), "relu"], TypeError, r"layers\[1\]"),
    ([lambda x: x], TypeError, r"layers\[0\]"),
])
def test_bad_layer_lists(layers, exc, arg):
    with pytest.raises(exc, match=arg):
        Sequential(layers)


def test_wrapping_existing_layers_keeps_their_weights(rng):
    m = Sequential([Dense(4, 5), ReLU(), Dense(5, 3)])
    m.parameters().data[...] = rng.standard_normal(m.parameters().data.size).astype(np.float32)
    W = m.layers[0].params["W"].copy()
    m2 = Sequential(m.layers)
    np.testing.assert_array_equal(m2.layers[0].params["W"], W)


def test_layers_reused_in_another_sequential_are_replanned(backend_name, rng):
    d, r, d2 = Dense(4, 5, init="he", seed=1), ReLU(), Dense(5, 3, init="xavier", seed=2)
    Sequential([d, r, d2])
    x = randn(rng, 6, 4)
    # d alone is affine: it must produce negative values for some inputs
    alone = Sequential([d]).predict(x)
    np.testing.assert_allclose(alone, x @ d.params["W"] + d.params["b"], rtol=1e-5, atol=1e-5)
    # r alone must apply ReLU
    z = randn(rng, 6, 5)
    np.testing.assert_array_equal(Sequential([r]).predict(z), np.maximum(z, 0))


# ---------------------------------------------------------------- forward / backward

def manual_mlp(x, y, W1, b1, W2, b2, act):
    x = x.astype(np.float64)
    z1 = x @ W1 + b1
    h = np.maximum(z1, 0) if act == "relu" else 1 / (1 + np.exp(-z1))
    out = h @ W2 + b2
    n = len(y)
    p = softmax64(out)
    loss = float(-np.log(p[np.arange(n), y]).mean())
    dout = p.copy()
    dout[np.arange(n), y] -= 1
    dout /= n
    dW2, db2 = h.T @ dout, dout.sum(0)
    dh = dout @ W2.T
    dz1 = dh * (z1 > 0) if act == "relu" else dh * h * (1 - h)
    return out, loss, {"W1": x.T @ dz1, "b1": dz1.sum(0), "W2": dW2, "b2": db2}, dz1 @ W1.T


@pytest.mark.parametrize("act_cls,act", [(ReLU, "relu"), (Sigmoid, "sigmoid")])
def test_fused_dense_activation_matches_unfused_and_float64(backend_name, act_cls, act, rng):
    def build(separate):
        mid = [Dropout(0.0)] if separate else []
        return Sequential([Dense(6, 5, init="he", seed=1), *mid, act_cls(),
                           Dense(5, 3, init="xavier", seed=2)])

    fused, plain = build(False), build(True)
    assert fused.layers[0].fused == act and fused.layers[1].fused is True
    assert not plain.layers[0].fused and not plain.layers[2].fused
    np.testing.assert_array_equal(fused.parameters().data, plain.parameters().data)
    x = randn(rng, 7, 6)
    y = rng.integers(0, 3, 7)
    results = []
    for m in (fused, plain):
        loss = SoftmaxCrossEntropy()
        out = m.forward(x)
        value = loss.forward(out, y)
        dx = m.backward(loss.backward())
        grads = {"W1": m.layers[0].grads["W"], "b1": m.layers[0].grads["b"],
                 "W2": m.layers[-1].grads["W"], "b2": m.layers[-1].grads["b"]}
        results.append((out, value, {k: g.copy() for k, g in grads.items()}, dx.copy()))
    (o1, l1, g1, dx1), (o2, l2, g2, dx2) = results
    np.testing.assert_allclose(o1, o2, rtol=1e-6, atol=1e-7)
    assert l1 == pytest.approx(l2, rel=1e-6)
    np.testing.assert_allclose(dx1, dx2, rtol=1e-5, atol=1e-7)
    for k in g1:
        np.testing.assert_allclose(g1[k], g2[k], rtol=1e-5, atol=1e-7, err_msg=k)
    d0, d1 = fused.layers[0], fused.layers[2]
    out, value, grads, dx = manual_mlp(x, y, d0.params["W"], d0.params["b"], d1.params["W"],
                                       d1.params["b"], act)
    np.testing.assert_allclose(o1, out, rtol=1e-5, atol=1e-5)
    assert l1 == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(dx1, dx, rtol=1e-4, atol=1e-6)
    for k in grads:
        np.testing.assert_allclose(g1[k], grads[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_relu_before_maxpool_runs_after_the_pooling_with_the_same_results(backend_name, rng):
    def build(separate):
        # (a 1x1 convolution first: a first Conv2D -> ReLU -> MaxPool2D would run as one
        # ConvReLUPool step, see tests/test_convpool.py)
        mid = [Dropout(0.0)] if separate else []
        return Sequential([Conv2D(2, 2, 1, seed=0), Conv2D(2, 4, 3, padding=1, seed=1), ReLU(),
                           *mid, MaxPool2D(2), Flatten(), Dense(4 * 3 * 3, 3, seed=2)])

    fused, plain = build(False), build(True)
    assert fused.layers[2].fused == "pool" and fused.layers[3].relu
    assert not plain.layers[2].fused and not plain.layers[4].relu
    x = randn(rng, 5, 2, 6, 7)
    x[0, :, :3] = -1.0  # windows where every value is negative: the ReLU zeroes the whole window
    y = rng.integers(0, 3, 5)
    results = []
    for m in (fused, plain):
        loss = SoftmaxCrossEntropy()
        out = m.forward(x)
        value = loss.forward(out, y)
        dx = m.backward(loss.backward())
        results.append((out, value, m.parameters().grad.copy(), dx.copy()))
    for a, b in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_forward_returns_a_fresh_array(backend_name, rng):
    m = mlp()
    x1, x2 = randn(rng, 4, 8), randn(rng, 4, 8)
    a = m.forward(x1)
    a_copy = a.copy()
    m.forward(x2)
    np.testing.assert_array_equal(a, a_copy)


def test_forward_accepts_float64_and_lists(backend_name, rng):
    m = mlp()
    x = randn(rng, 3, 8)
    ref = m.predict(x)
    np.testing.assert_allclose(m.predict(x.astype(np.float64)), ref, rtol=1e-6)
    np.testing.assert_allclose(m.predict(x.tolist()), ref, rtol=1e-6)
    assert m.forward(x.astype(np.float64), train=False).dtype == np.float32
    with pytest.raises(TypeError, match="x"):
        m.predict(np.zeros((3, 8), np.int32))


def test_predict_is_inference_mode_and_batch_size_independent(backend_name, rng):
    m = small_cnn()
    x = randn(rng, 11, 1, 8, 8)
    # give batch norm non-trivial running statistics
    for _ in range(3):
        m.forward(randn(rng, 6, 1, 8, 8) * 2 + 1, train=True)
    state = [{k: a.copy() for k, a in layer.state.items()} for layer in m.layers]
    full = m.predict(x, batch_size=256)
    assert full.shape == (11, 4) and full.dtype == np.float32
    np.testing.assert_allclose(m.predict(x, batch_size=3), full, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(m.predict(x, batch_size=1), full, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(m.predict(x), full)  # deterministic: dropout off
    np.testing.assert_allclose(m.forward(x, train=False), full, rtol=1e-6, atol=1e-6)
    for layer, st in zip(m.layers, state):  # running statistics untouched
        for k in st:
            np.testing.assert_array_equal(layer.state[k], st[k])
    # train mode differs (batch statistics and dropout)
    assert not np.allclose(m.forward(x, train=True), full)


def test_predict_bad_arguments(rng):
    m = mlp()
    with pytest.raises(ValueError, match="batch_size"):
        m.predict(randn(rng, 3, 8), batch_size=0)
    with pytest.raises(ValueError, match="x"):
        m.predict(np.zeros((0, 8), np.float32))


def test_summary_lists_layers_shapes_and_counts():
    m = Sequential([Conv2D(1, 4, 3, padding=1, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                    Dense(64, 20, seed=1), Sigmoid(), Dense(20, 10, seed=2)],
                   input_shape=(1, 8, 8))
    s = m.summary()
    assert isinstance(s, str)
    for name in ("Conv2D", "ReLU", "MaxPool2D", "Flatten", "Dense", "Sigmoid"):
        assert name in s
    for shape in ("(None, 4, 8, 8)", "(None, 4, 4, 4)", "(None, 64)", "(None, 20)", "(None, 10)"):
        assert shape in s, shape
    total = 4 * 9 + 4 + 64 * 20 + 20 + 20 * 10 + 10
    assert m.parameters().size == total == 1550
    assert "1,550" in s
    assert "1,300" in s and "210" in s and "40" in s
    assert len(s.splitlines()) >= 1 + len(m.layers)


def test_summary_infers_input_shape_from_a_leading_dense():
    s = Sequential([Dense(5, 7), Tanh(), Dense(7, 2)]).summary()
    assert "(None, 7)" in s and "(None, 2)" in s and "58" in s


# ---------------------------------------------------------------- gradcheck of whole models

def test_gradcheck_mlp_with_loss(backend_name, rng):
    m = Sequential([Dense(6, 8, seed=1), ReLU(), Dropout(0.3, seed=2), Dense(8, 8, seed=3),
                    Tanh(), Dense(8, 4, seed=4)])
    x = randn(rng, 5, 6)
    y = rng.integers(0, 4, 5)
    err = fastnn.gradcheck(m, x, y, loss=SoftmaxCrossEntropy(), num_checks=15)
    assert err < 1e-2


def test_gradcheck_cnn_with_loss(backend_name, rng):
    m = Sequential([Conv2D(2, 3, 3, padding=1, seed=1), ReLU(), MaxPool2D(2),
                    Conv2D(3, 2, 2, stride=1, seed=2), Sigmoid(), Flatten(),
                    Dense(2 * 2 * 2, 3, seed=3)])
    x = randn(rng, 3, 2, 6, 6)
    y = rng.integers(0, 3, 3)
    err = fastnn.gradcheck(m, x, y, loss=SoftmaxCrossEntropy(), num_checks=15)
    assert err < 1e-2


def test_gradcheck_cnn_with_batchnorm(backend_name, rng):
    # smooth activations after batch norm: a ReLU right after it puts many values next to the
    # kink, where central differences (eps 1e-3) are not a gradient
    m = Sequential([Conv2D(2, 3, 3, padding=1, seed=1), BatchNorm(3), Tanh(),
                    Conv2D(3, 2, 3, stride=2, seed=2), Flatten(), BatchNorm(2 * 2 * 2), Sigmoid(),
                    Dense(2 * 2 * 2, 3, seed=3)])
    x = randn(rng, 4, 2, 6, 6)
    y = rng.integers(0, 3, 4)
    err = fastnn.gradcheck(m, x, y, loss=SoftmaxCrossEntropy(), num_checks=15)
    assert err < 1e-2


def test_gradcheck_with_mse_and_bce(backend_name, rng):
    m = Sequential([Dense(4, 6, seed=1), Sigmoid(), Dense(6, 2, seed=2)])
    x = randn(rng, 5, 4)
    assert fastnn.gradcheck(m, x, randn(rng, 5, 2), loss=MeanSquaredError(), eps=1e-2) < 1e-2
    t = rng.integers(0, 2, (5, 2)).astype(np.float32)
    assert fastnn.gradcheck(m, x, t, loss=SigmoidBinaryCrossEntropy(), eps=1e-2) < 1e-2


# ---------------------------------------------------------------- fit

def test_fit_history_keys_without_validation(backend_name, rng):
    m = mlp()
    x, y = blobs(rng, n=64)
    h = m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=Adam(m.parameters(), 1e-2), epochs=3,
              batch_size=16, seed=0, verbose=0)
    assert isinstance(h, fastnn.History)
    assert set(h.history) == {"loss", "accuracy"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.epoch == [0, 1, 2]
    assert all(0.0 <= a <= 1.0 for a in h.history["accuracy"])
    assert h.history["loss"][-1] < h.history["loss"][0]


def test_fit_with_validation_data_and_split(backend_name, rng):
    x, y = blobs(rng, n=80)
    xv, yv = blobs(np.random.default_rng(1), n=20)
    loss = SoftmaxCrossEntropy()
    m = mlp()
    h = m.fit(x, y, loss=loss, optimizer=Adam(m.parameters(), 1e-2), epochs=2, batch_size=16,
              validation_data=(xv, yv), seed=0, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in h.history.values())
    ev = m.evaluate(xv, yv, loss=loss)
    assert h.history["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-6)
    assert h.history["val_accuracy"][-1] == pytest.approx(ev["accuracy"])

    m = mlp()
    h = m.fit(x, y, loss=loss, optimizer=Adam(m.parameters(), 1e-2), epochs=2, batch_size=16,
              validation_split=0.25, seed=0, verbose=0)
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    ev = m.evaluate(x[-20:], y[-20:], loss=loss)  # the last 25% is held out
    assert h.history["val_loss"][-1] == pytest.approx(ev["loss"], rel=1e-6)


def test_fit_validation_split_excludes_validation_samples(rng):
    """validation_split holds out the last fraction: NaN samples there never reach training
    (which would raise FloatingPointError) and show up only in the validation loss."""
    x, y = blobs(rng, n=40)
    x[-10:] = np.nan  # held out; evaluate reports NaN loss there but training is finite
    m = mlp()
    h = m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters(), 0.01), epochs=1,
              batch_size=10, validation_split=0.25, verbose=0)
    assert np.isfinite(h.history["loss"][0])
    assert np.isnan(h.history["val_loss"][0])


@pytest.mark.parametrize("kwargs,arg", [
    ({"validation_split": 1.0}, "validation_split"),
    ({"validation_split": -0.1}, "validation_split"),
    ({"validation_split": 0.001}, "validation_split"),
    ({"validation_data": (np.zeros((3, 8), np.float32),)}, "validation_data"),
    ({"epochs": -1}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
])
def test_fit_bad_arguments(kwargs, arg, rng):
    m = mlp()
    x, y = blobs(rng, n=20)
    with pytest.raises(ValueError, match=arg):
        m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()), verbose=0, **kwargs)


def test_fit_mismatched_targets(rng):
    m = mlp()
    x, y = blobs(rng, n=20)
    with pytest.raises(ValueError, match="y"):
        m.fit(x, y[:-1], loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()), verbose=0)
    with pytest.raises(TypeError, match="y"):
        m.fit(x, y.astype(str), loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()),
              verbose=0)


def test_fit_verbose_0_prints_nothing(backend_name, rng, capsys):
    m = mlp()
    x, y = blobs(rng, n=40)
    m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()), epochs=2, batch_size=8,
          validation_split=0.2, verbose=0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_fit_verbose_prints_one_line_per_epoch(rng, capsys):
    m = mlp()
    x, y = blobs(rng, n=40)
    m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()), epochs=2, batch_size=8,
          validation_split=0.2, verbose=2)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("Epoch ")]
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2") and lines[1].startswith("Epoch 2/2")
    assert "val_loss" in lines[0] and "accuracy" in lines[0]


def test_seeded_fit_is_bitwise_reproducible(backend_name, rng):
    x = randn(rng, 48, 1, 8, 8)
    y = rng.integers(0, 4, 48)

    def run(seed):
        m = small_cnn()
        opt = Adam(m.parameters(), lr=1e-2)
        h = m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=opt, epochs=2, batch_size=8,
                  seed=seed, verbose=0)
        return m, h

    (a, ha), (b, hb), (c, _) = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.parameters().data, b.parameters().data)
    assert ha.history == hb.history
    for la, lb in zip(a.layers, b.layers):
        for k in la.state:
            np.testing.assert_array_equal(la.state[k], lb.state[k])
    assert not np.array_equal(a.parameters().data, c.parameters().data)  # the seed matters


def test_fit_shuffle_false_ignores_seed(rng):
    x, y = blobs(rng, n=32)
    res = []
    for seed in (0, 1):
        m = mlp()
        m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters(), 0.1), epochs=1,
              batch_size=8, shuffle=False, seed=seed, verbose=0)
        res.append(m.parameters().data.copy())
    np.testing.assert_array_equal(*res)


def test_fit_with_one_hot_targets_equals_int_labels(backend_name, rng):
    x, y = blobs(rng, n=48)
    res = []
    for targets in (y, np.eye(3, dtype=np.float32)[y]):
        m = mlp()
        h = m.fit(x, targets, loss=SoftmaxCrossEntropy(), optimizer=Adam(m.parameters(), 1e-2),
                  epochs=2, batch_size=16, seed=3, verbose=0)
        res.append((m.parameters().data.copy(), h.history))
    np.testing.assert_array_equal(res[0][0], res[1][0])
    assert res[0][1] == res[1][1]


def test_fit_regression_with_mse(backend_name, rng):
    x = randn(rng, 128, 4)
    w = np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)
    y = x @ w + np.float32(0.25)
    m = Sequential([Dense(4, 1, seed=0)])
    h = m.fit(x, y, loss=MeanSquaredError(), optimizer=SGD(m.parameters(), 0.05), epochs=30,
              batch_size=16, seed=0, verbose=0)
    assert h.history["loss"][-1] < 1e-3 < h.history["loss"][0]
    np.testing.assert_allclose(m.layers[0].params["W"], w, atol=0.02)
    np.testing.assert_allclose(m.layers[0].params["b"], [0.25], atol=0.02)


def test_fit_zero_epochs_changes_nothing(rng):
    m = mlp()
    before = m.parameters().data.copy()
    x, y = blobs(rng, n=16)
    h = m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()), epochs=0, verbose=0)
    assert h.history == {}
    np.testing.assert_array_equal(m.parameters().data, before)


def test_fit_learns_a_separable_task(backend_name, rng):
    x, y = blobs(rng, n=400)
    xt, yt = x[300:], y[300:]
    x, y = x[:300], y[:300]
    m = mlp(dropout=0.1)
    loss = SoftmaxCrossEntropy()
    h = m.fit(x, y, loss=loss, optimizer=Adam(m.parameters(), 1e-2), epochs=15, batch_size=32,
              seed=0, verbose=0)
    assert h.history["accuracy"][-1] > 0.95
    assert m.evaluate(xt, yt, loss=loss)["accuracy"] > 0.95


def test_fit_learns_mnist_small_subset(rng):
    (x, y), (xt, yt) = fastnn.datasets.mnist_small(flatten=True)
    x, y = x[:3000], y[:3000]
    m = Sequential([Dense(784, 64, seed=1), ReLU(), Dense(64, 10, seed=2)])
    loss = SoftmaxCrossEntropy()
    m.fit(x, y, loss=loss, optimizer=Adam(m.parameters(), 2e-3), epochs=3, batch_size=32, seed=0,
          verbose=0)
    assert m.evaluate(xt, yt, loss=loss)["accuracy"] > 0.85


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_loss_from_huge_lr_names_epoch_and_step(backend_name, rng):
    x, y = blobs(rng, n=64)
    m = Sequential([Dense(8, 16, seed=1), ReLU(), Dense(16, 3, seed=2)])
    with pytest.raises(FloatingPointError, match=r"epoch \d+, step \d+"):
        m.fit(x * 1e3, y, loss=MeanSquaredError(), optimizer=SGD(m.parameters(), lr=1e6),
              epochs=5, batch_size=8, verbose=0)


def test_nan_input_names_the_exact_epoch_and_step(backend_name, rng):
    x, y = blobs(rng, n=40)
    x[21, 3] = np.nan  # batch_size 4, no shuffle: step 6
    m = mlp()
    with pytest.raises(FloatingPointError, match=r"epoch 1, step 6\b"):
        m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()), batch_size=4,
              shuffle=False, verbose=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_in_a_later_epoch_names_that_epoch(rng):
    x, y = blobs(rng, n=16)
    m = mlp()

    def poison(epoch, logs):
        if epoch == 1:
            m.parameters().data[0] = np.inf

    with pytest.raises(FloatingPointError, match=r"epoch 3, step 1\b"):
        m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m.parameters()), epochs=4,
              batch_size=8, verbose=0, callbacks=[LambdaCallback(poison)])


def test_optimizer_for_another_model_is_rejected(rng):
    a, b = mlp(), mlp()
    x, y = blobs(rng, n=16)
    opt = Adam(b.parameters())
    with pytest.raises(ValueError, match="optimizer"):
        a.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=opt, verbose=0)
    with pytest.raises(ValueError, match="optimizer"):
        a.train_on_batch(x, y, loss=SoftmaxCrossEntropy(), optimizer=opt)


# ---------------------------------------------------------------- evaluate, *_on_batch

def test_evaluate_matches_manual_computation(backend_name, rng):
    m = mlp(dropout=0.5, bn=True)
    x, y = blobs(rng, n=50)
    m.forward(x, train=True)  # running statistics
    out = m.predict(x)
    r = m.evaluate(x, y, loss=SoftmaxCrossEntropy())
    assert set(r) == {"loss", "accuracy"}
    assert r["loss"] == pytest.approx(ce64(out, y), rel=1e-5)
    assert r["accuracy"] == pytest.approx(float((out.argmax(1) == y).mean()))
    r7 = m.evaluate(x, y, loss=SoftmaxCrossEntropy(), batch_size=7)
    assert r7["loss"] == pytest.approx(r["loss"], rel=1e-5)
    assert r7["accuracy"] == pytest.approx(r["accuracy"])


def test_train_on_batch_returns_the_loss_and_takes_one_sgd_step(backend_name, rng):
    m = mlp()
    x, y = blobs(rng, n=12)
    loss = SoftmaxCrossEntropy()
    P = m.parameters()
    before = P.data.copy()
    expected_loss = ce64(m.forward(x), y)
    loss.forward(m.forward(x), y)
    m.backward(loss.backward())
    grad = P.grad.copy()
    lr = 0.5
    value = m.train_on_batch(x, y, loss=loss, optimizer=SGD(P, lr=lr))
    assert isinstance(value, float)
    assert value == pytest.approx(expected_loss, rel=1e-5)
    np.testing.assert_allclose(P.data, before - np.float32(lr) * grad, rtol=1e-6, atol=1e-7)
    assert not np.array_equal(P.data, before)


def test_predict_on_batch(backend_name, rng):
    m = mlp(dropout=0.5)
    x1, x2 = randn(rng, 5, 8), randn(rng, 5, 8)
    ref1, ref2 = m.predict(x1), m.predict(x2)
    np.testing.assert_array_equal(m.predict_on_batch(x1), ref1)  # inference mode: deterministic
    a = m.predict_on_batch(x1, copy=True)
    b = m.predict_on_batch(x2)
    np.testing.assert_array_equal(a, ref1)  # not overwritten by the next call
    np.testing.assert_array_equal(b, ref2)
    assert not np.shares_memory(a, b)
    c = m.predict_on_batch(x2, copy=True)
    assert not np.shares_memory(c, m.predict_on_batch(x2))


# ---------------------------------------------------------------- losses

def test_softmax_ce_int_labels_and_one_hot_agree(backend_name, rng):
    logits = randn(rng, 6, 4, scale=3)
    labels = rng.integers(0, 4, 6)
    one_hot = np.eye(4, dtype=np.float32)[labels]
    a, b = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    la, lb = a.forward(logits, labels), b.forward(logits, one_hot)
    assert la == pytest.approx(lb, rel=1e-6)
    assert la == pytest.approx(ce64(logits, labels), rel=1e-5)
    np.testing.assert_allclose(a.backward(), b.backward(), rtol=1e-6, atol=1e-8)
    p = softmax64(logits)
    np.testing.assert_allclose(a.backward(), (p - one_hot) / 6, rtol=1e-5, atol=1e-7)
    for dtype in (np.int8, np.uint8, np.int32):
        assert SoftmaxCrossEntropy().forward(logits, labels.astype(dtype)) == pytest.approx(la)
    # integer one-hot targets too
    int_one_hot = one_hot.astype(np.int64)
    assert SoftmaxCrossEntropy().forward(logits, int_one_hot) == pytest.approx(la, rel=1e-5)


def test_softmax_ce_soft_targets(backend_name, rng):
    logits = randn(rng, 5, 3, scale=2)
    t = rng.dirichlet(np.ones(3), 5)
    lf = SoftmaxCrossEntropy()
    value = lf.forward(logits, t)
    p = softmax64(logits)
    assert value == pytest.approx(float(-(t * np.log(p)).sum(1).mean()), rel=1e-5)
    np.testing.assert_allclose(lf.backward(), (p - t) / 5, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="targets"):
        lf.forward(logits, t * 2)


def test_softmax_ce_stable_for_large_logits(backend_name):
    logits = np.array([[1e4, -1e4, 0], [0, 1e4, 1e4]], np.float32)
    lf = SoftmaxCrossEntropy()
    value = lf.forward(logits, np.array([0, 1]))
    assert value == pytest.approx(np.log(2) / 2, rel=1e-4)
    assert np.all(np.isfinite(lf.backward()))


def test_softmax_ce_bad_targets(rng):
    logits = randn(rng, 4, 3)
    with pytest.raises(ValueError, match="labels"):
        SoftmaxCrossEntropy().forward(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="targets"):
        SoftmaxCrossEntropy().forward(logits, np.zeros((4, 5), np.float32))


def test_sigmoid_bce_matches_float64(backend_name, rng):
    z = randn(rng, 6, 2, scale=4)
    t = rng.integers(0, 2, (6, 2)).astype(np.float32)
    lf = SigmoidBinaryCrossEntropy()
    value = lf.forward(z, t)
    z64 = z.astype(np.float64)
    ref = np.mean(np.maximum(z64, 0) - z64 * t + np.log1p(np.exp(-np.abs(z64))))
    assert value == pytest.approx(ref, rel=1e-5)
    np.testing.assert_allclose(lf.backward(), (1 / (1 + np.exp(-z64)) - t) / z.size, rtol=1e-5,
                               atol=1e-7)
    # stable for huge logits
    big = SigmoidBinaryCrossEntropy().forward(np.array([[1e4], [-1e4]], np.float32),
                                              np.array([[0.0], [1.0]], np.float32))
    assert big == pytest.approx(1e4, rel=1e-5)


def test_sigmoid_bce_accepts_integer_targets(rng):
    z = randn(rng, 6, 1)
    t = rng.integers(0, 2, (6, 1))
    assert SigmoidBinaryCrossEntropy().forward(z, t) == pytest.approx(
        SigmoidBinaryCrossEntropy().forward(z, t.astype(np.float32)))


def test_mse_matches_float64(backend_name, rng):
    o, t = randn(rng, 5, 3), randn(rng, 5, 3)
    lf = MeanSquaredError()
    value = lf.forward(o, t)
    d = o.astype(np.float64) - t
    assert value == pytest.approx(float((d**2).mean()), rel=1e-5)
    np.testing.assert_allclose(lf.backward(), 2 * d / d.size, rtol=1e-5, atol=1e-7)
    labels = np.array([0, 2, 1, 1, 0])
    assert lf.forward(o, labels) == pytest.approx(
        float(((o.astype(np.float64) - np.eye(3)[labels]) ** 2).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="target"):
        lf.forward(o, t[:, :2])


@pytest.mark.parametrize("cls", [SoftmaxCrossEntropy, SigmoidBinaryCrossEntropy, MeanSquaredError])
def test_loss_backward_before_forward_raises(cls):
    with pytest.raises(RuntimeError, match="before forward"):
        cls().backward()


def test_loss_value_is_a_python_float(rng):
    for lf, t in ((SoftmaxCrossEntropy(), np.array([0, 1])),
                  (MeanSquaredError(), np.zeros((2, 2), np.float32)),
                  (SigmoidBinaryCrossEntropy(), np.ones((2, 2), np.float32))):
        assert type(lf.forward(randn(rng, 2, 2), t)) is float
