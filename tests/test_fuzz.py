"""Fuzzing: Hypothesis property tests of every fastnn.kernels function on every backend against
float64 NumPy oracles written here (independent of fastnn.reference), and, where the result is
exact (copies, max pooling, dropout masks), bitwise against the reference backend.

Shapes are random and reach past the compiled kernels' serial/parallel thresholds; values come
from profiles: normal, large (up to the kernel's range), tiny (subnormal), normal mixed with
extremes (+-the range, 0, -0.0, the smallest subnormal and normal), and small integers (ties).
Ranges: elementwise kernels and softmax the whole finite float32 range; losses +-1e4 (the
contract's "stable for logits of magnitude 1e4"); GEMM-based kernels +-1e6.

Budget: FASTNN_FUZZ_EXAMPLES examples per test and backend (default 15; the file takes well under a
minute). A longer run, e.g. 1000 examples each:

    FASTNN_FUZZ_EXAMPLES=1000 pytest tests/test_fuzz.py -p no:cacheprovider

The number of examples run per backend is printed in the "fastnn measurements" section.
"""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
from conftest import ALL_BACKENDS, REPORT, _require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnn import backend
from fastnn import kernels as K

f32, f64 = np.float32, np.float64
EXAMPLES = int(os.environ.get("FASTNN_FUZZ_EXAMPLES", "15"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
COUNT: Counter = Counter()
EPS32 = 2.0**-24  # unit roundoff of float32
TINY = 1e-44  # absolute slack for results in the subnormal range


def COEF(hi):  # noqa: N802 - a strategy, named like the constants above
    """Decay coefficients in [0, hi] that float32 holds as normal numbers (the kernels take them
    as float32: a 1e-48 would be 0 there, and the float64 oracle would disagree by design)."""
    lo = float(np.finfo(np.float32).tiny)
    return st.one_of(st.just(0.0), st.floats(lo, float(np.float32(hi)), width=32))


FLOAT32_MAX = float(np.finfo(f32).max)
GEMM_RANGE, LOSS_RANGE = 1e6, 1e4
PROFILES = st.sampled_from(["normal", "large", "tiny", "extreme", "ties"])
seeds = st.integers(0, 2**32 - 1)
backends = pytest.mark.parametrize("name", ALL_BACKENDS)


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    if COUNT:
        REPORT.append(f"fuzz: {EXAMPLES} examples per test and backend requested; examples run "
                      + ", ".join(f"{b} {COUNT[b]}" for b in ALL_BACKENDS if COUNT[b]))


def values(rng, shape, profile, top):
    """A float32 array of `shape` drawn from `profile`, magnitudes <= top."""
    n = int(np.prod(shape))
    if profile == "ties":
        a = rng.integers(-2, 3, n).astype(f64)
    elif profile == "tiny":
        a = rng.standard_normal(n) * 1e-40
    elif profile == "large":
        a = rng.standard_normal(n) * top / 8
    else:
        a = rng.standard_normal(n)
        if profile == "extreme":
            special = np.array([top, -top, 0.0, -0.0, 1e-45, -1e-45, 1.18e-38, 1.0])
            hit = rng.random(n) < 0.15
            a[hit] = rng.choice(special, hit.sum())
    return np.clip(a, -top, top).astype(f32).reshape(shape)


def start(name):
    _require(name)
    COUNT[name] += 1
    return backend.using(name)


def close(got, want, scale, rtol, what, atol=TINY):
    """|got - want| <= rtol * scale + atol elementwise (scale: a magnitude bound of the terms)."""
    got = np.asarray(got, f64)
    want = np.asarray(want, f64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    allowed = rtol * np.asarray(scale, f64) + atol
    bad = ~(np.abs(got - want) <= allowed)
    if bad.any():
        i = np.unravel_index(np.argmax(bad), bad.shape) if bad.ndim else ()
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} values off; e.g. at {i}: "
                             f"got {got[i]!r}, want {want[i]!r}, allowed error "
                             f"{np.broadcast_to(allowed, bad.shape)[i]!r}")


_close = close  # for the helpers that wrap it


def ceil_div(a, b):
    return -(-a // b)


def gemm_rtol(k):
    """Relative (to |A| @ |B|) error bound of a float32 dot product of length k, with slack."""
    return 2 * (k + 2) * EPS32


# ---------------------------------------------------------------- float64 oracles

def im2col64(x, kh, kw, s, p):
    N, C, H, W = x.shape
    xp = np.pad(x.astype(f64), ((0, 0), (0, 0), (p, p), (p, p)))
    OH, OW = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    col = np.empty((N, C, kh, kw, OH, OW))
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = xp[:, :, i : i + s * OH : s, j : j + s * OW : s]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * OH * OW, -1)


def col2im64(cols, shape, kh, kw, s, p):
    N, C, H, W = shape
    OH, OW = (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1
    col = cols.astype(f64).reshape(N, OH, OW, C, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((N, C, H + 2 * p, W + 2 * p))
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i : i + s * OH : s, j : j + s * OW : s] += col[:, :, i, j]
    return xp[:, :, p : p + H, p : p + W]


def pool64(x, ps, s):
    N, C, H, W = x.shape
    OH, OW = (H - ps) // s + 1, (W - ps) // s + 1
    y, arg = np.empty((N, C, OH, OW)), np.empty((N, C, OH, OW), np.int64)
    for oh in range(OH):
        for ow in range(OW):
            win = x[:, :, oh * s : oh * s + ps, ow * s : ow * s + ps].reshape(N, C, -1)
            k = win.argmax(axis=-1)  # the first maximum in row-major window order
            y[:, :, oh, ow] = win.max(axis=-1)
            arg[:, :, oh, ow] = (oh * s + k // ps) * W + ow * s + k % ps
    return y, arg


def sigmoid64(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x.astype(f64)))


# ---------------------------------------------------------------- convolution

# (n, c, h, w, filters, kh, kw, stride, pad)
conv_shapes = st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 20),
                        st.integers(1, 20), st.integers(1, 8), st.integers(1, 5), st.integers(1, 5),
                        st.integers(1, 3), st.integers(0, 2))


@backends
@FUZZ
@given(shape=conv_shapes, seed=seeds, profile=PROFILES)
def test_im2col_col2im(name, shape, seed, profile):
    n, c, h, w, _, kh, kw, s, p = shape
    if kh > h + 2 * p or kw > w + 2 * p:
        return
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), profile, FLOAT32_MAX)
    with start(name):
        cols = K.im2col(x, kh, kw, s, p)
        np.testing.assert_array_equal(cols, im2col64(x, kh, kw, s, p).astype(f32))  # a copy
        g = values(rng, cols.shape, profile, GEMM_RANGE)
        dx = K.col2im(g, x.shape, kh, kw, s, p)
    overlaps = ceil_div(kh, s) * ceil_div(kw, s)
    close(dx, col2im64(g, x.shape, kh, kw, s, p),
          col2im64(np.abs(g), x.shape, kh, kw, s, p), gemm_rtol(overlaps), "col2im")


# the fused first block Conv2D (stride 1) -> ReLU -> MaxPool2D(2): small integer data, so every
# sum is exact in float32 and the compiled kernels must equal the reference bit for bit (values,
# argmax ties, weight gradients), whatever the shape: kernel widths past one vector (the dense
# backward), rows shorter than a vector, odd outputs, several channels, and bad argmax entries
convpool_shapes = st.tuples(st.integers(1, 6), st.integers(1, 3), st.integers(2, 30),
                            st.integers(2, 30), st.integers(1, 13), st.integers(1, 9),
                            st.integers(1, 9), st.integers(0, 3))


@backends
@FUZZ
@given(shape=convpool_shapes, seed=seeds, bad=st.sampled_from([None, -1, "end", "window"]))
def test_conv2d_relu_pool(name, shape, seed, bad):
    n, c, h, w, f, kh, kw, p = shape
    oh, ow = h + 2 * p - kh + 1, w + 2 * p - kw + 1
    if oh < 2 or ow < 2:
        return
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (n, c, h, w)).astype(f32)
    W = rng.integers(-2, 3, (f, c, kh, kw)).astype(f32)
    b = rng.integers(-2, 3, f).astype(f32)
    dp = rng.integers(-3, 4, (n, f, oh // 2, ow // 2)).astype(f32)
    with backend.using("numpy"):
        p0, a0 = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, p))
    with start(name):
        p1, a1 = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, p))
        np.testing.assert_array_equal(p1, p0)
        np.testing.assert_array_equal(a1, a0)
        if bad is not None:  # -1, one past the plane, or another window's (valid) position
            a0[-1, -1, -1, -1] = {-1: -1, "end": oh * ow, "window": 0}[bad]
        if bad in (-1, "end"):
            with pytest.raises(ValueError, match="argmax"):
                K.conv2d_relu_pool_backward(dp, p0, a0, x, W, p)
            return
        dW, db = K.conv2d_relu_pool_backward(dp, p0, a0, x, W, p)
    with backend.using("numpy"):
        dW0, db0 = K.conv2d_relu_pool_backward(dp, p0, a0, x, W, p)
    np.testing.assert_array_equal(dW, dW0)
    np.testing.assert_array_equal(db, db0)


# the compiled backends' Winograd path: 3x3, stride 1, >= 8 input and output channels
winograd_shapes = st.tuples(st.integers(1, 3), st.integers(8, 12), st.integers(1, 20),
                            st.integers(1, 20), st.integers(8, 12), st.just(3), st.just(3),
                            st.just(1), st.integers(0, 2))


@backends
@FUZZ
@given(shape=conv_shapes, seed=seeds, profile=PROFILES)
def test_conv2d_forward_backward(name, shape, seed, profile):
    _check_conv2d(name, shape, seed, profile)


@backends
@FUZZ
@given(shape=winograd_shapes, seed=seeds, profile=PROFILES)
def test_conv2d_forward_backward_winograd_shapes(name, shape, seed, profile):
    _check_conv2d(name, shape, seed, profile)


def _runs_winograd(name, shape):
    n, c, h, w, f, kh, kw, s, p = shape
    if name == "numpy" or not backend.winograd():
        return False
    size = getattr(backend._load(name), "conv_scratch_size", None)
    return size is not None and size(n, c, h, w, f, kh, kw, s, p) > 0


def _check_conv2d(name, shape, seed, profile):
    # Winograd's error (the compiled backends' 3x3, stride-1 path) is bounded normwise, not per
    # element: an output that is one exact product (a corner next to zero padding) comes out of
    # transformed tiles whose other terms cancel, so its error follows the tile's magnitudes.
    # There the bound is 4x the GEMM bound relative to the tensor's largest |term| sum (the
    # transforms combine 4 values per dimension with coefficients of magnitude <= 1). The
    # "extreme" profile mixes magnitudes 1e6 apart in one tile, beyond what Winograd promises
    # (fastnn.backend.set_winograd): those examples run with it off, per element.
    if _runs_winograd(name, shape) and profile == "extreme":
        backend.set_winograd(False)
        try:
            _check_conv2d_once(name, shape, seed, profile, normwise=False)
        finally:
            backend.set_winograd(True)
        return
    _check_conv2d_once(name, shape, seed, profile, normwise=_runs_winograd(name, shape))


def _check_conv2d_once(name, shape, seed, profile, normwise):
    n, c, h, w, f, kh, kw, s, p = shape
    if kh > h + 2 * p or kw > w + 2 * p:
        return
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), profile, GEMM_RANGE)
    W = values(rng, (f, c, kh, kw), profile, GEMM_RANGE)
    b = values(rng, (f,), profile, GEMM_RANGE)
    cols, acols = im2col64(x, kh, kw, s, p), np.abs(im2col64(x, kh, kw, s, p))
    W2, k = W.reshape(f, -1).astype(f64), c * kh * kw
    OH, OW = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
    with start(name):
        y = K.conv2d_forward(x, W, b, s, p)
        dy = values(rng, y.shape, profile, GEMM_RANGE)
        dx, dW, db = K.conv2d_backward(dy, x, W, s, p)

    def nchw(a):
        return a.reshape(n, OH, OW, f).transpose(0, 3, 1, 2)

    def close(got, want, scale, rtol, what):
        if normwise:
            scale, rtol = np.full(np.shape(scale), np.max(scale, initial=0.0)), 4 * rtol
        _close(got, want, scale, rtol, what)

    close(y, nchw(cols @ W2.T + b), nchw(acols @ np.abs(W2).T + np.abs(b)), gemm_rtol(k + 1), "y")
    dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, f).astype(f64)
    close(dW, (dy2.T @ cols).reshape(W.shape), (np.abs(dy2).T @ acols).reshape(W.shape),
          gemm_rtol(len(dy2)), "dW")
    close(db, dy2.sum(0), np.abs(dy2).sum(0), gemm_rtol(len(dy2)), "db")
    overlaps = ceil_div(kh, s) * ceil_div(kw, s)
    close(dx, col2im64(dy2 @ W2, x.shape, kh, kw, s, p),
          col2im64(np.abs(dy2) @ np.abs(W2), x.shape, kh, kw, s, p), gemm_rtol(f + overlaps), "dx")


# ---------------------------------------------------------------- dense

@backends
@FUZZ
@given(shape=st.tuples(st.integers(1, 64), st.integers(1, 300), st.integers(1, 64)), seed=seeds,
       profile=PROFILES, act=st.sampled_from([None, "relu", "sigmoid"]))
def test_dense_forward_backward(name, shape, seed, profile, act):
    n, i, o = shape
    rng = np.random.default_rng(seed)
    x, W, b = (values(rng, s, profile, GEMM_RANGE) for s in ((n, i), (i, o), (o,)))
    with start(name):
        y = K.dense_forward(x, W, b, act)
        dy = values(rng, (n, o), profile, GEMM_RANGE)
        dx, dW, db = K.dense_backward(dy, x, W)
    z = x.astype(f64) @ W + b
    scale = np.abs(x).astype(f64) @ np.abs(W) + np.abs(b)
    if act == "relu":
        close(y, np.maximum(z, 0), scale, gemm_rtol(i + 1), "relu(x @ W + b)")
    elif act == "sigmoid":  # Lipschitz 1/4; plus the sigmoid's own few-ulp error
        close(y, sigmoid64(z), scale / 4 * gemm_rtol(i + 1) + 2e-6 * sigmoid64(z), 1.0,
              "sigmoid(x @ W + b)", atol=1e-37)
    else:
        close(y, z, scale, gemm_rtol(i + 1), "x @ W + b")
    d, ad = dy.astype(f64), np.abs(dy).astype(f64)
    close(dx, d @ W.T, ad @ np.abs(W).T, gemm_rtol(o), "dx")
    close(dW, x.T.astype(f64) @ d, np.abs(x).T.astype(f64) @ ad, gemm_rtol(n), "dW")
    close(db, d.sum(0), ad.sum(0), gemm_rtol(n), "db")


# ---------------------------------------------------------------- pooling

@backends
@FUZZ
@given(shape=st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 24), st.integers(1, 24),
                       st.integers(1, 4), st.integers(1, 4)), seed=seeds, profile=PROFILES)
def test_maxpool2d(name, shape, seed, profile):
    n, c, h, w, ps, s = shape
    if ps > h or ps > w:
        return
    rng = np.random.default_rng(seed)
    x = values(rng, (n, c, h, w), profile, FLOAT32_MAX)
    with start(name):
        y, arg = K.maxpool2d_forward(x, ps, s)
        dy = values(rng, y.shape, profile, GEMM_RANGE)
        dx = K.maxpool2d_backward(dy, arg, x.shape, ps, s)
    want_y, want_arg = pool64(x.astype(f64), ps, s)
    np.testing.assert_array_equal(y, want_y.astype(f32))
    np.testing.assert_array_equal(arg, want_arg, err_msg="argmax: ties go to the first maximum")
    want_dx, scale = np.zeros((n * c, h * w)), np.zeros((n * c, h * w))
    flat_arg, flat_dy = want_arg.reshape(n * c, -1), dy.reshape(n * c, -1).astype(f64)
    for r in range(n * c):
        np.add.at(want_dx[r], flat_arg[r], flat_dy[r])
        np.add.at(scale[r], flat_arg[r], np.abs(flat_dy[r]))
    close(dx, want_dx.reshape(x.shape), scale.reshape(x.shape), gemm_rtol(ceil_div(ps, s) ** 2),
          "dx")


# ---------------------------------------------------------------- activations

@backends
@FUZZ
@given(size=st.integers(1, 70_000), seed=seeds, profile=PROFILES,
       kind=st.sampled_from(["relu", "sigmoid", "tanh"]))
def test_activations(name, size, seed, profile, kind):
    rng = np.random.default_rng(seed)
    x = values(rng, (size,), profile, FLOAT32_MAX)
    x64 = x.astype(f64)
    with start(name):
        y = getattr(K, kind)(x)
        y_in = {"relu": np.maximum(x, 0), "sigmoid": sigmoid64(x).astype(f32),
                "tanh": np.tanh(x64).astype(f32)}[kind]  # a valid output to differentiate at
        dy = values(rng, x.shape, profile, GEMM_RANGE)
        dx = getattr(K, kind + "_backward")(dy, y_in)
    d, yy = dy.astype(f64), y_in.astype(f64)
    if kind == "relu":
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        np.testing.assert_array_equal(dx, (d * (yy > 0)).astype(f32))
    elif kind == "sigmoid":
        close(y, sigmoid64(x), sigmoid64(x), 1e-5, "sigmoid", atol=1e-37)
        close(dx, d * yy * (1 - yy), np.abs(d) * yy * (1 + yy), 4 * EPS32, "sigmoid_backward")
    else:
        close(y, np.tanh(x64), np.abs(np.tanh(x64)), 1e-5, "tanh", atol=1e-7)
        close(dx, d * (1 - yy * yy), np.abs(d) * (1 + yy * yy), 4 * EPS32, "tanh_backward")


# ---------------------------------------------------------------- softmax and losses

rows_cols = st.tuples(st.integers(1, 300), st.integers(1, 120))


def softmax64(x):
    z = x.astype(f64) - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@backends
@FUZZ
@given(shape=rows_cols, seed=seeds, profile=PROFILES)
def test_softmax(name, shape, seed, profile):
    x = values(np.random.default_rng(seed), shape, profile, FLOAT32_MAX)
    with start(name):
        p = K.softmax(x)
    assert np.isfinite(p).all(), "softmax must be finite for finite logits"
    close(p, softmax64(x), softmax64(x), 1e-5, "softmax", atol=2e-6)


@backends
@FUZZ
@given(shape=rows_cols, seed=seeds, profile=PROFILES)
def test_softmax_cross_entropy(name, shape, seed, profile):
    n, c = shape
    rng = np.random.default_rng(seed)
    x = values(rng, shape, profile, LOSS_RANGE)
    labels = rng.integers(0, c, n)
    with start(name):
        loss, d = K.softmax_cross_entropy(x, labels)
    x64 = x.astype(f64)
    m = x64.max(1)
    lse = m + np.log(np.exp(x64 - m[:, None]).sum(1))
    want = np.mean(lse - x64[np.arange(n), labels])
    assert isinstance(loss, float)
    close(loss, want, np.mean(np.abs(m) + np.abs(x64[np.arange(n), labels]) + np.log(c)), 1e-6,
          "loss", atol=1e-6)
    g = softmax64(x)
    g[np.arange(n), labels] -= 1
    close(d, g / n, np.abs(g) / n, 1e-5, "dlogits", atol=2e-6 / n)


@backends
@FUZZ
@given(shape=rows_cols, seed=seeds, profile=PROFILES, hard=st.booleans())
def test_sigmoid_binary_cross_entropy(name, shape, seed, profile, hard):
    rng = np.random.default_rng(seed)
    x = values(rng, shape, profile, LOSS_RANGE)
    t = (rng.random(shape) < 0.5 if hard else rng.random(shape)).astype(f32)
    with start(name):
        loss, d = K.sigmoid_binary_cross_entropy(x, t)
    x64, t64 = x.astype(f64), t.astype(f64)
    want = np.mean(np.maximum(x64, 0) - x64 * t64 + np.log1p(np.exp(-np.abs(x64))))
    close(loss, want, np.mean(np.abs(x64) + np.log(2)), 1e-6, "loss", atol=1e-6)
    close(d, (sigmoid64(x) - t64) / x.size, (sigmoid64(x) + t64) / x.size, 1e-5, "dlogits",
          atol=2e-6 / x.size)


@backends
@FUZZ
@given(shape=rows_cols, seed=seeds, profile=PROFILES)
def test_mse(name, shape, seed, profile):
    rng = np.random.default_rng(seed)
    pred, target = (values(rng, shape, profile, GEMM_RANGE) for _ in range(2))
    with start(name):
        loss, d = K.mse(pred, target)
    diff, size = pred.astype(f64) - target, pred.size
    scale = np.abs(pred).astype(f64) + np.abs(target)
    close(loss, np.mean(diff**2), np.mean(scale**2), 1e-5, "loss")
    close(d, 2 * diff / size, 2 * scale / size, 4 * EPS32, "dpred")


# ---------------------------------------------------------------- batch normalisation

@backends
@FUZZ
@given(shape=st.one_of(st.tuples(st.integers(1, 64), st.integers(1, 16)),
                       st.tuples(st.integers(1, 8), st.integers(1, 8), st.integers(1, 9),
                                 st.integers(1, 9))),
       seed=seeds, profile=PROFILES, momentum=COEF(1.0), eps=st.sampled_from([1e-5, 1e-3]))
def test_batchnorm(name, shape, seed, profile, momentum, eps):
    rng = np.random.default_rng(seed)
    C = shape[1]
    x = values(rng, shape, profile, GEMM_RANGE)
    gamma, beta = values(rng, (C,), "normal", 1e3), values(rng, (C,), "normal", 1e3)
    rm0, rv0 = rng.standard_normal(C).astype(f32), rng.random(C).astype(f32) + 0.5
    rm, rv = rm0.copy(), rv0.copy()
    with start(name):
        y, mean, invstd = K.batchnorm_forward(x, gamma, beta, rm, rv, momentum, eps, train=True)
        y, mean, invstd = y.copy(), mean.copy(), invstd.copy()
        dy = values(rng, shape, profile, GEMM_RANGE)
        dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd)
        yi, _, _ = K.batchnorm_forward(x, gamma, beta, rm0.copy(), rv0.copy(), momentum, eps,
                                       train=False)
    N = shape[0]
    x3 = x.reshape(N, C, -1).astype(f64)
    M = N * x3.shape[2]
    rtol = 4e-6 + 2 * M * EPS32
    mu = x3.mean(axis=(0, 2))
    var = ((x3 - mu[None, :, None]) ** 2).mean(axis=(0, 2))
    inv = 1 / np.sqrt(var + eps)
    absx = np.abs(x3).max(axis=(0, 2))
    close(mean, mu, absx, rtol, "mean")
    close(invstd, inv, inv, rtol + 1e-6, "invstd")
    xhat = (x3 - mu[None, :, None]) * inv[None, :, None]
    bc = (slice(None), None)  # per channel, broadcast over (N, C, L)
    scale = (np.abs(x3) + absx[None, :, None]) * inv[None, :, None] * np.abs(gamma)[None, :, None]
    close(y.reshape(x3.shape), gamma[None, :, None] * xhat + beta[None, :, None],
          scale + np.abs(beta)[None, :, None], rtol, "y (train)")
    close(rm, momentum * rm0 + (1 - momentum) * mu, np.abs(rm0) + absx, rtol, "running_mean")
    close(rv, momentum * rv0 + (1 - momentum) * var, rv0 + var + absx**2 * rtol, rtol,
          "running_var")
    inv_r = 1 / np.sqrt(rv0.astype(f64) + eps)
    close(yi.reshape(x3.shape), (x3 - rm0[bc]) * (gamma * inv_r)[bc] + beta[bc],
          (np.abs(x3) + np.abs(rm0)[bc]) * (np.abs(gamma) * inv_r)[bc] + np.abs(beta)[bc],
          8 * EPS32, "y (inference)")
    d3 = dy.reshape(x3.shape).astype(f64)
    db, dg = d3.sum(axis=(0, 2)), (d3 * xhat).sum(axis=(0, 2))
    ad3, axh = np.abs(d3), np.abs(xhat) + absx[None, :, None] * inv[None, :, None]
    close(dbeta, db, ad3.sum(axis=(0, 2)), rtol, "dbeta")
    close(dgamma, dg, (ad3 * axh).sum(axis=(0, 2)), rtol, "dgamma")
    want_dx = (gamma * inv / M)[bc] * (M * d3 - db[bc] - xhat * dg[bc])
    scale_dx = (np.abs(gamma) * inv / M)[bc] * (M * ad3 + ad3.sum(axis=(0, 2))[bc]
                                                 + axh * (ad3 * axh).sum(axis=(0, 2))[bc])
    close(dx.reshape(x3.shape), want_dx, scale_dx, rtol, "dx")


# ---------------------------------------------------------------- dropout

@backends
@FUZZ
@given(size=st.integers(1, 70_000), seed=seeds, profile=PROFILES,
       rate=st.one_of(st.just(0.0), st.floats(0, 0.99)))
def test_dropout(name, size, seed, profile, rate):
    rng = np.random.default_rng(seed)
    x = values(rng, (size,), profile, FLOAT32_MAX / 200)
    dy = values(rng, (size,), profile, GEMM_RANGE)
    with backend.using("numpy"):
        ref_y, ref_mask = K.dropout_forward(x, rate, np.random.default_rng(seed))
    with start(name):
        y, mask = K.dropout_forward(x, rate, np.random.default_rng(seed))
        dx = K.dropout_backward(dy, mask, rate)
    np.testing.assert_array_equal(mask, ref_mask, err_msg="the same seed gives the same mask")
    assert set(np.unique(mask)) <= {0, 1}
    u = np.random.default_rng(seed).random(size, dtype=f32)
    np.testing.assert_array_equal(mask, u >= f32(rate))
    keep = 1 / (1 - rate)
    close(y, x.astype(f64) * mask * keep, np.abs(x).astype(f64) * keep, 4 * EPS32, "y")
    close(dx, dy.astype(f64) * mask * keep, np.abs(dy).astype(f64) * keep, 4 * EPS32, "dx")
    np.testing.assert_array_equal(y, ref_y)


# ---------------------------------------------------------------- optimizer updates

opt_sizes = st.integers(1, 70_000)
# learning rates as float32 sees them: a subnormal rate would itself lose digits in float32
LRS = st.one_of(st.just(0.0), st.floats(1e-8, 1.0))


def state(rng, n, profile):
    p = values(rng, (n,), profile, GEMM_RANGE)
    g = values(rng, (n,), profile, GEMM_RANGE)
    return p, g


def sqrt_err(v, av):
    """A bound on |sqrt(v32) - sqrt(v)| when v32, computed in float32, is within 8 ulp of av."""
    e = 8 * EPS32 * av + TINY
    return np.minimum(np.sqrt(e), e / (2 * np.sqrt(np.maximum(v, 1e-300))))


def quotient_err(num, den, den_err):
    """A bound on |num / den32 - num / den| for |den32 - den| <= den_err (den > 0)."""
    return num * den_err / (den * np.maximum(den - den_err, den * 1e-3))


@backends
@FUZZ
@given(size=opt_sizes, seed=seeds, profile=PROFILES, step=st.integers(1, 10_000),
       lr=LRS, b1=COEF(0.999), b2=COEF(0.9999),
       eps=st.sampled_from([1e-8, 1e-6, 1e-3]), wd=st.sampled_from([0.0, 0.01, 0.5]),
       decoupled=st.booleans())
def test_adam_update(name, size, seed, profile, step, lr, b1, b2, eps, wd, decoupled):
    rng = np.random.default_rng(seed)
    p, g = state(rng, size, profile)
    m = values(rng, (size,), profile, GEMM_RANGE)
    v = np.abs(values(rng, (size,), profile, GEMM_RANGE)) ** 2
    v = np.minimum(v, FLOAT32_MAX / 4).astype(f32)
    P, Mm, V = p.copy(), m.copy(), v.copy()
    with start(name):
        K.adam_update(P, g, Mm, V, step, lr, b1, b2, eps, wd, decoupled)
    p64, g64, m64, v64 = (a.astype(f64) for a in (p, g, m, v))
    ag = np.abs(g64)
    if wd and decoupled:
        p64 = p64 * (1 - lr * wd)
    elif wd:
        g64, ag = g64 + wd * p64, ag + wd * np.abs(p64)
    m_new = b1 * m64 + (1 - b1) * g64
    am = b1 * np.abs(m64) + (1 - b1) * ag
    v_new = b2 * v64 + (1 - b2) * g64 * g64
    av = b2 * v64 + (1 - b2) * ag * ag
    close(Mm, m_new, am, 8 * EPS32, "m")
    # (1 - b2) * g * g in float32 underflows in steps: a v below the normal range (2**-126) can
    # come out as anything from 0 to itself, whatever the order of the two products
    close(V, v_new, av, 8 * EPS32, "v", atol=float(np.finfo(np.float32).tiny))
    denom = np.sqrt(v_new) / np.sqrt(1 - b2**step) + eps
    step_size = lr / (1 - b1**step)
    upd = step_size * am / denom
    # v is only known to 8 ulp of av (cancellation in g + wd * p): the quotient inherits that
    extra = quotient_err(step_size * (np.abs(m_new) + 8 * EPS32 * am), denom,
                         sqrt_err(v_new, av) / np.sqrt(1 - b2**step))
    # a product rounded in the subnormal range is off by up to 2**-149 absolute, then divided
    sub = 4 * 2.0**-149 * (1 + step_size) / denom
    close(P, p64 - step_size * m_new / denom, np.abs(p64) + upd, 16 * EPS32, "param",
          atol=TINY + sub + 2 * extra)


@backends
@FUZZ
@given(size=opt_sizes, seed=seeds, profile=PROFILES, lr=LRS,
       momentum=st.sampled_from([0.0, 0.5, 0.9]), nesterov=st.booleans(),
       wd=st.sampled_from([0.0, 0.01]))
def test_sgd_update(name, size, seed, profile, lr, momentum, nesterov, wd):
    nesterov = nesterov and momentum > 0
    rng = np.random.default_rng(seed)
    p, g = state(rng, size, profile)
    vel = values(rng, (size,), profile, GEMM_RANGE) if momentum else None
    P, Vel = p.copy(), None if vel is None else vel.copy()
    with start(name):
        K.sgd_update(P, g, Vel, lr, momentum, nesterov, wd)
    p64 = p.astype(f64)
    g64, ag = g + wd * p64, np.abs(g) + wd * np.abs(p64)
    if momentum:
        v_new = momentum * vel + g64
        av = momentum * np.abs(vel) + ag
        close(Vel, v_new, av, 4 * EPS32, "velocity")
        g64, ag = (g64 + momentum * v_new, ag + momentum * av) if nesterov else (v_new, av)
    close(P, p64 - lr * g64, np.abs(p64) + lr * ag, 8 * EPS32, "param")


@backends
@FUZZ
@given(size=opt_sizes, seed=seeds, profile=PROFILES, lr=LRS,
       eps=st.sampled_from([1e-10, 1e-8, 1e-3]), wd=st.sampled_from([0.0, 0.01]),
       alpha=st.one_of(st.none(), COEF(1.0)))
def test_adagrad_rmsprop_update(name, size, seed, profile, lr, eps, wd, alpha):
    """alpha None: adagrad_update; else rmsprop_update with that alpha."""
    rng = np.random.default_rng(seed)
    p, g = state(rng, size, profile)
    sq = np.minimum(np.abs(values(rng, (size,), profile, GEMM_RANGE)) ** 2, FLOAT32_MAX / 4)
    sq = sq.astype(f32)
    P, S = p.copy(), sq.copy()
    with start(name):
        if alpha is None:
            K.adagrad_update(P, g, S, lr, eps, wd)
        else:
            K.rmsprop_update(P, g, S, lr, alpha, eps, wd)
    p64 = p.astype(f64)
    g64, ag = g + wd * p64, np.abs(g) + wd * np.abs(p64)
    if alpha is None:
        s_new, a_s = sq + g64 * g64, sq + ag * ag
    else:
        s_new, a_s = alpha * sq + (1 - alpha) * g64 * g64, alpha * sq + (1 - alpha) * ag * ag
    close(S, s_new, a_s, 8 * EPS32, "sum_sq" if alpha is None else "sq_avg")
    denom = np.sqrt(s_new) + eps
    extra = quotient_err(lr * ag, denom, sqrt_err(s_new, a_s))
    sub = 4 * 2.0**-149 * (1 + lr) / denom  # subnormal intermediates (see test_adam_update)
    close(P, p64 - lr * g64 / denom, np.abs(p64) + lr * ag / denom, 16 * EPS32, "param",
          atol=TINY + sub + 2 * extra)
