"""fastnn.layers on every backend: forward against independent float64 NumPy formulas, backward
against float64 formulas and fastnn.gradcheck, gradient overwrite semantics, live params/grads,
inference mode, seeded and scaled initialisation, constructor validation."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import randn
from numpy.lib.stride_tricks import sliding_window_view

import fastnn
from fastnn import backend
from fastnn.layers import (BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid,
                           Tanh)

F32_TOL = 1e-2  # gradcheck on float32
FWD = dict(rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- float64 reference formulas

def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-z))


def dense_ref(x, W, b, activation=None):
    z = x.astype(np.float64) @ W.astype(np.float64) + b.astype(np.float64)
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "sigmoid":
        return sigmoid64(z)
    return z


def conv_windows(x, kh, kw, s, p):
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    return xp, sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::s, ::s]


def conv_ref(x, W, b, s, p):
    _, _, kh, kw = W.shape
    _, win = conv_windows(x, kh, kw, s, p)
    return np.einsum("ncijkl,ockl->noij", win, W.astype(np.float64)) + b[None, :, None, None]


def conv_backward_ref(dy, x, W, s, p):
    _, _, kh, kw = W.shape
    xp, win = conv_windows(x, kh, kw, s, p)
    dy = dy.astype(np.float64)
    W = W.astype(np.float64)
    dW = np.einsum("ncijkl,noij->ockl", win, dy)
    db = dy.sum(axis=(0, 2, 3))
    dxp = np.zeros_like(xp)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            dxp[:, :, i * s : i * s + kh, j * s : j * s + kw] += np.einsum("no,ockl->nckl",
                                                                        dy[:, :, i, j], W)
    H, Wd = x.shape[2], x.shape[3]
    return dxp[:, :, p : p + H, p : p + Wd], dW, db


def pool_ref(x, k, s):
    win = sliding_window_view(x.astype(np.float64), (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return win.max(axis=(-2, -1))


def pool_backward_ref(dy, x, k, s):
    dx = np.zeros(x.shape, np.float64)
    N, C, OH, OW = dy.shape
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    w = x[n, c, i * s : i * s + k, j * s : j * s + k]
                    a, b = np.unravel_index(int(np.argmax(w)), w.shape)  # first max, row-major
                    dx[n, c, i * s + a, j * s + b] += dy[n, c, i, j]
    return dx


def bn_axes(x):
    return (0,) if x.ndim == 2 else (0, 2, 3)


def bn_shape(x):
    return (1, -1) if x.ndim == 2 else (1, -1, 1, 1)


def bn_ref(x, gamma, beta, eps):
    x = x.astype(np.float64)
    ax, sh = bn_axes(x), bn_shape(x)
    mean, var = x.mean(axis=ax), x.var(axis=ax)
    xhat = (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + eps)
    return gamma.reshape(sh) * xhat + beta.reshape(sh), mean, var


def bn_backward_ref(dy, x, gamma, eps):
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    ax, sh = bn_axes(x), bn_shape(x)
    M = x.size // x.shape[1]
    mean, var = x.mean(axis=ax), x.var(axis=ax)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(sh)) * invstd.reshape(sh)
    dgamma = (dy * xhat).sum(axis=ax)
    dbeta = dy.sum(axis=ax)
    dxhat = dy * gamma.reshape(sh)
    dx = invstd.reshape(sh) / M * (M * dxhat - dxhat.sum(axis=ax).reshape(sh)
                                   - xhat * (dxhat * xhat).sum(axis=ax).reshape(sh))
    return dx, dgamma, dbeta


def away_from_zero(rng, *shape, margin=0.1):
    """Inputs for kinked functions (ReLU): no value within `margin` of 0."""
    x = randn(rng, *shape)
    return (np.sign(x) * (np.abs(x) + margin)).astype(np.float32)


def distinct(rng, *shape):
    """Inputs for max pooling: all values distinct, spaced 0.01 apart (no near ties)."""
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.01).astype(np.float32).reshape(shape)


# ---------------------------------------------------------------- the layer cases

CONV_CASES = [  # (in_ch, out_ch, kernel_size, stride, padding, H, W)
    (2, 3, 3, 1, 0, 6, 6),
    (2, 3, 3, 2, 1, 7, 7),
    (1, 2, (2, 3), 1, 2, 5, 6),
    (3, 2, 1, 1, 0, 4, 4),
    (2, 2, 2, 2, 0, 7, 5),  # stride leaves the last row/column uncovered
]


def make_case(name, rng):
    """(layer, input) for every layer configuration, with inputs that are safe for gradcheck."""
    if name.startswith("dense"):
        act = {"dense": None, "dense_relu": "relu", "dense_sigmoid": "sigmoid"}[name]
        layer = Dense(6, 4, activation=act, seed=1)
        layer.params["b"][...] = randn(rng, 4, scale=0.1)
        return layer, randn(rng, 5, 6)
    if name.startswith("conv"):
        ci, co, k, s, p, H, W = CONV_CASES[int(name[4:])]
        layer = Conv2D(ci, co, k, stride=s, padding=p, seed=2)
        layer.params["b"][...] = randn(rng, co, scale=0.1)
        return layer, randn(rng, 2, ci, H, W)
    if name == "maxpool":
        return MaxPool2D(2), distinct(rng, 2, 2, 6, 6)
    if name == "maxpool_s1":
        return MaxPool2D(3, stride=1), distinct(rng, 2, 2, 5, 5)
    if name == "maxpool_odd":
        return MaxPool2D(2, stride=2), distinct(rng, 1, 3, 5, 7)
    if name == "flatten":
        return Flatten(), randn(rng, 3, 2, 3, 4)
    if name == "relu":
        return ReLU(), away_from_zero(rng, 4, 7)
    if name == "relu4d":
        return ReLU(), away_from_zero(rng, 2, 3, 4, 4)
    if name == "sigmoid":
        return Sigmoid(), randn(rng, 4, 7, scale=2.0)
    if name == "tanh":
        return Tanh(), randn(rng, 4, 7)
    if name == "dropout":
        return Dropout(0.4, seed=3), randn(rng, 6, 8)
    if name in ("batchnorm2d", "batchnorm4d"):
        layer = BatchNorm(3)
        layer.params["gamma"][...] = rng.uniform(0.5, 1.5, 3).astype(np.float32)
        layer.params["beta"][...] = randn(rng, 3, scale=0.5)
        x = randn(rng, 8, 3) if name == "batchnorm2d" else randn(rng, 4, 3, 3, 3)
        return layer, (x * 2 + 1).astype(np.float32)
    raise KeyError(name)


ALL_CASES = (["dense", "dense_relu", "dense_sigmoid"] + [f"conv{i}" for i in range(len(CONV_CASES))]
             + ["maxpool", "maxpool_s1", "maxpool_odd", "flatten", "relu", "relu4d", "sigmoid",
                "tanh", "dropout", "batchnorm2d", "batchnorm4d"])
PARAM_CASES = [c for c in ALL_CASES if c.startswith(("dense", "conv", "batchnorm"))]


def reference_forward(name, layer, x):
    if name.startswith("dense"):
        return dense_ref(x, layer.params["W"], layer.params["b"], layer.activation)
    if name.startswith("conv"):
        return conv_ref(x, layer.params["W"], layer.params["b"], layer.stride, layer.padding)
    if name.startswith("maxpool"):
        return pool_ref(x, layer.pool_size, layer.stride)
    if name == "flatten":
        return x.reshape(x.shape[0], -1).astype(np.float64)
    if name.startswith("relu"):
        return np.maximum(x.astype(np.float64), 0)
    if name == "sigmoid":
        return sigmoid64(x.astype(np.float64))
    if name == "tanh":
        return np.tanh(x.astype(np.float64))
    if name.startswith("batchnorm"):
        return bn_ref(x, layer.params["gamma"], layer.params["beta"], layer.eps)[0]
    raise KeyError(name)


# ---------------------------------------------------------------- forward

@pytest.mark.parametrize("name", [c for c in ALL_CASES if c != "dropout"])
def test_forward_matches_float64_formula(backend_name, name, rng):
    layer, x = make_case(name, rng)
    y = layer.forward(x, train=True)
    assert y.dtype == np.float32
    ref = reference_forward(name, layer, x)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, **FWD)


@pytest.mark.parametrize("i", range(len(CONV_CASES)))
def test_conv_output_shape_method_matches_forward(backend_name, i, rng):
    layer, x = make_case(f"conv{i}", rng)
    y = layer.forward(x)
    assert layer.output_shape(x.shape[1:]) == y.shape[1:]


@pytest.mark.parametrize("name", ["maxpool", "maxpool_s1", "maxpool_odd", "flatten"])
def test_shape_layers_output_shape_method(backend_name, name, rng):
    layer, x = make_case(name, rng)
    assert layer.output_shape(x.shape[1:]) == layer.forward(x).shape[1:]


def test_dense_sigmoid_no_overflow_for_large_logits(backend_name):
    layer = Dense(1, 3, activation="sigmoid", init=1.0, seed=0)
    layer.params["W"][...] = np.array([[1.0, -1.0, 0.0]], np.float32)
    x = np.array([[1e4], [-1e4]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = layer.forward(x)
    np.testing.assert_array_equal(y, [[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])


# ---------------------------------------------------------------- backward

@pytest.mark.parametrize("name", PARAM_CASES + ["maxpool", "maxpool_s1", "maxpool_odd", "flatten",
                                                "relu", "sigmoid", "tanh"])
def test_backward_matches_float64_formula(backend_name, name, rng):
    layer, x = make_case(name, rng)
    y = layer.forward(x)
    dy = randn(rng, *y.shape)
    dx = layer.backward(dy)
    assert dx.shape == x.shape and dx.dtype == np.float32
    d64 = dy.astype(np.float64)
    if name.startswith("dense"):
        out = dense_ref(x, layer.params["W"], layer.params["b"], layer.activation)
        dz = d64 * (out > 0) if layer.activation == "relu" else (
            d64 * out * (1 - out) if layer.activation == "sigmoid" else d64)
        W = layer.params["W"].astype(np.float64)
        refs = {"dx": dz @ W.T, "W": x.astype(np.float64).T @ dz, "b": dz.sum(0)}
    elif name.startswith("conv"):
        rdx, rdW, rdb = conv_backward_ref(dy, x, layer.params["W"], layer.stride, layer.padding)
        refs = {"dx": rdx, "W": rdW, "b": rdb}
    elif name.startswith("batchnorm"):
        rdx, rdg, rdb = bn_backward_ref(dy, x, layer.params["gamma"], layer.eps)
        refs = {"dx": rdx, "gamma": rdg, "beta": rdb}
    elif name.startswith("maxpool"):
        refs = {"dx": pool_backward_ref(dy, x, layer.pool_size, layer.stride)}
    elif name == "flatten":
        refs = {"dx": d64.reshape(x.shape)}
    elif name == "relu":
        refs = {"dx": d64 * (x > 0)}
    elif name == "sigmoid":
        s = sigmoid64(x.astype(np.float64))
        refs = {"dx": d64 * s * (1 - s)}
    else:  # tanh
        refs = {"dx": d64 * (1 - np.tanh(x.astype(np.float64)) ** 2)}
    np.testing.assert_allclose(dx, refs.pop("dx"), rtol=1e-4, atol=1e-4)
    assert set(refs) == set(layer.grads)
    for k, ref in refs.items():
        np.testing.assert_allclose(layer.grads[k], ref, rtol=1e-4, atol=1e-4, err_msg=k)


@pytest.mark.parametrize("name", ALL_CASES)
def test_gradcheck(backend_name, name, rng):
    layer, x = make_case(name, rng)
    err = fastnn.gradcheck(layer, x)
    assert err < F32_TOL, f"{name}: gradcheck relative error {err:.3g}"


def test_gradcheck_detects_a_wrong_gradient(backend_name, rng):
    """gradcheck itself must be able to fail: a layer whose backward is off by a factor."""

    class BrokenTanh(Tanh):
        def backward(self, dy):
            return super().backward(dy) * np.float32(1.5)

    assert fastnn.gradcheck(BrokenTanh(), randn(rng, 4, 5)) > 0.1


@pytest.mark.parametrize("name", PARAM_CASES + ["maxpool", "relu", "sigmoid", "tanh", "dropout"])
def test_backward_overwrites_gradients(backend_name, name, rng):
    layer, x = make_case(name, rng)
    y = layer.forward(x)
    dy1 = randn(rng, *y.shape)
    dy2 = randn(rng, *y.shape)
    dx_a = layer.backward(dy1).copy()
    g_a = {k: g.copy() for k, g in layer.grads.items()}
    dx_b = layer.backward(dy1).copy()
    g_b = {k: g.copy() for k, g in layer.grads.items()}
    np.testing.assert_array_equal(dx_a, dx_b)
    for k in g_a:
        np.testing.assert_array_equal(g_a[k], g_b[k], err_msg=f"{k} accumulated")
    # a different dy afterwards gives the gradients of that dy alone (not the sum): compare with
    # an identical fresh layer (make_case draws first from the same seeded generator)
    dx_2 = layer.backward(dy2).copy()
    twin, x2 = make_case(name, np.random.default_rng(12345))
    np.testing.assert_array_equal(x, x2)
    twin.forward(x2)
    np.testing.assert_allclose(dx_2, twin.backward(dy2), rtol=1e-6, atol=1e-7)
    for k in layer.grads:
        np.testing.assert_allclose(layer.grads[k], twin.grads[k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("name", PARAM_CASES)
def test_params_and_grads_are_live_arrays(backend_name, name, rng):
    layer, x = make_case(name, rng)
    assert set(layer.params) == set(layer.grads) and layer.params
    for k in layer.params:
        assert layer.params[k].shape == layer.grads[k].shape
        assert layer.params[k].dtype == layer.grads[k].dtype == np.float32
    grads_before = dict(layer.grads)
    y = layer.forward(x)
    layer.backward(randn(rng, *y.shape))
    for k in layer.grads:  # backward writes into the same arrays (no rebinding)
        assert layer.grads[k] is grads_before[k]
        assert np.any(layer.grads[k] != 0), k
    # editing a parameter in place changes the next forward
    y0 = layer.forward(x).copy()
    first = sorted(layer.params)[-1]  # "b" or "beta"
    layer.params[first] += np.float32(0.5)
    y1 = layer.forward(x)
    assert not np.allclose(y0, y1)


@pytest.mark.parametrize("name", ["flatten", "relu", "sigmoid", "tanh", "maxpool", "dropout"])
def test_parameter_free_layers_have_empty_dicts(name, rng):
    layer, _ = make_case(name, rng)
    assert layer.params == {} and layer.grads == {}


# ---------------------------------------------------------------- dropout and batch norm modes

def test_dropout_training_mask_and_scaling(backend_name, rng):
    rate = 0.3
    layer = Dropout(rate, seed=7)
    x = (np.abs(randn(rng, 100, 100)) + 0.1).astype(np.float32)
    y = layer.forward(x, train=True)
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.02
    np.testing.assert_allclose(y[kept], x[kept].astype(np.float64) / (1 - rate), rtol=1e-6)
    dy = randn(rng, 100, 100)
    dx = layer.backward(dy)
    np.testing.assert_allclose(dx, np.where(kept, dy.astype(np.float64) / (1 - rate), 0.0),
                               rtol=1e-6, atol=1e-7)


def test_dropout_inference_is_identity(backend_name, rng):
    layer = Dropout(0.5, seed=1)
    x = randn(rng, 5, 6)
    y = layer.forward(x, train=False)
    np.testing.assert_array_equal(y, x)
    dy = randn(rng, 5, 6)
    np.testing.assert_array_equal(layer.backward(dy), dy)


def test_dropout_rate_zero_is_identity_in_training(backend_name, rng):
    x = randn(rng, 4, 4)
    np.testing.assert_array_equal(Dropout(0.0).forward(x, train=True), x)


def test_dropout_same_seed_same_mask_on_every_backend(backend_name, rng):
    x = np.ones((20, 30), np.float32)
    y = Dropout(0.5, seed=11).forward(x).copy()
    with backend.using("numpy"):
        ref = Dropout(0.5, seed=11).forward(x).copy()
    np.testing.assert_array_equal(y, ref)
    other = Dropout(0.5, seed=12).forward(x)
    assert not np.array_equal(y, other)


def test_dropout_masks_differ_between_steps(backend_name):
    layer = Dropout(0.5, seed=0)
    x = np.ones((10, 10), np.float32)
    a = layer.forward(x).copy()
    b = layer.forward(x).copy()
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 5, 5)])
def test_batchnorm_running_statistics(backend_name, shape, rng):
    momentum, eps = 0.8, 1e-3
    layer = BatchNorm(3, momentum=momentum, eps=eps)
    rm = np.zeros(3)
    rv = np.ones(3)
    for _ in range(3):
        x = (randn(rng, *shape) * 3 + 2).astype(np.float32)
        layer.forward(x, train=True)
        _, mean, var = bn_ref(x, np.ones(3), np.zeros(3), eps)
        rm = momentum * rm + (1 - momentum) * mean
        rv = momentum * rv + (1 - momentum) * var  # biased batch variance (documented)
    np.testing.assert_allclose(layer.state["running_mean"], rm, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.state["running_var"], rv, rtol=1e-4, atol=1e-5)

    # inference uses the running statistics and leaves them alone
    layer.params["gamma"][...] = [0.5, 1.0, 2.0]
    layer.params["beta"][...] = [0.1, -0.2, 0.3]
    before = {k: v.copy() for k, v in layer.state.items()}
    x = randn(rng, *shape)
    y = layer.forward(x, train=False)
    sh = (1, -1) if len(shape) == 2 else (1, -1, 1, 1)
    ref = ((x - rm.reshape(sh)) / np.sqrt(rv.reshape(sh) + eps) * np.array([0.5, 1, 2]).reshape(sh)
           + np.array([0.1, -0.2, 0.3]).reshape(sh))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    for k in before:
        np.testing.assert_array_equal(layer.state[k], before[k])


def test_batchnorm_state_is_not_a_parameter():
    layer = BatchNorm(4)
    assert set(layer.params) == {"gamma", "beta"}
    assert set(layer.state) == {"running_mean", "running_var"}
    np.testing.assert_array_equal(layer.params["gamma"], 1)
    np.testing.assert_array_equal(layer.params["beta"], 0)


@pytest.mark.parametrize("name", ["dense", "conv0", "batchnorm2d", "relu", "sigmoid", "tanh",
                                  "maxpool", "dropout"])
def test_float64_input_gives_float32_output(backend_name, name, rng):
    layer, x = make_case(name, rng)
    y = layer.forward(x.astype(np.float64), train=True)
    assert y.dtype == np.float32


@pytest.mark.parametrize("make", [lambda: Dropout(0.5), lambda: Flatten()],
                         ids=["dropout", "flatten"])
def test_passthrough_layers_convert_float64_input(make, rng):
    layer = make()
    y = layer.forward(randn(rng, 3, 4, dtype=np.float64), train=False)
    assert y.dtype == np.float32


def test_wrong_input_shape_names_the_expected_shape(rng):
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        Dense(6, 4).forward(randn(rng, 2, 5))
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        Conv2D(2, 3, 3).forward(randn(rng, 1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        BatchNorm(3).forward(randn(rng, 4, 4))


# ---------------------------------------------------------------- initialisation

def test_same_seed_same_weights_bitwise():
    a, b, c = Dense(30, 20, seed=5), Dense(30, 20, seed=5), Dense(30, 20, seed=6)
    np.testing.assert_array_equal(a.params["W"], b.params["W"])
    assert not np.array_equal(a.params["W"], c.params["W"])
    ca, cb = Conv2D(3, 4, 3, seed=9), Conv2D(3, 4, 3, seed=9)
    np.testing.assert_array_equal(ca.params["W"], cb.params["W"])
    assert not np.array_equal(ca.params["W"], Conv2D(3, 4, 3, seed=10).params["W"])
    np.testing.assert_array_equal(a.params["b"], 0)
    np.testing.assert_array_equal(ca.params["b"], 0)


def test_seeded_sequential_is_reproducible():
    def build():
        return fastnn.Sequential([Conv2D(1, 2, 3, seed=1), ReLU(), Flatten(),
                                  Dense(2 * 4 * 4, 3, seed=2)])

    np.testing.assert_array_equal(build().parameters().data, build().parameters().data)


def test_unseeded_layers_differ():
    assert not np.array_equal(Dense(10, 10).params["W"], Dense(10, 10).params["W"])


def _std(layer):
    return float(layer.params["W"].astype(np.float64).std())


@pytest.mark.parametrize("init,expected", [
    ("he", np.sqrt(2 / 400)),
    ("xavier", np.sqrt(2 / (400 + 300))),
    ("normal", 0.01),
    (0.2, 0.2),
    (1, 1.0),
])
def test_dense_init_std(init, expected):
    std = _std(Dense(400, 300, init=init, seed=0))
    assert abs(std / expected - 1) < 0.02, (std, expected)


@pytest.mark.parametrize("init,expected", [
    ("he", np.sqrt(2 / (16 * 9))),
    ("xavier", np.sqrt(2 / (16 * 9 + 32 * 9))),
    ("normal", 0.01),
    (0.05, 0.05),
])
def test_conv_init_std(init, expected):
    std = _std(Conv2D(16, 32, 3, init=init, seed=0))
    assert abs(std / expected - 1) < 0.04, (std, expected)


def test_auto_init_follows_the_activation():
    he, xavier = np.sqrt(2 / 400), np.sqrt(2 / 700)
    assert abs(_std(Dense(400, 300, activation="relu", seed=0)) / he - 1) < 0.02
    assert abs(_std(Dense(400, 300, seed=0)) / xavier - 1) < 0.02
    assert abs(_std(Dense(400, 300, activation="sigmoid", seed=0)) / xavier - 1) < 0.02
    m = fastnn.Sequential([Dense(400, 300, seed=0), ReLU(), Dense(300, 200, seed=1), Tanh(),
                           Dense(200, 10, seed=2)])
    assert abs(_std(m.layers[0]) / he - 1) < 0.02
    assert abs(_std(m.layers[2]) / np.sqrt(2 / 500) - 1) < 0.03
    m = fastnn.Sequential([Conv2D(16, 32, 3, seed=0), BatchNorm(32), ReLU()])
    assert abs(_std(m.layers[0]) / np.sqrt(2 / 144) - 1) < 0.04


def test_explicit_init_is_not_overridden_by_sequential():
    m = fastnn.Sequential([Dense(400, 300, init="xavier", seed=0), ReLU()])
    assert abs(_std(m.layers[0]) / np.sqrt(2 / 700) - 1) < 0.02


# ---------------------------------------------------------------- constructor validation

@pytest.mark.parametrize("factory,exc,arg", [
    (lambda: Dense(0, 3), ValueError, "in_features"),
    (lambda: Dense(3, -1), ValueError, "out_features"),
    (lambda: Dense(2.5, 3), TypeError, "in_features"),
    (lambda: Dense("3", 3), TypeError, "in_features"),
    (lambda: Dense(3, 3, activation="tanh"), ValueError, "activation"),
    (lambda: Dense(3, 3, init="glorot"), ValueError, "init"),
    (lambda: Dense(3, 3, init=-0.1), ValueError, "init"),
    (lambda: Dense(3, 3, init=0), ValueError, "init"),
    (lambda: Dense(3, 3, init=True), ValueError, "init"),
    (lambda: Conv2D(0, 3, 3), ValueError, "in_channels"),
    (lambda: Conv2D(1, 0, 3), ValueError, "out_channels"),
    (lambda: Conv2D(1, 3, 0), ValueError, "kernel_size"),
    (lambda: Conv2D(1, 3, (1, 2, 3)), ValueError, "kernel_size"),
    (lambda: Conv2D(1, 3, 3, stride=0), ValueError, "stride"),
    (lambda: Conv2D(1, 3, 3, padding=-1), ValueError, "padding"),
    (lambda: Conv2D(1, 3, 3, stride=1.5), TypeError, "stride"),
    (lambda: Conv2D(1, 3, 3, init="he_uniform"), ValueError, "init"),
    (lambda: MaxPool2D(0), ValueError, "pool_size"),
    (lambda: MaxPool2D(2, stride=0), ValueError, "stride"),
    (lambda: MaxPool2D(2.0), TypeError, "pool_size"),
    (lambda: Dropout(1.0), ValueError, "rate"),
    (lambda: Dropout(-0.1), ValueError, "rate"),
    (lambda: Dropout("0.5"), TypeError, "rate"),
    (lambda: BatchNorm(0), ValueError, "num_features"),
    (lambda: BatchNorm(3, momentum=1.5), ValueError, "momentum"),
    (lambda: BatchNorm(3, eps=0.0), ValueError, "eps"),
    (lambda: BatchNorm(3, eps=float("nan")), ValueError, "eps"),
])
def test_bad_constructor_arguments(factory, exc, arg):
    with pytest.raises(exc, match=arg):
        factory()
