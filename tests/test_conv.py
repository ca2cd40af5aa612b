"""im2col, col2im and conv2d on every backend: against naive loops, the reference, and central
differences."""

import numpy as np
import pytest
from conftest import assert_grad_close, numerical_grad, randn
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn import kernels as K
from fastnn import reference as R

# (N, C, H, W, F, kh, kw, stride, pad): batch 1, odd and non-square images, stride 1 and 2,
# padding 0/1/2, 1x1 and full-size kernels, C = 1 and C > 1.
GEOMETRIES = [
    (1, 1, 5, 5, 1, 3, 3, 1, 0),
    (2, 3, 7, 5, 4, 3, 3, 1, 1),
    (3, 2, 8, 9, 5, 3, 2, 2, 1),
    (2, 3, 6, 6, 2, 1, 1, 1, 0),
    (2, 2, 5, 5, 3, 5, 5, 1, 0),
    (1, 3, 4, 4, 2, 3, 3, 2, 2),
    (2, 4, 11, 7, 3, 4, 3, 2, 2),
    (4, 8, 14, 14, 16, 3, 3, 1, 1),
    (2, 1, 28, 28, 6, 5, 5, 1, 0),
]


def out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def naive_im2col(x, kh, kw, s, p):
    N, C, H, W = x.shape
    OH, OW = out_size(H, kh, s, p), out_size(W, kw, s, p)
    cols = np.zeros((N * OH * OW, C * kh * kw), x.dtype)
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    for i in range(kh):
                        for j in range(kw):
                            h, w = oh * s + i - p, ow * s + j - p
                            if 0 <= h < H and 0 <= w < W:
                                cols[(n * OH + oh) * OW + ow, (c * kh + i) * kw + j] = x[n, c, h, w]
    return cols


def naive_conv(x, W, b, s, p):
    """Direct cross-correlation in float64."""
    x, W = x.astype(np.float64), W.astype(np.float64)
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH, OW = out_size(H, kh, s, p), out_size(Wd, kw, s, p)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    y = np.empty((N, F, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            patch = xp[:, :, oh * s : oh * s + kh, ow * s : ow * s + kw]
            y[:, :, oh, ow] = np.tensordot(patch, W, axes=([1, 2, 3], [1, 2, 3])) + b
    return y


@pytest.mark.parametrize("geom", GEOMETRIES[:7])
def test_im2col_equals_naive_loops(backend_name, geom, rng):
    N, C, H, W, F, kh, kw, s, p = geom
    x = randn(rng, N, C, H, W)
    cols = K.im2col(x, kh, kw, s, p)
    assert cols.dtype == np.float32
    np.testing.assert_array_equal(cols, naive_im2col(x, kh, kw, s, p))


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(backend_name, geom, rng):
    N, C, H, W, F, kh, kw, s, p = geom
    x = randn(rng, N, C, H, W)
    cols = K.im2col(x, kh, kw, s, p)
    c = randn(rng, *cols.shape)
    dx = K.col2im(c, x.shape, kh, kw, s, p)
    assert dx.dtype == np.float32 and dx.shape == x.shape
    lhs = np.dot(cols.ravel().astype(np.float64), c.ravel())
    rhs = np.dot(x.ravel().astype(np.float64), dx.ravel())
    assert abs(lhs - rhs) <= 1e-4 * max(1.0, abs(lhs))


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv2d_forward_equals_direct_convolution(backend_name, geom, rng):
    N, C, H, W, F, kh, kw, s, p = geom
    x, Wt, b = randn(rng, N, C, H, W), randn(rng, F, C, kh, kw), randn(rng, F)
    y = K.conv2d_forward(x, Wt, b, s, p)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, naive_conv(x, Wt, b, s, p), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("geom", GEOMETRIES)
def test_conv2d_backward_equals_reference(compiled_backend, geom, rng):
    N, C, H, W, F, kh, kw, s, p = geom
    x, Wt = randn(rng, N, C, H, W), randn(rng, F, C, kh, kw)
    OH, OW = out_size(H, kh, s, p), out_size(W, kw, s, p)
    dy = randn(rng, N, F, OH, OW)
    got = K.conv2d_backward(dy, x, Wt, s, p)
    from fastnn import backend

    with backend.using("numpy"):
        want = K.conv2d_backward(dy, x, Wt, s, p)
    for g, w, name in zip(got, want, ("dx", "dW", "db")):
        assert g.dtype == np.float32, name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("geom", GEOMETRIES[:7])
def test_conv2d_reference_gradients_by_central_differences(geom, rng):
    """The reference backward, run in float64, against central differences of its forward."""
    N, C, H, W, F, kh, kw, s, p = geom
    x = rng.standard_normal((N, C, H, W))
    Wt = rng.standard_normal((F, C, kh, kw))
    b = rng.standard_normal(F)
    OH, OW = out_size(H, kh, s, p), out_size(W, kw, s, p)
    G = rng.standard_normal((N, F, OH, OW))
    rows, k = N * OH * OW, C * kh * kw

    def loss():
        y = np.empty((N, F, OH, OW))
        R.conv2d_forward(x, Wt, b, s, p, y, np.empty((rows, k)), np.empty((rows, F)))
        return float((y * G).sum())

    cols = np.empty((rows, k))
    R.im2col(x, kh, kw, s, p, cols)
    dx, dW, db = np.empty_like(x), np.empty_like(Wt), np.empty_like(b)
    R.conv2d_backward(G, cols, Wt, s, p, dx, dW, db, np.empty((rows, F)), np.empty((rows, k)))
    for arr, grad in ((x, dx), (Wt, dW), (b, db)):
        assert_grad_close(grad, *numerical_grad(loss, arr, rng=rng))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 12),
    f=st.integers(1, 5), kh=st.integers(1, 5), kw=st.integers(1, 5), s=st.integers(1, 3),
    p=st.integers(0, 2), seed=st.integers(0, 2**31 - 1),
)
def test_conv_random_shapes_all_backends_agree(n, c, h, w, f, kh, kw, s, p, seed):
    from conftest import ALL_BACKENDS

    from fastnn import backend

    if kh > h + 2 * p or kw > w + 2 * p:
        return
    rng = np.random.default_rng(seed)
    x, Wt, b = randn(rng, n, c, h, w), randn(rng, f, c, kh, kw), randn(rng, f)
    want = naive_conv(x, Wt, b, s, p)
    dy = randn(rng, *want.shape)
    results = {}
    for name in ALL_BACKENDS:
        if name not in backend.available():
            continue
        with backend.using(name):
            y = K.conv2d_forward(x, Wt, b, s, p)
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=name)
            results[name] = K.conv2d_backward(dy, x, Wt, s, p)
    for name, grads in results.items():
        for g, r in zip(grads, results["numpy"]):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4, err_msg=name)


def test_workspace_reuses_buffers(backend_name, rng):
    x, Wt, b = randn(rng, 2, 3, 8, 8), randn(rng, 4, 3, 3, 3), randn(rng, 4)
    ws = K.Workspace()
    y1 = K.conv2d_forward(x, Wt, b, 1, 1, ws=ws)
    cols = ws["cols"]
    y2 = K.conv2d_forward(x, Wt, b, 1, 1, ws=ws)
    assert y1 is y2 and ws["cols"] is cols
    dx, dW, db = K.conv2d_backward(np.ones_like(y1), x, Wt, 1, 1, ws=ws, cols=ws["cols"])
    with pytest.raises(ValueError, match="cols"):
        K.conv2d_backward(np.ones_like(y1), x, Wt, 1, 1, cols=np.zeros((3, 3), np.float32))


@pytest.mark.parametrize("channels", [3, 8])  # 8: the compiled backends' Winograd path
@pytest.mark.parametrize("first, second", [("cython", "numpy"), ("numpy", "cython"),
                                           ("cython", "numba"), ("numba", "cython"),
                                           ("numba", "numpy"), ("numpy", "numba")])
def test_columns_kept_by_one_backend_are_never_misread_by_another(first, second, channels, rng):
    # Each compiled backend keeps its columns in its own layout (Cython: per-image planes, Numba:
    # im2col rows; both: Winograd V tiles for 3x3 convolutions with >= 8 channels), NumPy as
    # im2col rows: a backward on another backend than the forward must not read them as its own.
    from conftest import _require
    from fastnn import backend

    for name in (first, second):
        _require(name)
    C, F = channels, channels + 4
    x, Wt = randn(rng, 5, C, 9, 8), randn(rng, F, C, 3, 3)
    b = randn(rng, F)
    ws = K.Workspace()
    with backend.using(first):
        y = K.conv2d_forward(x, Wt, b, 1, 1, ws=ws)
    dy = randn(rng, *y.shape)
    with backend.using(second):
        got = [a.copy() for a in K.conv2d_backward(dy, x, Wt, 1, 1, ws=ws, cols=ws["cols"])]
    with backend.using("numpy"):
        want = K.conv2d_backward(dy, x, Wt, 1, 1)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
