"""maxpool2d forward/backward on every backend."""

import numpy as np
import pytest
from conftest import randn
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn import backend
from fastnn import kernels as K

# (N, C, H, W, pool, stride)
GEOMETRIES = [
    (1, 1, 2, 2, 2, None), (2, 3, 6, 6, 2, None), (2, 2, 7, 5, 2, None), (3, 2, 9, 9, 3, 2),
    (1, 4, 8, 6, 2, 1), (2, 1, 5, 5, 5, None), (4, 8, 28, 28, 2, 2), (1, 2, 10, 7, 3, 3),
]


def naive_pool(x, k, s):
    N, C, H, W = x.shape
    OH, OW = (H - k) // s + 1, (W - k) // s + 1
    y = np.empty((N, C, OH, OW), np.float32)
    arg = np.empty((N, C, OH, OW), np.int64)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, bi = None, None
                    for i in range(k):
                        for j in range(k):
                            v = x[n, c, oh * s + i, ow * s + j]
                            if best is None or v > best:
                                best, bi = v, (oh * s + i) * W + ow * s + j
                    y[n, c, oh, ow], arg[n, c, oh, ow] = best, bi
    return y, arg


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_maxpool_forward_equals_naive(backend_name, geom, rng):
    N, C, H, W, k, s = geom
    x = randn(rng, N, C, H, W)
    y, arg = K.maxpool2d_forward(x, k, s)
    want_y, want_arg = naive_pool(x, k, s or k)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(arg, want_arg)


def test_maxpool_ties_go_to_first_maximum(backend_name):
    x = np.zeros((1, 1, 4, 4), np.float32)  # every window is a tie
    y, arg = K.maxpool2d_forward(x, 2)
    np.testing.assert_array_equal(arg[0, 0], [[0, 2], [8, 10]])
    x = np.ones((1, 1, 3, 3), np.float32)
    _, arg = K.maxpool2d_forward(x, 2, 1)  # overlapping windows
    np.testing.assert_array_equal(arg[0, 0], [[0, 1], [3, 4]])


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_maxpool_backward_scatters_to_argmax(backend_name, geom, rng):
    N, C, H, W, k, s = geom
    x = randn(rng, N, C, H, W)
    y, arg = K.maxpool2d_forward(x, k, s)
    dy = randn(rng, *y.shape)
    dx = K.maxpool2d_backward(dy, arg, x.shape, k, s)
    want = np.zeros((N * C, H * W), np.float64)
    for r in range(N * C):
        np.add.at(want[r], arg.reshape(N * C, -1)[r], dy.reshape(N * C, -1)[r])
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx.reshape(N * C, -1), want, rtol=1e-6, atol=1e-6)


def test_maxpool_gradient_by_central_differences(rng):
    """Away from ties max pooling is linear in its inputs: check dL/dx numerically."""
    x = rng.permutation(2 * 3 * 6 * 6).reshape(2, 3, 6, 6).astype(np.float32)  # distinct values
    G = randn(rng, 2, 3, 3, 3)
    y, arg = K.maxpool2d_forward(x, 2)
    dx = K.maxpool2d_backward(G, arg, x.shape, 2).astype(np.float64)
    eps = 0.25  # values are integers, so a quarter step never changes an argmax
    num = np.empty(x.size)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += eps
        xm.flat[i] -= eps
        num[i] = ((K.maxpool2d_forward(xp, 2)[0] - K.maxpool2d_forward(xm, 2)[0]) * G).sum() / (2 * eps)
    np.testing.assert_allclose(dx.ravel(), num, rtol=1e-5, atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 13), w=st.integers(1, 13),
       k=st.integers(1, 4), s=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_maxpool_random_shapes_all_backends_agree(n, c, h, w, k, s, seed):
    if k > h or k > w:
        return
    rng = np.random.default_rng(seed)
    # few distinct values, so ties are frequent
    x = rng.integers(-3, 3, size=(n, c, h, w)).astype(np.float32)
    want_y, want_arg = naive_pool(x, k, s)
    dy = randn(rng, *want_y.shape)
    ref_dx = None
    for name in backend.available():
        with backend.using(name):
            y, arg = K.maxpool2d_forward(x, k, s)
            np.testing.assert_array_equal(y, want_y, err_msg=name)
            np.testing.assert_array_equal(arg, want_arg, err_msg=name)
            dx = K.maxpool2d_backward(dy, arg, x.shape, k, s)
            if ref_dx is None:
                ref_dx = dx
            np.testing.assert_allclose(dx, ref_dx, rtol=1e-6, atol=1e-6, err_msg=name)


def test_maxpool_nan_propagates(backend_name):
    x = np.zeros((1, 1, 2, 4), np.float32)
    x[0, 0, 1, 0] = np.nan
    y, arg = K.maxpool2d_forward(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 4
    assert y[0, 0, 0, 1] == 0
