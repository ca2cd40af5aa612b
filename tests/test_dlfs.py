"""fastnn.dlfs, the "Deep Learning from Scratch" compat package, against straight float64 NumPy
transcriptions of the book's formulas written here (never the book's code), within float32
tolerance; its parameter files (a malicious pickle runs nothing); its dataset loader; and its
example scripts. The tests that run the book's own code are in test_dlfs_book.py."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import fastnn
import fastnn.dlfs as dlfs
from fastnn.dlfs import functions as F
from fastnn.dlfs import layers as L
from fastnn.dlfs import optimizer as O
from fastnn.dlfs import util as U

ROOT = Path(__file__).resolve().parents[1]

# float32 rounding (2^-24 ~ 6e-8 relative) through sums of a few hundred terms: relative 1e-5
# is a few hundred ulps; atol covers entries that cancel to near zero.
RTOL, ATOL = 2e-5, 2e-6


def close(got, want, rtol=RTOL, atol=ATOL):
    got = np.asarray(got)
    assert got.shape == np.shape(want), (got.shape, np.shape(want))
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=atol)


@pytest.fixture(autouse=True)
def _seeded():
    """The book draws everything from NumPy's global generator: seed it, restore it after."""
    state = np.random.get_state()
    np.random.seed(1234)
    yield
    np.random.set_state(state)


def r64(*shape, scale=1.0):
    return scale * np.random.randn(*shape)


# --- float64 transcriptions of the book's formulas ---

def ref_im2col(x, fh, fw, stride=1, pad=0):
    N, C, H, W = x.shape
    oh, ow = (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1
    xp = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    col = np.empty((N, oh, ow, C, fh, fw))
    for i in range(oh):
        for j in range(ow):
            col[:, i, j] = xp[:, :, i * stride:i * stride + fh, j * stride:j * stride + fw]
    return col.reshape(N * oh * ow, -1)


def ref_col2im(col, shape, fh, fw, stride=1, pad=0):
    N, C, H, W = shape
    oh, ow = (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1
    col = col.reshape(N, oh, ow, C, fh, fw)
    xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad))
    for i in range(oh):
        for j in range(ow):
            xp[:, :, i * stride:i * stride + fh, j * stride:j * stride + fw] += col[:, i, j]
    return xp[:, :, pad:pad + H, pad:pad + W]


def ref_conv(x, W, b, stride, pad):
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh, ow = (H + 2 * pad - FH) // stride + 1, (Wd + 2 * pad - FW) // stride + 1
    col = ref_im2col(x, FH, FW, stride, pad)
    out = col @ W.reshape(FN, -1).T + b
    return out.reshape(N, oh, ow, FN).transpose(0, 3, 1, 2), col


def ref_conv_backward(dout, x, W, col, stride, pad):
    FN, C, FH, FW = W.shape
    d = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    db = d.sum(axis=0)
    dW = (col.T @ d).T.reshape(W.shape)
    dx = ref_col2im(d @ W.reshape(FN, -1), x.shape, FH, FW, stride, pad)
    return dx, dW, db


def ref_pool(x, ph, pw, stride, pad=0):
    N, C, H, W = x.shape
    oh, ow = (H + 2 * pad - ph) // stride + 1, (W + 2 * pad - pw) // stride + 1
    col = ref_im2col(x, ph, pw, stride, pad).reshape(-1, ph * pw)
    arg = np.argmax(col, axis=1)
    out = col.max(axis=1).reshape(N, oh, ow, C).transpose(0, 3, 1, 2)
    return out, arg


def ref_pool_backward(dout, arg, shape, ph, pw, stride, pad=0):
    d = dout.transpose(0, 2, 3, 1).reshape(-1)
    dmax = np.zeros((d.size, ph * pw))
    dmax[np.arange(d.size), arg] = d
    return ref_col2im(dmax.reshape(-1, dout.shape[1] * ph * pw), shape, ph, pw, stride, pad)


def ref_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def ref_softmax_loss(x, t):
    """(loss, dx): the book's cross-entropy with 1e-7 inside the log, dx = (y - onehot) / N."""
    y = ref_softmax(x)
    n = x.shape[0]
    labels = t.argmax(axis=1) if t.size == y.size else t
    loss = -np.sum(np.log(y[np.arange(n), labels] + 1e-7)) / n
    onehot = np.zeros_like(y)
    onehot[np.arange(n), labels] = 1
    return loss, (y - onehot) / n


def ref_bn_forward(x, gamma, beta, rm, rv, momentum, train):
    if train:
        mu = x.mean(axis=0)
        xc = x - mu
        var = np.mean(xc ** 2, axis=0)
        std = np.sqrt(var + 1e-6)
        return gamma * xc / std + beta, (xc, std), (momentum * rm + (1 - momentum) * mu,
                                                   momentum * rv + (1 - momentum) * var)
    return gamma * (x - rm) / np.sqrt(rv + 1e-6) + beta, None, (rm, rv)


def ref_bn_backward(dout, gamma, cache):
    xc, std = cache
    n = dout.shape[0]
    xn = xc / std
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(xn * dout, axis=0)
    dxn = gamma * dout
    dxc = dxn / std
    dstd = -np.sum(dxn * xc / (std * std), axis=0)
    dvar = 0.5 * dstd / std
    dxc = dxc + (2.0 / n) * xc * dvar
    dmu = np.sum(dxc, axis=0)
    return dxc - dmu / n, dgamma, dbeta


# --- layers -----------------------------------------------------------------------------------

def test_relu_forward_backward_and_mask():
    x = r64(4, 7)
    layer = L.Relu()
    y = layer.forward(x)
    assert y.dtype == np.float32
    close(y, np.maximum(x, 0))
    np.testing.assert_array_equal(layer.mask, x.astype(np.float32) <= 0)
    dout = r64(4, 7)
    dout_before = dout.copy()
    close(layer.backward(dout), np.where(x > 0, dout, 0.0))
    np.testing.assert_array_equal(dout, dout_before)  # backward leaves its argument alone


def test_sigmoid_forward_backward():
    x = r64(3, 5, scale=3)
    layer = L.Sigmoid()
    s = 1 / (1 + np.exp(-x))
    close(layer.forward(x), s)
    dout = r64(3, 5)
    close(layer.backward(dout), dout * (1.0 - s) * s)


@pytest.mark.parametrize("shape", [(5, 12), (5, 3, 2, 2)])
def test_affine_forward_backward(shape):
    x = r64(*shape)
    W, b = r64(12, 4, scale=0.5), r64(4)
    layer = L.Affine(W.astype(np.float32), b.astype(np.float32))
    close(layer.forward(x), x.reshape(shape[0], -1) @ W + b)
    assert layer.original_x_shape == shape and layer.x.shape == (shape[0], 12)
    dout = r64(shape[0], 4)
    dx = layer.backward(dout)
    close(dx, (dout @ W.T).reshape(shape))
    close(layer.dW, x.reshape(shape[0], -1).T @ dout)
    close(layer.db, dout.sum(axis=0))


def test_affine_accepts_the_books_float64_weights():
    W, b, x = r64(6, 3), r64(3), r64(2, 6)
    layer = L.Affine(W, b)  # as the book's own network code builds it
    close(layer.forward(x), x @ W + b)
    assert layer.W is W  # the layer keeps the caller's array (an optimizer updates it in place)


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_with_loss(one_hot):
    x = r64(6, 10, scale=3)
    labels = np.random.randint(0, 10, 6)
    t = np.eye(10)[labels] if one_hot else labels
    layer = L.SoftmaxWithLoss()
    loss = layer.forward(x, t)
    want_loss, want_dx = ref_softmax_loss(x, t)
    assert abs(loss - want_loss) <= 1e-5 * abs(want_loss)
    close(layer.y, ref_softmax(x))
    close(layer.backward(), want_dx)


def test_softmax_with_loss_keeps_the_books_1e7_floor():
    x = np.array([[0.0, 100.0]])  # p(label 0) ~ 4e-44: the book's log floor makes the loss ~16
    loss = L.SoftmaxWithLoss().forward(x, np.array([0]))
    assert abs(loss - -np.log(1e-7)) < 1e-4


def test_dropout_is_the_books_scheme_with_its_random_stream():
    x = r64(8, 20)
    layer = L.Dropout(0.3)
    state = np.random.get_state()
    y = layer.forward(x, train_flg=True)
    np.random.set_state(state)
    mask = np.random.rand(8, 20) > 0.3  # the book's draw
    np.testing.assert_array_equal(layer.mask, mask)
    close(y, x * mask)
    dout = r64(8, 20)
    close(layer.backward(dout), dout * mask)
    close(layer.forward(x, train_flg=False), x * 0.7)


@pytest.mark.parametrize("shape", [(16, 6), (8, 2, 3, 3)])
def test_batch_normalization_train_and_test(shape):
    x = r64(*shape, scale=2) + 1.5
    D = int(np.prod(shape[1:]))
    gamma, beta = 1 + r64(D, scale=0.1), r64(D, scale=0.1)
    layer = L.BatchNormalization(gamma.astype(np.float32), beta.astype(np.float32), momentum=0.8)
    rm, rv = np.zeros(D), np.zeros(D)
    for _ in range(3):  # running statistics over several batches
        xb = r64(*shape, scale=2) + 1.5
        out = layer.forward(xb, train_flg=True)
        want, cache, (rm, rv) = ref_bn_forward(xb.reshape(shape[0], -1), gamma, beta, rm, rv,
                                               0.8, True)
        close(out, want.reshape(shape), rtol=1e-4, atol=2e-5)
    close(layer.running_mean, rm)
    close(layer.running_var, rv, rtol=1e-4, atol=1e-5)
    close(layer.xc, cache[0], rtol=1e-4, atol=1e-5)
    close(layer.std, cache[1], rtol=1e-4)
    dout = r64(*shape)
    dx = layer.backward(dout)
    wdx, wdg, wdb = ref_bn_backward(dout.reshape(shape[0], -1), gamma, cache)
    close(dx, wdx.reshape(shape), rtol=1e-4, atol=2e-5)
    close(layer.dgamma, wdg, rtol=1e-4, atol=2e-5)
    close(layer.dbeta, wdb)
    out = layer.forward(x, train_flg=False)
    want, _, _ = ref_bn_forward(x.reshape(shape[0], -1), gamma, beta, rm, rv, 0.8, False)
    close(out, want.reshape(shape), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 1), (3, 2)])
def test_convolution_forward_backward(stride, pad):
    x = r64(3, 2, 9, 8)
    W, b = r64(4, 2, 3, 3, scale=0.3), r64(4)
    layer = L.Convolution(W.astype(np.float32), b.astype(np.float32), stride, pad)
    want, col = ref_conv(x, W, b, stride, pad)
    close(layer.forward(x), want, rtol=1e-4, atol=1e-5)
    close(layer.col, col)
    close(layer.col_W, W.reshape(4, -1).T)
    dout = r64(*want.shape)
    wdx, wdW, wdb = ref_conv_backward(dout, x, W, col, stride, pad)
    close(layer.backward(dout), wdx, rtol=1e-4, atol=1e-5)
    close(layer.dW, wdW, rtol=1e-4, atol=1e-5)
    close(layer.db, wdb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ph,pw,stride,pad", [(2, 2, 2, 0), (3, 3, 1, 0), (2, 3, 1, 0),
                                              (3, 2, 2, 1)])
def test_pooling_forward_backward(ph, pw, stride, pad):
    x = r64(2, 3, 8, 7)
    x[0, 0, :2, :2] = 1.0  # a tie: the first maximum in row-major order wins, as np.argmax
    layer = L.Pooling(ph, pw, stride, pad)
    want, arg = ref_pool(x, ph, pw, stride, pad)
    y = layer.forward(x)
    close(y, want)
    dout = r64(*want.shape)
    close(layer.backward(dout), ref_pool_backward(dout, arg, x.shape, ph, pw, stride, pad))


def test_returned_arrays_stay_the_callers():
    """Layers reuse buffers only when the caller has let go: a kept output is never overwritten."""
    layer = L.Relu()
    x1, x2 = r64(4, 5), r64(4, 5)
    y1 = layer.forward(x1)
    y2 = layer.forward(x2)
    close(y1, np.maximum(x1, 0))
    close(y2, np.maximum(x2, 0))
    view = layer.forward(x1)[1:]
    layer.forward(x2)
    close(view, np.maximum(x1, 0)[1:])


def test_first_layer_dx_is_skipped_but_gradients_agree():
    x = r64(2, 1, 6, 6)
    W, b = r64(3, 1, 3, 3), r64(3)
    full, first = (L.Convolution(W.astype(np.float32), b.astype(np.float32)) for _ in range(2))
    dout = r64(2, 3, 4, 4)
    full.forward(x)
    first.forward(x)
    assert full.backward(dout) is not None
    assert first.backward(dout, need_dx=False) is None
    np.testing.assert_array_equal(full.dW, first.dW)
    np.testing.assert_array_equal(full.db, first.db)


# --- functions and util ---------------------------------------------------------------------------

def test_functions():
    x = r64(3, 4, scale=4)
    close(F.sigmoid(x), 1 / (1 + np.exp(-x)))
    assert F.sigmoid(0.0) == 0.5  # a scalar stays NumPy, as in the book's ch03
    close(F.softmax(x), ref_softmax(x))
    close(F.softmax(x[0]), ref_softmax(x[0]))  # 1-D, as ch03 uses it
    np.testing.assert_array_equal(F.step_function(np.array([-1.0, 0.0, 2.0])), [0, 0, 1])
    np.testing.assert_array_equal(F.relu_grad(np.array([-1.0, 0.0, 2.0])), [0, 1, 1])
    y = ref_softmax(x)
    t = np.array([1, 0, 3])
    assert abs(F.cross_entropy_error(y, t) - -np.mean(np.log(y[np.arange(3), t] + 1e-7))) < 1e-12
    assert abs(F.cross_entropy_error(y[0], np.eye(4)[1]) - -np.log(y[0, 1] + 1e-7)) < 1e-12
    assert F.sum_squared_error(np.array([1.0, 2.0]), np.array([0.0, 0.0])) == 2.5


@pytest.mark.parametrize("fh,fw,stride,pad", [(3, 3, 1, 0), (2, 3, 2, 1), (5, 5, 1, 2)])
def test_im2col_col2im(fh, fw, stride, pad):
    x = r64(2, 3, 7, 8)
    close(U.im2col(x, fh, fw, stride, pad), ref_im2col(x, fh, fw, stride, pad))
    col = r64(*ref_im2col(x, fh, fw, stride, pad).shape)
    close(U.col2im(col, x.shape, fh, fw, stride, pad), ref_col2im(col, x.shape, fh, fw, stride,
                                                                   pad), rtol=1e-5, atol=1e-5)


def test_util_helpers():
    assert U.conv_output_size(28, 5) == 24.0
    assert U.conv_output_size(7, 3, 2, 1) == 4.0
    x, t = np.arange(20).reshape(10, 2), np.arange(10)
    xs, ts = U.shuffle_dataset(x, t)
    np.testing.assert_array_equal(xs[:, 0] // 2, ts)  # rows and labels stay paired
    assert sorted(ts) == list(range(10))
    curve = np.linspace(0, 1, 50) + np.random.rand(50) * 0.1
    s = U.smooth_curve(curve)
    assert s.shape == (50,)
    assert np.std(np.diff(s)) < np.std(np.diff(curve))


def test_gradient_module():
    from fastnn.dlfs.gradient import numerical_gradient, numerical_gradient_2d

    X = np.array([[1.0, 2.0], [3.0, -1.0]])
    g = numerical_gradient(lambda z: np.sum(z ** 2), X.copy())
    np.testing.assert_allclose(g, 2 * X, rtol=1e-6)
    np.testing.assert_allclose(numerical_gradient_2d(lambda z: np.sum(z ** 3), X.copy()),
                               3 * X ** 2, rtol=1e-6)


# --- optimizers ---------------------------------------------------------------------------------

def ref_optimizer(name, hyper):
    """A float64 transcription of the book's update rule: (state, step function)."""
    state = {"t": 0}

    def step(p, g, key):
        s = state.setdefault(key, {"v": np.zeros_like(p), "h": np.zeros_like(p),
                                   "m": np.zeros_like(p)})
        lr = hyper.get("lr")
        if name == "SGD":
            return p - lr * g
        if name == "Momentum":
            s["v"] = hyper["momentum"] * s["v"] - lr * g
            return p + s["v"]
        if name == "Nesterov":
            mom = hyper["momentum"]
            p = p + mom * mom * s["v"] - (1 + mom) * lr * g
            s["v"] = mom * s["v"] - lr * g
            return p
        if name == "AdaGrad":
            s["h"] = s["h"] + g * g
            return p - lr * g / (np.sqrt(s["h"]) + 1e-7)
        if name == "RMSprop":
            s["h"] = hyper["decay_rate"] * s["h"] + (1 - hyper["decay_rate"]) * g * g
            return p - lr * g / (np.sqrt(s["h"]) + 1e-7)
        if name == "Adam":
            b1, b2, t = hyper["beta1"], hyper["beta2"], state["t"]
            s["m"] = s["m"] + (1 - b1) * (g - s["m"])
            s["v"] = s["v"] + (1 - b2) * (g * g - s["v"])
            lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            return p - lr_t * s["m"] / (np.sqrt(s["v"]) + 1e-7)
        raise AssertionError(name)

    return state, step


OPTIMIZER_CASES = [
    ("SGD", {"lr": 0.1}),
    ("Momentum", {"lr": 0.05, "momentum": 0.8}),
    ("Nesterov", {"lr": 0.05, "momentum": 0.9}),
    ("AdaGrad", {"lr": 0.1}),
    ("RMSprop", {"lr": 0.01, "decay_rate": 0.9}),
    ("Adam", {"lr": 0.01, "beta1": 0.8, "beta2": 0.99}),
]


@pytest.mark.parametrize("name,hyper", OPTIMIZER_CASES, ids=[c[0] for c in OPTIMIZER_CASES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_steps_match_the_books_formulas(name, hyper, dtype):
    """float32 params go through fastnn's kernels; float64 (the book's) through NumPy."""
    start = {"W1": r64(6, 4), "b1": r64(4, scale=0.1)}
    params = {k: v.astype(dtype) for k, v in start.items()}
    arrays = dict(params)  # the same objects: updates must be in place, as layers share them
    opt = getattr(O, name)(**hyper)
    state, ref_step = ref_optimizer(name, hyper)
    want = {k: v.astype(dtype).astype(np.float64) for k, v in start.items()}
    for _ in range(6):
        grads = {k: r64(*v.shape) for k, v in start.items()}
        opt.update(params, {k: g.astype(dtype) for k, g in grads.items()})
        state["t"] += 1
        want = {k: ref_step(want[k], grads[k].astype(dtype).astype(np.float64), k) for k in want}
    for k in start:
        assert params[k] is arrays[k] and params[k].dtype == dtype
        close(params[k], want[k], rtol=1e-5, atol=1e-6)
    if name == "Adam":
        assert opt.iter == 6 and set(opt.m) == set(opt.v) == {"W1", "b1"}


def test_adam_kernel_path_equals_the_books_eps_placement():
    """The kernel's torch-form eps is rescaled so that eps adds to the *uncorrected* sqrt(v):
    with tiny gradients that term dominates, and the book's and torch's steps differ by 3x."""
    p32 = {"w": np.zeros(3, np.float32)}
    p64 = {"w": np.zeros(3)}
    o32, o64 = O.Adam(lr=1.0), O.Adam(lr=1.0)
    g = np.array([1e-7, -2e-7, 5e-8])
    o32.update(p32, {"w": g.astype(np.float32)})
    o64.update(p64, {"w": g})
    close(p32["w"], p64["w"], rtol=1e-5, atol=0)


def test_optimizers_on_python_numbers_like_the_books_ch06_naive_comparison():
    for name, hyper in OPTIMIZER_CASES:
        params = {"x": -7.0, "y": 2.0}
        opt = getattr(O, name)(**hyper)
        state, ref_step = ref_optimizer(name, hyper)
        want = {"x": np.array(-7.0), "y": np.array(2.0)}
        for _ in range(5):
            grads = {"x": params["x"] / 10.0, "y": 2.0 * params["y"]}
            opt.update(params, grads)
            state["t"] += 1
            want = {k: ref_step(want[k], np.float64(want[k] / 10.0 if k == "x" else 2 * want[k]),
                                k) for k in want}
        for k in params:
            np.testing.assert_allclose(float(params[k]), float(want[k]), rtol=1e-12)


# --- networks -------------------------------------------------------------------------------------

def test_simple_convnet_structure_and_initial_weights_follow_the_books_draws():
    np.random.seed(7)
    net = dlfs.SimpleConvNet()
    np.random.seed(7)
    want = {"W1": 0.01 * np.random.randn(30, 1, 5, 5), "b1": np.zeros(30),
            "W2": 0.01 * np.random.randn(4320, 100), "b2": np.zeros(100),
            "W3": 0.01 * np.random.randn(100, 10), "b3": np.zeros(10)}
    assert list(net.params) == list(want)
    for k, v in want.items():
        assert net.params[k].dtype == np.float32
        np.testing.assert_array_equal(net.params[k], v.astype(np.float32))
    assert isinstance(net.layers, OrderedDict)
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Affine1", "Relu2", "Affine2"]
    assert net.layers["Conv1"].W is net.params["W1"] and net.layers["Affine2"].b is net.params["b3"]


def ref_simple_convnet(p, x, t):
    """Loss and gradients of conv-relu-pool-affine-relu-affine-softmax in float64."""
    c, col = ref_conv(x, p["W1"], p["b1"], 1, 0)
    r1 = np.maximum(c, 0)
    pool, arg = ref_pool(r1, 2, 2, 2)
    h = pool.reshape(len(x), -1)
    a1 = h @ p["W2"] + p["b2"]
    r2 = np.maximum(a1, 0)
    a2 = r2 @ p["W3"] + p["b3"]
    loss, d = ref_softmax_loss(a2, t)
    g = {"W3": r2.T @ d, "b3": d.sum(0)}
    d = (d @ p["W3"].T) * (a1 > 0)
    g["W2"], g["b2"] = h.T @ d, d.sum(0)
    d = (d @ p["W2"].T).reshape(pool.shape)
    d = ref_pool_backward(d, arg, r1.shape, 2, 2, 2) * (c > 0)
    _, g["W1"], g["b1"] = ref_conv_backward(d, x, p["W1"], col, 1, 0)
    return loss, g


def test_simple_convnet_loss_gradient_and_a_training_step():
    net = dlfs.SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4, "filter_size": 3,
                                                                "pad": 0, "stride": 1},
                             hidden_size=8, output_size=5, weight_init_std=0.3)
    x, t = np.random.rand(6, 1, 12, 12).astype(np.float32), np.random.randint(0, 5, 6)
    p64 = {k: v.astype(np.float64) for k, v in net.params.items()}
    loss, want = ref_simple_convnet(p64, x.astype(np.float64), t)
    assert abs(net.loss(x, t) - loss) < 1e-5 * loss
    grads = net.gradient(x, t)
    for k in want:
        close(grads[k], want[k], rtol=1e-4, atol=1e-6)
    assert net.accuracy(x, t, batch_size=3) == np.mean(np.argmax(net.predict(x), 1) == t)


def small_convnet(fuse, **conv):
    np.random.seed(5)
    net = dlfs.SimpleConvNet(input_dim=(1, 12, 12), conv_param={"filter_num": 4, "filter_size": 3,
                                                                "pad": 1, "stride": 1, **conv},
                             hidden_size=8, output_size=5, weight_init_std=0.3)
    net.fuse = fuse
    return net


def integer_valued(net, x):
    """Small integers in x and W1 (and b1): every convolution sum is exact in float32, so the
    fused and the layer-by-layer first block agree to the bit, ties and zeros included."""
    net.params["W1"][...] = np.random.randint(-2, 3, net.params["W1"].shape)
    net.params["b1"][...] = np.random.randint(-2, 3, net.params["b1"].shape)
    return np.random.randint(-3, 4, x.shape).astype(np.float32)


@pytest.mark.parametrize("pad", [0, 1])
def test_simple_convnet_fused_first_block_equals_the_layer_by_layer_run(backend_name, pad):
    """SimpleConvNet runs Conv1 -> Relu1 -> Pool1 as one kernel: loss, gradients and every layer
    attribute the book keeps (Relu1.out/mask, Pool1.x/arg_max/x_shape, Conv1.x/col) are those of
    the layer-by-layer run (the book's)."""
    nets = {fuse: small_convnet(fuse, pad=pad) for fuse in (True, False)}
    x0, t = np.random.rand(6, 1, 12, 12).astype(np.float32), np.random.randint(0, 5, 6)
    x = integer_valued(nets[True], x0)
    integer_valued(nets[False], x0)  # not the same draws: copy the weights over
    for k, v in nets[True].params.items():
        nets[False].params[k][...] = v
    loss = {f: n.loss(x, t) for f, n in nets.items()}
    assert loss[True] == loss[False]
    fused, plain = (nets[f].layers for f in (True, False))
    assert fused["Conv1"]._fused is not None and plain["Conv1"]._fused is None
    np.testing.assert_array_equal(fused["Pool1"].arg_max, plain["Pool1"].arg_max)
    assert fused["Pool1"].x_shape == plain["Pool1"].x_shape
    for name in ("out", "mask"):
        np.testing.assert_array_equal(getattr(fused["Relu1"], name), getattr(plain["Relu1"], name))
    np.testing.assert_array_equal(fused["Pool1"].x, plain["Relu1"].out)
    np.testing.assert_array_equal(fused["Conv1"].col, plain["Conv1"].col)
    grads = {f: n.gradient(x, t) for f, n in nets.items()}
    for k in ("W2", "b2", "W3", "b3"):
        np.testing.assert_array_equal(grads[True][k], grads[False][k], err_msg=k)
    for k in ("W1", "b1"):  # sums of real-valued gradients, added in another order
        close(grads[True][k], grads[False][k], rtol=1e-5, atol=1e-7)
    # real-valued data: equal within float32 rounding (the fused kernel sums in another order)
    x = np.random.rand(6, 1, 12, 12).astype(np.float32)
    for k in ("W1", "b1"):
        nets[True].params[k][...] = nets[False].params[k][...] = np.random.randn(
            *nets[True].params[k].shape) * 0.3
    assert abs(nets[True].loss(x, t) - nets[False].loss(x, t)) < 1e-5 * nets[False].loss(x, t)
    grads = {f: n.gradient(x, t) for f, n in nets.items()}
    for k in grads[False]:
        close(grads[True][k], grads[False][k], rtol=1e-4, atol=1e-6)


def test_after_a_fused_forward_the_layers_own_backward_still_works(backend_name):
    """A reader who walks the layers back by hand after predict() gets the book's gradient: the
    fused forward left the state each layer's backward reads."""
    net, plain = small_convnet(True), small_convnet(False)
    x0, t = np.random.rand(4, 1, 12, 12).astype(np.float32), np.random.randint(0, 5, 4)
    x = integer_valued(net, x0)
    for k, v in net.params.items():
        plain.params[k][...] = v
    want = plain.gradient(x, t)  # the book's way
    net.loss(x, t)  # fused
    dout = net.last_layer.backward(1)
    for layer in reversed(list(net.layers.values())):
        dout = layer.backward(dout)
    assert dout.shape == x.shape
    np.testing.assert_array_equal(net.layers["Conv1"].dW, want["W1"])
    np.testing.assert_array_equal(net.layers["Conv1"].db, want["b1"])


def test_switching_fuse_off_between_steps_never_mixes_states():
    net = small_convnet(True)
    x, t = np.random.rand(4, 1, 12, 12).astype(np.float32), np.random.randint(0, 5, 4)
    fused = {k: v.copy() for k, v in net.gradient(x, t).items()}
    net.fuse = False
    plain = net.gradient(x, t)
    assert net.layers["Conv1"]._fused is None
    for k in fused:
        close(plain[k], fused[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fh, stride, pool", [(3, 2, (2, 2, 2)), (9, 1, (2, 2, 2)),
                                              (3, 1, (3, 3, 3)), (3, 1, (2, 2, 1))])
def test_blocks_the_kernel_does_not_run_go_layer_by_layer(fh, stride, pool):
    """A strided convolution, C*FH*FW > 75 (9x9 = 81) or other pooling: layer by layer."""
    from fastnn.dlfs._net import forward_all

    W, b = np.random.randn(4, 1, fh, fh).astype(np.float32), np.zeros(4, np.float32)
    layers = [L.Convolution(W, b, stride, 1), L.Relu(), L.Pooling(*pool)]
    x = np.random.rand(2, 1, 12, 12).astype(np.float32)
    y = forward_all(layers, x)
    assert layers[0]._fused is None
    np.testing.assert_array_equal(forward_all(layers, x, fuse=False), y)
    fits = [L.Convolution(W[:, :, :3, :3].copy(), b, 1, 1), L.Relu(), L.Pooling(2, 2, 2)]
    forward_all(fits, x)
    assert fits[0]._fused is not None  # the control: this block does run fused


def test_a_fused_first_block_rejects_bad_input_as_the_layers_do():
    net = small_convnet(True)
    x = np.random.rand(2, 1, 12, 12)  # float64, and as nested lists: converted, as before
    np.testing.assert_array_equal(net.predict(x.tolist()), net.predict(x))
    assert net.layers["Conv1"]._fused is not None
    with pytest.raises(ValueError, match="W: expected 3 input channels"):
        net.predict(np.zeros((2, 3, 12, 12), np.float32))  # 3 channels, W1 has 1
    with pytest.raises(ValueError, match="x: expected a 4-D array"):
        net.predict(np.zeros((2, 12, 12), np.float32))
    net.layers["Conv1"].pad = 0
    with pytest.raises(ValueError, match="kernel size <= padded input size 2"):
        net.predict(np.zeros((2, 1, 2, 2), np.float32))  # too small for the 3x3 kernel


def test_multi_layer_net_weight_decay_and_init_kinds():
    for init, scale in (("relu", np.sqrt(2 / 5)), ("He", np.sqrt(2 / 5)),
                        ("sigmoid", np.sqrt(1 / 5)), ("xavier", np.sqrt(1 / 5)), (0.5, 0.5)):
        np.random.seed(3)
        net = dlfs.MultiLayerNet(5, [4], 3, weight_init_std=init)
        np.random.seed(3)
        close(net.params["W1"], scale * np.random.randn(5, 4))
    net = dlfs.MultiLayerNet(5, [7, 6], 3, activation="sigmoid", weight_decay_lambda=0.1)
    x, t = r64(4, 5), np.random.randint(0, 3, 4)
    p = {k: v.astype(np.float64) for k, v in net.params.items()}
    h1 = 1 / (1 + np.exp(-(x @ p["W1"] + p["b1"])))
    h2 = 1 / (1 + np.exp(-(h1 @ p["W2"] + p["b2"])))
    out = h2 @ p["W3"] + p["b3"]
    loss, d = ref_softmax_loss(out, t)
    decay = 0.05 * sum(np.sum(p[f"W{i}"] ** 2) for i in (1, 2, 3))
    assert abs(net.loss(x, t) - (loss + decay)) < 1e-5 * (loss + decay)
    grads = net.gradient(x, t)
    close(grads["W3"], h2.T @ d + 0.1 * p["W3"], rtol=1e-4, atol=1e-6)
    d2 = (d @ p["W3"].T) * h2 * (1 - h2)
    close(grads["W2"], h1.T @ d2 + 0.1 * p["W2"], rtol=1e-4, atol=1e-6)
    close(grads["b2"], d2.sum(0), rtol=1e-4, atol=1e-6)
    assert list(net.layers) == ["Affine1", "Activation_function1", "Affine2",
                                "Activation_function2", "Affine3"]


def test_multi_layer_net_extend_with_batchnorm_and_dropout():
    np.random.seed(5)
    net = dlfs.MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, use_dropout=True,
                                   dropout_ration=0.4, weight_decay_lambda=0.01)
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
                                "Affine2"]
    assert {"gamma1", "beta1"} <= set(net.params)
    x, t = r64(8, 6), np.random.randint(0, 3, 8)
    p = {k: v.astype(np.float64) for k, v in net.params.items()}
    state = np.random.get_state()
    grads = net.gradient(x, t)
    np.random.set_state(state)
    a = x @ p["W1"] + p["b1"]
    z, cache, _ = ref_bn_forward(a, p["gamma1"], p["beta1"], 0, 0, 0.9, True)
    mask = np.random.rand(8, 5) > 0.4
    h = np.maximum(z, 0) * mask
    out = h @ p["W2"] + p["b2"]
    _, d = ref_softmax_loss(out, t)
    close(grads["W2"], h.T @ d + 0.01 * p["W2"], rtol=1e-4, atol=1e-6)
    dz = (d @ p["W2"].T) * mask * (z > 0)
    da, dgamma, dbeta = ref_bn_backward(dz, p["gamma1"], cache)
    close(grads["gamma1"], dgamma, rtol=1e-4, atol=1e-6)
    close(grads["beta1"], dbeta, rtol=1e-4, atol=1e-6)
    close(grads["W1"], x.T @ da + 0.01 * p["W1"], rtol=1e-3, atol=1e-5)
    numeric = net.numerical_gradient(x[:2], t[:2])  # float32: only roughly (see gradient.py)
    assert set(numeric) == set(grads)


def test_deep_convnet_structure_and_gradient_keys():
    np.random.seed(2)
    net = dlfs.DeepConvNet()
    assert [net.params[f"W{i}"].shape for i in (1, 4, 7, 8)] == [(16, 1, 3, 3), (32, 32, 3, 3),
                                                                 (1024, 50), (50, 10)]
    x, t = np.random.rand(2, 1, 28, 28).astype(np.float32), np.array([3, 4])
    grads = net.gradient(x, t)
    assert sorted(grads) == sorted(net.params)
    assert all(grads[k].shape == net.params[k].shape for k in grads)
    assert net.predict(x).shape == (2, 10)


def test_trainer_follows_the_books_loop():
    (x, t), (xt, tt) = dlfs.dataset.load_mnist(small=True)
    x, t = x[:300], t[:300]
    np.random.seed(0)
    net = dlfs.MultiLayerNet(784, [20], 10)
    trainer = dlfs.Trainer(net, x, t, xt[:200], tt[:200], epochs=3, mini_batch_size=100,
                           optimizer="AdaGrad", optimizer_param={"lr": 0.1}, verbose=False)
    assert isinstance(trainer.optimizer, O.AdaGrad) and trainer.max_iter == 9
    final = trainer.train()
    assert len(trainer.train_loss_list) == 9
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 3
    assert trainer.train_loss_list[-1] < trainer.train_loss_list[0]
    assert final == net.accuracy(xt[:200], tt[:200])
    with pytest.raises(ValueError, match="optimizer: expected one of .*got 'adamw'"):
        dlfs.Trainer(net, x, t, xt, tt, optimizer="adamw")


def test_install_binds_common_and_dataset(monkeypatch):
    for name in list(sys.modules):
        if name == "common" or name.startswith(("common.", "dataset")):
            monkeypatch.delitem(sys.modules, name)
    for name, module in dlfs.module_aliases().items():
        monkeypatch.setitem(sys.modules, name, module)
    ns = {}
    exec("from common.layers import *\nfrom common.optimizer import *\n"
         "from common.trainer import Trainer\nfrom dataset.mnist import load_mnist\n"
         "import common.util\nnet = Affine(np.ones((2, 2), np.float32), np.zeros(2, np.float32))",
         ns)
    assert ns["Affine"] is L.Affine and ns["Adam"] is O.Adam and ns["np"] is np
    assert ns["load_mnist"] is dlfs.dataset.load_mnist and ns["common"].util is U


# --- parameter files ------------------------------------------------------------------------------

def book_structure_params():
    return {"W1": r64(30, 1, 5, 5), "b1": np.zeros(30), "W2": r64(4320, 100, scale=0.01),
            "b2": np.zeros(100), "W3": r64(100, 10), "b3": np.zeros(10)}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_book_params_pickle_loads_into_simple_convnet(tmp_path, protocol):
    params = book_structure_params()  # float64, as the book saves them
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:
        pickle.dump(params, f, protocol=protocol)
    loaded = dlfs.load_params(path)
    assert list(loaded) == list(params)
    for k in params:
        np.testing.assert_array_equal(loaded[k], params[k])
    net = dlfs.SimpleConvNet()
    net.load_params(path)
    for k in params:
        assert net.params[k].dtype == np.float32
        close(net.params[k], params[k], rtol=1e-7, atol=0)
    assert net.layers["Conv1"].W is net.params["W1"] and net.layers["Affine2"].b is net.params["b3"]


def test_a_pickle_written_by_numpy_1_names_numpy_core(tmp_path):
    data = pickle.dumps({"W1": np.arange(6.0).reshape(2, 3), "n": 3, "s": "x", "l": [1.5]},
                        protocol=2)
    old = data.replace(b"numpy._core", b"numpy.core")  # protocol 2 names globals as text
    assert b"numpy.core.multiarray" in old
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    with pytest.raises(TypeError, match="expected a numpy array for key 'n'"):
        dlfs.load_params(path)  # loads, but a params file holds arrays only
    path.write_bytes(pickle.dumps({"W1": np.arange(6.0)}, protocol=2).replace(b"numpy._core",
                                                                              b"numpy.core"))
    np.testing.assert_array_equal(dlfs.load_params(path)["W1"], np.arange(6.0))


class _RunsCode:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evals:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "params.pkl"
    payload = {"W1": np.zeros(3), "b1": _RunsCode(f"touch {marker}")}
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(dlfs.UnsafePickleError, match=r"refusing to load the global "
                                                      r"(posix|os|nt)\.system"):
        dlfs.load_params(path)
    assert not marker.exists()
    net = dlfs.SimpleConvNet()
    with pytest.raises(ValueError, match="system"):  # also a ValueError, as API.md asks
        net.load_params(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps([_Evals()]))
    with pytest.raises(dlfs.UnsafePickleError, match="builtins.eval"):
        dlfs.load_params(path)


def test_object_arrays_and_foreign_pickles_are_refused(tmp_path):
    path = tmp_path / "obj.pkl"
    path.write_bytes(pickle.dumps({"W1": np.array([1, "a"], dtype=object)}))
    with pytest.raises(dlfs.UnsafePickleError, match="object"):
        dlfs.load_params(path)
    path.write_bytes(pickle.dumps({"W1": OrderedDict(a=1), "f": fastnn.Sequential}))
    with pytest.raises(dlfs.UnsafePickleError, match="fastnn.model.Sequential"):
        dlfs.load_params(path)
    path.write_bytes(pickle.dumps(book_structure_params())[:200])
    with pytest.raises(ValueError, match="cannot be read"):
        dlfs.load_params(path)


def test_fastnn_format_round_trip_and_tamper_detection(tmp_path):
    np.random.seed(0)
    net = dlfs.SimpleConvNet()
    path = tmp_path / "params.npz"
    net.save_params(path)
    assert path.read_bytes()[:2] == b"PK" and path.is_file()
    other = dlfs.SimpleConvNet()
    other.load_params(path)
    for k in net.params:
        np.testing.assert_array_equal(other.params[k], net.params[k])
    arrays = dict(np.load(path))
    arrays["b1"] = arrays["b1"] + 1
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="digest"):
        dlfs.load_params(path)
    pkl = tmp_path / "p.pkl"
    net.save_params(pkl)  # the book's format, readable by the book's pickle.load
    with open(pkl, "rb") as f:
        assert set(pickle.load(f)) == set(net.params)
    small = dlfs.SimpleConvNet(hidden_size=50)
    with pytest.raises(ValueError, match=r"expected W2 of shape \(4320, 50\).*got \(4320, 100\)"):
        small.load_params(pkl)


# --- data set -------------------------------------------------------------------------------------

def test_load_mnist_has_the_books_forms(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "mnist.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 30, dtype=np.uint8),
             x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 10, dtype=np.uint8))
    raw = np.load(npz)
    (x, t), (xt, tt) = dlfs.dataset.load_mnist(path=npz)
    assert x.shape == (30, 784) and x.dtype == np.float32 and t.dtype == np.uint8
    np.testing.assert_array_equal(x, raw["x_train"].reshape(30, 784).astype(np.float32) / 255)
    np.testing.assert_array_equal(tt, raw["y_test"])
    (x, t), _ = dlfs.dataset.load_mnist(normalize=False, flatten=False, one_hot_label=True,
                                        path=npz)
    assert x.shape == (30, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], raw["x_train"])
    assert t.shape == (30, 10) and np.all(t.argmax(1) == raw["y_train"]) and t.sum() == 30
    (x, t), (xt, tt) = dlfs.dataset.load_mnist(small=True)
    assert x.shape == (6000, 784) and xt.shape == (1000, 784)


# --- example scripts ------------------------------------------------------------------------------

QUICK_EXAMPLES = ["ch05_two_layer_net", "ch06_optimizer_compare", "ch06_weight_init_compare",
                  "ch06_batch_norm", "ch06_overfitting", "ch06_hyperparameter_search",
                  "ch07_train_convnet", "ch08_deep_convnet"]


@pytest.mark.parametrize("script", QUICK_EXAMPLES)
def test_dlfs_example_runs_quick(script, tmp_path):
    env = dict(os.environ, FASTNN_NUM_THREADS="1")
    if Path(fastnn.__file__).resolve().parents[1] == ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    r = subprocess.run([sys.executable, f"examples/dlfs/{script}.py", "--quick", "--out",
                        str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    png = tmp_path / f"{script}.png"
    assert png.is_file(), r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
