"""The direct-BLAS path: NumPy's cblas_sgemm called from the compiled kernels' own threads, with
BLAS's own pool held at one thread while such a backend is selected (fastnn/_blas.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import CHILD_CWD, _require, child_env, run_across_threads

from fastnn import _blas, backend
from fastnn import kernels as K


def _openblas() -> bool:
    return any(i.get("internal_api") == "openblas" for i in _blas._blas_libraries())


def test_sgemm_is_found_in_numpys_openblas():
    if os.environ.get("FASTNN_DIRECT_BLAS", "1").strip() == "0":
        pytest.skip("FASTNN_DIRECT_BLAS=0: the kernels use np.matmul")
    if not _openblas():
        pytest.skip("NumPy is not linked to OpenBLAS here: the kernels use np.matmul")
    info = _blas.sgemm_info()
    assert _blas.sgemm_pointer() != 0, info
    assert "cblas_sgemm" in info["symbol"]


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_blas_pool_is_one_thread_while_a_compiled_backend_calls_it_and_restored_for_numpy(name):
    _require(name)
    if not backend._load(name).direct_blas():
        pytest.skip("no direct BLAS here")

    def blas_threads():
        return {i["num_threads"] for i in backend.blas_info() if i["user_api"] == "blas"}

    before = backend.get_num_threads()
    try:
        backend.set_num_threads(2)
        with backend.using(name):
            assert backend.gemm_in_own_threads()
            assert blas_threads() == {1}
            assert backend.blas_threads() == 1
        with backend.using("numpy"):
            assert not backend.gemm_in_own_threads()
            assert blas_threads() == {2}
        with backend.using(name):
            backend.set_num_threads(3)  # a new thread count keeps BLAS's pool at one thread
            assert blas_threads() == {1}
    finally:
        backend.set_num_threads(before)


_FALLBACK = r"""
import sys
import numpy as np
from fastnn import backend, kernels as K
name = sys.argv[1]
assert not backend._load(name).direct_blas()
rng = np.random.default_rng(0)
x = rng.standard_normal((9, 3, 11, 10)).astype(np.float32)
W = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
b = rng.standard_normal(5).astype(np.float32)
xd = rng.standard_normal((70, 40)).astype(np.float32)
Wd = rng.standard_normal((40, 33)).astype(np.float32)
bd = rng.standard_normal(33).astype(np.float32)
out = {}
for backend_name in ("numpy", name):
    with backend.using(backend_name):
        # GEMMs through np.matmul: BLAS's own pool keeps its threads
        assert not backend.gemm_in_own_threads()
        assert backend.blas_threads() == backend.get_num_threads()
        y = K.conv2d_forward(x, W, b, 1, 1).copy()
        g = [a.copy() for a in K.conv2d_backward(np.ones_like(y), x, W, 1, 1)]
        yd = K.dense_forward(xd, Wd, bd, activation="relu").copy()
        gd = [a.copy() for a in K.dense_backward(np.ones_like(yd), xd, Wd)]
        out[backend_name] = [y, *g, yd, *gd]
for a, r in zip(out[name], out["numpy"]):
    assert a.dtype == np.float32
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)
print("ok")
"""


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_compiled_kernels_fall_back_to_matmul_without_direct_blas(name):
    _require(name)
    env = child_env(FASTNN_DIRECT_BLAS="0")
    res = subprocess.run([sys.executable, "-c", _FALLBACK, name], capture_output=True, text=True,
                         env=env, timeout=300, cwd=CHILD_CWD)
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


_SPLIT = r"""
import sys
import numpy as np
from fastnn import backend, kernels as K
name = sys.argv[1]
if not backend._load(name).direct_blas():
    print("skip")
    sys.exit()
rng = np.random.default_rng(12345)
x = rng.standard_normal((256, 784)).astype(np.float32)
W = rng.standard_normal((784, 512)).astype(np.float32)
b = rng.standard_normal(512).astype(np.float32)
dy = rng.standard_normal((256, 512)).astype(np.float32)
xc = rng.standard_normal((17, 4, 12, 12)).astype(np.float32)
Wc = rng.standard_normal((16, 4, 3, 3)).astype(np.float32)
bc = rng.standard_normal(16).astype(np.float32)
dyc = rng.standard_normal((17, 16, 12, 12)).astype(np.float32)
# a long inner dimension and a small output: the forward GEMM splits the inner dimension
xk = rng.standard_normal((100, 4320)).astype(np.float32)
Wk = rng.standard_normal((4320, 100)).astype(np.float32)
bk = rng.standard_normal(100).astype(np.float32)
dyk = rng.standard_normal((100, 100)).astype(np.float32)
outs = []
with backend.using(name):
    for n in (1, 2, 3):
        backend.set_num_threads(n)
        assert backend._load(name).get_num_threads() == n
        out = [K.dense_forward(x, W, b).copy(), *(a.copy() for a in K.dense_backward(dy, x, W))]
        out += [K.conv2d_forward(xc, Wc, bc, 1, 1).copy()]
        out += [a.copy() for a in K.conv2d_backward(dyc, xc, Wc, 1, 1)]
        out += [K.dense_forward(xk, Wk, bk, "relu").copy()]
        out += [a.copy() for a in K.dense_backward(dyk, xk, Wk)]
        outs.append(out)
for other in outs[1:]:
    for a, r in zip(other, outs[0]):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, r)
print("ok")
"""


@pytest.mark.parametrize("name", ["cython", "numba"])
def test_gemm_split_does_not_depend_on_the_thread_count(name):
    # Shapes big enough for several GEMM blocks and conv chunks; the bits must not change with the
    # threads. (Not so for GEMMs through np.matmul: OpenBLAS's own threads split by the thread
    # count, and its result for an element can change with the block it lands in.) In a fresh
    # process, so that Numba's pool can have 3 threads (NUMBA_NUM_THREADS caps it at import).
    _require(name)
    res = run_across_threads(_SPLIT, name)
    if res.stdout.strip() == "skip":
        pytest.skip("no direct BLAS here")
    assert res.stdout.strip() == "ok"
