"""The fused first-layer block Conv2D (stride 1) -> ReLU -> MaxPool2D(2): kernels against the
reference composition, bad input, thread independence, and the Sequential that runs it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import _require, run_across_threads

from fastnn import backend, gradcheck
from fastnn import kernels as K
from fastnn import reference as R
from fastnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fastnn.layers.conv import ConvReLUPool
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.model import Sequential
from fastnn.optim import Adam

# (N, C, H, W, F, k, pad): the textbook and MNIST-CNN first layers, odd conv outputs (the last
# row/column is dropped), rows shorter than a vector, several channels, F not a multiple of 6
GEOMS = [(3, 1, 28, 28, 30, 5, 0), (4, 1, 28, 28, 32, 3, 1), (2, 3, 7, 9, 5, 3, 0),
         (5, 2, 13, 11, 7, 5, 2), (1, 1, 6, 6, 1, 3, 0), (9, 1, 20, 30, 6, 3, 1),
         (2, 1, 12, 40, 13, 7, 3), (6, 1, 9, 26, 8, 1, 0)]


def _data(rng, geom, integer=False):
    N, C, H, W_, F, k, pad = geom
    if integer:  # exact in float32 whatever the order of the sums: ties galore, exact argmax
        x = rng.integers(-3, 4, (N, C, H, W_)).astype(np.float32)
        W = rng.integers(-2, 3, (F, C, k, k)).astype(np.float32)
        b = rng.integers(-2, 3, F).astype(np.float32)
    else:
        x = rng.random((N, C, H, W_), dtype=np.float32)
        W = rng.standard_normal((F, C, k, k)).astype(np.float32)
        b = rng.standard_normal(F).astype(np.float32)
    return x, W, b


def _reference(x, W, b, pad, dp):
    shape = dp.shape
    p, am = np.empty(shape, np.float32), np.empty(shape, np.int32)
    R.conv2d_relu_pool_forward(x, W, b, pad, p, am)
    dW, db = np.empty_like(W), np.empty_like(b)
    assert R.conv2d_relu_pool_backward(dp, p, am, x, pad, dW, db)
    return p, am, dW, db


def _pooled(geom):
    N, C, H, W_, F, k, pad = geom
    return (N, F, (H + 2 * pad - k + 1) // 2, (W_ + 2 * pad - k + 1) // 2)


def test_reference_is_the_composition_of_conv_pool_relu(rng):
    # pooling then ReLU (as Sequential's ReLU -> MaxPool2D fusion does): the same values as ReLU
    # then pooling; the argmax is that of the convolution's output
    x, W, b = _data(rng, GEOMS[0])
    with backend.using("numpy"):
        y = K.conv2d_forward(x, W, b, 1, 0)
        pool, am = K.maxpool2d_forward(y, 2)
        p, am2 = K.conv2d_relu_pool_forward(x, W, b, 0)
        np.testing.assert_array_equal(p, K.maxpool2d_forward(np.maximum(y, 0), 2)[0])
    np.testing.assert_array_equal(p, np.maximum(pool, 0))
    np.testing.assert_array_equal(am2, am)


@pytest.mark.parametrize("geom", GEOMS)
def test_kernels_equal_the_reference_exactly_on_integer_data(backend_name, geom, rng):
    x, W, b = _data(rng, geom, integer=True)
    dp = rng.integers(-3, 4, _pooled(geom)).astype(np.float32)
    p0, am0, dW0, db0 = _reference(x, W, b, geom[-1], dp)
    p, am = K.conv2d_relu_pool_forward(x, W, b, geom[-1])
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(am, am0)  # ties: the first maximum in row-major window order
    dW, db = K.conv2d_relu_pool_backward(dp, p, am, x, W, geom[-1])
    np.testing.assert_array_equal(dW, dW0)
    np.testing.assert_array_equal(db, db0)


@pytest.mark.parametrize("geom", GEOMS)
def test_kernels_match_the_reference_on_random_data(backend_name, geom, rng):
    x, W, b = _data(rng, geom)
    dp = rng.standard_normal(_pooled(geom)).astype(np.float32)
    p0, am0, dW0, db0 = _reference(x, W, b, geom[-1], dp)
    p, am = K.conv2d_relu_pool_forward(x, W, b, geom[-1])
    assert p.dtype == np.float32 and am.dtype == np.int32 and p.shape == _pooled(geom)
    np.testing.assert_allclose(p, p0, rtol=1e-5, atol=1e-5)
    dW, db = K.conv2d_relu_pool_backward(dp, p0, am0, x, W, geom[-1])
    # bound: float32 rounding of sums of |terms|
    scale = np.abs(x).max() * np.abs(dp).sum(axis=(0, 2, 3)) + 1
    assert np.all(np.abs(dW - dW0).reshape(len(db), -1).max(axis=1) <= 1e-5 * scale)
    np.testing.assert_allclose(db, db0, rtol=1e-5, atol=1e-4)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the oracle's NaN
def test_nan_and_inf_propagate_as_in_the_reference(backend_name, rng):
    geom = (3, 1, 14, 14, 8, 5, 1)
    x, W, b = _data(rng, geom)
    x[0, 0, 3, 4] = np.nan
    x[1, 0, 7, 7] = np.inf
    x[2, 0, 0, 13] = -np.inf
    dp = rng.standard_normal(_pooled(geom)).astype(np.float32)
    dp[2, 3, 1, 1] = np.inf
    p0, am0, dW0, db0 = _reference(x, W, b, 1, dp)
    p, am = K.conv2d_relu_pool_forward(x, W, b, 1)
    np.testing.assert_array_equal(np.isnan(p), np.isnan(p0))
    np.testing.assert_array_equal(am, am0)
    dW, db = K.conv2d_relu_pool_backward(dp, p0, am0, x, W, 1)
    np.testing.assert_array_equal(np.isnan(dW), np.isnan(dW0))
    np.testing.assert_array_equal(np.isnan(db), np.isnan(db0))
    fin = np.isfinite(dW0)
    np.testing.assert_allclose(dW[fin], dW0[fin], rtol=1e-4, atol=1e-3)


def test_an_argmax_outside_its_window_but_in_range_gives_the_reference_result(backend_name, rng):
    geom = GEOMS[0]
    x, W, b = _data(rng, geom)
    dp = rng.standard_normal(_pooled(geom)).astype(np.float32)
    p, am = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, 0))
    am[1, 2, 3, 4] = 0  # another window's position: added there, as maxpool2d_backward would
    am[0, 0, 0, 0] = am[0, 0, 0, 1]  # two outputs on one position: both added
    want = [np.empty_like(W), np.empty_like(b)]
    assert R.conv2d_relu_pool_backward(dp, p, am, x, 0, *want)
    dW, db = K.conv2d_relu_pool_backward(dp, p, am, x, W, 0)
    np.testing.assert_allclose(dW, want[0], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(db, want[1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bad", [-1, 24 * 24, 2**31 - 1, -(2**31)])
def test_an_argmax_out_of_range_raises_and_writes_nothing_out_of_bounds(backend_name, rng, bad):
    geom = GEOMS[0]
    x, W, b = _data(rng, geom)
    dp = rng.standard_normal(_pooled(geom)).astype(np.float32)
    p, am = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, 0))
    am[2, 29, 11, 11] = bad
    with pytest.raises(ValueError, match=r"argmax: expected indices in \[0, 576\)"):
        K.conv2d_relu_pool_backward(dp, p, am, x, W, 0)
    am64 = am.astype(np.int64)
    am64[0, 0, 0, 0] = 2**40  # would wrap into range as int32
    with pytest.raises(ValueError, match="argmax"):
        K.conv2d_relu_pool_backward(dp, p, am64, x, W, 0)


def test_bad_arguments_name_what_was_expected(rng):
    x, W, b = _data(rng, GEOMS[0])
    with pytest.raises(ValueError, match="W: expected 1 input channels"):
        K.conv2d_relu_pool_forward(x, np.zeros((4, 2, 5, 5), np.float32), b[:4])
    with pytest.raises(ValueError, match="b: expected shape"):
        K.conv2d_relu_pool_forward(x, W, b[:3])
    with pytest.raises(ValueError, match="at least 2x2"):
        K.conv2d_relu_pool_forward(x[:, :, :5, :5], W, b)
    with pytest.raises(TypeError, match="x: expected a floating-point"):
        K.conv2d_relu_pool_forward(x.astype(np.int32), W, b)
    p, am = K.conv2d_relu_pool_forward(x, W, b)
    with pytest.raises(ValueError, match="dp: expected shape"):
        K.conv2d_relu_pool_backward(p[:, :, :5], p, am, x, W)
    with pytest.raises(TypeError, match="argmax: expected the int32 array"):
        K.conv2d_relu_pool_backward(p, p, am.astype(np.float32), x, W)
    with pytest.raises(ValueError, match="argmax: expected shape"):
        K.conv2d_relu_pool_backward(p, p, am[:, :3], x, W)


_THREADS = r"""
import sys
import numpy as np
from fastnn import backend, kernels as K
name = sys.argv[1]
rng = np.random.default_rng(5)
x = rng.random((37, 1, 28, 28), dtype=np.float32)
W = rng.standard_normal((30, 1, 5, 5)).astype(np.float32)
b = rng.standard_normal(30).astype(np.float32)
dp = rng.standard_normal((37, 30, 13, 13)).astype(np.float32)
x2 = x.copy()
x2[3, 0, 5, 5] = np.inf  # one image on the dense backward path
outs = []
with backend.using(name):
    for n in (1, 2, 3):
        backend.set_num_threads(n)
        p, am = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, 1))
        out = [p, am, *(a.copy() for a in K.conv2d_relu_pool_backward(dp, p, am, x, W, 1))]
        out += [a.copy() for a in K.conv2d_relu_pool_backward(dp, p, am, x2, W, 1)]
        outs.append(out)
for other in outs[1:]:
    for a, r in zip(other, outs[0]):
        np.testing.assert_array_equal(a, r)
print("ok")
"""


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_bits_never_depend_on_the_thread_count(name):
    _require(name)
    assert run_across_threads(_THREADS, name).stdout.strip() == "ok"


def _net(first=True, seed=0):
    layers = [Conv2D(1, 6, 5, seed=seed), ReLU(), MaxPool2D(2), Flatten(),
              Dense(6 * 12 * 12, 10, seed=seed + 1)]
    if not first:
        layers = [Conv2D(1, 1, 1, seed=seed + 2), *layers]
    return Sequential(layers, input_shape=(1, 28, 28))


def test_sequential_runs_a_first_conv_relu_pool_block_as_one_step():
    m = _net()
    assert [type(s).__name__ for s in m._run] == ["ConvReLUPool", "Flatten", "Dense"]
    assert [type(s).__name__ for s in _net(first=False)._run][:2] == ["Conv2D", "Conv2D"]
    deep = Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), MaxPool2D(2), Conv2D(4, 4, 3), ReLU(),
                       MaxPool2D(2)])
    assert [type(s).__name__ for s in deep._run] == ["ConvReLUPool", "Conv2D", "ReLU", "MaxPool2D"]
    strided = Sequential([Conv2D(1, 4, 3, stride=2), ReLU(), MaxPool2D(2)])
    assert not any(isinstance(s, ConvReLUPool) for s in strided._run)
    m.layers.insert(0, Conv2D(1, 1, 1))  # an edited list is planned again
    assert type(m._run[0]) is Conv2D and type(m._run[1]) is Conv2D
    # a layer called directly keeps its own meaning: the convolution's full output
    m = _net()
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    assert m.layers[0].forward(x).shape == (2, 6, 24, 24)


def test_training_with_the_block_equals_training_the_three_layers(backend_name):
    rng = np.random.default_rng(3)
    x, y = rng.random((16, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 16)
    losses, weights = [], []
    for fuse in (True, False):
        m = _net()
        if not fuse:
            m._run_steps[:1] = m.layers[:3]
        opt, loss = Adam(m.parameters(), lr=1e-3), SoftmaxCrossEntropy()
        losses.append([m.train_on_batch(x, y, loss=loss, optimizer=opt) for _ in range(5)])
        weights.append(m.parameters().data.copy())
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-4, atol=1e-5)


def test_backward_through_the_block_gives_dx_and_passes_gradcheck(backend_name):
    rng = np.random.default_rng(4)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    m, ref = _net(), _net()
    ref._run_steps[:1] = ref.layers[:3]
    dy = rng.standard_normal((3, 10)).astype(np.float32)
    np.testing.assert_allclose(m.forward(x), ref.forward(x), rtol=1e-5, atol=1e-6)
    dx, dx_ref = m.backward(dy), ref.backward(dy)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m.parameters().grad, ref.parameters().grad, rtol=1e-4, atol=1e-6)
    small = Sequential([Conv2D(2, 3, 3, padding=1, seed=1), ReLU(), MaxPool2D(2), Flatten(),
                        Dense(3 * 3 * 3, 4, seed=2)])
    assert isinstance(small._run[0], ConvReLUPool)
    rng = np.random.default_rng(0)  # data whose pooling windows have no near-ties (eps 1e-3)
    xs, ys = rng.standard_normal((3, 2, 6, 6)).astype(np.float32), rng.integers(0, 4, 3)
    assert gradcheck(small, xs, ys, loss=SoftmaxCrossEntropy(), num_checks=20) < 1e-2


@pytest.mark.parametrize("geom", GEOMS)
def test_cython_portable_loops_equal_the_vector_ones(geom, rng):
    # CPUs without AVX2 + FMA run the portable loops: the same forward bits (the same FMA chain
    # per output), the weight gradients within rounding (the dense correlation, not the sparse
    # sums), and exact on integer data
    _require("cython")
    from fastnn._cython import convpool as C

    for integer in (True, False):
        x, W, b = _data(rng, geom, integer=integer)
        dp = rng.integers(-3, 4, _pooled(geom)).astype(np.float32)
        outs = []
        with backend.using("cython"):
            for portable in (False, True):
                old = C._set_portable(portable)
                try:
                    p, am = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, geom[-1]))
                    dW, db = (a.copy() for a in K.conv2d_relu_pool_backward(dp, p, am, x, W,
                                                                             geom[-1]))
                finally:
                    C._set_portable(old)
                outs.append((p, am, dW, db))
        (p0, a0, dW0, db0), (p1, a1, dW1, db1) = outs
        np.testing.assert_array_equal(p1, p0)
        np.testing.assert_array_equal(a1, a0)
        np.testing.assert_array_equal(db1, db0)
        if integer:
            np.testing.assert_array_equal(dW1, dW0)
        else:
            np.testing.assert_allclose(dW1, dW0, rtol=1e-4, atol=1e-4)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the oracle's NaN
def test_blocks_with_a_nan_keep_the_reference_bits_signed_zeros_included(backend_name, rng):
    # integer data (exact sums) with one NaN and one inf: the blocks they reach take the full
    # NaN-aware merges, the others the fast ones; every value, zero sign and argmax as the
    # reference's
    geom = (3, 1, 14, 14, 8, 3, 1)
    x, W, b = _data(rng, geom, integer=True)
    W[0] = -0.0  # filter 0: every product a signed zero
    b[0] = -0.0
    x[0, 0, 2, 3] = np.nan
    x[2, 0, 9, 9] = np.inf
    with backend.using("numpy"):
        p0, a0 = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, 1))
    p, am = K.conv2d_relu_pool_forward(x, W, b, 1)
    np.testing.assert_array_equal(p, p0)
    np.testing.assert_array_equal(np.signbit(p), np.signbit(p0))
    np.testing.assert_array_equal(am, a0)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the oracle's inf * 0
@pytest.mark.parametrize("geom", GEOMS)
def test_zero_gradients_are_skipped_exactly(backend_name, geom, rng):
    # the sparse dW sums only the pooled outputs whose g = dp * (p > 0) is not zero: with dp
    # mostly +-0, one image's all zero, and inf where p <= 0 (g = inf * 0 = NaN, kept), every
    # value, NaN and zero sign is the reference's (integer data: exact sums)
    x, W, b = _data(rng, geom, integer=True)
    shape = _pooled(geom)
    with backend.using("numpy"):
        p0, a0 = (a.copy() for a in K.conv2d_relu_pool_forward(x, W, b, geom[-1]))
    dp = rng.integers(-3, 4, shape).astype(np.float32)
    dp[rng.random(shape) < 0.7] = 0.0
    dp[rng.random(shape) < 0.2] = -0.0
    dp[0] = -0.0
    variants = [dp]
    dead = np.argwhere(p0 <= 0)
    if len(dead) and shape[0] > 1:
        inf = dp.copy()
        inf[tuple(dead[len(dead) // 2])] = np.inf
        variants.append(inf)
    for d in variants:
        _, _, dW0, db0 = _reference(x, W, b, geom[-1], d)
        dW, db = K.conv2d_relu_pool_backward(d, p0, a0, x, W, geom[-1])
        for got, want in ((dW, dW0), (db, db0)):
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
