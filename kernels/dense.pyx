"""Dense (affine) layer for the Cython backend: the GEMMs (NumPy's BLAS, called from our threads:
_gemm.pxi), the fused bias + activation epilogue and the bias gradient. act codes: 0 none, 1 relu,
2 sigmoid."""

include "_parallel.pxi"
include "_gemm.pxi"

cdef extern from "fnn_transpose.h" nogil:
    void fnn_transpose(const float* src, Py_ssize_t lds, float* dst, Py_ssize_t ldd,
                       Py_ssize_t rows, Py_ssize_t cols)

import numpy as np
from libc.math cimport fabsf

cdef enum:
    _ROWS = 16     # rows per task in the epilogue
    _COLS = 128    # columns per task in the bias gradient (double accumulators on the stack)


cdef union _f32bits:
    float f
    unsigned int u


cdef inline float _exp_nonpos(float x) noexcept nogil:
    # exp(x) for x <= 0 (NaN stays NaN), float32 within ~2 ulp: Cephes' expf polynomial with
    # branch-free range reduction, so that gcc vectorises the loops that call it (libm's expf is a
    # scalar call). exp(x) = 2^k * exp(r), k = round(x / ln 2), |r| <= ln(2)/2; 2^k is applied as
    # two normal factors, so subnormal results come out right. Below -104 the result is 0 (set with
    # a bit mask: a compare-and-select on floats would stop gcc from vectorising).
    cdef float log2e = 1.44269504088896341, magic = 12582912.0  # 1.5 * 2^23: round to nearest
    cdef float c1 = 0.693359375, c2 = -2.12194440e-4, one = 1, lo = -104.0
    cdef float p0 = 1.9875691500e-4, p1 = 1.3981999507e-3, p2 = 8.3334519073e-3
    cdef float p3 = 4.1665795894e-2, p4 = 1.6666665459e-1, p5 = 5.0000001201e-1
    cdef float n, r, z, p
    cdef _f32bits t, s1, s2, res
    cdef int k, k1
    t.f = x * log2e + magic
    n = t.f - magic
    k = <int>t.u - 0x4B400000  # n as an integer (the low mantissa bits of t)
    r = x - n * c1
    r = r - n * c2
    z = r * r
    p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * z + r + one
    k1 = k >> 1
    s1.u = <unsigned int>(k1 + 127) << 23
    s2.u = <unsigned int>(k - k1 + 127) << 23
    res.f = p * s1.f * s2.f
    res.u = res.u & (<unsigned int>0 - <unsigned int>(not (x < lo)))
    return res.f


cdef inline float _sigmoid(float x) noexcept nogil:
    # exp only of -|x|: never overflows, for every finite x. The numerator is selected before the
    # one division, so the loop needs no branch.
    cdef float one = 1, e = _exp_nonpos(-fabsf(x))
    cdef float num = one if x >= 0 else e
    return num / (one + e)


cdef inline void _epilogue_task(float* y, const float* b, Py_ssize_t N, Py_ssize_t M, int act,
                                Py_ssize_t t) noexcept nogil:
    cdef Py_ssize_t r0 = t * _ROWS, r1 = r0 + _ROWS, r, m
    cdef float* row
    cdef float v
    if r1 > N:
        r1 = N
    for r in range(r0, r1):
        row = y + r * M
        if act == 1:
            for m in range(M):
                v = row[m] + b[m]
                row[m] = 0 if v < 0 else v  # NaN stays NaN, as np.maximum
        elif act == 2:
            for m in range(M):
                row[m] = _sigmoid(row[m] + b[m])
        else:
            for m in range(M):
                row[m] = row[m] + b[m]


cdef void _epilogue(float* y, const float* b, Py_ssize_t N, Py_ssize_t M, int act) noexcept nogil:
    cdef Py_ssize_t t, ntasks = (N + _ROWS - 1) // _ROWS
    if N * M >= PARALLEL_MIN_WORK and _nthreads > 1:
        for t in prange(ntasks, schedule="static", num_threads=_nthreads):
            _epilogue_task(y, b, N, M, act, t)
    else:
        for t in range(ntasks):
            _epilogue_task(y, b, N, M, act, t)


cdef inline void _colsum_task(const float* dy, Py_ssize_t N, Py_ssize_t M, Py_ssize_t t,
                              float* db) noexcept nogil:
    # db[m] for the columns m0:m1, each summed over the rows in order (double accumulators), so
    # the bits never depend on how the columns are split among threads.
    cdef double acc[_COLS]
    cdef Py_ssize_t m0 = t * _COLS, m1 = m0 + _COLS, n, m
    cdef const float* row
    if m1 > M:
        m1 = M
    for m in range(m1 - m0):
        acc[m] = 0
    for n in range(N):
        row = dy + n * M + m0
        for m in range(m1 - m0):
            acc[m] += row[m]
    for m in range(m1 - m0):
        db[m0 + m] = <float>acc[m]


cdef void _colsum(const float* dy, Py_ssize_t N, Py_ssize_t M, float* db) noexcept nogil:
    cdef Py_ssize_t t, ntasks = (M + _COLS - 1) // _COLS
    if N * M >= PARALLEL_MIN_WORK and _nthreads > 1 and ntasks > 1:
        for t in prange(ntasks, schedule="static", num_threads=_nthreads):
            _colsum_task(dy, N, M, t, db)
    else:
        for t in range(ntasks):
            _colsum_task(dy, N, M, t, db)


cdef inline bint _dx_by_transpose(Py_ssize_t N, Py_ssize_t K, Py_ssize_t M) noexcept nogil:
    # For a batch of up to 128 rows, OpenBLAS multiplies dy @ W.T (W's transpose as the right
    # operand) 13-26% slower than W @ dy.T (measured at one thread: (64, 784, 256) 333 vs 263 us,
    # (100, 4320, 100) 1007 vs 892, (64, 3136, 128) 662 vs 527; a tie from batch 256, and for
    # M = 10): there dx is computed transposed and transposed back (a few us). Shape only.
    return N <= _dx_t_max_n and M >= 64 and K >= 2 * N and 2.0 * N * K * M >= _GEMM_PART_FLOPS


cdef Py_ssize_t _dx_t_max_n = 128


def _set_dx_transposed_max(Py_ssize_t n):
    """The largest batch whose dx runs transposed (measurements); returns the old one."""
    global _dx_t_max_n
    old = _dx_t_max_n
    _dx_t_max_n = n
    return old


cdef void _transpose_rows(const float* src, Py_ssize_t rows, Py_ssize_t cols,
                          float* dst) noexcept nogil:
    # dst (cols, rows) = src (rows, cols), in blocks of 64 source rows over the threads
    cdef Py_ssize_t t, r0, nb = (rows + 63) // 64
    if rows * cols >= PARALLEL_MIN_WORK and _nthreads > 1 and nb > 1:
        for t in prange(nb, schedule="static", num_threads=_nthreads):
            r0 = t * 64
            fnn_transpose(src + r0 * cols, cols, dst + r0, rows, min(64, rows - r0), cols)
    else:
        fnn_transpose(src, cols, dst, rows, rows, cols)


cdef void _dx(const float* dy, const float* W, Py_ssize_t N, Py_ssize_t K, Py_ssize_t M,
              float* dx) noexcept nogil:
    # dx (N, K) = dy (N, M) @ W.T, W (K, M)
    cdef float* dxt = NULL
    if _dx_by_transpose(N, K, M):
        dxt = <float*>malloc(N * K * sizeof(float))
    if dxt == NULL:
        _gemm_parts(False, True, N, K, M, 1, dy, M, W, M, 0, dx, K)
        return
    _gemm_parts(False, True, K, N, M, 1, W, M, dy, M, 0, dxt, N)  # dx.T (K, N) = W @ dy.T
    _transpose_rows(dxt, K, N, dx)
    free(dxt)


def bias_add_act(float[:, ::1] y, const float[::1] b, int act):
    """In place: y (N, M) = act(y + b); act 0 none, 1 relu, 2 sigmoid."""
    if y.shape[0] == 0 or y.shape[1] == 0:
        return
    with nogil:
        _epilogue(&y[0, 0], &b[0], y.shape[0], y.shape[1], act)


def dense_forward(x, W, b, int act, y):
    """y = act(x @ W + b): the GEMM, then the fused epilogue."""
    cdef const float[:, ::1] xv = x
    cdef const float[:, ::1] Wv = W
    cdef float[:, ::1] yv = y
    cdef Py_ssize_t N = xv.shape[0], K = xv.shape[1], M = Wv.shape[1]
    if _sgemm == NULL or N == 0 or K == 0 or M == 0:
        np.matmul(x, W, out=y)
    else:
        with nogil:
            _gemm_parts(False, False, N, M, K, 1, &xv[0, 0], K, &Wv[0, 0], M, 0, &yv[0, 0], M)
    bias_add_act(y, b, act)


def dense_backward(dy, x, W, dx, dW, db):
    """dx = dy @ W.T (skipped when dx is None); dW = x.T @ dy; db = column sums of dy."""
    cdef const float[:, ::1] dyv = dy
    cdef const float[:, ::1] xv = x
    cdef const float[:, ::1] Wv = W
    cdef float[:, ::1] dWv = dW
    cdef float[:, ::1] dxv
    cdef float[::1] dbv = db
    cdef Py_ssize_t N = xv.shape[0], K = xv.shape[1], M = Wv.shape[1]
    if _sgemm == NULL or N == 0 or K == 0 or M == 0:
        if dx is not None:
            np.matmul(dy, W.T, out=dx)
        np.matmul(x.T, dy, out=dW)
    else:
        if dx is not None:
            dxv = dx
            with nogil:
                _dx(&dyv[0, 0], &Wv[0, 0], N, K, M, &dxv[0, 0])
        with nogil:
            _gemm_parts(True, False, K, M, N, 1, &xv[0, 0], K, &dyv[0, 0], M, 0, &dWv[0, 0], M)
    if M == 0:
        return
    if N == 0:
        db[...] = 0
        return
    with nogil:
        _colsum(&dyv[0, 0], N, M, &dbv[0])
