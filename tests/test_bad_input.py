"""The bad-input table: one row per case, across the kernels (on every backend), layers, losses,
optimizers, fit, load, the data loader and the command line. Each row expects either a clear
exception (its type, and a message naming the argument, what was expected and what was given) or
a documented conversion / non-finite propagation that the row's call itself asserts (README
"Errors and conversions").

Every row runs in a child process: one child per backend for the kernel rows, one for the other
rows. A crash of the interpreter (segfault, abort) is therefore a failure of the row that was
running (and of the rows after it), never of pytest itself. The number of cases tried and of
crashes is printed in the "fastnn measurements" section at the end of the run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import kernels as K

f32 = np.float32
HERE = Path(__file__).resolve().parent
TMP: Path | None = None  # the child's scratch directory (rows that need files use it)
SENTINEL = "FASTNN_PWNED"  # created only if code from a crafted file ran


class OK:
    """The call must return normally: a documented conversion or propagation it asserts itself."""


class Exits:
    """A command-line row: `fastnn ...` exits with `code` and stderr matches `pattern`."""

    def __init__(self, code: int, pattern: str) -> None:
        self.code, self.pattern = code, pattern


class Known:
    """A gap found by this table in a file owned elsewhere: expected to fail until fixed (then the
    row fails too, as a reminder to turn it into a normal row)."""

    def __init__(self, reason: str, exc, pattern: str) -> None:
        self.reason, self.exc, self.pattern = reason, exc, pattern


# ---------------------------------------------------------------- kernel rows (every backend)

x4 = np.zeros((2, 3, 8, 8), f32)
W4 = np.zeros((4, 3, 3, 3), f32)
b4 = np.zeros(4, f32)
y4 = np.zeros((2, 4, 8, 8), f32)
x2 = np.zeros((5, 6), f32)
W2 = np.zeros((6, 3), f32)
b2 = np.zeros(3, f32)
p = np.zeros(10, f32)
pooled, argmax = np.zeros((2, 3, 4, 4), f32), np.zeros((2, 3, 4, 4), np.int32)
ones3, zeros3 = np.ones(3, f32), np.zeros(3, f32)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _ro(a):
    """A read-only view (same layout) of an array, or a read-only copy of anything else."""
    a = a.view() if isinstance(a, np.ndarray) else np.array(a)
    a.flags.writeable = False
    return a


def _readonly_adam():
    K.adam_update(_ro(np.zeros(10, f32)), p, p.copy(), p.copy(), 1)


def _conv_converts():
    r = _rng()
    x = r.standard_normal((2, 3, 10, 16))[:, :, :, ::2]  # non-contiguous float64
    W = r.standard_normal((4, 3, 3, 3)).astype(f32)
    want = K.conv2d_forward(np.ascontiguousarray(x, dtype=f32), W, b4, 1, 1)
    np.testing.assert_array_equal(K.conv2d_forward(x, W, b4, 1, 1), want)
    np.testing.assert_array_equal(K.conv2d_forward(_ro(x), W.astype(np.float64), b4, 1, 1), want)


def _conv_batch_of_one():
    r = _rng()
    x, W, b = (r.standard_normal(s).astype(f32) for s in ((2, 3, 7, 7), (4, 3, 3, 3), (4,)))
    np.testing.assert_allclose(K.conv2d_forward(x[:1], W, b, 2, 1),
                               K.conv2d_forward(x, W, b, 2, 1)[:1], rtol=1e-5, atol=1e-5)
    dx, dW, db = K.conv2d_backward(np.ones((1, 4, 4, 4), f32), x[:1], W, 2, 1)
    assert dx.shape == (1, 3, 7, 7) and np.isfinite(dW).all() and np.isfinite(db).all()


def _conv_nan_stays_in_its_sample():
    x = _rng().standard_normal((2, 3, 8, 8)).astype(f32)
    x[0, 1, 2, 3] = np.nan
    y = K.conv2d_forward(x, np.ones((4, 3, 3, 3), f32), b4, 1, 1)
    assert np.isnan(y[0]).any() and np.isfinite(y[1]).all()


def _conv_inf_weights():
    W = np.ones((4, 3, 3, 3), f32)
    W[0, 0, 0, 0] = np.inf
    y = K.conv2d_forward(np.ones((2, 3, 8, 8), f32), W, b4, 1, 1)
    assert not np.isfinite(y[:, 0]).all() and np.isfinite(y[:, 1:]).all()


def _dense_converts():
    r = _rng()
    x = r.standard_normal((6, 5)).T  # Fortran-ordered float64
    W = r.standard_normal((6, 3)).astype(f32)
    want = K.dense_forward(np.ascontiguousarray(x, dtype=f32), W, b2)
    np.testing.assert_array_equal(K.dense_forward(x, W, b2), want)
    np.testing.assert_array_equal(K.dense_forward(x.tolist(), _ro(W), list(b2)), want)


def _dense_read_only():
    r = _rng()
    x, W = _ro(r.standard_normal((4, 6)).astype(f32)), _ro(r.standard_normal((6, 3)).astype(f32))
    y = K.dense_forward(x, W, _ro(b2), "relu")
    np.testing.assert_allclose(y, np.maximum(x @ W, 0), rtol=1e-6, atol=1e-6)
    assert y.flags.writeable
    dx, dW, db = K.dense_backward(_ro(np.ones((4, 3), f32)), x, W)
    assert dx.flags.writeable and dW.flags.writeable


def _dense_batch_of_one():
    r = _rng()
    x, W = r.standard_normal((1, 6)).astype(f32), r.standard_normal((6, 3)).astype(f32)
    np.testing.assert_allclose(K.dense_forward(x, W, b2), x @ W, rtol=1e-6, atol=1e-6)
    dx, dW, db = K.dense_backward(np.ones((1, 3), f32), x, W)
    np.testing.assert_allclose(dW, x.T @ np.ones((1, 3)), rtol=1e-6)


def _dense_nan_row():
    x = np.ones((3, 6), f32)
    x[1, 2] = np.nan
    y = K.dense_forward(x, np.ones((6, 3), f32), b2, "sigmoid")
    assert np.isnan(y[1]).all() and np.isfinite(y[[0, 2]]).all()


def _pool_nan():
    x = _rng().standard_normal((2, 3, 4, 4)).astype(f32)
    x[0, 0] = np.nan  # a whole plane of NaN: argmax must still be a valid index
    y, a = K.maxpool2d_forward(x, 2)
    assert a.min() >= 0 and a.max() < 16
    assert np.isnan(y[0, 0]).all() and np.isfinite(y[1]).all()
    dx = K.maxpool2d_backward(np.ones_like(y), a, x.shape)
    assert dx.sum() == y.size  # every window's gradient lands exactly once


def _pool_converts():
    x = _rng().standard_normal((1, 2, 6, 12))[:, :, :, ::2]
    y, a = K.maxpool2d_forward(x, 2)
    y2, a2 = K.maxpool2d_forward(np.ascontiguousarray(x, dtype=f32), 2)
    np.testing.assert_array_equal(y, y2)
    a64 = np.zeros((1, 2, 3, 6), np.int64)
    a64[..., ::2] = a
    dx = K.maxpool2d_backward(np.ones((1, 2, 3, 3)), a64[..., ::2], x.shape)  # strided int64
    assert dx.dtype == f32 and dx.sum() == 18


def _pool_batch_of_one():
    x = _rng().standard_normal((1, 1, 3, 3)).astype(f32)
    y, a = K.maxpool2d_forward(x, 3)
    assert y[0, 0, 0, 0] == x.max() and a[0, 0, 0, 0] == x.argmax()


def _activations_extremes():
    x = np.array([-3e38, -1e4, -88.8, 0.0, 88.8, 1e4, 3e38], f32)
    s = K.sigmoid(x)
    assert np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    assert np.isfinite(K.tanh(x)).all() and (K.relu(x) >= 0).all()


def _activations_convert():
    np.testing.assert_array_equal(K.relu(np.array([-1, 2], np.float16)), np.array([0, 2], f32))
    np.testing.assert_array_equal(K.relu([-1.5, 2.5]), np.array([0, 2.5], f32))
    y = K.tanh(np.linspace(-2, 2, 20))
    dx = K.tanh_backward(np.ones(40)[::2], _ro(y))
    np.testing.assert_allclose(dx, 1 - y.astype(np.float64) ** 2, rtol=1e-6, atol=1e-7)


def _softmax_nan_row():
    x = np.array([[np.nan, 1, 2], [1, 2, 3], [np.inf, 0, 0]], f32)
    p_ = K.softmax(x)
    assert np.isnan(p_[0]).all() and np.isnan(p_[2]).any()
    np.testing.assert_allclose(p_[1].sum(), 1, rtol=1e-6)


def _softmax_huge_finite():
    p_ = K.softmax(np.array([[3e38, -3e38, 0]], f32))
    np.testing.assert_array_equal(p_, [[1, 0, 0]])


def _ce_batch_of_one_and_large():
    loss, d = K.softmax_cross_entropy(np.array([[1e4, -1e4, 0]], f32), np.array([1], np.uint8))
    assert np.isfinite(loss) and loss > 1e4 and np.isfinite(d).all()


def _ce_nonfinite_logits():
    loss, _ = K.softmax_cross_entropy(np.array([[np.nan, 1.0], [0.0, 1.0]], f32), [0, 1])
    assert not np.isfinite(loss)


def _bce_nan_targets():
    loss, _ = K.sigmoid_binary_cross_entropy(np.zeros((2, 3), f32), np.full((2, 3), np.nan))
    assert np.isnan(loss)


def _adam_empty():
    e = np.zeros(0, f32)
    K.adam_update(e, e, e.copy(), e.copy(), 1)
    K.sgd_update(e, e, e.copy(), momentum=0.9)


def _adam_converts_grad():
    a, b = np.ones(10, f32), np.ones(10, f32)
    g = np.linspace(-1, 1, 20)[::2]  # float64, non-contiguous
    st = [np.zeros(10, f32) for _ in range(4)]
    K.adam_update(a, g, st[0], st[1], np.int64(3))
    K.adam_update(b, np.ascontiguousarray(g, dtype=f32), st[2], st[3], 3)
    np.testing.assert_array_equal(a, b)


def _adam_nan_grad():
    a = np.ones(4, f32)
    K.adam_update(a, np.array([np.nan, 1, 1, 1], f32), np.zeros(4, f32), np.zeros(4, f32), 1)
    assert np.isnan(a[0]) and np.isfinite(a[1:]).all()


def _bn_batch_of_one():
    y, mean, invstd = K.batchnorm_forward(np.full((1, 3), 7.0, f32), ones3, np.full(3, 0.5, f32),
                                          zeros3.copy(), ones3.copy())
    np.testing.assert_allclose(y, 0.5)


def _dropout_bool_mask():
    dx = K.dropout_backward(np.ones(4, f32), np.array([1, 0, 1, 0], bool), 0.5)
    np.testing.assert_array_equal(dx, [2, 0, 2, 0])


BIG = 2**33
KERNEL_CASES = [
    # (id, call, exception or OK, pattern the message must contain)
    ("conv x rank 3", lambda: K.conv2d_forward(x4[0], W4, b4), ValueError, r"x: expected a 4-D"),
    ("conv W rank 2", lambda: K.conv2d_forward(x4, W2, b4), ValueError, r"W: expected a 4-D"),
    ("conv channel mismatch", lambda: K.conv2d_forward(x4, np.zeros((4, 2, 3, 3), f32), b4),
     ValueError, r"W: expected 3 input channels.*got 2"),
    ("conv bias shape", lambda: K.conv2d_forward(x4, W4, np.zeros(5, f32)), ValueError,
     r"b: expected shape \(4,\).*got \(5,\)"),
    ("conv int input", lambda: K.conv2d_forward(x4.astype(np.int32), W4, b4), TypeError,
     r"x: expected a floating-point.*int32"),
    ("conv bool input", lambda: K.conv2d_forward(x4.astype(bool), W4, b4), TypeError, r"x: .*bool"),
    ("conv object input", lambda: K.conv2d_forward(x4.astype(object), W4, b4), TypeError,
     r"x: .*object"),
    ("conv complex weights", lambda: K.conv2d_forward(x4, W4.astype(np.complex64), b4), TypeError,
     r"W: expected a floating-point.*complex64"),
    ("conv None bias", lambda: K.conv2d_forward(x4, W4, None), TypeError, r"b: expected a float32"),
    ("conv stride 0", lambda: K.conv2d_forward(x4, W4, b4, stride=0), ValueError,
     r"stride: expected an integer >= 1, got 0"),
    ("conv stride float", lambda: K.conv2d_forward(x4, W4, b4, stride=1.5), TypeError,
     r"stride: expected an integer"),
    ("conv stride True", lambda: K.conv2d_forward(x4, W4, b4, stride=True), TypeError,
     r"stride: expected an integer >= 1, got True"),
    ("conv stride 2**33", lambda: K.conv2d_forward(x4, W4, b4, stride=BIG), ValueError,
     r"stride: expected an integer >= 1 and <= 2147483647, got 8589934592"),
    ("conv negative pad", lambda: K.conv2d_forward(x4, W4, b4, pad=-1), ValueError,
     r"pad: expected an integer >= 0, got -1"),
    ("conv pad 2**30", lambda: K.conv2d_forward(x4, W4, b4, pad=2**30), ValueError,
     r"pad: expected a padded height .* <= 2147483647, got pad 1073741824"),
    ("conv pad 2**40", lambda: K.conv2d_forward(x4, W4, b4, pad=2**40), ValueError,
     r"pad: expected an integer >= 0 and <= 2147483647"),
    ("conv kernel too large", lambda: K.conv2d_forward(x4, np.zeros((4, 3, 11, 3), f32), b4, pad=1),
     ValueError, r"kernel: expected height kernel size <= padded input size 10.*got 11"),
    ("conv empty batch", lambda: K.conv2d_forward(x4[:0], W4, b4), ValueError,
     r"x: expected a non-empty"),
    ("conv zero channels", lambda: K.conv2d_forward(np.zeros((2, 0, 8, 8), f32),
                                                    np.zeros((4, 0, 3, 3), f32), b4),
     ValueError, r"x: expected a non-empty array, got shape \(2, 0, 8, 8\)"),
    ("conv zero height", lambda: K.conv2d_forward(x4[:, :, :0], W4, b4, pad=2), ValueError,
     r"x: expected a non-empty array, got shape \(2, 3, 0, 8\)"),
    ("conv zero filters", lambda: K.conv2d_forward(x4, W4[:0], b4[:0]), ValueError,
     r"W: expected a non-empty array, got shape \(0, 3, 3, 3\)"),
    ("conv float64 non-contiguous read-only input: converted", _conv_converts, OK, None),
    ("conv batch of 1", _conv_batch_of_one, OK, None),
    ("conv NaN input: stays in its sample", _conv_nan_stays_in_its_sample, OK, None),
    ("conv Inf weight: stays in its channel", _conv_inf_weights, OK, None),
    ("conv backward dy shape", lambda: K.conv2d_backward(y4[:, :3], x4, W4, 1, 1), ValueError,
     r"dy: expected shape \(2, 4, 8, 8\).*got \(2, 3, 8, 8\)"),
    ("conv backward cols shape", lambda: K.conv2d_backward(y4, x4, W4, 1, 1,
                                                           cols=np.zeros((5, 27), f32)),
     ValueError, r"cols: expected shape \(128, 27\).*got \(5, 27\)"),
    ("im2col kh 0", lambda: K.im2col(x4, 0, 3), ValueError, r"kh: expected an integer >= 1"),
    ("im2col x rank 5", lambda: K.im2col(x4[None], 3, 3), ValueError, r"x: expected a 4-D"),
    ("im2col kw 2**33", lambda: K.im2col(x4, 3, BIG), ValueError,
     r"kw: expected an integer >= 1 and"),
    ("col2im cols shape", lambda: K.col2im(np.zeros((10, 27), f32), x4.shape, 3, 3), ValueError,
     r"cols: expected shape \(72, 27\)"),
    ("col2im bad x_shape", lambda: K.col2im(np.zeros((10, 27), f32), (2, 3, 8), 3, 3), ValueError,
     r"x_shape: expected a shape \(N, C, H, W\)"),
    ("col2im zero in x_shape", lambda: K.col2im(np.zeros((0, 27), f32), (0, 3, 8, 8), 3, 3),
     ValueError, r"x_shape: expected a shape \(N, C, H, W\) of positive sizes, got \(0, 3, 8, 8\)"),
    ("col2im x_shape not a shape", lambda: K.col2im(np.zeros((10, 27), f32), 5, 3, 3), TypeError,
     r"x_shape: expected a shape tuple"),
    ("dense feature mismatch", lambda: K.dense_forward(x2, np.zeros((5, 3), f32), b2), ValueError,
     r"W: expected 6 rows.*got shape \(5, 3\)"),
    ("dense bias shape", lambda: K.dense_forward(x2, W2, np.zeros(4, f32)), ValueError,
     r"b: expected shape \(3,\)"),
    ("dense unknown activation", lambda: K.dense_forward(x2, W2, b2, "tanh"), ValueError,
     r"activation: expected None, 'relu' or 'sigmoid', got 'tanh'"),
    ("dense activation unhashable", lambda: K.dense_forward(x2, W2, b2, ["relu"]), ValueError,
     r"activation: expected None, 'relu' or 'sigmoid', got \['relu'\]"),
    ("dense x rank 1", lambda: K.dense_forward(x2[0], W2, b2), ValueError, r"x: expected a 2-D"),
    ("dense int weights", lambda: K.dense_forward(x2, W2.astype(np.int64), b2), TypeError,
     r"W: expected a floating-point array \(float32\), got dtype int64"),
    ("dense bool bias", lambda: K.dense_forward(x2, W2, b2.astype(bool)), TypeError,
     r"b: expected a floating-point array \(float32\), got dtype bool"),
    ("dense object input", lambda: K.dense_forward(x2.astype(object), W2, b2), TypeError,
     r"x: .*object"),
    ("dense empty batch", lambda: K.dense_forward(x2[:0], W2, b2), ValueError,
     r"x: expected a non-empty array, got shape \(0, 6\)"),
    ("dense zero features", lambda: K.dense_forward(x2[:, :0], W2[:0], b2), ValueError,
     r"x: expected a non-empty array, got shape \(5, 0\)"),
    ("dense zero outputs", lambda: K.dense_forward(x2, W2[:, :0], b2[:0]), ValueError,
     r"W: expected a non-empty array, got shape \(6, 0\)"),
    ("dense float64 Fortran-order and list input: converted", _dense_converts, OK, None),
    ("dense read-only inputs accepted", _dense_read_only, OK, None),
    ("dense batch of 1", _dense_batch_of_one, OK, None),
    ("dense NaN input: stays in its row", _dense_nan_row, OK, None),
    ("dense backward dy shape", lambda: K.dense_backward(np.zeros((5, 4), f32), x2, W2), ValueError,
     r"dy: expected shape \(5, 3\)"),
    ("pool too large", lambda: K.maxpool2d_forward(x4, 9), ValueError, r"pool_size: expected <="),
    ("pool size 0", lambda: K.maxpool2d_forward(x4, 0), ValueError,
     r"pool_size: expected an integer >= 1"),
    ("pool stride 0", lambda: K.maxpool2d_forward(x4, 2, 0), ValueError,
     r"stride: expected an integer >= 1"),
    ("pool stride 2**33", lambda: K.maxpool2d_forward(x4, 2, BIG), ValueError,
     r"stride: expected an integer >= 1 and <= 2147483647"),
    ("pool x rank 2", lambda: K.maxpool2d_forward(x2, 2), ValueError, r"x: expected a 4-D"),
    ("pool zero width", lambda: K.maxpool2d_forward(x4[..., :0], 2), ValueError,
     r"x: expected a non-empty array, got shape \(2, 3, 8, 0\)"),
    ("pool NaN input: argmax stays in range", _pool_nan, OK, None),
    ("pool float64 non-contiguous input, int64 argmax: converted", _pool_converts, OK, None),
    ("pool batch of 1", _pool_batch_of_one, OK, None),
    ("pool argmax out of range", lambda: K.maxpool2d_backward(pooled, argmax + 1000, x4.shape),
     ValueError, r"argmax: expected indices in \[0, 64\)"),
    ("pool negative argmax", lambda: K.maxpool2d_backward(pooled, argmax - 1, x4.shape),
     ValueError, r"argmax: expected indices in \[0, 64\)"),
    ("pool argmax beyond int32", lambda: K.maxpool2d_backward(pooled, argmax.astype(np.int64) + BIG,
                                                              x4.shape),
     ValueError, r"argmax: expected indices in \[0, 64\).*got \[8589934592"),
    ("pool argmax float", lambda: K.maxpool2d_backward(pooled, pooled, x4.shape), TypeError,
     r"argmax: expected the integer array"),
    ("pool argmax shape", lambda: K.maxpool2d_backward(pooled, argmax[:1], x4.shape), ValueError,
     r"argmax: expected shape \(2, 3, 4, 4\)"),
    ("pool dy shape", lambda: K.maxpool2d_backward(pooled[:1], argmax, x4.shape), ValueError,
     r"dy: expected shape \(2, 3, 4, 4\)"),
    ("relu backward shape", lambda: K.relu_backward(p, p[:5]), ValueError,
     r"dy: expected shape \(5,\)"),
    ("relu None", lambda: K.relu(None), TypeError,
     r"x: expected a float32 numpy array, got NoneType"),
    ("relu string", lambda: K.relu("abc"), TypeError, r"x: expected a floating-point.*<U3"),
    ("relu complex", lambda: K.relu(np.ones(3, np.complex128)), TypeError, r"x: .*complex128"),
    ("relu empty", lambda: K.relu(np.zeros((3, 0), f32)), ValueError,
     r"x: expected a non-empty array, got shape \(3, 0\)"),
    ("sigmoid object", lambda: K.sigmoid(np.zeros(3, object)), TypeError, r"x: .*object"),
    ("tanh backward y int", lambda: K.tanh_backward(p, np.zeros(10, np.int8)), TypeError,
     r"y: expected a floating-point.*int8"),
    ("activations at float32 extremes stay finite", _activations_extremes, OK, None),
    ("activations float16, list, non-contiguous: converted", _activations_convert, OK, None),
    ("softmax rank 1", lambda: K.softmax(p), ValueError, r"x: expected a 2-D"),
    ("softmax zero columns", lambda: K.softmax(np.zeros((3, 0), f32)), ValueError,
     r"x: expected a non-empty"),
    ("softmax NaN/Inf rows: NaN in those rows only", _softmax_nan_row, OK, None),
    ("softmax of +-3e38 is exact", _softmax_huge_finite, OK, None),
    ("ce label too large", lambda: K.softmax_cross_entropy(x2, [0, 1, 2, 3, 6]), ValueError,
     r"labels: expected labels in \[0, 6\), got 6"),
    ("ce negative label", lambda: K.softmax_cross_entropy(x2, [0, -1, 2, 3, 4]), ValueError,
     r"labels: expected labels in \[0, 6\), got -1"),
    ("ce uint64 label beyond int64", lambda: K.softmax_cross_entropy(
        x2, np.array([0, 2**63, 0, 0, 0], np.uint64)), ValueError,
     r"labels: expected labels in \[0, 6\), got 9223372036854775808"),
    ("ce float labels", lambda: K.softmax_cross_entropy(x2, np.zeros(5)), TypeError,
     r"labels: expected integer class labels, got dtype float64"),
    ("ce NaN labels", lambda: K.softmax_cross_entropy(x2, np.full(5, np.nan)), TypeError,
     r"labels: expected integer class labels, got dtype float64"),
    ("ce bool labels", lambda: K.softmax_cross_entropy(x2, np.ones(5, bool)), TypeError,
     r"labels: expected integer class labels, got dtype bool"),
    ("ce object labels", lambda: K.softmax_cross_entropy(x2, np.zeros(5, object)), TypeError,
     r"labels: expected integer class labels, got dtype object"),
    ("ce label count", lambda: K.softmax_cross_entropy(x2, [0, 1]), ValueError,
     r"labels: expected shape \(5,\).*got \(2,\)"),
    ("ce labels 2-D", lambda: K.softmax_cross_entropy(x2, np.zeros((5, 1), int)), ValueError,
     r"labels: expected shape \(5,\).*got \(5, 1\)"),
    ("ce empty batch", lambda: K.softmax_cross_entropy(x2[:0], []), ValueError,
     r"logits: expected a non-empty"),
    ("ce batch of 1, logits 1e4, uint8 label", _ce_batch_of_one_and_large, OK, None),
    ("ce NaN logits: non-finite loss, no exception", _ce_nonfinite_logits, OK, None),
    ("bce target shape", lambda: K.sigmoid_binary_cross_entropy(x2, x2[:, :3]), ValueError,
     r"targets: expected shape \(5, 6\).*got \(5, 3\)"),
    ("bce int logits", lambda: K.sigmoid_binary_cross_entropy(x2.astype(int), x2), TypeError,
     r"logits: expected a floating-point"),
    ("bce NaN targets: NaN loss, no exception", _bce_nan_targets, OK, None),
    ("mse shape", lambda: K.mse(x2, x2.T), ValueError,
     r"target: expected shape \(5, 6\).*got \(6, 5\)"),
    ("mse empty", lambda: K.mse(x2[:0], x2[:0]), ValueError, r"pred: expected a non-empty"),
    ("adam step 0", lambda: K.adam_update(p, p, p.copy(), p.copy(), 0), ValueError,
     r"step: expected an integer >= 1, got 0"),
    ("adam negative step", lambda: K.adam_update(p, p, p.copy(), p.copy(), -3), ValueError,
     r"step: expected an integer >= 1, got -3"),
    ("adam float step", lambda: K.adam_update(p.copy(), p, p.copy(), p.copy(), 1.0), TypeError,
     r"step: expected an integer >= 1, got 1.0"),
    ("adam step 2**70", lambda: K.adam_update(p.copy(), p, p.copy(), p.copy(), 2**70), ValueError,
     r"step: expected an integer >= 1 and <= 2147483647"),
    ("adam float64 param", lambda: K.adam_update(p.astype(np.float64), p, p.copy(), p.copy(), 1),
     TypeError, r"param: expected dtype float32.*got float64"),
    ("adam float64 m", lambda: K.adam_update(p.copy(), p, p.astype(np.float64), p.copy(), 1),
     TypeError, r"m: expected dtype float32.*got float64"),
    ("adam non-contiguous param", lambda: K.adam_update(np.zeros(20, f32)[::2], p, p.copy(),
                                                        p.copy(), 1),
     ValueError, r"param: expected a C-contiguous array"),
    ("adam non-contiguous v", lambda: K.adam_update(p.copy(), p, p.copy(),
                                                    np.zeros(20, f32)[::2], 1),
     ValueError, r"v: expected a C-contiguous array"),
    ("adam read-only param", _readonly_adam, ValueError, r"param: expected a writeable array"),
    ("adam read-only m", lambda: K.adam_update(p.copy(), p, _ro(p), p.copy(), 1), ValueError,
     r"m: expected a writeable array"),
    ("adam list param", lambda: K.adam_update([0.0] * 10, p, p.copy(), p.copy(), 1), TypeError,
     r"param: expected a float32 numpy array \(updated in place\), got list"),
    ("adam state shape", lambda: K.adam_update(p.copy(), p, np.zeros(9, f32), p.copy(), 1),
     ValueError, r"m: expected shape \(10,\), got \(9,\)"),
    ("adam grad shape", lambda: K.adam_update(p.copy(), p[:4], p.copy(), p.copy(), 1), ValueError,
     r"grad: expected shape \(10,\)"),
    ("adam beta1 = 1", lambda: K.adam_update(p.copy(), p, p.copy(), p.copy(), 1, beta1=1.0),
     ValueError, r"beta1: expected a finite number >= 0.0 and < 1.0, got 1.0"),
    ("adam nan lr", lambda: K.adam_update(p.copy(), p, p.copy(), p.copy(), 1, lr=float("nan")),
     ValueError, r"lr: expected a finite number"),
    ("adam negative eps", lambda: K.adam_update(p.copy(), p, p.copy(), p.copy(), 1, eps=-1e-8),
     ValueError, r"eps: expected a finite number >= 0.0, got -1e-08"),
    ("adam empty arrays: no-op", _adam_empty, OK, None),
    ("adam float64 non-contiguous grad, numpy int step: converted", _adam_converts_grad, OK, None),
    ("adam NaN gradient: stays in its element", _adam_nan_grad, OK, None),
    ("sgd momentum without velocity", lambda: K.sgd_update(p.copy(), p, None, momentum=0.9),
     ValueError, r"velocity: expected a float32 array"),
    ("sgd velocity shape", lambda: K.sgd_update(p.copy(), p, np.zeros(3, f32), momentum=0.9),
     ValueError, r"velocity: expected shape \(10,\), got \(3,\)"),
    ("sgd read-only velocity", lambda: K.sgd_update(p.copy(), p, _ro(p), momentum=0.9), ValueError,
     r"velocity: expected a writeable array"),
    ("sgd nesterov without momentum", lambda: K.sgd_update(p.copy(), p, nesterov=True), ValueError,
     r"nesterov: expected momentum > 0"),
    ("sgd infinite lr", lambda: K.sgd_update(p.copy(), p, lr=float("inf")), ValueError,
     r"lr: expected a finite number >= 0.0, got inf"),
    ("adagrad float64 state", lambda: K.adagrad_update(p.copy(), p, p.astype(np.float64)),
     TypeError, r"sum_sq: expected dtype float32"),
    ("rmsprop alpha 1.5", lambda: K.rmsprop_update(p.copy(), p, p.copy(), alpha=1.5), ValueError,
     r"alpha: expected a finite number >= 0.0 and <= 1.0, got 1.5"),
    ("batchnorm gamma shape", lambda: K.batchnorm_forward(x4, np.ones(2, f32), zeros3,
                                                          zeros3.copy(), ones3.copy()),
     ValueError, r"gamma: expected shape \(3,\)"),
    ("batchnorm rank 3", lambda: K.batchnorm_forward(x4[0], ones3, zeros3, zeros3.copy(),
                                                     ones3.copy()),
     ValueError, r"x: expected a 2 or 4-D"),
    ("batchnorm zero channels", lambda: K.batchnorm_forward(x2[:, :0], ones3[:0], zeros3[:0],
                                                            zeros3[:0].copy(), ones3[:0].copy()),
     ValueError, r"x: expected a non-empty batch, got shape \(5, 0\)"),
    ("batchnorm read-only running_mean", lambda: K.batchnorm_forward(x2[:, :3], ones3, zeros3,
                                                                     _ro(zeros3), ones3.copy()),
     ValueError, r"running_mean: expected a writeable array"),
    ("batchnorm float64 running_var", lambda: K.batchnorm_forward(x2[:, :3], ones3, zeros3,
                                                                  zeros3.copy(), np.ones(3)),
     TypeError, r"running_var: expected dtype float32"),
    ("batchnorm eps 0", lambda: K.batchnorm_forward(x2[:, :3], ones3, zeros3, zeros3.copy(),
                                                    ones3.copy(), eps=0.0),
     ValueError, r"eps: expected a finite number > 0.0, got 0.0"),
    ("batchnorm momentum 2", lambda: K.batchnorm_forward(x2[:, :3], ones3, zeros3, zeros3.copy(),
                                                         ones3.copy(), momentum=2),
     ValueError, r"momentum: expected a finite number >= 0.0 and <= 1.0, got 2.0"),
    ("batchnorm batch of 1", _bn_batch_of_one, OK, None),
    ("batchnorm backward dy shape", lambda: K.batchnorm_backward(x2, x2[:, :3], ones3, zeros3,
                                                                 ones3),
     ValueError, r"dy: expected shape \(5, 3\)"),
    ("dropout rate 1", lambda: K.dropout_forward(p, 1.0), ValueError,
     r"rate: expected a finite number >= 0.0 and < 1.0, got 1.0"),
    ("dropout rate NaN", lambda: K.dropout_forward(p, float("nan")), ValueError,
     r"rate: expected a finite number >= 0.0 and < 1.0, got nan"),
    ("dropout negative rate", lambda: K.dropout_forward(p, -0.1), ValueError,
     r"rate: expected a finite number >= 0.0 and < 1.0, got -0.1"),
    ("dropout bad rng", lambda: K.dropout_forward(p, 0.5, rng="seed"), TypeError,
     r"rng: expected a numpy.random.Generator"),
    ("dropout empty", lambda: K.dropout_forward(p[:0], 0.5), ValueError,
     r"x: expected a non-empty"),
    ("dropout mask dtype", lambda: K.dropout_backward(p, p, 0.5), TypeError,
     r"mask: expected the uint8"),
    ("dropout mask shape", lambda: K.dropout_backward(p, np.ones(4, np.uint8), 0.5), ValueError,
     r"mask: expected shape \(10,\)"),
    ("dropout bool mask: converted", _dropout_bool_mask, OK, None),
]


# ---------------------------------------------------------------- rows above the kernels

from fastnn import Sequential  # noqa: E402
from fastnn import datasets as D  # noqa: E402
from fastnn.callbacks import ModelCheckpoint  # noqa: E402
from fastnn.layers import BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU  # noqa: E402
from fastnn.losses import MeanSquaredError, SigmoidBinaryCrossEntropy  # noqa: E402
from fastnn.losses import SoftmaxCrossEntropy as SCE  # noqa: E402
from fastnn.optim import SGD, Adam, RMSprop  # noqa: E402


def mlp():
    return Sequential([Dense(4, 8, seed=1), ReLU(), Dense(8, 3, seed=2)])


def cnn():
    return Sequential([Conv2D(1, 2, 3, padding=1, seed=1), BatchNorm(2), ReLU(), MaxPool2D(2),
                       Flatten(), Dropout(0.2, seed=2), Dense(8, 3, seed=3)])


XS = np.random.default_rng(0).standard_normal((8, 4)).astype(f32)
YS = np.arange(8) % 3


def fit(x=XS, y=YS, model=None, loss=None, opt=None, **kw):
    m = model or mlp()
    kw.setdefault("verbose", 0)
    return m.fit(x, y, loss=SCE() if loss is None else loss,
                 optimizer=opt(m) if opt else SGD(m.parameters(), 0.1), **kw)


def _tmp(name: str) -> Path:
    return TMP / name


def _saved(name="m.npz", optimizer=False) -> Path:
    m = cnn()
    m.forward(np.zeros((2, 1, 4, 4), f32))
    path = _tmp(name)
    fastnn.save(m, path, optimizer=Adam(m.parameters()) if optimizer else None)
    return path


def _read(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return json.loads(arrays.pop("__fastnn__").tobytes().decode()), arrays


def _write(path, header, arrays, raw: str | None = None, fix_digest=True):
    """A crafted model file; with fix_digest its checksum matches, so the later checks are
    reached (sha256 is an integrity check, not a signature)."""
    arrays = dict(arrays)
    if fix_digest:
        header = dict(header, sha256=fastnn.io._digest(arrays, header))
    arrays["__fastnn__"] = np.frombuffer((raw or json.dumps(header)).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _crafted(mutate, optimizer=False, fix_digest=True):
    path = _saved("crafted.npz", optimizer)
    header, arrays = _read(path)
    mutate(header, arrays)
    return _write(path, header, arrays, fix_digest=fix_digest)


class _Pwn:
    """Unpickling this creates the sentinel file: proof that code from the file ran."""

    def __reduce__(self):
        return (open, (str(_tmp(SENTINEL)), "w"))


def _no_sentinel(load):
    """Run a load that must fail, then check that nothing from the file ran."""
    try:
        load()
    finally:
        assert not _tmp(SENTINEL).exists(), "code from the file ran"


def _pickle_in_npz():
    path = _saved()
    header, arrays = _read(path)
    evil = np.empty(1, dtype=object)
    evil[0] = _Pwn()
    arrays["param.0.W"] = evil
    _write(path, header, arrays, fix_digest=False)
    _no_sentinel(lambda: fastnn.load(path))


def _raw_pickle_file():
    import pickle

    path = _tmp("model.pkl")
    path.write_bytes(pickle.dumps(_Pwn()))
    _no_sentinel(lambda: fastnn.load(path))


def _deep_json():
    path = _saved()
    _, arrays = _read(path)
    deep = "[" * 100_000 + "]" * 100_000
    raw = '{"format": "fastnn-model", "version": 1, "layers": ' + deep + "}"
    _write(path, {}, arrays, raw=raw, fix_digest=False)
    fastnn.load(path)


def _truncated():
    path = _saved()
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    fastnn.load(path)


def _empty_file():
    _tmp("empty.npz").write_bytes(b"")
    fastnn.load(_tmp("empty.npz"))


def _tampered():
    path = _saved()
    header, arrays = _read(path)
    arrays["param.0.W"] = arrays["param.0.W"] + np.float32(1e-3)
    _write(path, header, arrays, fix_digest=False)
    fastnn.load(path)


def _foreign_npz():
    np.savez(_tmp("foreign.npz"), W=np.ones((3, 3), f32))
    fastnn.load(_tmp("foreign.npz"))


def _npy_file():
    np.save(_tmp("a.npy"), np.arange(10, dtype=f32))
    fastnn.load(_tmp("a.npy"))


def _text_file():
    _tmp("notes.txt").write_text("not a model\n" * 50)
    fastnn.load(_tmp("notes.txt"))


def _set_layer(i, **kv):
    return lambda h, a: h["layers"][i].update(kv)


def _set_config(i, **kv):
    return lambda h, a: h["layers"][i]["config"].update(kv)


def _unwritable_dir() -> Path:
    """A directory path that cannot be created or written (a regular file is in the way); works
    for root too, unlike a read-only directory."""
    blocker = _tmp("a_file")
    blocker.write_text("x")
    return blocker / "out"


def _checkpoint_into_unwritable_dir():
    fit(callbacks=[ModelCheckpoint(str(_unwritable_dir() / "ck-{epoch}.npz"))])


def _dataset(name="data.npz", **override):
    r = np.random.default_rng(0)
    arrays = {"x_train": r.integers(0, 256, (20, 8, 8), dtype=np.uint8),
              "y_train": r.integers(0, 3, 20),
              "x_test": r.integers(0, 256, (5, 8, 8), dtype=np.uint8),
              "y_test": r.integers(0, 3, 5)}
    arrays.update(override)
    np.savez(_tmp(name), **arrays)
    return _tmp(name)


def _dataset_with_pickle():
    evil = np.empty(20, dtype=object)
    evil[:] = [_Pwn()] * 20
    path = _dataset(y_train=evil)
    _no_sentinel(lambda: D.load_npz_dataset(path))


def _truncated_dataset():
    path = _dataset()
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    D.load_npz_dataset(path)


def _mnist_with_wrong_checksum():
    """A file with the full MNIST row counts must match the official checksums."""
    z = np.zeros
    path = _tmp("mnist.npz")
    np.savez(path, x_train=z((60000, 28, 28), np.uint8), y_train=z(60000, np.uint8),
             x_test=z((10000, 28, 28), np.uint8), y_test=z(10000, np.uint8))
    D.mnist(path=path)


def _mnist_wrong_image_size():
    path = _dataset("m27.npz", x_train=np.zeros((20, 27, 27), np.uint8),
                    x_test=np.zeros((5, 27, 27), np.uint8))
    D.mnist(path=path)


def cli(*argv):
    """(exit code, stderr) of `fastnn ARGV` run in this process."""
    from fastnn import cli as _cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _cli.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, err.getvalue()


def _train(*argv):
    return cli("train", "--model", "mlp", "--epochs", "1", "--verbose", "0",
               "--out", str(_tmp("run")), *argv)


def _fit_nan_later():
    x = XS.copy()
    x[5] = np.nan
    fit(x, batch_size=4, shuffle=False)


def _fit_batch_of_one():
    h = fit(XS[:1], YS[:1], model=cnn_input_model(), batch_size=1, epochs=2)
    assert np.isfinite(h.history["loss"]).all()
    h = fit(XS[:5], YS[:5], model=Sequential([Dense(4, 6), BatchNorm(6), ReLU(), Dense(6, 3)]),
            batch_size=4)  # the last batch has one sample
    assert np.isfinite(h.history["loss"]).all()


def cnn_input_model():
    return Sequential([Flatten(), Dense(4, 3, seed=1)])


def _fit_converts():
    a, b = mlp(), mlp()
    xs = np.asfortranarray(XS.astype(np.float64))
    xs.flags.writeable = False
    fit(xs, YS.astype(np.uint8), model=a, epochs=2, seed=1)
    fit(XS, YS, model=b, epochs=2, seed=1)
    np.testing.assert_array_equal(a.parameters().data, b.parameters().data)


def _sequential_converts():
    m = mlp()
    x = XS.astype(np.float64)[:, ::-1].T.T
    np.testing.assert_array_equal(m.forward(_ro(x), train=False),
                                  m.forward(np.ascontiguousarray(x, dtype=f32), train=False))


def _predict_nan_row():
    x = XS.copy()
    x[2, 1] = np.nan
    out = mlp().predict(x)
    assert np.isnan(out[2]).all() and np.isfinite(np.delete(out, 2, axis=0)).all()


def _cnn_batch_of_one():
    m = cnn()
    loss = m.train_on_batch(np.ones((1, 1, 4, 4), f32), [1], loss=SCE(),
                            optimizer=Adam(m.parameters()))
    assert np.isfinite(loss)


def _ce_inf_logits():
    assert not np.isfinite(SCE().forward(np.array([[np.inf, 0, 0]], f32), [0]))


def _optimizer_state(opt_cls=Adam, **changes):
    o = opt_cls(mlp().parameters())
    sd = o.state_dict()
    sd.update(changes)
    o.load_state_dict(sd)


def _state_with(name, value):
    o = Adam(mlp().parameters())
    sd = o.state_dict()
    sd[f"state.{name}"] = np.full_like(sd[f"state.{name}"], value)
    o.load_state_dict(sd)


def _warm_then(x=XS, y=YS):
    """A step with (x, y) after three warm steps of the same shapes (the fast path that reuses
    buffers must validate as well as the first call)."""
    m = mlp()
    opt, loss = SGD(m.parameters(), 0.1), SCE()
    for _ in range(3):
        m.train_on_batch(XS, YS, loss=loss, optimizer=opt)
    return m.train_on_batch(x, y, loss=loss, optimizer=opt)


def _warm_predict_then(x):
    m = mlp()
    for _ in range(3):
        m.predict_on_batch(XS)
    return m.predict_on_batch(x)


def _warm_converts():
    a = _warm_then(np.asfortranarray(XS.astype(np.float64)), YS.astype(np.int8))
    b = _warm_then()
    assert a == b


def _backward_before_forward():
    Dense(4, 3).backward(np.zeros((2, 3), f32))


SYSTEM_CASES = [
    # layers and Sequential
    ("Dense: input width", lambda: Dense(6, 3).forward(np.zeros((5, 7), f32)), ValueError,
     r"Dense: expected input of shape \(N, 6\), got \(5, 7\)"),
    ("Dense: rank-3 input", lambda: Dense(6, 3).forward(np.zeros((5, 2, 3), f32)), ValueError,
     r"Dense: expected input of shape \(N, 6\), got \(5, 2, 3\)"),
    ("Dense: int input", lambda: Dense(2, 3).forward(np.zeros((5, 2), int)), TypeError,
     r"x: expected a floating-point array \(float32\), got dtype int64"),
    ("Dense: object input", lambda: Dense(2, 3).forward(np.zeros((5, 2), object)), TypeError,
     r"x: .*dtype object"),
    ("Dense: list input: converted", lambda: np.testing.assert_array_equal(
        Dense(2, 3, seed=0).forward([[1.0, 2.0]]),
        Dense(2, 3, seed=0).forward(np.array([[1.0, 2.0]], f32))),
     OK, None),
    ("Dense: in_features 0", lambda: Dense(0, 3), ValueError,
     r"in_features: expected an integer >= 1, got 0"),
    ("Conv2D: channels", lambda: Conv2D(1, 2, 3).forward(np.zeros((1, 2, 4, 4), f32)), ValueError,
     r"Conv2D: expected input of shape \(N, 1, H, W\), got \(1, 2, 4, 4\)"),
    ("Conv2D: input smaller than the kernel", lambda: Conv2D(1, 2, 5).forward(
        np.zeros((1, 1, 4, 4), f32)), ValueError,
     r"kernel: expected height kernel size <= padded input size 4.*got 5"),
    ("Conv2D: zero-size image", lambda: Conv2D(1, 2, 3, padding=1).forward(
        np.zeros((1, 1, 0, 4), f32)), ValueError, r"x: expected a non-empty array"),
    ("Conv2D: kernel_size of 3 numbers", lambda: Conv2D(1, 2, (3, 3, 3)), ValueError,
     r"kernel_size: expected an int or a pair \(kh, kw\), got \(3, 3, 3\)"),
    ("MaxPool2D: 2-D input", lambda: MaxPool2D().forward(np.zeros((4, 4), f32)), ValueError,
     r"x: expected a 4-D array, got 2-D"),
    ("BatchNorm: features", lambda: BatchNorm(3).forward(np.zeros((4, 4), f32)), ValueError,
     r"BatchNorm: expected input \(N, 3\) or \(N, 3, H, W\), got \(4, 4\)"),
    ("Dropout: bool input", lambda: Dropout(0.5).forward(np.ones(3, bool)), TypeError,
     r"x: .*dtype bool"),
    ("Dropout: rate 1", lambda: Dropout(1.0), ValueError,
     r"rate: expected a finite number >= 0.0 and < 1.0, got 1.0"),
    ("Sequential: widths do not chain", lambda: Sequential([Dense(4, 3), Dense(5, 2)]).forward(
        np.zeros((2, 4), f32)), ValueError,
     r"Dense: expected input of shape \(N, 5\), got \(2, 3\)"),
    ("Sequential: Conv2D into Dense without Flatten", lambda: Sequential(
        [Conv2D(1, 2, 3), Dense(8, 2)]).forward(np.zeros((2, 1, 4, 4), f32)), ValueError,
     r"Dense: expected input of shape \(N, 8\), got \(2, 2, 2, 2\)"),
    ("Sequential: backward dy shape", lambda: (lambda m: (m.forward(XS), m.backward(
        np.zeros((8, 5), f32))))(mlp()), ValueError, r"dy: expected shape \(8, 3\).*got \(8, 5\)"),
    ("Sequential: no layers", lambda: Sequential([]), ValueError,
     r"layers: expected at least one layer, got an empty list"),
    ("Sequential: not a layer", lambda: Sequential([Dense(2, 2), np.tanh]), TypeError,
     r"layers\[1\]: expected a fastnn layer, got ufunc"),
    ("Layer: backward before forward", _backward_before_forward,
     RuntimeError, r"before forward"),
    ("Sequential: float64 non-contiguous read-only input: converted", _sequential_converts, OK,
     None),
    ("CNN with BatchNorm: batch of 1 trains", _cnn_batch_of_one, OK, None),
    ("predict: a NaN sample gives NaN for that sample only", _predict_nan_row, OK, None),
    # losses
    ("SoftmaxCrossEntropy: label out of range", lambda: SCE().forward(np.zeros((2, 3), f32),
                                                                      [0, 3]),
     ValueError, r"labels: expected labels in \[0, 3\), got 3"),
    ("SoftmaxCrossEntropy: negative label", lambda: SCE().forward(np.zeros((2, 3), f32), [-1, 0]),
     ValueError, r"labels: expected labels in \[0, 3\), got -1"),
    ("SoftmaxCrossEntropy: NaN labels", lambda: SCE().forward(np.zeros((2, 3), f32),
                                                              [np.nan, 1.0]),
     TypeError, r"labels: expected integer class labels, got dtype float64"),
    ("SoftmaxCrossEntropy: object targets", lambda: SCE().forward(np.zeros((2, 3), f32),
                                                                  np.zeros(2, object)),
     TypeError, r"labels: expected integer class labels, got dtype object"),
    ("SoftmaxCrossEntropy: one-hot width", lambda: SCE().forward(np.zeros((2, 3), f32),
                                                                 np.eye(4)[:2]),
     ValueError,
     r"targets: expected integer labels \(2,\) or one-hot \(2, 3\), got shape \(2, 4\)"),
    ("SoftmaxCrossEntropy: NaN soft targets", lambda: SCE().forward(np.zeros((2, 3), f32),
                                                                    np.full((2, 3), np.nan)),
     ValueError, r"targets: expected rows of non-negative probabilities summing to 1"),
    ("SoftmaxCrossEntropy: 1-D outputs", lambda: SCE().forward(np.zeros(3, f32), [0]), ValueError,
     r"outputs: expected a 2-D array, got 1-D"),
    ("SoftmaxCrossEntropy: empty batch", lambda: SCE().forward(np.zeros((0, 3), f32),
                                                               np.zeros(0, int)),
     ValueError, r"logits: expected a non-empty array"),
    ("SoftmaxCrossEntropy: Inf logits give a non-finite loss", _ce_inf_logits, OK, None),
    ("SigmoidBinaryCrossEntropy: shape", lambda: SigmoidBinaryCrossEntropy().forward(
        np.zeros((2, 3), f32), np.zeros((2, 2))), ValueError,
     r"targets: expected shape \(2, 3\) \(the shape of logits\), got \(2, 2\)"),
    ("SigmoidBinaryCrossEntropy: string targets", lambda: SigmoidBinaryCrossEntropy().forward(
        np.zeros((2, 3), f32), np.full((2, 3), "a")), TypeError,
     r"targets: expected a floating-point array \(float32\), got dtype <U1"),
    ("MeanSquaredError: shape", lambda: MeanSquaredError().forward(np.zeros((2, 3), f32),
                                                                   np.zeros((2, 2))),
     ValueError, r"target: expected shape \(2, 3\) \(the shape of pred\), got \(2, 2\)"),
    ("MeanSquaredError: label out of range", lambda: MeanSquaredError().forward(
        np.zeros((2, 3), f32), np.array([0, 5])), ValueError,
     r"targets: expected labels in \[0, 3\), got 5"),
    ("MeanSquaredError: negative label", lambda: MeanSquaredError().forward(
        np.zeros((2, 3), f32), np.array([-1, 0])), ValueError,
     r"targets: expected labels in \[0, 3\), got -1"),
    ("Loss: backward before forward", lambda: SCE().backward(), RuntimeError,
     r"SoftmaxCrossEntropy.backward\(\) called before forward\(\)"),
    # optimizers
    ("Adam: a list of arrays", lambda: Adam([np.zeros(3, f32)]), TypeError,
     r"params: expected model.parameters\(\) \(fastnn Parameters\), got list"),
    ("Adam: negative lr", lambda: Adam(mlp().parameters(), lr=-1), ValueError,
     r"lr: expected a finite number >= 0.0, got -1.0"),
    ("Adam: NaN lr", lambda: Adam(mlp().parameters(), lr=float("nan")), ValueError,
     r"lr: expected a finite number >= 0.0, got nan"),
    ("Adam: string lr", lambda: Adam(mlp().parameters(), lr="0.1"), TypeError,
     r"lr: expected a real number, got '0.1'"),
    ("Adam: beta 1", lambda: Adam(mlp().parameters(), betas=(1.0, 0.9)), ValueError,
     r"betas: expected a finite number >= 0.0 and < 1.0, got 1.0"),
    ("Adam: three betas", lambda: Adam(mlp().parameters(), betas=(0.9, 0.9, 0.9)), ValueError,
     r"betas: expected a pair \(beta1, beta2\), got \(0.9, 0.9, 0.9\)"),
    ("SGD: nesterov without momentum", lambda: SGD(mlp().parameters(), nesterov=True), ValueError,
     r"nesterov: expected momentum > 0"),
    ("RMSprop: alpha 2", lambda: RMSprop(mlp().parameters(), alpha=2), ValueError,
     r"alpha: expected a finite number >= 0.0 and <= 1.0, got 2.0"),
    ("Adam state: steps -1", lambda: _optimizer_state(steps=-1), ValueError,
     r"steps: expected an integer >= 0, got -1"),
    ("Adam state: steps 2.5", lambda: _optimizer_state(steps=2.5), ValueError,
     r"steps: expected an integer >= 0, got 2.5"),
    ("Adam state: NaN moments", lambda: _state_with("m", np.nan), ValueError,
     r"state.m: expected finite values, got NaN"),
    ("Adam state: negative second moments", lambda: _state_with("v", -1.0), ValueError,
     r"state.v: expected finite values >= 0"),
    ("Adam state: object array", lambda: _optimizer_state(**{"state.m": np.zeros(3, object)}),
     TypeError, r"state.m: expected a float array, got dtype object"),
    ("Adam state: from SGD", lambda: Adam(mlp().parameters()).load_state_dict(
        SGD(mlp().parameters(), momentum=0.9).state_dict()), ValueError,
     r"state_dict: expected a Adam state, got 'SGD'"),
    ("Adam state: another model's size", lambda: Adam(mlp().parameters()).load_state_dict(
        Adam(cnn().parameters()).state_dict()), ValueError, r"state_dict: expected state for \d+"),
    # fit / train_on_batch / predict / evaluate
    ("fit: optimizer of another model", lambda: fit(opt=lambda m: Adam(mlp().parameters())),
     ValueError, r"optimizer: expected an optimizer built on this model's parameters\(\)"),
    ("train_on_batch: optimizer of another model", lambda: mlp().train_on_batch(
        XS, YS, loss=SCE(), optimizer=SGD(mlp().parameters())), ValueError,
     r"optimizer: expected an optimizer built on this model's parameters\(\)"),
    ("fit: label out of range", lambda: fit(y=np.arange(8)), ValueError,
     r"labels: expected labels in \[0, 3\), got 7"),
    ("fit: negative labels", lambda: fit(y=-np.ones(8, int)), ValueError,
     r"labels: expected labels in \[0, 3\), got -1"),
    ("fit: NaN labels", lambda: fit(y=np.full(8, np.nan)), ValueError,
     r"y: expected finite targets, got NaN or infinity"),
    ("fit: Inf regression targets", lambda: fit(y=np.full((8, 3), np.inf), loss=MeanSquaredError()),
     ValueError, r"y: expected finite targets, got NaN or infinity"),
    ("fit: object labels", lambda: fit(y=YS.astype(object)), TypeError,
     r"y: expected integer labels or float targets, got dtype object"),
    ("fit: NaN input", lambda: fit(np.full((8, 4), np.nan, f32)), FloatingPointError,
     r"loss became nan at epoch 1, step 1 \(of 1\)"),
    ("fit: Inf input", lambda: fit(np.full((8, 4), np.inf, f32)), FloatingPointError,
     r"loss became (nan|inf) at epoch 1, step 1"),
    ("fit: NaN in the second batch", _fit_nan_later, FloatingPointError,
     r"loss became nan at epoch 1, step 2 \(of 2\)"),
    ("fit: empty batch", lambda: fit(XS[:0], YS[:0]), ValueError,
     r"x: expected at least one sample, got an empty batch"),
    ("fit: 1-D x", lambda: fit(XS[0], YS[:4]), ValueError,
     r"x: expected a batch of samples \(N, ...\), got shape \(4,\)"),
    ("fit: int x", lambda: fit(XS.astype(int)), TypeError, r"x: expected a floating-point.*int64"),
    ("fit: bool x", lambda: fit(XS > 0), TypeError, r"x: expected a floating-point.*bool"),
    ("fit: y count", lambda: fit(y=YS[:5]), ValueError,
     r"y: expected 8 targets \(one per sample of x\), got shape \(5,\)"),
    ("fit: input width", lambda: fit(XS[:, :3]), ValueError,
     r"Dense: expected input of shape \(N, 4\), got \(8, 3\)"),
    ("fit: batch_size 0", lambda: fit(batch_size=0), ValueError,
     r"batch_size: expected an integer >= 1, got 0"),
    ("fit: epochs -1", lambda: fit(epochs=-1), ValueError,
     r"epochs: expected an integer >= 0, got -1"),
    ("fit: validation_split 1", lambda: fit(validation_split=1.0), ValueError,
     r"validation_split: expected a finite number >= 0.0 and < 1.0, got 1.0"),
    ("fit: validation_data not a pair", lambda: fit(validation_data=XS), ValueError,
     r"validation_data: expected a pair \(x_val, y_val\)"),
    ("fit: batch of 1", _fit_batch_of_one, OK, None),
    ("fit: float64 Fortran-order read-only x, uint8 y: converted", _fit_converts, OK, None),
    ("fit: loss None", lambda: (lambda m: m.fit(XS, YS, loss=None, optimizer=SGD(m.parameters()),
                                                verbose=0))(mlp()),
     TypeError, r"loss:"),
    ("fit: negative initial_epoch", lambda: fit(initial_epoch=-3),
     ValueError, r"initial_epoch:"),
    ("fit: string seed", lambda: fit(seed="abc"),
     TypeError, r"seed:"),
    ("train_on_batch: label out of range on a warm step", lambda: _warm_then(
        y=np.where(YS == 0, 3, YS)), ValueError,
     r"(labels|targets): expected labels in \[0, 3\), got 3"),
    ("train_on_batch: negative label on a warm step", lambda: _warm_then(y=YS - 1), ValueError,
     r"(labels|targets): expected labels in \[0, 3\), got -1"),
    ("train_on_batch: NaN float labels on a warm step", lambda: _warm_then(
        y=np.full(8, np.nan)), ValueError, r"y: expected finite targets"),
    ("train_on_batch: input width on a warm step", lambda: _warm_then(x=XS[:, :3]), ValueError,
     r"Dense: expected input of shape \(N, 4\), got \(8, 3\)"),
    ("train_on_batch: float64 Fortran-order x, int8 y on a warm step: converted",
     _warm_converts, OK, None),
    ("predict_on_batch: input width on a warm call", lambda: _warm_predict_then(XS[:, :3]),
     ValueError, r"Dense: expected input of shape \(N, 4\), got \(8, 3\)"),
    ("predict_on_batch: object input on a warm call", lambda: _warm_predict_then(
        XS.astype(object)), TypeError, r"x: .*dtype object"),
    ("predict: empty", lambda: mlp().predict(XS[:0]), ValueError,
     r"x: expected at least one sample, got an empty batch"),
    ("predict: batch_size 0", lambda: mlp().predict(XS, batch_size=0), ValueError,
     r"batch_size: expected an integer >= 1, got 0"),
    ("evaluate: label out of range", lambda: mlp().evaluate(XS, np.arange(8), loss=SCE()),
     ValueError, r"labels: expected labels in \[0, 3\), got 7"),
    # model files
    ("load: no file", lambda: fastnn.load(_tmp("nope.npz")), FileNotFoundError,
     r"path: no model file at .*nope.npz"),
    ("load: empty file", _empty_file, ValueError, r"empty.npz: not a readable fastnn model file"),
    ("load: truncated file", _truncated, ValueError, r"m.npz: not a readable fastnn model file"),
    ("load: tampered weight", _tampered, ValueError, r"m.npz: checksum mismatch"),
    ("load: foreign .npz", _foreign_npz, ValueError,
     r"foreign.npz: not a fastnn model file \(no __fastnn__ entry"),
    ("load: a .npy file", _npy_file, ValueError, r"a.npy: not a fastnn model file \(a single .npy"),
    ("load: a text file", _text_file, ValueError, r"notes.txt: not a readable fastnn model file"),
    ("load: pickle-bearing .npz, never unpickled", _pickle_in_npz, ValueError,
     r"m.npz: not a readable fastnn model file.*allow_pickle=False"),
    ("load: a pickle file, never unpickled", _raw_pickle_file, ValueError,
     r"model.pkl: not a readable fastnn model file.*pickled \(object\) data"),
    ("load: unknown layer type", lambda: fastnn.load(_crafted(_set_layer(2, type="EvilLayer"))),
     ValueError, r"layer 2: unknown layer type 'EvilLayer'; expected one of \['BatchNorm'"),
    ("load: layer type naming a function", lambda: fastnn.load(
        _crafted(_set_layer(0, type="os.system"))), ValueError,
     r"layer 0: unknown layer type 'os.system'"),
    ("load: layer type not a string", lambda: fastnn.load(
        _crafted(_set_layer(0, type=["Dense"]))), ValueError,
     r"layer 0: unknown layer type \['Dense'\]"),
    ("load: config with foreign keys", lambda: fastnn.load(
        _crafted(_set_config(0, __class__="os.system"))), ValueError,
     r"layer 0 \(Conv2D\): bad config .*__class__"),
    ("load: config declaring a huge layer", lambda: fastnn.load(
        _crafted(_set_config(6, in_features=100_000, out_features=100_000))), ValueError,
     r"layer 6 \(Dense\): config .* declares at least 10000000000 parameters, but the file "
     r"holds 27 values"),
    ("load: header nested 100000 deep", _deep_json, ValueError,
     r"m.npz: the architecture header is not valid JSON \(RecursionError"),
    ("load: format of another program", lambda: fastnn.load(
        _crafted(lambda h, a: h.update(format="keras"))), ValueError,
     r"expected format 'fastnn-model', got 'keras'"),
    ("load: bad rng_state", lambda: fastnn.load(_crafted(_set_layer(5, rng_state="evil"))),
     ValueError, r"layer 5 \(Dropout\): bad rng_state"),
    ("load_checkpoint: optimizer not an object", lambda: fastnn.load_checkpoint(
        _crafted(lambda h, a: h.update(optimizer="Adam"), optimizer=True)), ValueError,
     r"'optimizer' must be an object, got str"),
    ("load_checkpoint: unknown optimizer", lambda: fastnn.load_checkpoint(
        _crafted(lambda h, a: h["optimizer"].update(type="eval"), optimizer=True)), ValueError,
     r"unknown optimizer type 'eval'"),
    ("load_checkpoint: optimizer steps -4", lambda: fastnn.load_checkpoint(
        _crafted(lambda h, a: h["optimizer"].update(steps=-4), optimizer=True)), ValueError,
     r"bad optimizer state: ValueError: state_dict: steps: expected an integer >= 0, got -4"),
    ("load_checkpoint: extra not an object", lambda: fastnn.load_checkpoint(
        _crafted(lambda h, a: h.update(extra="x"))), ValueError, r"'extra' must be an object"),
    ("save: unwritable directory", lambda: fastnn.save(mlp(), _unwritable_dir() / "m.npz"),
     OSError, r"path: cannot write a model file in '.*a_file/out'"),
    ("save: onto a directory", lambda: fastnn.save(mlp(), TMP), OSError, r"Is a directory"),
    ("ModelCheckpoint: unwritable directory", _checkpoint_into_unwritable_dir, OSError,
     r"a_file"),
    # data files and helpers
    ("load_npz_dataset: no file", lambda: D.load_npz_dataset(_tmp("none.npz")), FileNotFoundError,
     r"load_npz_dataset: path=.*none.npz.*no file there"),
    ("load_npz_dataset: images 2-D", lambda: D.load_npz_dataset(
        _dataset(x_train=np.zeros((20, 64), np.uint8))), ValueError,
     r"key 'x_train': expected shape \(N, H, W\) or \(N, C, H, W\) with N >= 1, got shape "
     r"\(20, 64\)"),
    ("load_npz_dataset: label count", lambda: D.load_npz_dataset(
        _dataset(y_train=np.zeros(19, int))), ValueError,
     r"key 'y_train': expected integer labels of shape \(20,\) to match x_train, got int64 of "
     r"shape \(19,\)"),
    ("load_npz_dataset: negative labels", lambda: D.load_npz_dataset(
        _dataset(y_test=-np.ones(5, int))), ValueError, r"key 'y_test': expected labels >= 0"),
    ("load_npz_dataset: float labels", lambda: D.load_npz_dataset(_dataset(y_test=np.zeros(5))),
     ValueError, r"key 'y_test': expected integer labels"),
    ("load_npz_dataset: NaN images", lambda: D.load_npz_dataset(
        _dataset(x_test=np.full((5, 8, 8), np.nan, f32))), ValueError,
     r"key 'x_test': expected finite values, found NaN or inf"),
    ("load_npz_dataset: test images of another size", lambda: D.load_npz_dataset(
        _dataset(x_test=np.zeros((5, 9, 9), np.uint8))), ValueError,
     r"key 'x_test': expected images of shape \(8, 8\) like x_train, got \(9, 9\)"),
    ("load_npz_dataset: missing key", lambda: D.load_npz_dataset(
        np.savez(_tmp("k.npz"), x_train=np.zeros((2, 3, 3))) or _tmp("k.npz")), ValueError,
     r"missing key\(s\) \['y_train', 'x_test', 'y_test'\]"),
    ("load_npz_dataset: pickle-bearing, never unpickled", _dataset_with_pickle, ValueError,
     r"key 'y_train': cannot read the array"),
    ("load_npz_dataset: truncated", _truncated_dataset, ValueError, r"data.npz"),
    ("mnist: full-size file with the wrong checksum", _mnist_with_wrong_checksum, ValueError,
     r"mnist.npz: array 'x_train' fails its checksum: expected SHA-256 741c98"),
    ("mnist: 27x27 images", _mnist_wrong_image_size, ValueError,
     r"key 'x_train': expected uint8 of shape \(N, 28, 28\), got uint8 of shape \(20, 27, 27\)"),
    ("batches: batch_size 0", lambda: D.batches(XS, YS, 0), ValueError,
     r"batches: batch_size: expected a positive integer, got 0"),
    ("batches: lengths differ", lambda: D.batches(XS, YS[:3], 2), ValueError,
     r"batches: y: expected as many samples as x \(8\), got 3"),
    ("split: ratios", lambda: D.split(XS, YS, (0.5, 0.6)), ValueError,
     r"split: ratios: expected 2 or 3 positive numbers summing to 1"),
    ("one_hot: label out of range", lambda: D.one_hot([0, 3], 3), ValueError,
     r"one_hot: labels: expected values in 0..2, got values from 0 to 3"),
    # the command line
    ("cli: --out under a regular file", lambda: _train("--out", str(_unwritable_dir())),
     Exits(2, r"--out: cannot write to '.*a_file/out'"), None),
    ("cli: --dataset missing", lambda: _train("--dataset", str(_tmp("missing.npz"))),
     Exits(2, r"--dataset: .*missing.npz"), None),
    ("cli: --dataset with wrong shapes", lambda: _train(
        "--dataset", str(_dataset(x_train=np.zeros((20, 64), np.uint8)))),
     Exits(2, r"--dataset: .*key 'x_train': expected shape"), None),
    ("cli: --epochs 0", lambda: _train("--epochs", "0"),
     Exits(2, r"argument --epochs: expected a positive integer, got 0"), None),
    ("cli: --batch-size -5", lambda: _train("--batch-size", "-5"),
     Exits(2, r"argument --batch-size: expected a positive integer, got -5"), None),
    ("cli: --lr nan", lambda: _train("--lr", "nan"),
     Exits(2, r"argument --lr: expected a finite number >= 0, got nan"), None),
    ("cli: --validation-split 1", lambda: _train("--validation-split", "1"),
     Exits(2, r"argument --validation-split: expected a fraction in \[0, 1\), got 1"), None),
    ("cli: --backend cuda", lambda: _train("--backend", "cuda"),
     Exits(2, r"argument --backend: invalid choice: 'cuda'"), None),
    ("cli: --threads 0", lambda: _train("--threads", "0"),
     Exits(2, r"argument --threads: expected a positive integer, got 0"), None),
    ("cli: --model rnn", lambda: _train("--model", "rnn"),
     Exits(2, r"argument --model: invalid choice: 'rnn'"), None),
    ("cli: unknown option", lambda: _train("--frobnicate"),
     Exits(2, r"unrecognized arguments: --frobnicate"), None),
]


# A row that crashes the interpreter: only used to check that the harness reports crashes.
SELFTEST_CASES = [
    ("a normal row", lambda: K.relu(None), TypeError, r"x:"),
    ("a crashing row", lambda: os.kill(os.getpid(), signal.SIGSEGV), ValueError, r"never"),
    ("a row after the crash", lambda: K.relu(None), TypeError, r"x:"),
]

GROUPS = {"kernels": KERNEL_CASES, "system": SYSTEM_CASES, "selftest": SELFTEST_CASES}


# ---------------------------------------------------------------- the child process

def _verdict(call, expect, pattern) -> tuple[str, str]:
    """("ok" | "fail" | "known", detail) for one row, run here."""
    known = None
    if isinstance(expect, Known):
        known, expect, pattern = expect, expect.exc, expect.pattern
    try:
        result = call()
    except BaseException as exc:  # noqa: BLE001 - the row decides what is right
        if isinstance(exc, KeyboardInterrupt):
            raise
        got = f"{type(exc).__name__}: {exc}"
        if expect is OK or isinstance(expect, Exits):
            return ("known" if known else "fail"), \
                f"expected no exception, got {got}\n{traceback.format_exc(limit=4)}"
        if not isinstance(exc, expect):
            verdict = "known" if known else "fail"
            return verdict, f"expected {expect.__name__}, got {got}"
        if not re.search(pattern, str(exc)):
            verdict = "known" if known else "fail"
            return verdict, f"message {str(exc)!r} does not match {pattern!r}"
        if known:
            return "fail", f"now raises as wanted ({got}): make it a normal row ({known.reason})"
        return "ok", got
    if isinstance(expect, Exits):
        code, err = result
        if code != expect.code or not re.search(expect.pattern, err):
            return "fail", f"expected exit {expect.code} and stderr matching {expect.pattern!r}, " \
                           f"got exit {code} and {err!r}"
        return "ok", f"exit {code}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    if expect is OK:
        if known:
            return "fail", f"now returns normally: make it a normal row ({known.reason})"
        return "ok", "returned normally"
    return ("known" if known else "fail"), f"expected {expect.__name__}, no exception was raised"


def _child(group: str, backend_name: str, results_path: str) -> None:
    """Run one group's rows in this process, appending one JSON line per row to results_path
    ("start" before the call, so a crash is attributed to its row)."""
    global TMP
    import warnings

    from fastnn import backend

    warnings.simplefilter("ignore")  # overflow/invalid warnings of the NaN/Inf rows
    if backend_name != "auto":
        backend.use(backend_name)
    with tempfile.TemporaryDirectory() as tmp, open(results_path, "a") as out:
        for i, (case_id, call, expect, pattern) in enumerate(GROUPS[group]):
            TMP = Path(tmp) / f"case{i}"
            TMP.mkdir()
            out.write(json.dumps({"id": case_id, "status": "start"}) + "\n")
            out.flush()
            status, detail = _verdict(call, expect, pattern)
            out.write(json.dumps({"id": case_id, "status": status, "detail": detail}) + "\n")
            out.flush()


def run_group(group: str, backend_name: str, tmp_dir: Path) -> dict:
    """Run a group in a child process: {"results": {id: (status, detail)}, "returncode",
    "crashed_in": id or None, "stderr"}."""
    results_path = tmp_dir / f"{group}-{backend_name}.jsonl"
    pkg_root = str(Path(fastnn.__file__).resolve().parents[1])
    env = dict(os.environ, FASTNN_NUM_THREADS=os.environ.get("FASTNN_NUM_THREADS", "1"),
               PYTHONPATH=os.pathsep.join([str(HERE), pkg_root,
                                           os.environ.get("PYTHONPATH", "")]))
    code = ("import sys, test_bad_input as t; "
            f"t._child({group!r}, {backend_name!r}, {str(results_path)!r})")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_dir))
    results, started = {}, None
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            row = json.loads(line)
            if row["status"] == "start":
                started = row["id"]
            else:
                results[row["id"]] = (row["status"], row["detail"])
                started = None
    return {"results": results, "returncode": proc.returncode, "crashed_in": started,
            "stderr": proc.stderr[-3000:]}


# ---------------------------------------------------------------- the tests

_RUNS: dict[tuple[str, str], dict] = {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Children run lazily, once per (group, backend); the counts go to the end-of-run report."""
    tmp = tmp_path_factory.mktemp("bad_input")

    def get(group, backend_name):
        key = (group, backend_name)
        if key not in _RUNS:
            _RUNS[key] = run_group(group, backend_name, tmp)
        return _RUNS[key]

    yield get
    from conftest import REPORT

    runs_ = {k: v for k, v in _RUNS.items() if k[0] != "selftest"}
    if runs_:
        tried = sum(len(v["results"]) + (v["crashed_in"] is not None) for v in runs_.values())
        crashes = sum(v["returncode"] < 0 or v["crashed_in"] is not None for v in runs_.values())
        wrong = sum(s == "fail" for v in runs_.values() for s, _ in v["results"].values())
        known = sum(s == "known" for v in runs_.values() for s, _ in v["results"].values())
        per = ", ".join(f"{g}/{b} {len(v['results'])}" for (g, b), v in sorted(runs_.items()))
        REPORT.append(f"bad input: {tried} cases tried in child processes ({per}); "
                      f"{crashes} crashes, {wrong} wrong answers, {known} known gaps (xfail)")


def _check_row(run, case_id):
    if case_id not in run["results"]:
        where = run["crashed_in"]
        pytest.fail(f"the child process died (exit {run['returncode']}) "
                    + (f"while running case {where!r}" if where else "before this case")
                    + f"\n{run['stderr']}")
    status, detail = run["results"][case_id]
    if status == "known":
        pytest.xfail(detail)
    assert status == "ok", detail


@pytest.mark.parametrize("case_id", [c[0] for c in KERNEL_CASES])
def test_kernel_bad_input(runs, backend_child, case_id):
    _check_row(runs("kernels", backend_child), case_id)


@pytest.mark.parametrize("case_id", [c[0] for c in SYSTEM_CASES])
def test_bad_input_above_the_kernels(runs, case_id):
    _check_row(runs("system", "auto"), case_id)


@pytest.fixture(params=("numpy", "numba", "cython"))
def backend_child(request):
    from conftest import _require

    _require(request.param)
    return request.param


def test_a_crash_in_a_row_is_reported_not_fatal(tmp_path):
    run = run_group("selftest", "numpy", tmp_path)
    assert run["returncode"] == -signal.SIGSEGV
    assert run["crashed_in"] == "a crashing row"
    assert run["results"] == {"a normal row": ("ok", "TypeError: x: expected a float32 numpy "
                                                     "array, got NoneType")}


def test_table_size():
    """The issue asks for at least 40 rows across kernels, layers, losses, optimizers, fit, load,
    the data loader and the command line."""
    assert len(KERNEL_CASES) >= 40 and len(SYSTEM_CASES) >= 40
    ids = [c[0] for c in KERNEL_CASES + SYSTEM_CASES]
    assert len(ids) == len(set(ids)), "row ids must be unique"
