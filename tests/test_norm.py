"""batchnorm forward (training and inference) and backward on every backend."""

import numpy as np
import pytest
from conftest import assert_grad_close, numerical_grad, randn

from fastnn import kernels as K
from fastnn import reference as R

SHAPES = [(2, 3), (64, 100), (1, 4, 3, 3), (8, 16, 14, 14), (3, 5, 7, 2)]


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_train_forward_and_running_stats(backend_name, shape, rng):
    x = randn(rng, *shape, scale=3) + 2
    C = shape[1]
    gamma, beta = randn(rng, C), randn(rng, C)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y, mean, invstd = K.batchnorm_forward(x, gamma, beta, rm, rv, momentum=0.9, eps=1e-5)
    axes = (0,) if x.ndim == 2 else (0, 2, 3)
    bshape = (1, C) if x.ndim == 2 else (1, C, 1, 1)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(axes), x64.var(axes)
    want = gamma.reshape(bshape) * (x64 - mu.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5)
    want += beta.reshape(bshape)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, 0.1 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, 0.9 + 0.1 * var, rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_inference_uses_running_stats(backend_name, shape, rng):
    x = randn(rng, *shape)
    C = shape[1]
    gamma, beta = randn(rng, C), randn(rng, C)
    rm, rv = randn(rng, C), np.abs(randn(rng, C)) + 0.5
    rm0, rv0 = rm.copy(), rv.copy()
    y, _, _ = K.batchnorm_forward(x, gamma, beta, rm, rv, train=False)
    bshape = (1, C) + (1,) * (x.ndim - 2)
    want = gamma.reshape(bshape) * (x - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-5)
    np.testing.assert_allclose(y, want + beta.reshape(bshape), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("shape", SHAPES)
def test_batchnorm_backward_equals_reference(backend_name, shape, rng):
    x, dy = randn(rng, *shape), randn(rng, *shape)
    C = shape[1]
    gamma, beta = randn(rng, C), randn(rng, C)
    _, mean, invstd = K.batchnorm_forward(x, gamma, beta, np.zeros(C, np.float32),
                                          np.ones(C, np.float32))
    dx, dgamma, dbeta = K.batchnorm_backward(dy, x, gamma, mean, invstd)
    x3, dy3 = x.reshape(shape[0], C, -1), dy.reshape(shape[0], C, -1)
    want = [np.empty(x3.shape), np.empty(C), np.empty(C)]
    R.batchnorm_backward(dy3.astype(np.float64), x3.astype(np.float64), gamma, mean, invstd, *want)
    for g, w in zip((dx.reshape(x3.shape), dgamma, dbeta), want):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 3, 1), (2, 3, 5)])
def test_batchnorm_reference_gradients_by_central_differences(shape, rng):
    x = rng.standard_normal(shape)
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    G = rng.standard_normal(shape)

    def loss():
        y = np.empty(shape)
        R.batchnorm_forward_train(x, gamma, beta, 1e-5, y, np.empty(C), np.empty(C))
        return float((y * G).sum())

    mean, invstd = np.empty(C), np.empty(C)
    R.batchnorm_forward_train(x, gamma, beta, 1e-5, np.empty(shape), mean, invstd)
    dx, dg, db = np.empty(shape), np.empty(C), np.empty(C)
    R.batchnorm_backward(G, x, gamma, mean, invstd, dx, dg, db)
    for arr, grad in ((x, dx), (gamma, dg), (beta, db)):
        assert_grad_close(grad, *numerical_grad(loss, arr), tol=1e-5)
