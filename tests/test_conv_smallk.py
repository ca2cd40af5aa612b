"""The Cython backend's small-K forward (fnn_smallk.h: conv2d with C*kh*kw <= the limit, the
first layer of a network) against the NumPy backend, against its own sgemm path, and across
thread counts."""

import numpy as np
import pytest
from conftest import _require, randn

from fastnn import backend
from fastnn import kernels as K

# (N, C, H, W, F, kh, kw, stride, pad): K = 1, 4, 9, 25 and odd ones; P not a multiple of the
# 16-pixel block, F not a multiple of the 4-channel block; stride 2, padding, one image.
GEOMETRIES = [
    (3, 1, 28, 28, 32, 3, 3, 1, 1),
    (2, 1, 28, 28, 30, 5, 5, 1, 0),
    (4, 1, 9, 7, 5, 1, 1, 1, 0),
    (2, 1, 8, 8, 6, 2, 2, 1, 0),
    (3, 2, 7, 9, 7, 3, 1, 2, 1),
    (1, 1, 13, 11, 3, 3, 3, 2, 2),
    (5, 3, 6, 5, 9, 1, 3, 1, 1),
    (2, 1, 3, 3, 1, 3, 3, 1, 0),
]


def _smallk(limit):
    from fastnn._cython import conv as cyconv

    return cyconv._set_smallk_max(limit)


def _conv(name, x, Wt, b, dy, stride, pad, need_dx=True, threads=None, limit=16):
    before = backend.get_num_threads()
    old = _smallk(limit) if name == "cython" else None
    try:
        if threads:
            backend.set_num_threads(threads)
        with backend.using(name):
            ws = K.Workspace()
            y = K.conv2d_forward(x, Wt, b, stride, pad, ws=ws).copy()
            grads = K.conv2d_backward(dy, x, Wt, stride, pad, ws=ws, cols=ws["cols"],
                                      need_dx=need_dx)
            return [y] + [None if g is None else g.copy() for g in grads]
    finally:
        backend.set_num_threads(before)
        if old is not None:
            _smallk(old)


def _data(rng, geom):
    N, C, H, W, F, kh, kw, s, p = geom
    x, Wt, b = randn(rng, N, C, H, W), randn(rng, F, C, kh, kw), randn(rng, F)
    dy = randn(rng, N, F, (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1)
    return x, Wt, b, dy, s, p


@pytest.mark.parametrize("geom", GEOMETRIES)
@pytest.mark.parametrize("need_dx", [True, False])
def test_cython_smallk_equals_the_numpy_backend(geom, need_dx, rng):
    _require("cython")
    x, Wt, b, dy, s, p = _data(rng, geom)
    want = _conv("numpy", x, Wt, b, dy, s, p, need_dx)
    got = _conv("cython", x, Wt, b, dy, s, p, need_dx)
    for g, w, name in zip(got, want, ("y", "dx", "dW", "db")):
        if not need_dx and name == "dx":
            assert g is None
            continue
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("geom", [GEOMETRIES[1], GEOMETRIES[4]])
def test_cython_smallk_and_sgemm_paths_agree(geom, rng):
    # The limit set to 0 sends the same convolution through sgemm (when the CPU has no FMA,
    # both runs take sgemm and this passes trivially).
    _require("cython")
    x, Wt, b, dy, s, p = _data(rng, geom)
    small = _conv("cython", x, Wt, b, dy, s, p, limit=32)
    blas = _conv("cython", x, Wt, b, dy, s, p, limit=0)
    for g, w, name in zip(small, blas, ("y", "dx", "dW", "db")):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("geom", [GEOMETRIES[0], GEOMETRIES[1], GEOMETRIES[5]])
def test_cython_smallk_bits_never_depend_on_the_thread_count(geom, rng):
    _require("cython")
    x, Wt, b, dy, s, p = _data(rng, geom)
    one = _conv("cython", x, Wt, b, dy, s, p, threads=1)
    for threads in (2, 3):
        for a, c in zip(one, _conv("cython", x, Wt, b, dy, s, p, threads=threads)):
            np.testing.assert_array_equal(a, c, err_msg=f"{threads} threads")


def test_cython_smallk_limit_is_bounded():
    _require("cython")
    old = _smallk(0)
    try:
        with pytest.raises(ValueError):
            _smallk(33)
    finally:
        _smallk(old)
