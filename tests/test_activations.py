"""relu, sigmoid, tanh, softmax on every backend."""

import warnings

import numpy as np
import pytest
from conftest import assert_grad_close, numerical_grad, randn

from fastnn import kernels as K
from fastnn import reference as R

SHAPES = [(1,), (7,), (3, 5), (2, 3, 4, 5), (70001,)]  # the last one takes the parallel path


@pytest.mark.parametrize("shape", SHAPES)
def test_relu_and_backward(backend_name, shape, rng):
    x, dy = randn(rng, *shape), randn(rng, *shape)
    y = K.relu(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    dx = K.relu_backward(dy, y)
    np.testing.assert_array_equal(dx, np.where(y > 0, dy, 0))
    assert y.dtype == dx.dtype == np.float32 and y.shape == dx.shape == shape


@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_and_backward(backend_name, shape, rng):
    x, dy = randn(rng, *shape, scale=5), randn(rng, *shape)
    y = K.sigmoid(x)
    want = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-7)
    dx = K.sigmoid_backward(dy, y)
    np.testing.assert_allclose(dx, dy * want * (1 - want), rtol=1e-5, atol=1e-6)
    assert y.dtype == dx.dtype == np.float32


def test_sigmoid_is_stable_for_every_finite_input(backend_name):
    x = np.array([-3.4e38, -1e4, -100, -88.8, -20, 0, 20, 88.8, 100, 1e4, 3.4e38], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow warning fails the test
        with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
            y = K.sigmoid(x)
    assert np.all(np.isfinite(y)) and np.all((y >= 0) & (y <= 1))
    assert y[0] == 0 and y[-1] == 1 and y[5] == 0.5
    np.testing.assert_allclose(y[4], 1 / (1 + np.exp(20.0)), rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_tanh_and_backward(backend_name, shape, rng):
    x, dy = randn(rng, *shape, scale=3), randn(rng, *shape)
    y = K.tanh(x)
    np.testing.assert_allclose(y, np.tanh(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(K.tanh_backward(dy, y), dy * (1 - y.astype(np.float64) ** 2),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (1, 10), (4, 3), (64, 10), (4096, 10), (37, 1000)])
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_softmax_rows(backend_name, shape, scale, rng):
    x = randn(rng, *shape, scale=scale)
    p = K.softmax(x)
    z = x.astype(np.float64) - x.max(1, keepdims=True)
    want = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_elementwise_reference_gradients_by_central_differences(rng):
    x = rng.standard_normal(20) * 2
    G = rng.standard_normal(20)
    for fwd, bwd in ((R.sigmoid, R.sigmoid_backward), (R.tanh, R.tanh_backward),
                     (R.relu, R.relu_backward)):
        def loss():
            y = np.empty(20)
            fwd(x, y)
            return float((y * G).sum())

        y, dx = np.empty(20), np.empty(20)
        fwd(x, y)
        bwd(G, y, dx)
        assert_grad_close(dx, *numerical_grad(loss, x))


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from fastnn import backend  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 3000),
                    elements=st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_elementwise_random_extremes_all_backends_agree(x):
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        want_sig = 1 / (1 + np.exp(-x64))
    for name in backend.available():
        with backend.using(name):
            np.testing.assert_array_equal(K.relu(x), np.maximum(x, 0), err_msg=name)
            np.testing.assert_allclose(K.sigmoid(x), want_sig, rtol=1e-5, atol=1e-37, err_msg=name)
            np.testing.assert_allclose(K.tanh(x), np.tanh(x64), rtol=1e-5, atol=1e-7, err_msg=name)
