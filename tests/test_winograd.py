"""Winograd F(2x2, 3x3): the NumPy form (fastnn.reference.winograd) against the reference
convolution in float64, and the compiled backends' Winograd path (3x3, stride 1, >= 8 channels;
kernels/_winograd.pxi, fastnn/_numba/winograd.py) against the NumPy backend, across thread
counts, workspaces and backends."""

import numpy as np
import pytest
from conftest import _require, randn
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn import backend
from fastnn import kernels as K
from fastnn import reference as R
from fastnn.reference import winograd as WG

# (N, C, H, W, F, pad): even and odd outputs (the last tile row/column overhangs), pad 0/1/2,
# non-square, one image, batches that do not fill the last block, and 28x28 (one image per block).
GEOMETRIES = [
    (4, 8, 14, 14, 16, 1),
    (3, 9, 7, 5, 10, 1),
    (2, 8, 6, 9, 8, 0),
    (5, 16, 5, 5, 8, 2),
    (1, 8, 4, 5, 12, 0),
    (13, 8, 14, 14, 8, 1),
    (3, 12, 28, 28, 9, 1),
]


def _reference(x, Wt, b, dy, pad):
    N, C, H, W = x.shape
    F = Wt.shape[0]
    OH, OW = H + 2 * pad - 2, W + 2 * pad - 2
    rows, k = N * OH * OW, C * 9
    y, cols = np.empty((N, F, OH, OW), x.dtype), np.empty((rows, k), x.dtype)
    R.conv2d_forward(x, Wt, b, 1, pad, y, cols, np.empty((rows, F), x.dtype))
    dx, dW, db = np.empty_like(x), np.empty_like(Wt), np.empty_like(b)
    R.conv2d_backward(dy, cols, Wt, 1, pad, dx, dW, db, np.empty((rows, F), x.dtype),
                      np.empty((rows, k), x.dtype))
    return y, dx, dW, db


@pytest.mark.parametrize("geom", GEOMETRIES + [(2, 1, 3, 3, 1, 0), (1, 2, 2, 3, 2, 1)])
def test_numpy_winograd_equals_the_reference_convolution_in_float64(geom, rng):
    N, C, H, W, F, p = geom
    x, Wt, b = (rng.standard_normal(s) for s in ((N, C, H, W), (F, C, 3, 3), (F,)))
    dy = rng.standard_normal((N, F, H + 2 * p - 2, W + 2 * p - 2))
    y, dx, dW, db = _reference(x, Wt, b, dy, p)
    y2, V = WG.conv3x3_forward(x, Wt, b, p)
    for got, want in zip((y2, *WG.conv3x3_backward(dy, V, Wt, x.shape, p)), (y, dx, dW, db)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


COMPILED = ("numba", "cython")


def _module(name):
    import importlib

    _require(name)
    return importlib.import_module(f"fastnn._{name}")


def _compiled_conv(name, x, Wt, b, dy, p, threads=None, need_dx=True):
    before = backend.get_num_threads()
    try:
        if threads:
            backend.set_num_threads(threads)
        with backend.using(name):
            ws = K.Workspace()
            y = K.conv2d_forward(x, Wt, b, 1, p, ws=ws).copy()
            grads = K.conv2d_backward(dy, x, Wt, 1, p, ws=ws, cols=ws["cols"], need_dx=need_dx)
            return [y] + [None if g is None else g.copy() for g in grads]
    finally:
        backend.set_num_threads(before)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_winograd_equals_the_numpy_backend(name, geom, rng):
    N, C, H, W, F, p = geom
    assert _module(name).conv_scratch_size(N, C, H, W, F, 3, 3, 1, p) > 0, "not Winograd"
    x, Wt, b = randn(rng, N, C, H, W), randn(rng, F, C, 3, 3), randn(rng, F)
    dy = randn(rng, N, F, H + 2 * p - 2, W + 2 * p - 2)
    want = _reference(x, Wt, b, dy, p)
    got = _compiled_conv(name, x, Wt, b, dy, p)
    for g, w, what in zip(got, want, ("y", "dx", "dW", "db")):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=what)
    no_dx = _compiled_conv(name, x, Wt, b, dy, p, need_dx=False)
    assert no_dx[1] is None
    for g, w in zip(no_dx[2:], got[2:]):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("name", COMPILED)
@pytest.mark.parametrize("geom", [GEOMETRIES[0], GEOMETRIES[5], GEOMETRIES[6]])
def test_winograd_bits_never_depend_on_the_thread_count(name, geom, rng):
    _require(name)
    N, C, H, W, F, p = geom
    x, Wt, b = randn(rng, N, C, H, W), randn(rng, F, C, 3, 3), randn(rng, F)
    dy = randn(rng, N, F, H + 2 * p - 2, W + 2 * p - 2)
    one = _compiled_conv(name, x, Wt, b, dy, p, threads=1)
    for threads in (2, 3):
        for a, c in zip(one, _compiled_conv(name, x, Wt, b, dy, p, threads=threads)):
            np.testing.assert_array_equal(a, c, err_msg=f"{threads} threads")


@pytest.mark.parametrize("name", COMPILED)
def test_winograd_allocates_its_own_scratch_when_given_too_little(name, rng):
    # Called directly with the reference's buffer shapes (as another caller might), not the
    # workspace's: same bits, no out-of-bounds writes (the buffers' guard rows stay untouched).
    cyconv = _module(name)
    N, C, H, W, F, p = GEOMETRIES[0]
    x, Wt, b = randn(rng, N, C, H, W), randn(rng, F, C, 3, 3), randn(rng, F)
    dy = randn(rng, N, F, H, W)
    want = _compiled_conv(name, x, Wt, b, dy, p)
    rows, k = N * H * W, C * 9
    y, cols = np.empty((N, F, H, W), np.float32), np.empty((rows, k), np.float32)
    small = np.full((rows + 1, F), 7.0, np.float32)
    cyconv.conv2d_forward(x, Wt, b, 1, p, y, cols, small[:1])
    dx, dW, db = np.empty_like(x), np.empty_like(Wt), np.empty(F, np.float32)
    cyconv.conv2d_backward(dy, cols, Wt, 1, p, dx, dW, db, small[:1], np.empty((1, 1), np.float32))
    for g, w in zip((y, dx, dW, db), want):
        np.testing.assert_array_equal(g, w)
    assert (small[1:] == 7.0).all()


@pytest.mark.parametrize("name", COMPILED)
def test_winograd_only_where_it_applies(name):
    cyconv = _module(name)

    assert cyconv.conv_scratch_size(8, 32, 14, 14, 64, 3, 3, 1, 1) > 0
    for args in ((8, 32, 14, 14, 64, 3, 3, 2, 1), (8, 32, 14, 14, 64, 5, 5, 1, 2),
                 (8, 4, 14, 14, 64, 3, 3, 1, 1), (8, 32, 14, 14, 4, 3, 3, 1, 1),
                 (8, 32, 3, 3, 64, 3, 3, 1, 0), (8, 32, 14, 14, 64, 3, 2, 1, 1)):
        assert cyconv.conv_scratch_size(*args) == 0, args


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(8, 11), h=st.integers(1, 17), w=st.integers(1, 17),
       f=st.integers(8, 11), p=st.integers(0, 2), seed=st.integers(0, 2**31 - 1))
def test_compiled_convolution_on_random_winograd_shapes(n, c, h, w, f, p, seed):
    # Every shape the Winograd path may take (and its neighbours that fall back to im2col: too
    # small an output) against the NumPy backend, forward and backward, on both compiled backends.
    if h + 2 * p < 3 or w + 2 * p < 3:
        return
    rng = np.random.default_rng(seed)
    x, Wt, b = randn(rng, n, c, h, w), randn(rng, f, c, 3, 3), randn(rng, f)
    dy = randn(rng, n, f, h + 2 * p - 2, w + 2 * p - 2)
    want = _reference(x, Wt, b, dy, p)
    for name in COMPILED:
        if name not in backend.available():
            continue
        for g, ref, what in zip(_compiled_conv(name, x, Wt, b, dy, p), want,
                                ("y", "dx", "dW", "db")):
            np.testing.assert_allclose(g, ref, rtol=1e-4, atol=2e-4, err_msg=f"{name} {what}")


@pytest.mark.parametrize("name", COMPILED)
def test_the_kernels_layer_gives_the_backend_its_whole_scratch(name, rng):
    # fastnn.kernels asks the backend for its scratch size and keeps one buffer of it in the
    # workspace (else every call would allocate its own).
    mod = _module(name)
    N, C, H, W, F, p = GEOMETRIES[0]
    x, Wt, b = randn(rng, N, C, H, W), randn(rng, F, C, 3, 3), randn(rng, F)
    with backend.using(name):
        ws = K.Workspace()
        y = K.conv2d_forward(x, Wt, b, 1, p, ws=ws)
        need = mod.conv_scratch_size(N, C, H, W, F, 3, 3, 1, p)
        assert need > 0 and ws["conv_scratch"].size >= need
        scratch = ws["conv_scratch"]
        K.conv2d_backward(np.ones_like(y), x, Wt, 1, p, ws=ws, cols=ws["cols"])
        assert ws["conv_scratch"] is scratch


@pytest.mark.parametrize("name", COMPILED)
def test_winograd_can_be_turned_off_and_columns_follow_the_switch(name, rng):
    mod = _module(name)
    N, C, H, W, F, p = GEOMETRIES[1]
    x, Wt, b = randn(rng, N, C, H, W), randn(rng, F, C, 3, 3), randn(rng, F)
    dy = randn(rng, N, F, H + 2 * p - 2, W + 2 * p - 2)
    want = _reference(x, Wt, b, dy, p)
    assert backend.winograd()
    try:
        backend.set_winograd(False)
        assert mod.conv_scratch_size(N, C, H, W, F, 3, 3, 1, p) == 0
        off = _compiled_conv(name, x, Wt, b, dy, p)
        for first, second in ((True, False), (False, True)):  # flipped between the passes
            backend.set_winograd(first)
            with backend.using(name):
                ws = K.Workspace()
                K.conv2d_forward(x, Wt, b, 1, p, ws=ws)
                backend.set_winograd(second)
                got = K.conv2d_backward(dy, x, Wt, 1, p, ws=ws, cols=ws["cols"])
            for g, w in zip(got, want[1:]):
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    finally:
        backend.set_winograd(True)
    for g, w in zip(off, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="enabled"):
        backend.set_winograd("no")


def test_fastnn_winograd_environment_variable_turns_it_off():
    import subprocess
    import sys

    from conftest import CHILD_CWD, child_env

    code = "import fastnn; print(fastnn.backend.winograd())"
    for value, want in (("0", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=child_env(FASTNN_WINOGRAD=value), cwd=CHILD_CWD, check=True)
        assert out.stdout.strip() == want
