"""Dense (affine) layer (Numba backend): y = act(x @ W + b), W of shape (in_features, out_features).

Same interface as fastnn.reference.dense; act codes: 0 none, 1 relu, 2 sigmoid. The GEMMs call
NumPy's cblas_sgemm from our own threads in blocks fixed by the shape (_gemm.py), or np.matmul(...,
out=) when there is no usable symbol; the jitted code does the bias + activation epilogue and db.

The sigmoid uses `_exp_nonpos`, an exp for arguments <= 0 made only of arithmetic (Cephes' expf
polynomial, ~1 ulp) so that LLVM vectorises the loop: Numba's np.exp on float32 is a scalar libm
call, about 6x slower here (no SVML).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._common import PARALLEL_MIN_WORK
from ._gemm import gemm_parts, sgemm_pointer

_U = np.uint64


@intrinsic
def _bits_to_f32(typingctx, v):
    """Reinterpret the bits of an int32 as a float32."""
    if v != types.int32:
        return None
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _exp_nonpos(x):
    """exp(x) for float32 x <= 0 (or -inf, or NaN), branch-free, correct down to the denormals."""
    x = np.float32(-104.0) if x < np.float32(-104.0) else x  # exp(-104) < half the least denormal
    xs = x if x == x else np.float32(0.0)  # keep NaN out of the float -> int conversion
    fn = np.floor(xs * np.float32(1.44269504088896341) + np.float32(0.5))
    n = np.int32(fn)
    r = x - fn * np.float32(0.693359375) - fn * np.float32(-2.12194440e-4)
    z = r * r
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    e = p * z + r + np.float32(1.0)
    # e * 2**n in two exact steps, so that n < -126 (denormal results) rounds only once
    n1 = n >> np.int32(1)
    n2 = n - n1
    s1 = _bits_to_f32(np.int32((n1 + 127) << 23))
    s2 = _bits_to_f32(np.int32((n2 + 127) << 23))
    return e * s1 * s2


# error_model="numpy": no divide-by-zero check (1 + e >= 1), which would keep the loop scalar
@njit(cache=True, nogil=True, error_model="numpy")
def _bias_act_rows(yf, b, M, act, r0, r1):
    """Rows r0..r1-1 of y (flat, M columns): y = act(y + b)."""
    zero = np.float32(0.0)
    one = np.float32(1.0)
    if act == 0:
        for r in range(r0, r1):
            o = r * M
            for m in range(M):
                yf[_U(o + m)] = yf[_U(o + m)] + b[_U(m)]
    elif act == 1:
        for r in range(r0, r1):
            o = r * M
            for m in range(M):
                v = yf[_U(o + m)] + b[_U(m)]
                yf[_U(o + m)] = zero if v < zero else v  # NaN stays NaN, as np.maximum
    else:
        for r in range(r0, r1):
            o = r * M
            for m in range(M):
                v = yf[_U(o + m)] + b[_U(m)]
                e = _exp_nonpos(-abs(v))  # never overflows
                yf[_U(o + m)] = (one if v >= zero else e) / (one + e)


@njit(cache=True, nogil=True)
def _bias_act_serial(y, b, act):
    N, M = y.shape
    _bias_act_rows(y.reshape(-1), b, M, act, N - N, N)  # (not a literal 0: one compiled signature)


@njit(cache=True, nogil=True, parallel=True)
def _bias_act_parallel(y, b, act, rows_per_task):
    N, M = y.shape
    yf = y.reshape(-1)
    nt = (N + rows_per_task - 1) // rows_per_task
    for t in prange(nt):
        r0 = t * rows_per_task
        _bias_act_rows(yf, b, M, act, r0, min(r0 + rows_per_task, N))


def bias_add_act(y, b, act):
    """The epilogue, in place on y (N, M): y = act(y + b)."""
    N, M = y.shape
    act = int(act)
    if y.size < PARALLEL_MIN_WORK or N == 1:
        _bias_act_serial(y, b, act)
    else:
        # ~8192 elements per task: enough tasks for every thread, little scheduling overhead.
        _bias_act_parallel(y, b, act, max(1, 8192 // M))


def dense_forward(x, W, b, act, y):
    N, K = x.shape
    M = W.shape[1]
    fn = sgemm_pointer()
    if fn and N and K and M:
        gemm_parts(fn, False, False, N, M, K, 1.0, x.reshape(-1), K, W.reshape(-1), M, 0.0,
                   y.reshape(-1), M)
    else:
        np.matmul(x, W, out=y)
    bias_add_act(y, b, act)


# ------------------------------------------------------------------------- db = column sums of dy


@njit(cache=True, nogil=True)
def _colsum_cols(dyf, db, N, M, m0, m1):
    """db[m0:m1] = dy[:, m0:m1].sum(axis=0), row by row in float32 (NumPy's own order)."""
    for m in range(m0, m1):
        db[_U(m)] = dyf[_U(m)]
    for r in range(1, N):
        o = r * M
        for m in range(m0, m1):
            db[_U(m)] += dyf[_U(o + m)]


@njit(cache=True, nogil=True)
def _colsum_serial(dy, db):
    N, M = dy.shape
    _colsum_cols(dy.reshape(-1), db, N, M, M - M, M)


@njit(cache=True, nogil=True, parallel=True)
def _colsum_parallel(dy, db, cols_per_task):
    N, M = dy.shape
    dyf = dy.reshape(-1)
    nt = (M + cols_per_task - 1) // cols_per_task
    for t in prange(nt):
        m0 = t * cols_per_task
        _colsum_cols(dyf, db, N, M, m0, min(m0 + cols_per_task, M))


def dense_backward(dy, x, W, dx, dW, db):
    """dx may be None (first layer: nobody needs it)."""
    N, K = x.shape
    M = W.shape[1]
    fn = sgemm_pointer()
    if fn and N and K and M:
        dyf = dy.reshape(-1)
        if dx is not None:  # dx (N, K) = dy (N, M) @ W.T
            gemm_parts(fn, False, True, N, K, M, 1.0, dyf, M, W.reshape(-1), M, 0.0,
                       dx.reshape(-1), K)
        # dW (K, M) = x.T @ dy
        gemm_parts(fn, True, False, K, M, N, 1.0, x.reshape(-1), K, dyf, M, 0.0, dW.reshape(-1), M)
    else:
        if dx is not None:
            np.matmul(dy, W.T, out=dx)
        np.matmul(x.T, dy, out=dW)
    if dy.size < PARALLEL_MIN_WORK or M < 128:
        _colsum_serial(dy, db)
    else:
        # column blocks (multiples of 64 floats = whole cache lines): every column is summed over
        # the rows in the same order whatever the partition.
        _colsum_parallel(dy, db, max(64, (M // 8) // 64 * 64))
