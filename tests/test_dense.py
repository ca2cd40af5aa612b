"""dense_forward / dense_backward on every backend."""

import numpy as np
import pytest
from conftest import _require, assert_grad_close, numerical_grad, randn

from fastnn import backend
from fastnn import kernels as K
from fastnn import reference as R

SHAPES = [(1, 1, 1), (1, 7, 3), (5, 13, 9), (64, 784, 256), (33, 100, 10),
          (100, 4320, 100), (16, 9000, 64)]  # the last two: GEMMs split along the inner dimension


def sigmoid64(z):
    return 1 / (1 + np.exp(-z))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
def test_dense_forward_matches_float64_formula(backend_name, shape, activation, rng):
    n, k, m = shape
    x, W, b = randn(rng, n, k), randn(rng, k, m, scale=0.1), randn(rng, m)
    y = K.dense_forward(x, W, b, activation)
    z = x.astype(np.float64) @ W + b
    want = {None: z, "relu": np.maximum(z, 0), "sigmoid": sigmoid64(z)}[activation]
    assert y.dtype == np.float32 and y.shape == (n, m)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_dense_backward_matches_float64_formula(backend_name, shape, rng):
    n, k, m = shape
    x, W, dy = randn(rng, n, k), randn(rng, k, m), randn(rng, n, m)
    dx, dW, db = K.dense_backward(dy, x, W)
    x64, W64, dy64 = x.astype(np.float64), W.astype(np.float64), dy.astype(np.float64)
    for got, want in ((dx, dy64 @ W64.T), (dW, x64.T @ dy64), (db, dy64.sum(0))):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    dx2, dW2, db2 = K.dense_backward(dy, x, W, need_dx=False)
    assert dx2 is None
    np.testing.assert_array_equal(dW2, dW)


def test_dense_reference_gradients_by_central_differences(rng):
    x, W, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    G = rng.standard_normal((4, 3))
    for act in (0, 1, 2):
        def loss():
            y = np.empty((4, 3))
            R.dense_forward(x, W, b, act, y)
            return float((y * G).sum())

        y = np.empty((4, 3))
        R.dense_forward(x, W, b, act, y)
        # chain through the activation to the affine output
        dz = {0: G, 1: G * (y > 0), 2: G * y * (1 - y)}[act]
        dx, dW, db = np.empty_like(x), np.empty_like(W), np.empty_like(b)
        R.dense_backward(dz, x, W, dx, dW, db)
        for arr, grad in ((x, dx), (W, dW), (b, db)):
            assert_grad_close(grad, *numerical_grad(loss, arr))


def test_compiled_dense_equals_reference(compiled_backend, rng):
    x, W, b, dy = randn(rng, 37, 50), randn(rng, 50, 21), randn(rng, 21), randn(rng, 37, 21)
    got = [K.dense_forward(x, W, b, "relu"), *K.dense_backward(dy, x, W)]
    with backend.using("numpy"):
        want = [K.dense_forward(x, W, b, "relu"), *K.dense_backward(dy, x, W)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 784, 256), (100, 4320, 100)])
def test_cython_dx_transposed_path_equals_the_direct_product(shape, rng):
    # batches up to 128 compute dx as (W @ dy.T).T (faster in OpenBLAS); the direct product and
    # the inner-dimension GEMM split must agree with it (and with float64) whichever path runs
    _require("cython")
    from fastnn._cython import dense as D

    n, k, m = shape
    x, W, dy = randn(rng, n, k), randn(rng, k, m), randn(rng, n, m)
    with backend.using("cython"):
        dx_t = K.dense_backward(dy, x, W)[0].copy()
        old = D._set_dx_transposed_max(0)
        try:
            dx = K.dense_backward(dy, x, W)[0].copy()
        finally:
            D._set_dx_transposed_max(old)
    want = dy.astype(np.float64) @ W.T.astype(np.float64)
    np.testing.assert_allclose(dx_t, want, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx, dx_t, rtol=1e-5, atol=1e-4)


def test_cython_gemm_split_rules_change_blocks_not_results(rng):
    # the inner-dimension split (the default for (100, 4320) @ (4320, 100)) against row blocks
    _require("cython")
    from fastnn._cython import dense as D

    x, W, b = randn(rng, 100, 4320), randn(rng, 4320, 100), randn(rng, 100)
    dy = randn(rng, 100, 100)

    def run():
        return [K.dense_forward(x, W, b).copy(), *(a.copy() for a in K.dense_backward(dy, x, W))]

    with backend.using("cython"):
        split = run()
        old = D._set_gemm_split(2, 1 << 40, 0)  # no inner-dimension blocks
        try:
            rows = run()
        finally:
            assert D._set_gemm_split(*old) == (2, 1 << 40, 0)
    assert not np.array_equal(split[0], rows[0])  # the blocks really differed
    for a, r in zip(split, rows, strict=True):
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-3)
