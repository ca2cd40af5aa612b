"""Convolution for the Cython backend: im2col / col2im, and conv2d forward and backward as one
parallel loop over the images, each image's im2col, GEMM (NumPy's BLAS called from our threads,
_gemm.pxi) and epilogue run back to back while its data is in cache. Without a usable cblas_sgemm
the GEMMs go through np.matmul on the whole batch instead (_conv2d_forward_matmul)."""

include "_parallel.pxi"
include "_gemm.pxi"

import numpy as np
from libc.string cimport memset

# Forward with a small K = C*kh*kw (a network's first layer): a register-blocked loop instead of
# sgemm, whose packing and edge code dominate when the inner dimension is ~10 (fnn_smallk.h). Only
# where the CPU has a hardware FMA (elsewhere that loop would call libm's software fmaf).
cdef extern from "fnn_smallk.h" nogil:
    int FNN_SK_MAXK
    int fnn_smallk_usable()
    void fnn_smallk_forward(const float* W2, const float* b, const float* cols, Py_ssize_t F,
                            Py_ssize_t K, Py_ssize_t P, float* y)

cdef enum:
    # Largest K on that path. Forward at 1 thread (Zen 4, AVX-512 variant, 28x28 and 32x32
    # images): K=4 and 9 run 1.3-1.7x faster than sgemm, K=16 ~1.1x, K=25 from 1.5x faster (F=8)
    # to 5% slower (F=30), K=27 and 32 5-15% slower.
    _SMALLK_MAX = 16

cdef Py_ssize_t _smallk_max = _SMALLK_MAX if fnn_smallk_usable() else 0

cdef enum:
    _T = 16     # transpose tile (16 floats: one 64-byte line)
    _PB = 64    # output pixels per task in the forward transpose


cdef inline int _out_size(int size, int k, int stride, int pad) noexcept nogil:
    return (size + 2 * pad - k) // stride + 1


cdef inline int _clamp(int v, int lo, int hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline void _copy_small(float* d, const float* s, int kw) noexcept nogil:
    # d[0:kw] = s[0:kw], unrolled for the usual widths (kw is a constant after _im2col_task_k).
    cdef int j
    if kw == 3:
        d[0] = s[0]; d[1] = s[1]; d[2] = s[2]
    elif kw == 5:
        d[0] = s[0]; d[1] = s[1]; d[2] = s[2]; d[3] = s[3]; d[4] = s[4]
    elif kw == 2:
        d[0] = s[0]; d[1] = s[1]
    elif kw == 1:
        d[0] = s[0]
    else:
        for j in range(kw):
            d[j] = s[j]


cdef inline void _add_small(float* d, const float* s, int kw) noexcept nogil:
    # d[0:kw] += s[0:kw], in ascending j.
    cdef int j
    if kw == 3:
        d[0] += s[0]; d[1] += s[1]; d[2] += s[2]
    elif kw == 5:
        d[0] += s[0]; d[1] += s[1]; d[2] += s[2]; d[3] += s[3]; d[4] += s[4]
    elif kw == 2:
        d[0] += s[0]; d[1] += s[1]
    elif kw == 1:
        d[0] += s[0]
    else:
        for j in range(kw):
            d[j] += s[j]


# ---------------------------------------------------------------------------------------------
# im2col: one task per (n, oh) fills the OW rows of cols for that output row.

cdef inline void _im2col_task(const float* x, int C, int H, int W, int kh, int kw, int stride,
                              int pad, int OH, int OW, Py_ssize_t t, float* cols) noexcept nogil:
    cdef Py_ssize_t n = t // OH, K = <Py_ssize_t>C * kh * kw, o
    cdef int oh = <int>(t % OH), ow, c, i, j, iw0, jlo, jhi
    cdef int ih0 = oh * stride - pad
    cdef int ilo = _clamp(-ih0, 0, kh), ihi = _clamp(H - ih0, ilo, kh)
    cdef const float* xn = x + n * C * H * W
    cdef float* d = cols + t * OW * K
    for ow in range(OW):
        iw0 = ow * stride - pad
        jlo = _clamp(-iw0, 0, kw)
        jhi = _clamp(W - iw0, jlo, kw)
        for c in range(C):
            if ilo > 0:
                memset(d, 0, ilo * kw * sizeof(float))
                d += ilo * kw
            o = (<Py_ssize_t>c * H + ih0 + ilo) * W + iw0  # x offset of (c, ih0 + ilo, iw0)
            if jlo == 0 and jhi == kw:  # the window row lies inside the image
                for i in range(ilo, ihi):
                    _copy_small(d, xn + o, kw)
                    o += W
                    d += kw
            else:
                for i in range(ilo, ihi):
                    for j in range(jlo):
                        d[j] = 0
                    for j in range(jlo, jhi):
                        d[j] = xn[o + j]
                    for j in range(jhi, kw):
                        d[j] = 0
                    o += W
                    d += kw
            if ihi < kh:
                memset(d, 0, (kh - ihi) * kw * sizeof(float))
                d += (kh - ihi) * kw


cdef inline void _im2col_task_k(const float* x, int C, int H, int W, int kh, int kw, int stride,
                                int pad, int OH, int OW, Py_ssize_t t, float* cols) noexcept nogil:
    # Constant kernel sizes for the common cases, so the compiler unrolls the inner copies.
    if kh == 3 and kw == 3:
        _im2col_task(x, C, H, W, 3, 3, stride, pad, OH, OW, t, cols)
    elif kh == 5 and kw == 5:
        _im2col_task(x, C, H, W, 5, 5, stride, pad, OH, OW, t, cols)
    elif kh == 1 and kw == 1:
        _im2col_task(x, C, H, W, 1, 1, stride, pad, OH, OW, t, cols)
    elif kh == 2 and kw == 2:
        _im2col_task(x, C, H, W, 2, 2, stride, pad, OH, OW, t, cols)
    else:
        _im2col_task(x, C, H, W, kh, kw, stride, pad, OH, OW, t, cols)


cdef void _im2col(const float* x, int N, int C, int H, int W, int kh, int kw, int stride, int pad,
                  float* cols) noexcept nogil:
    cdef int OH = _out_size(H, kh, stride, pad), OW = _out_size(W, kw, stride, pad)
    cdef Py_ssize_t t, ntasks = <Py_ssize_t>N * OH
    if kh == 1 and kw == 1 and stride == 1 and pad == 0:
        _planes_to_rows_plain(x, N, C, <Py_ssize_t>H * W, cols)
        return
    if ntasks * OW * C * kh * kw >= PARALLEL_MIN_WORK and _nthreads > 1:
        for t in prange(ntasks, schedule="static", num_threads=_nthreads):
            _im2col_task_k(x, C, H, W, kh, kw, stride, pad, OH, OW, t, cols)
    else:
        for t in range(ntasks):
            _im2col_task_k(x, C, H, W, kh, kw, stride, pad, OH, OW, t, cols)


# ---------------------------------------------------------------------------------------------
# col2im: a task owns the planes dx[n, c0:c1] (no two tasks write one element). Every element sums
# its contributions in ascending row order, whatever the split, so the bits never depend on it.

cdef inline void _col2im_task(const float* cols, int C, int H, int W, int kh, int kw, int stride,
                              int pad, int OH, int OW, int nblk, int cb, Py_ssize_t t,
                              float* dx) noexcept nogil:
    cdef Py_ssize_t n = t // nblk, K = <Py_ssize_t>C * kh * kw, HW = <Py_ssize_t>H * W, o
    cdef int c0 = <int>(t % nblk) * cb, c1 = c0 + cb
    cdef int oh, ow, c, i, j, ih0, iw0, ilo, ihi, jlo, jhi
    cdef const float* s
    cdef float* dxn = dx + n * C * HW
    if c1 > C:
        c1 = C
    if c0 >= c1:
        return
    memset(dxn + c0 * HW, 0, (c1 - c0) * HW * sizeof(float))
    for oh in range(OH):
        ih0 = oh * stride - pad
        ilo = _clamp(-ih0, 0, kh)
        ihi = _clamp(H - ih0, ilo, kh)
        for ow in range(OW):
            iw0 = ow * stride - pad
            jlo = _clamp(-iw0, 0, kw)
            jhi = _clamp(W - iw0, jlo, kw)
            s = cols + ((n * OH + oh) * OW + ow) * K + c0 * kh * kw
            for c in range(c0, c1):
                o = (<Py_ssize_t>c * H + ih0 + ilo) * W + iw0  # dx offset of (c, ih0 + ilo, iw0)
                if jlo == 0 and jhi == kw:
                    for i in range(ilo, ihi):
                        _add_small(dxn + o, s + i * kw, kw)
                        o += W
                else:
                    for i in range(ilo, ihi):
                        for j in range(jlo, jhi):
                            dxn[o + j] += s[i * kw + j]
                        o += W
                s += kh * kw


cdef inline void _col2im_task_k(const float* cols, int C, int H, int W, int kh, int kw,
                                int stride, int pad, int OH, int OW, int nblk, int cb, Py_ssize_t t,
                                float* dx) noexcept nogil:
    if kh == 3 and kw == 3:
        _col2im_task(cols, C, H, W, 3, 3, stride, pad, OH, OW, nblk, cb, t, dx)
    elif kh == 5 and kw == 5:
        _col2im_task(cols, C, H, W, 5, 5, stride, pad, OH, OW, nblk, cb, t, dx)
    elif kh == 1 and kw == 1:
        _col2im_task(cols, C, H, W, 1, 1, stride, pad, OH, OW, nblk, cb, t, dx)
    elif kh == 2 and kw == 2:
        _col2im_task(cols, C, H, W, 2, 2, stride, pad, OH, OW, nblk, cb, t, dx)
    else:
        _col2im_task(cols, C, H, W, kh, kw, stride, pad, OH, OW, nblk, cb, t, dx)


cdef void _col2im(const float* cols, int N, int C, int H, int W, int kh, int kw, int stride,
                  int pad, float* dx) noexcept nogil:
    cdef int OH = _out_size(H, kh, stride, pad), OW = _out_size(W, kw, stride, pad)
    cdef int nblk = 1, cb = C
    cdef Py_ssize_t t
    if kh == 1 and kw == 1 and stride == 1 and pad == 0:
        _rows_to_planes(cols, NULL, N, C, <Py_ssize_t>H * W, dx)
        return
    if <Py_ssize_t>N * OH * OW * C * kh * kw >= PARALLEL_MIN_WORK and _nthreads > 1:
        if N < 4 * _nthreads:  # few images: split channels too, so every thread gets work
            nblk = _clamp((4 * _nthreads + N - 1) // N, 1, C)
            cb = (C + nblk - 1) // nblk
            nblk = (C + cb - 1) // cb
        for t in prange(<Py_ssize_t>N * nblk, schedule="static", num_threads=_nthreads):
            _col2im_task_k(cols, C, H, W, kh, kw, stride, pad, OH, OW, nblk, cb, t, dx)
    else:
        for t in range(N):
            _col2im_task_k(cols, C, H, W, kh, kw, stride, pad, OH, OW, 1, C, t, dx)


# ---------------------------------------------------------------------------------------------
# The (N*P, F) <-> (N, F, P) transposes, in 16 x 16 tiles (_T). Constant trip counts for full tiles
# let gcc unroll and vectorise them.

cdef inline void _tile_t(const float* src, Py_ssize_t lds, float* dst, Py_ssize_t ldd, int rows,
                         int cols) noexcept nogil:
    # dst[c, r] = src[r, c] for r < rows, c < cols.
    cdef int r, c
    if rows == _T and cols == _T:
        for c in range(_T):
            for r in range(_T):
                dst[c * ldd + r] = src[r * lds + c]
    else:
        for c in range(cols):
            for r in range(rows):
                dst[c * ldd + r] = src[r * lds + c]


cdef inline void _tile_t_bias(const float* src, Py_ssize_t lds, const float* b, float* dst,
                              Py_ssize_t ldd, int rows, int cols) noexcept nogil:
    # dst[c, r] = src[r, c] + b[c] for r < rows, c < cols (b NULL: + 0, as col2im's 0 + v).
    cdef int r, c
    cdef float bc = 0
    if rows == _T and cols == _T:
        for c in range(_T):
            if b != NULL:
                bc = b[c]
            for r in range(_T):
                dst[c * ldd + r] = src[r * lds + c] + bc
    else:
        for c in range(cols):
            if b != NULL:
                bc = b[c]
            for r in range(rows):
                dst[c * ldd + r] = src[r * lds + c] + bc


# Forward epilogue: y[n, f, p] = tmp[n*P + p, f] + b[f]; a task is (n, block of _PB pixels).
# Also col2im of a 1x1, stride-1, unpadded kernel (b = NULL).

cdef inline void _rows_to_planes_task(const float* tmp, const float* b, int F, Py_ssize_t P,
                                      Py_ssize_t nblk, Py_ssize_t t, float* y) noexcept nogil:
    cdef Py_ssize_t n = t // nblk, p0 = (t % nblk) * _PB, p1 = p0 + _PB, p
    cdef int f, tp, tf
    cdef const float* src = tmp + n * P * F
    cdef float* dst = y + n * F * P
    if p1 > P:
        p1 = P
    for tp in range(<int>((p1 - p0 + _T - 1) // _T)):
        p = p0 + tp * _T
        for tf in range((F + _T - 1) // _T):
            f = tf * _T
            _tile_t_bias(src + p * F + f, F, b + f if b != NULL else NULL, dst + f * P + p, P,
                         <int>(p1 - p if p1 - p < _T else _T), F - f if F - f < _T else _T)


cdef void _rows_to_planes(const float* tmp, const float* b, int N, int F, Py_ssize_t P,
                          float* y) noexcept nogil:
    cdef Py_ssize_t t, nblk = (P + _PB - 1) // _PB
    if <Py_ssize_t>N * F * P >= PARALLEL_MIN_WORK and _nthreads > 1:
        for t in prange(N * nblk, schedule="static", num_threads=_nthreads):
            _rows_to_planes_task(tmp, b, F, P, nblk, t, y)
    else:
        for t in range(N * nblk):
            _rows_to_planes_task(tmp, b, F, P, nblk, t, y)


# Backward prologue: dyt[n*P + p, f] = dy[n, f, p] and db[f] = sum over (n, p), in one pass.
# A task owns channels f0:f0+_T and sums each over every (n, p) in a fixed order: _T double lanes
# (lane = p % _T), added up lane by lane at the end, so the bits never depend on the threads.

cdef inline void _planes_to_rows_task(const float* dy, int N, int F, Py_ssize_t P, int t,
                                      float* dyt, float* db) noexcept nogil:
    cdef int f0 = t * _T, nf = F - f0 if F - f0 < _T else _T, f, n, k, pe
    cdef double acc[_T][_T]
    cdef double s
    cdef Py_ssize_t p, tp
    cdef const float* src
    memset(&acc[0][0], 0, sizeof(acc))
    for n in range(N):
        for tp in range((P + _T - 1) // _T):
            p = tp * _T
            pe = <int>(P - p) if P - p < _T else _T
            src = dy + (<Py_ssize_t>n * F + f0) * P + p
            if pe == _T:
                for f in range(nf):
                    for k in range(_T):
                        acc[f][k] += src[f * P + k]
            else:
                for f in range(nf):
                    for k in range(pe):
                        acc[f][k] += src[f * P + k]
            _tile_t(src, P, dyt + (<Py_ssize_t>n * P + p) * F + f0, F, nf, pe)
    for f in range(nf):
        s = 0
        for k in range(_T):
            s += acc[f][k]
        db[f0 + f] = <float>s


cdef void _planes_to_rows(const float* dy, int N, int F, Py_ssize_t P, float* dyt,
                          float* db) noexcept nogil:
    cdef int t, ntasks = (F + _T - 1) // _T
    if <Py_ssize_t>N * F * P >= PARALLEL_MIN_WORK and _nthreads > 1 and ntasks > 1:
        for t in prange(ntasks, schedule="static", num_threads=_nthreads):
            _planes_to_rows_task(dy, N, F, P, t, dyt, db)
    else:
        for t in range(ntasks):
            _planes_to_rows_task(dy, N, F, P, t, dyt, db)


# im2col of a 1x1, stride-1, unpadded kernel is a plain transpose: cols[n*P + p, c] = x[n, c, p].

cdef inline void _planes_to_rows_plain_task(const float* x, int C, Py_ssize_t P, Py_ssize_t nblk,
                                            Py_ssize_t t, float* cols) noexcept nogil:
    cdef Py_ssize_t n = t // nblk, p0 = (t % nblk) * _PB, p1 = p0 + _PB, p
    cdef int c, tp, tc
    if p1 > P:
        p1 = P
    for tp in range(<int>((p1 - p0 + _T - 1) // _T)):
        p = p0 + tp * _T
        for tc in range((C + _T - 1) // _T):
            c = tc * _T
            _tile_t(x + (n * C + c) * P + p, P, cols + (n * P + p) * C + c, C,
                    C - c if C - c < _T else _T, <int>(p1 - p if p1 - p < _T else _T))


cdef void _planes_to_rows_plain(const float* x, int N, int C, Py_ssize_t P,
                                float* cols) noexcept nogil:
    cdef Py_ssize_t t, nblk = (P + _PB - 1) // _PB
    if <Py_ssize_t>N * C * P >= PARALLEL_MIN_WORK and _nthreads > 1:
        for t in prange(N * nblk, schedule="static", num_threads=_nthreads):
            _planes_to_rows_plain_task(x, C, P, nblk, t, cols)
    else:
        for t in range(N * nblk):
            _planes_to_rows_plain_task(x, C, P, nblk, t, cols)


# ---------------------------------------------------------------------------------------------
# Python-level entry points (reference signatures; destination passing).

def im2col(const float[:, :, :, ::1] x, int kh, int kw, int stride, int pad, float[:, ::1] cols):
    """cols (N*OH*OW, C*kh*kw): rows (n, oh, ow), columns (c, i, j); zero outside the image."""
    if cols.shape[0] == 0 or cols.shape[1] == 0:
        return
    with nogil:
        _im2col(&x[0, 0, 0, 0], <int>x.shape[0], <int>x.shape[1], <int>x.shape[2],
                <int>x.shape[3], kh, kw, stride, pad, &cols[0, 0])


def col2im(const float[:, ::1] cols, int kh, int kw, int stride, int pad, float[:, :, :, ::1] dx):
    """The adjoint of im2col: dx (N, C, H, W) = every column entry summed back at its pixel."""
    if dx.shape[0] == 0 or dx.shape[1] == 0 or dx.shape[2] == 0 or dx.shape[3] == 0:
        return
    if cols.shape[0] == 0:
        dx[...] = 0
        return
    with nogil:
        _col2im(&cols[0, 0], <int>dx.shape[0], <int>dx.shape[1], <int>dx.shape[2],
                <int>dx.shape[3], kh, kw, stride, pad, &dx[0, 0, 0, 0])


# ---------------------------------------------------------------------------------------------
# conv2d, one image per task, on the image's columns in "plane" layout: colsP_n (K, P), one row per
# weight k = (c, i, j) holding that weight's input pixel for every output pixel p = (oh, ow) (the
# transpose of im2col's rows for image n; K = C*kh*kw, P = OH*OW). A row is a shifted copy of input
# rows (contiguous for stride 1), and every GEMM reads it without a transpose:
#   y_n (F, P) = W2 (F, K) @ colsP_n + b          (already NCHW)
#   dW = sum_n dy_n @ colsP_n.T ;  db = sum_n (row sums of dy_n)
#   dcolsP_n (K, P) = W2.T @ dy_n ;  dx_n = the adjoint of the copy (shifted rows added back)
# `cols` (N*P*K floats) holds the N blocks colsP_n one after another: CONV_COLS_LAYOUT = "planes".

CONV_COLS_LAYOUT = "planes"


cdef inline void _row_window(int OW, int W, int stride, int pad, int j, int* lo,
                             int* hi) noexcept nogil:
    # The output columns ow whose input column ow*stride - pad + j lies inside [0, W).
    cdef int a = pad - j, b = W + pad - j  # need a <= ow*stride < b
    lo[0] = 0 if a <= 0 else (a + stride - 1) // stride
    hi[0] = 0 if b <= 0 else (b + stride - 1) // stride
    if hi[0] > OW:
        hi[0] = OW
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef inline void _im2planes_image(const float* xn, int C, int H, int W, int kh, int kw, int stride,
                                  int pad, int OH, int OW, float* d) noexcept nogil:
    # d (K, P) = the plane-layout columns of one image xn (C, H, W).
    cdef int c, i, j, oh, ow, ih, lo, hi
    cdef const float* src
    cdef float* row
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                _row_window(OW, W, stride, pad, j, &lo, &hi)
                for oh in range(OH):
                    row = d + oh * OW
                    ih = oh * stride - pad + i
                    if ih < 0 or ih >= H:
                        memset(row, 0, OW * sizeof(float))
                        continue
                    src = xn + (<Py_ssize_t>c * H + ih) * W + j - pad
                    for ow in range(lo):
                        row[ow] = 0
                    if stride == 1:
                        for ow in range(lo, hi):
                            row[ow] = src[ow]
                    else:
                        for ow in range(lo, hi):
                            row[ow] = src[ow * stride]
                    for ow in range(hi, OW):
                        row[ow] = 0
                d += <Py_ssize_t>OH * OW


cdef inline void _planes2im_image(const float* d, int C, int H, int W, int kh, int kw, int stride,
                                  int pad, int OH, int OW, float* dxn) noexcept nogil:
    # dxn (C, H, W) = the adjoint of _im2planes_image: each entry added back at its pixel, in the
    # order of the rows k (then oh, ow), so the bits never depend on the threads.
    cdef int c, i, j, oh, ow, ih, lo, hi
    cdef float* dst
    cdef const float* row
    memset(dxn, 0, <Py_ssize_t>C * H * W * sizeof(float))
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                _row_window(OW, W, stride, pad, j, &lo, &hi)
                for oh in range(OH):
                    ih = oh * stride - pad + i
                    if ih >= 0 and ih < H:
                        row = d + oh * OW
                        dst = dxn + (<Py_ssize_t>c * H + ih) * W + j - pad
                        if stride == 1:
                            for ow in range(lo, hi):
                                dst[ow] += row[ow]
                        else:
                            for ow in range(lo, hi):
                                dst[ow * stride] += row[ow]
                d += <Py_ssize_t>OH * OW


cdef inline void _conv_fwd_image(const float* x, const float* W2, const float* b, int C, int H,
                                 int W, int F, int kh, int kw, int stride, int pad, int OH, int OW,
                                 Py_ssize_t n, float* cols, float* y) noexcept nogil:
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW, K = <Py_ssize_t>C * kh * kw, p
    cdef int f
    cdef float* yf
    cdef float* cn = cols + n * K * P
    cdef float bf
    _im2planes_image(x + n * C * H * W, C, H, W, kh, kw, stride, pad, OH, OW, cn)
    if K <= _smallk_max:
        fnn_smallk_forward(W2, b, cn, F, K, P, y + n * F * P)
        return
    _gemm(False, False, F, P, K, 1, W2, K, cn, P, 0, y + n * F * P, P)
    for f in range(F):
        yf = y + (n * F + f) * P
        bf = b[f]
        for p in range(P):
            yf[p] = yf[p] + bf


cdef void _conv_fwd(const float* x, const float* W2, const float* b, int N, int C, int H, int W,
                    int F, int kh, int kw, int stride, int pad, float* cols,
                    float* y) noexcept nogil:
    cdef int OH = _out_size(H, kh, stride, pad), OW = _out_size(W, kw, stride, pad)
    cdef Py_ssize_t n
    if N > 1 and _nthreads > 1 and <Py_ssize_t>N * OH * OW * C * kh * kw >= PARALLEL_MIN_WORK:
        for n in prange(N, schedule="dynamic", num_threads=_nthreads):
            _conv_fwd_image(x, W2, b, C, H, W, F, kh, kw, stride, pad, OH, OW, n, cols, y)
    else:
        for n in range(N):
            _conv_fwd_image(x, W2, b, C, H, W, F, kh, kw, stride, pad, OH, OW, n, cols, y)


def _set_smallk_max(int k):
    """Run the forward GEMM of convolutions with C*kh*kw <= k in fnn_smallk.h (0: all on sgemm);
    returns the old limit. For tests and measurements: the default is _SMALLK_MAX (timed against
    sgemm), or 0 where the CPU has no hardware FMA."""
    global _smallk_max
    cdef Py_ssize_t old = _smallk_max
    if k > FNN_SK_MAXK:
        raise ValueError(f"_set_smallk_max: at most {FNN_SK_MAXK}")
    _smallk_max = k if k > 0 else 0
    return old


def conv_cols(const float[:, :, :, ::1] x, int kh, int kw, int stride, int pad,
              float[:, ::1] cols, int F):
    """The columns conv2d_backward reads for F output channels, in this backend's layout
    (CONV_COLS_LAYOUT "planes": per image n, (C*kh*kw, OH*OW) at offset n*K*P of the flat
    buffer; for the convolutions that run as Winograd, the blocks of V tiles of _winograd.pxi)."""
    cdef int N = <int>x.shape[0], C = <int>x.shape[1], H = <int>x.shape[2], W = <int>x.shape[3]
    cdef int OH = _out_size(H, kh, stride, pad), OW = _out_size(W, kw, stride, pad)
    cdef Py_ssize_t n, KP = <Py_ssize_t>C * kh * kw * OH * OW
    cdef _Wg g
    if cols.shape[0] == 0 or cols.shape[1] == 0:
        return
    cdef int status
    if _wg_plan(N, C, H, W, F, kh, kw, stride, pad, &g):
        with nogil:
            status = _wg_cols(&x[0, 0, 0, 0], &g, &cols[0, 0])
        if status < 0:
            raise MemoryError("conv_cols: no memory for the Winograd scratch")
        return
    with nogil:
        if N > 1 and _nthreads > 1 and N * KP >= PARALLEL_MIN_WORK:
            for n in prange(N, schedule="dynamic", num_threads=_nthreads):
                _im2planes_image(&x[0, 0, 0, 0] + n * C * H * W, C, H, W, kh, kw, stride, pad,
                                 OH, OW, &cols[0, 0] + n * KP)
        else:
            for n in range(N):
                _im2planes_image(&x[0, 0, 0, 0] + n * C * H * W, C, H, W, kh, kw, stride, pad,
                                 OH, OW, &cols[0, 0] + n * KP)


cdef inline float _row_sum(const float* a, Py_ssize_t n) noexcept nogil:
    # sum of a[0:n] in 16 float lanes (lane = index % 16, so gcc vectorises it), lanes added in
    # order at the end: the same bits wherever it runs.
    cdef float lanes[16]
    cdef float s = 0
    cdef Py_ssize_t i, k, full = n - n % 16
    for k in range(16):
        lanes[k] = 0
    for i in range(0, full, 16):
        for k in range(16):
            lanes[k] += a[i + k]
    for i in range(full, n):
        lanes[i - full] += a[i]
    for k in range(16):
        s += lanes[k]
    return s


include "_winograd.pxi"


cdef inline void _conv_bwd_chunk(const float* dy, const float* cols, const float* W2, int C, int H,
                                 int W, int F, int kh, int kw, int stride, int pad, int OH, int OW,
                                 Py_ssize_t n0, Py_ssize_t n1, float* dWt, float* db,
                                 float* dcols, float* dx) noexcept nogil:
    # Images n0:n1: dWt (K, F), the transpose of dW, and db (F) of these images only (colsP_n @
    # dy_n.T runs ~25% faster in BLAS than dy_n @ colsP_n.T); dx of each. dWt or dx NULL: skipped.
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW, K = <Py_ssize_t>C * kh * kw, n
    cdef const float* dyn
    cdef float s
    cdef int f
    for n in range(n0, n1):
        dyn = dy + n * F * P
        if dWt != NULL:
            _gemm(False, True, K, F, P, 1, cols + n * K * P, P, dyn, P, 0 if n == n0 else 1, dWt,
                  F)
        for f in range(F):
            s = _row_sum(dyn + f * P, P)
            db[f] = s if n == n0 else db[f] + s
        if dx != NULL:
            _gemm(True, False, K, P, F, 1, W2, K, dyn, P, 0, dcols + n * K * P, P)
            _planes2im_image(dcols + n * K * P, C, H, W, kh, kw, stride, pad, OH, OW,
                             dx + n * C * H * W)


cdef inline void _sum_parts_t(const float* parts, Py_ssize_t nparts, Py_ssize_t stride, int F,
                              Py_ssize_t K, Py_ssize_t k0, Py_ssize_t k1, float* dW) noexcept nogil:
    # dW[f, k] = parts[0][k, f] + parts[1][k, f] + ... in this order, for k0 <= k < k1.
    cdef Py_ssize_t c, k
    cdef int f
    cdef const float* src
    for k in range(k0, k1):
        for f in range(F):
            dW[f * K + k] = parts[k * F + f]
    for c in range(1, nparts):
        src = parts + c * stride
        for k in range(k0, k1):
            for f in range(F):
                dW[f * K + k] += src[k * F + f]


cdef void _conv_bwd(const float* dy, const float* cols, const float* W2, int N, int C, int H,
                    int W, int F, int kh, int kw, int stride, int pad, float* dW, float* db,
                    float* dcols, float* dx, float* part, Py_ssize_t part_size) noexcept nogil:
    # Images in nchunk fixed chunks (from the shapes alone, so the bits never depend on the
    # threads), each writing its partial dW (transposed) and db to `part` (chunk c at
    # c * (F*K + F)), summed in chunk order at the end.
    cdef int OH = _out_size(H, kh, stride, pad), OW = _out_size(W, kw, stride, pad)
    cdef Py_ssize_t K = <Py_ssize_t>C * kh * kw, FK = F * K, stride_p = FK + F
    cdef Py_ssize_t nchunk = N if N < 8 else 8, c, t, ntasks
    cdef Py_ssize_t P = <Py_ssize_t>OH * OW, n, tk = 1 + 4095 // F
    if nchunk > part_size // stride_p:
        nchunk = part_size // stride_p
    if nchunk < 1:  # no room for one partial (N*OH*OW < C*kh*kw + 1): dW directly, serially
        for n in range(N):
            _gemm(False, True, F, K, P, 1, dy + n * F * P, P, cols + n * K * P, P,
                  0 if n == 0 else 1, dW, K)
        _conv_bwd_chunk(dy, cols, W2, C, H, W, F, kh, kw, stride, pad, OH, OW, 0, N, NULL, db,
                        dcols, dx)
        return
    if _nthreads > 1 and nchunk > 1 and <Py_ssize_t>N * OH * OW * K >= PARALLEL_MIN_WORK:
        for c in prange(nchunk, schedule="dynamic", num_threads=_nthreads):
            _conv_bwd_chunk(dy, cols, W2, C, H, W, F, kh, kw, stride, pad, OH, OW,
                            N * c // nchunk, N * (c + 1) // nchunk, part + c * stride_p,
                            part + c * stride_p + FK, dcols, dx)
        ntasks = (K + tk - 1) // tk
        for t in prange(ntasks, schedule="static", num_threads=_nthreads):
            _sum_parts_t(part, nchunk, stride_p, F, K, t * tk, (t + 1) * tk if (t + 1) * tk < K
                         else K, dW)
    else:
        for c in range(nchunk):
            _conv_bwd_chunk(dy, cols, W2, C, H, W, F, kh, kw, stride, pad, OH, OW,
                            N * c // nchunk, N * (c + 1) // nchunk, part + c * stride_p,
                            part + c * stride_p + FK, dcols, dx)
        _sum_parts_t(part, nchunk, stride_p, F, K, 0, K, dW)
    for t in range(F):
        db[t] = part[FK + t]
    for c in range(1, nchunk):
        for t in range(F):
            db[t] += part[c * stride_p + FK + t]


def conv2d_forward(x, W, b, int stride, int pad, y, cols, tmp):
    """y = conv(x, W) + b (NCHW); cols = conv_cols(x) (this backend's layout, kept for backward);
    tmp is unused when the GEMMs run per image (np.matmul fallback: cols = im2col(x),
    tmp = cols @ W2.T)."""
    cdef const float[:, :, :, ::1] xv = x
    cdef const float[:, :, :, ::1] Wv = W
    cdef const float[::1] bv = b
    cdef float[:, :, :, ::1] yv = y
    cdef float[:, ::1] colsv = cols
    cdef int N = <int>yv.shape[0], F = <int>yv.shape[1], kh = <int>Wv.shape[2], kw = <int>Wv.shape[3]
    if N == 0 or F == 0 or yv.shape[2] == 0 or yv.shape[3] == 0:
        return
    if _sgemm == NULL:
        _conv2d_forward_matmul(x, W, b, stride, pad, y, cols, tmp)
        return
    cdef _Wg g
    cdef bint owned
    cdef float* scratch
    if _wg_plan(N, <int>xv.shape[1], <int>xv.shape[2], <int>xv.shape[3], F, kh, kw, stride, pad,
                &g):
        scratch = _wg_scratch(&g, tmp.reshape(-1), &owned)
        if scratch == NULL:
            raise MemoryError("conv2d_forward: no memory for the Winograd scratch")
        with nogil:
            _wg_forward(&xv[0, 0, 0, 0], &Wv[0, 0, 0, 0], &bv[0], &g, &colsv[0, 0], scratch,
                        &yv[0, 0, 0, 0])
        if owned:
            free(scratch)
        return
    with nogil:
        _conv_fwd(&xv[0, 0, 0, 0], &Wv[0, 0, 0, 0], &bv[0], N, <int>xv.shape[1],
                  <int>xv.shape[2], <int>xv.shape[3], F, kh, kw, stride, pad, &colsv[0, 0],
                  &yv[0, 0, 0, 0])


def conv2d_backward(dy, cols, W, int stride, int pad, dx, dW, db, dyt, dcols):
    """dW, db and dx (skipped when dx is None) from dy and cols = conv_cols(x) as forward left it;
    dyt is the scratch of the per-chunk partial dW/db, dcols of the per-image dcols (np.matmul
    fallback: dy transposed, and cols = im2col(x))."""
    cdef const float[:, :, :, ::1] dyv = dy
    cdef const float[:, ::1] colsv = cols
    cdef const float[:, :, :, ::1] Wv = W
    cdef float[:, :, :, ::1] dWv = dW
    cdef float[::1] dbv = db
    cdef float[:, ::1] dytv = dyt
    cdef float[:, ::1] dcolsv = dcols
    cdef float[:, :, :, ::1] dxv
    cdef float* dxp = NULL
    cdef int N = <int>dyv.shape[0], F = <int>dyv.shape[1], kh = <int>Wv.shape[2], kw = <int>Wv.shape[3]
    cdef int C = <int>Wv.shape[1], H, Wd
    if N == 0 or F == 0 or dyv.shape[2] == 0 or dyv.shape[3] == 0:  # no output: zero gradients
        dW[...] = 0
        db[...] = 0
        if dx is not None:
            dx[...] = 0
        return
    if _sgemm == NULL:
        _conv2d_backward_matmul(dy, cols, W, stride, pad, dx, dW, db, dyt, dcols)
        return
    if dx is not None:
        dxv = dx
        dxp = &dxv[0, 0, 0, 0]
        H, Wd = <int>dxv.shape[2], <int>dxv.shape[3]
    else:  # the input size from the geometry (any H, W with these output sizes would do)
        H = (<int>dyv.shape[2] - 1) * stride + kh - 2 * pad
        Wd = (<int>dyv.shape[3] - 1) * stride + kw - 2 * pad
    cdef _Wg g
    cdef bint owned
    cdef float* scratch
    if _wg_plan(N, C, H, Wd, F, kh, kw, stride, pad, &g):
        scratch = _wg_scratch(&g, dyt.reshape(-1), &owned)
        if scratch == NULL:
            raise MemoryError("conv2d_backward: no memory for the Winograd scratch")
        with nogil:
            _wg_backward(&dyv[0, 0, 0, 0], &Wv[0, 0, 0, 0], &colsv[0, 0], &g, scratch,
                         &dWv[0, 0, 0, 0], &dbv[0], dxp)
        if owned:
            free(scratch)
        return
    with nogil:
        _conv_bwd(&dyv[0, 0, 0, 0], &colsv[0, 0], &Wv[0, 0, 0, 0], N, C, H, Wd, F, kh, kw,
                  stride, pad, &dWv[0, 0, 0, 0], &dbv[0], &dcolsv[0, 0], dxp, &dytv[0, 0],
                  dytv.shape[0] * dytv.shape[1])


def _conv2d_forward_matmul(x, W, b, int stride, int pad, y, cols, tmp):
    """cols = im2col(x); tmp = cols @ W.reshape(F, -1).T (np.matmul); y = tmp transposed to NCHW + b."""
    cdef const float[:, :, :, ::1] xv = x
    cdef const float[::1] bv = b
    cdef float[:, :, :, ::1] yv = y
    cdef float[:, ::1] colsv = cols
    cdef float[:, ::1] tmpv = tmp
    cdef int N = <int>yv.shape[0], F = <int>yv.shape[1], kh = W.shape[2], kw = W.shape[3]
    cdef Py_ssize_t P = yv.shape[2] * yv.shape[3]
    if N == 0 or F == 0 or P == 0:
        return
    with nogil:
        _im2col(&xv[0, 0, 0, 0], N, <int>xv.shape[1], <int>xv.shape[2], <int>xv.shape[3],
                kh, kw, stride, pad, &colsv[0, 0])
    np.matmul(cols, W.reshape(F, -1).T, out=tmp)
    with nogil:
        _rows_to_planes(&tmpv[0, 0], &bv[0], N, F, P, &yv[0, 0, 0, 0])


def _conv2d_backward_matmul(dy, cols, W, int stride, int pad, dx, dW, db, dyt, dcols):
    """dyt = dy as (N*OH*OW, F) with db fused; dW = dyt.T @ cols; dcols = dyt @ W2; dx = col2im
    (dx None: skipped)."""
    cdef const float[:, :, :, ::1] dyv = dy
    cdef float[:, :, :, ::1] dxv
    cdef float[::1] dbv = db
    cdef float[:, ::1] dytv = dyt
    cdef float[:, ::1] dcolsv = dcols
    cdef int N = <int>dyv.shape[0], F = <int>dyv.shape[1], kh = W.shape[2], kw = W.shape[3]
    cdef Py_ssize_t P = dyv.shape[2] * dyv.shape[3]
    with nogil:
        _planes_to_rows(&dyv[0, 0, 0, 0], N, F, P, &dytv[0, 0], &dbv[0])
    np.matmul(dyt.T, cols, out=dW.reshape(F, -1))
    if dx is None:
        return
    dxv = dx
    np.matmul(dyt, W.reshape(F, -1), out=dcols)
    with nogil:
        _col2im(&dcolsv[0, 0], N, <int>dxv.shape[1], <int>dxv.shape[2], <int>dxv.shape[3],
                kh, kw, stride, pad, &dxv[0, 0, 0, 0])
