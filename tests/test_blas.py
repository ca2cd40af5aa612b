"""The direct-BLAS path: NumPy's cblas_sgemm called from the compiled kernels' own threads, with
BLAS's own pool held at one thread while such a backend is selected (fastnn/_blas.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn import _blas, backend
from fastnn import kernels as K

from conftest import _require


def _openblas() -> bool:
    return any(i.get("internal_api") == "openblas" for i in _blas._blas_libraries())


def test_sgemm_is_found_in_numpys_openblas():
    if not _openblas():
        pytest.skip("NumPy is not linked to OpenBLAS here: the kernels use np.matmul")
    info = _blas.sgemm_info()
    assert _blas.sgemm_pointer() != 0, info
    assert "cblas_sgemm" in info["symbol"]


def test_blas_pool_is_one_thread_while_cython_calls_it_and_restored_for_numpy():
    _require("cython")
    if not backend._load("cython").direct_blas():
        pytest.skip("no direct BLAS here")

    def blas_threads():
        return {i["num_threads"] for i in backend.blas_info() if i["user_api"] == "blas"}

    before = backend.get_num_threads()
    try:
        backend.set_num_threads(2)
        with backend.using("cython"):
            assert blas_threads() == {1}
            assert backend.blas_threads() == 1
        with backend.using("numpy"):
            assert blas_threads() == {2}
        with backend.using("numba"):  # its GEMMs are np.matmul calls: BLAS gets the threads
            assert blas_threads() == {2}
    finally:
        backend.set_num_threads(before)


_FALLBACK = r"""
import numpy as np
from fastnn import backend, kernels as K
import fastnn._cython as cy
assert not cy.direct_blas()
rng = np.random.default_rng(0)
x = rng.standard_normal((9, 3, 11, 10)).astype(np.float32)
W = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
b = rng.standard_normal(5).astype(np.float32)
xd = rng.standard_normal((70, 40)).astype(np.float32)
Wd = rng.standard_normal((40, 33)).astype(np.float32)
bd = rng.standard_normal(33).astype(np.float32)
out = {}
for name in ("numpy", "cython"):
    with backend.using(name):
        y = K.conv2d_forward(x, W, b, 1, 1).copy()
        g = [a.copy() for a in K.conv2d_backward(np.ones_like(y), x, W, 1, 1)]
        yd = K.dense_forward(xd, Wd, bd, activation="relu").copy()
        gd = [a.copy() for a in K.dense_backward(np.ones_like(yd), xd, Wd)]
        out[name] = [y, *g, yd, *gd]
for a, r in zip(out["cython"], out["numpy"]):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_cython_kernels_fall_back_to_matmul_without_direct_blas():
    _require("cython")
    env = {**os.environ, "FASTNN_DIRECT_BLAS": "0"}
    res = subprocess.run([sys.executable, "-c", _FALLBACK], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


@pytest.mark.parametrize("shape", [(1, 2, 6, 6), (5, 3, 9, 7), (17, 4, 8, 8)])
def test_conv_backward_without_dx_gives_the_same_weight_gradients(backend_name, rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    W = rng.standard_normal((6, shape[1], 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = K.conv2d_forward(x, W, b, 1, 1)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dW, db = (a.copy() for a in K.conv2d_backward(dy, x, W, 1, 1))
    dx2, dW2, db2 = K.conv2d_backward(dy, x, W, 1, 1, need_dx=False)
    assert dx2 is None
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)


def test_cython_gemm_split_does_not_depend_on_the_thread_count(rng):
    # Shapes big enough for several blocks; the bits must not change with the threads. (Not so
    # for GEMMs through np.matmul: OpenBLAS's own threads split by the thread count, and its
    # result for an element can change with the block it lands in.)
    _require("cython")
    x = rng.standard_normal((256, 784)).astype(np.float32)
    W = rng.standard_normal((784, 512)).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    dy = rng.standard_normal((256, 512)).astype(np.float32)
    before = backend.get_num_threads()
    outs = []
    try:
        with backend.using("cython"):
            for n in (1, 2, 3):
                backend.set_num_threads(n)
                y = K.dense_forward(x, W, b).copy()
                outs.append([y, *(a.copy() for a in K.dense_backward(dy, x, W))])
    finally:
        backend.set_num_threads(before)
    for other in outs[1:]:
        for a, r in zip(other, outs[0]):
            np.testing.assert_array_equal(a, r)
