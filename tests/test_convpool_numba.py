"""The Numba conv2d_relu_pool kernels against the reference (fastnn.reference.convpool)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import _require

from fastnn import backend
from fastnn.reference import convpool as ref


@pytest.fixture(autouse=True)
def _numba_backend():
    _require("numba")  # a failure in CI, a skip where numba cannot load


def _nb():
    return backend._load("numba")

SHAPES = list(itertools.product((1, 3, 8), (1, 3), (1, 5, 30, 32), (3, 5), (0, 1, 2), (6, 7, 28)))
# N, C, F, k, pad, H


def _out(N, F, H, W, k, pad):
    OH, OW = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    return OH, OW, (N, F, OH // 2, OW // 2)


def _data(rng, N, C, F, k, H, W, integer):
    if integer:  # small integers: exact sums, many ties
        x = rng.integers(-3, 4, (N, C, H, W)).astype(np.float32)
        Wt = rng.integers(-3, 4, (F, C, k, k)).astype(np.float32)
        b = rng.integers(-3, 4, F).astype(np.float32)
    else:
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        Wt = rng.standard_normal((F, C, k, k)).astype(np.float32)
        b = rng.standard_normal(F).astype(np.float32)
    return x, Wt, b


def _forward(mod, x, Wt, b, pad):
    N, F, k = x.shape[0], Wt.shape[0], Wt.shape[2]
    _, _, pshape = _out(N, F, x.shape[2], x.shape[3], k, pad)
    p = np.full(pshape, np.float32(-7.0))
    a = np.full(pshape, -5, np.int32)
    mod.conv2d_relu_pool_forward(x, Wt, b, pad, p, a)
    return p, a


def _backward(mod, dp, p, a, x, pad, Wshape):
    dW = np.full(Wshape, np.float32(np.nan))
    db = np.full(Wshape[0], np.float32(np.nan))
    ok = mod.conv2d_relu_pool_backward(dp, p, a, x, pad, dW, db)
    return ok, dW, db


def _conv(x, Wt, b, pad):
    from fastnn.reference.conv import conv2d_forward

    N, F, k = x.shape[0], Wt.shape[0], Wt.shape[2]
    OH, OW, _ = _out(N, F, x.shape[2], x.shape[3], k, pad)
    y = np.empty((N, F, OH, OW), np.float32)
    conv2d_forward(x, Wt, b, 1, pad, y, np.empty((N * OH * OW, Wt[0].size), np.float32),
                   np.empty((N * OH * OW, F), np.float32))
    return y


def _grad_scale(dp, p, a, x, pad, Wshape):
    """The reference gradients of |dp| and |x|: the sums of the absolute terms."""
    _, dW, db = _backward(ref, np.abs(dp) * (p > 0), np.ones_like(p), a, np.abs(x), pad, Wshape)
    return dW, db


@pytest.mark.parametrize("N,C,F,k,pad,H", SHAPES)
def test_matches_reference(N, C, F, k, pad, H):
    rng = np.random.default_rng(hash((N, C, F, k, pad, H)) % 2**32)
    W = H + 1 if H == 6 else H  # one non-square case per size
    x, Wt, b = _data(rng, N, C, F, k, H, W, integer=False)
    p0, a0 = _forward(ref, x, Wt, b, pad)
    p1, a1 = _forward(_nb(), x, Wt, b, pad)
    np.testing.assert_allclose(p1, p0, rtol=1e-5, atol=1e-5)
    # argmax: random data may have near-ties, so check that it points at the window's maximum
    y = _conv(x, Wt, b, pad).reshape(N, F, -1)
    picked = np.take_along_axis(y, a1.reshape(N, F, -1), axis=2).reshape(p0.shape)
    best = np.take_along_axis(y, a0.reshape(N, F, -1), axis=2).reshape(p0.shape)
    np.testing.assert_allclose(picked, best, rtol=1e-5, atol=1e-5)
    assert np.all(a1 // y.shape[2] == 0)
    OH, OW, _ = _out(N, F, H, W, k, pad)
    ph, pw = np.indices(p0.shape[2:])
    assert np.all((a1 // OW - 2 * ph) // 2 == 0) and np.all((a1 % OW - 2 * pw) // 2 == 0)
    dp = rng.standard_normal(p0.shape).astype(np.float32)
    ok0, dW0, db0 = _backward(ref, dp, p0, a0, x, pad, Wt.shape)
    ok1, dW1, db1 = _backward(_nb(), dp, p0, a0, x, pad, Wt.shape)
    assert ok0 and ok1
    sW, sb = _grad_scale(dp, p0, a0, x, pad, Wt.shape)
    assert np.all(np.abs(dW1 - dW0) <= 1e-4 * sW + 1e-6)
    assert np.all(np.abs(db1 - db0) <= 1e-4 * sb + 1e-6)


@pytest.mark.parametrize("N,C,F,k,pad,H", [s for s in SHAPES if s[0] != 3])
def test_integer_data_exact(N, C, F, k, pad, H):
    """Integer data: exact convolution sums, so p and argmax (ties included) match exactly."""
    rng = np.random.default_rng(1 + hash((N, C, F, k, pad, H)) % 2**32)
    x, Wt, b = _data(rng, N, C, F, k, H, H + (pad == 1), integer=True)
    p0, a0 = _forward(ref, x, Wt, b, pad)
    p1, a1 = _forward(_nb(), x, Wt, b, pad)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(a1, a0)
    dp = rng.integers(-3, 4, p0.shape).astype(np.float32)
    ok0, dW0, db0 = _backward(ref, dp, p0, a0, x, pad, Wt.shape)
    ok1, dW1, db1 = _backward(_nb(), dp, p0, a0, x, pad, Wt.shape)
    assert ok0 and ok1
    np.testing.assert_array_equal(dW1, dW0)
    np.testing.assert_array_equal(db1, db0)


def test_many_ties():
    """Constant images: every window is a four-way tie, the first position wins."""
    x = np.zeros((2, 1, 7, 9), np.float32)
    x[1] = 1.0
    Wt = np.ones((3, 1, 3, 3), np.float32)
    b = np.array([0.0, -1.0, 2.0], np.float32)
    for pad in (0, 1):
        p0, a0 = _forward(ref, x, Wt, b, pad)
        p1, a1 = _forward(_nb(), x, Wt, b, pad)
        np.testing.assert_array_equal(p1, p0)
        np.testing.assert_array_equal(a1, a0)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("pad", [0, 1])
def test_nan_and_inf_propagate(pad):
    rng = np.random.default_rng(5)
    x, Wt, b = _data(rng, 3, 2, 6, 3, 9, 9, integer=False)
    x[0, 1, 4, 4] = np.nan
    x[1, 0, 0, 3] = np.inf
    x[2, 0, 8, 8] = -np.inf
    p0, a0 = _forward(ref, x, Wt, b, pad)
    p1, a1 = _forward(_nb(), x, Wt, b, pad)
    np.testing.assert_array_equal(np.isnan(p1), np.isnan(p0))
    fin = np.isfinite(p0)
    np.testing.assert_allclose(p1[fin], p0[fin], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(p1[~fin], p0[~fin])
    np.testing.assert_array_equal(a1[~np.isfinite(p0)], a0[~np.isfinite(p0)])
    dp = rng.standard_normal(p0.shape).astype(np.float32)
    ok0, dW0, db0 = _backward(ref, dp, p0, a0, x, pad, Wt.shape)
    ok1, dW1, db1 = _backward(_nb(), dp, p0, a0, x, pad, Wt.shape)
    assert ok0 and ok1
    np.testing.assert_array_equal(np.isnan(dW1), np.isnan(dW0))
    np.testing.assert_array_equal(np.isnan(db1), np.isnan(db0))
    fin = np.isfinite(dW0)
    np.testing.assert_allclose(dW1[fin], dW0[fin], rtol=1e-4, atol=1e-4)
    # a NaN gradient at a live unit reaches db and the dW it touches
    dp[0, 0, 0, 0] = np.nan
    p = np.abs(p0) + 1
    ok0, dW0, db0 = _backward(ref, dp, p, a0, x, pad, Wt.shape)
    ok1, dW1, db1 = _backward(_nb(), dp, p, a0, x, pad, Wt.shape)
    np.testing.assert_array_equal(np.isnan(dW1), np.isnan(dW0))
    np.testing.assert_array_equal(np.isnan(db1), np.isnan(db0))


def test_nan_wins_the_window():
    x = np.zeros((1, 1, 6, 6), np.float32)
    Wt = np.zeros((2, 1, 3, 3), np.float32)
    Wt[0, 0, 0, 0] = 1.0
    Wt[1, 0, 2, 2] = 1.0
    b = np.zeros(2, np.float32)
    x[0, 0, 1, 0] = 5.0
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 3, 3] = np.nan
    p0, a0 = _forward(ref, x, Wt, b, 0)
    p1, a1 = _forward(_nb(), x, Wt, b, 0)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(a1, a0)


def test_argmax_anywhere_in_the_plane():
    """Backward takes any argmax in [0, OH*OW), not only one inside its own window."""
    rng = np.random.default_rng(9)
    x, Wt, b = _data(rng, 5, 2, 7, 3, 8, 9, integer=True)
    p, a = _forward(ref, x, Wt, b, 1)
    OH, OW, _ = _out(5, 7, 8, 9, 3, 1)
    a = rng.integers(0, OH * OW, a.shape).astype(np.int32)
    a[0, 0, 0, 0] = OH * OW - 1
    dp = rng.integers(-3, 4, p.shape).astype(np.float32)
    ok0, dW0, db0 = _backward(ref, dp, p, a, x, 1, Wt.shape)
    ok1, dW1, db1 = _backward(_nb(), dp, p, a, x, 1, Wt.shape)
    assert ok0 and ok1
    np.testing.assert_array_equal(dW1, dW0)
    np.testing.assert_array_equal(db1, db0)


@pytest.mark.parametrize("N", [1, 9])
@pytest.mark.parametrize("where", [0, -1])
@pytest.mark.parametrize("value", ["neg", "end"])
def test_bad_argmax_returns_false(N, where, value):
    rng = np.random.default_rng(3)
    x, Wt, b = _data(rng, N, 1, 5, 3, 12, 12, integer=False)
    p, a = _forward(_nb(), x, Wt, b, 1)
    OH, OW, _ = _out(N, 5, 12, 12, 3, 1)
    a.reshape(-1)[where] = -1 if value == "neg" else OH * OW
    dp = np.ones_like(p)
    p = np.abs(p) + 1
    ok, _, _ = _backward(_nb(), dp, p, a, x, 1, Wt.shape)
    assert not ok
    a.reshape(-1)[where] = 0
    ok, _, _ = _backward(_nb(), dp, p, a, x, 1, Wt.shape)
    assert ok


@pytest.mark.parametrize("N,C,F,k,pad,H", [(100, 1, 30, 5, 0, 28), (64, 1, 32, 3, 1, 28),
                                           (9, 3, 7, 5, 2, 13), (5, 2, 5, 3, 0, 11)])
def test_thread_count_does_not_change_bits(N, C, F, k, pad, H):
    rng = np.random.default_rng(11)
    x, Wt, b = _data(rng, N, C, F, k, H, H, integer=False)
    dp = rng.standard_normal(_out(N, F, H, H, k, pad)[2]).astype(np.float32)
    before = _nb().get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            _nb().set_num_threads(threads)
            p, a = _forward(_nb(), x, Wt, b, pad)
            ok, dW, db = _backward(_nb(), dp, p, a, x, pad, Wt.shape)
            assert ok
            results.append((p, a, dW, db))
    finally:
        _nb().set_num_threads(before)
    for r1, r2 in zip(*results, strict=True):
        np.testing.assert_array_equal(r1.view(np.int32), r2.view(np.int32))


def test_odd_last_row_and_column_dropped():
    rng = np.random.default_rng(4)
    x, Wt, b = _data(rng, 2, 1, 3, 3, 9, 8, integer=True)  # OH 7, OW 6 (pad 0)
    p0, a0 = _forward(ref, x, Wt, b, 0)
    p1, a1 = _forward(_nb(), x, Wt, b, 0)
    assert p1.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(a1, a0)


def test_exported():
    assert "conv2d_relu_pool_forward" in _nb().__all__
    assert "conv2d_relu_pool_backward" in _nb().__all__
