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


# The Cython 2x2 stride-2 paths (fnn_pool.h: banded forward for even H and W, block-wise backward)
# against the reference, bit for bit. Bands hold 1024 floats: 66x64 spans several.
CY_SHAPES = [(2, 3, 28, 28), (3, 2, 14, 14), (1, 2, 24, 24), (1, 1, 66, 64), (2, 1, 7, 28),
             (1, 2, 28, 9), (1, 1, 2, 2), (1, 1, 4, 6), (1, 1, 2, 2050), (1, 1, 16, 16)]


def _cython_or_skip():
    if "cython" not in backend.available():
        pytest.skip("the cython backend is not built")


def _ref_forward(x):
    from fastnn.reference import pool as R
    N, C, H, W = x.shape
    y = np.empty((N, C, H // 2, W // 2), np.float32)
    arg = np.empty(y.shape, np.int32)
    R.maxpool2d_forward(x, 2, 2, 2, y, arg)
    return y, arg


def _tie_nan_input(rng, shape):
    """Few distinct values (ties everywhere), signed zeros, NaNs with distinct payloads."""
    x = rng.integers(-2, 2, size=shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = -0.0
    nan = rng.random(shape) < 0.15
    bits = x.view(np.uint32)
    bits[nan] = 0x7FC00000 | rng.integers(1, 1 << 20, size=int(nan.sum()), dtype=np.uint32)
    return x


@pytest.mark.parametrize("shape", CY_SHAPES)
def test_cython_pool_2x2_bitwise_equals_reference(shape, rng):
    _cython_or_skip()
    x = _tie_nan_input(rng, shape)
    want_y, want_arg = _ref_forward(x)
    dy = _tie_nan_input(rng, want_y.shape)
    with backend.using("numpy"):
        want_dx = K.maxpool2d_backward(dy, want_arg, shape, 2).copy()
    for threads in (1, 2, 3):
        before = backend.get_num_threads()
        try:
            backend.set_num_threads(threads)
            with backend.using("cython"):
                y, arg = K.maxpool2d_forward(x, 2)
                dx = K.maxpool2d_backward(dy, arg, shape, 2)
        finally:
            backend.set_num_threads(before)
        np.testing.assert_array_equal(y.view(np.uint32), want_y.view(np.uint32))
        np.testing.assert_array_equal(arg, want_arg)
        np.testing.assert_array_equal(dx.view(np.uint32), want_dx.view(np.uint32))


def test_cython_pool_2x2_every_window_pattern():
    """All 5**4 windows over {-1, -0.0, 0, 1, NaN} (NaN payloads tell which NaN won), in one
    plane of 25x25 windows, and shifted by one window so every pattern also meets a band edge."""
    _cython_or_skip()
    vals = np.array([-1.0, -0.0, 0.0, 1.0, np.nan], np.float32)
    idx = np.stack(np.meshgrid(*[np.arange(5)] * 4, indexing="ij"), -1).reshape(625, 4)
    win = vals[idx]
    win.view(np.uint32)[np.isnan(win)] += np.arange(4, dtype=np.uint32)[
        np.nonzero(np.isnan(win))[1]]
    for shift in (0, 1):
        w = np.roll(win, shift, axis=0).reshape(25, 25, 2, 2)
        x = np.ascontiguousarray(w.transpose(0, 2, 1, 3).reshape(1, 1, 50, 50))
        want_y, want_arg = _ref_forward(x)
        with backend.using("cython"):
            y, arg = K.maxpool2d_forward(x, 2)
        np.testing.assert_array_equal(y.view(np.uint32), want_y.view(np.uint32))
        np.testing.assert_array_equal(arg, want_arg)


@pytest.mark.parametrize("shape", [(2, 3, 28, 28), (1, 2, 14, 14), (1, 1, 66, 64)])
def test_cython_unpool_argmax_outside_its_window(shape, rng):
    """An argmax elsewhere in the plane (a caller's own indices): the plane falls back to the
    scatter, and dx is the reference's, other planes unaffected."""
    _cython_or_skip()
    N, C, H, W = shape
    x = randn(rng, *shape)
    with backend.using("cython"):
        _, arg = K.maxpool2d_forward(x, 2)
    arg = arg.copy()
    arg[0, 0, 0, 0] = H * W - 1  # another window's pixel
    arg[-1, -1, -1, -1] = arg[-1, -1, 0, 0]  # two outputs on one pixel: they accumulate
    dy = randn(rng, N, C, H // 2, W // 2)
    with backend.using("numpy"):
        want = K.maxpool2d_backward(dy, arg, shape, 2).copy()
    with backend.using("cython"):
        dx = K.maxpool2d_backward(dy, arg, shape, 2)
    np.testing.assert_array_equal(dx.view(np.uint32), want.view(np.uint32))


def test_backward_argmax_range_checked_in_every_backend(backend_name):
    """The range check runs in the kernels: an index out of range anywhere (first plane, last
    plane, 2x2 fast path or not) raises and names the actual range."""
    for shape in [(2, 3, 28, 28), (1, 2, 9, 9)]:
        N, C, H, W = shape
        OH, OW = (H - 2) // 2 + 1, (W - 2) // 2 + 1
        arg = np.zeros((N, C, OH, OW), np.int32)
        dy = np.ones(arg.shape, np.float32)
        for pos, val in [((0, 0, 0, 0), -1), ((-1, -1, -1, -1), H * W)]:
            bad = arg.copy()
            bad[pos] = val
            lo, hi = min(val, 0), max(val, 0)
            with pytest.raises(ValueError, match=rf"argmax: expected indices in \[0, {H * W}\)"
                                                 rf".*got \[{lo}, {hi}\]"):
                K.maxpool2d_backward(dy, bad, shape, 2)
