"""Convolution (Numba backend): im2col / col2im layout transforms and the conv epilogues.

Same interface as fastnn.reference.conv. cols has one row per output pixel (n, oh, ow) and one column
per weight (c, i, j). GEMMs are np.matmul(..., out=) calls made here, in Python; the jitted kernels
own im2col, col2im, the transpose + bias epilogue of the forward pass and the transpose of dy fused
with the bias-gradient reduction.

Implementation notes:
- Every kernel works on flat views and indexes with unsigned integers (`_U(i)`): Numba's negative-
  index wraparound otherwise turns every access into a select, which defeats LLVM's vectoriser and
  made these kernels 2-5x slower.
- A kernel is a "task" function (one independent piece of the output) driven by a serial loop (small
  work: no parallel region at all) or a prange loop. Both drivers run the same tasks, so the result
  never depends on the path or the thread count.
- col2im is a scatter: tasks own disjoint (n, channel-range) blocks of dx, and every dx element sums
  its contributions in the same (oh, ow) order whatever the partition.
- db in conv2d_backward: float64 partial sums per (image, block of _PB output pixels), written to a
  scratch carved from the dcols workspace (overwritten by a GEMM right after), then combined in a
  fixed order: bitwise identical on any thread count.
"""

import numpy as np
from numba import njit, prange

from ._common import PARALLEL_MIN_WORK

_U = np.uint64
_PB = 256  # output pixels per task and per db partial (fixed: it defines the summation grouping)


def _out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


# --------------------------------------------------------------------------------------- im2col


@njit(cache=True, nogil=True)
def _im2col_task(xf, C, H, W, kh, kw, s, pad, cf, OH, OW, n, oh):
    """Rows (n, oh, 0..OW-1) of cols."""
    zero = np.float32(0.0)
    K = C * kh * kw
    HW = H * W
    h0 = oh * s - pad
    ilo = -h0 if h0 < 0 else 0  # kernel rows i in [ilo, ihi) fall inside the image
    ihi = H - h0 if H - h0 < kh else kh
    if ihi < ilo:
        ihi = ilo
    full_rows = ilo == 0 and ihi == kh
    o = (n * OH + oh) * OW * K
    xn = n * C * HW + h0 * W
    for ow in range(OW):
        w0 = ow * s - pad
        if w0 >= 0 and w0 + kw <= W:
            if full_rows:
                for c in range(C):
                    xc = xn + c * HW + w0
                    for i in range(kh):
                        xo = xc + i * W
                        if kw == 3:
                            cf[_U(o)] = xf[_U(xo)]
                            cf[_U(o + 1)] = xf[_U(xo + 1)]
                            cf[_U(o + 2)] = xf[_U(xo + 2)]
                        elif kw == 1:
                            cf[_U(o)] = xf[_U(xo)]
                        else:
                            for j in range(kw):
                                cf[_U(o + j)] = xf[_U(xo + j)]
                        o += kw
            else:
                for c in range(C):
                    xc = xn + c * HW + w0
                    for i in range(kh):
                        if i >= ilo and i < ihi:
                            xo = xc + i * W
                            for j in range(kw):
                                cf[_U(o + j)] = xf[_U(xo + j)]
                        else:
                            for j in range(kw):
                                cf[_U(o + j)] = zero
                        o += kw
        else:  # left/right border: check every column
            for c in range(C):
                xc = xn + c * HW + w0
                for i in range(kh):
                    if i >= ilo and i < ihi:
                        xo = xc + i * W
                        for j in range(kw):
                            w = w0 + j
                            if w >= 0 and w < W:
                                cf[_U(o + j)] = xf[_U(xo + j)]
                            else:
                                cf[_U(o + j)] = zero
                    else:
                        for j in range(kw):
                            cf[_U(o + j)] = zero
                    o += kw


@njit(cache=True, nogil=True)
def _im2col_serial(x, kh, kw, s, pad, cols, OH, OW):
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    for t in range(N * OH):
        n = t // OH
        _im2col_task(xf, C, H, W, kh, kw, s, pad, cf, OH, OW, n, t - n * OH)


@njit(cache=True, nogil=True, parallel=True)
def _im2col_parallel(x, kh, kw, s, pad, cols, OH, OW):
    N, C, H, W = x.shape
    xf = x.reshape(-1)
    cf = cols.reshape(-1)
    for t in prange(N * OH):
        n = t // OH
        _im2col_task(xf, C, H, W, kh, kw, s, pad, cf, OH, OW, n, t - n * OH)


def im2col(x, kh, kw, stride, pad, cols):
    H, W = x.shape[2], x.shape[3]
    kh, kw, stride, pad = int(kh), int(kw), int(stride), int(pad)
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    if kh == 1 and kw == 1 and stride == 1 and pad == 0:  # a plain (N, C, HW) -> (N*HW, C) transpose
        _transpose(x, x.reshape(-1), False, cols, x.shape[0], H * W, x.shape[1], False)
    elif cols.size < PARALLEL_MIN_WORK:
        _im2col_serial(x, kh, kw, stride, pad, cols, OH, OW)
    else:
        _im2col_parallel(x, kh, kw, stride, pad, cols, OH, OW)


# --------------------------------------------------------------------------------------- col2im


@njit(cache=True, nogil=True)
def _col2im_task(cf, C, H, W, kh, kw, s, pad, df, OH, OW, n, c0, c1):
    """dx[n, c0:c1] = the sum of its cols entries, accumulated in (oh, ow) order."""
    zero = np.float32(0.0)
    K = C * kh * kw
    HW = H * W
    base = (n * C + c0) * HW
    for k in range((c1 - c0) * HW):
        df[_U(base + k)] = zero
    for oh in range(OH):
        h0 = oh * s - pad
        ilo = -h0 if h0 < 0 else 0
        ihi = H - h0 if H - h0 < kh else kh
        if ihi < ilo:
            ihi = ilo
        full_rows = ilo == 0 and ihi == kh
        xn = n * C * HW + h0 * W
        for ow in range(OW):
            w0 = ow * s - pad
            o = ((n * OH + oh) * OW + ow) * K + c0 * kh * kw
            if w0 >= 0 and w0 + kw <= W:
                if full_rows:
                    for c in range(c0, c1):
                        xc = xn + c * HW + w0
                        for i in range(kh):
                            xo = xc + i * W
                            if kw == 3:
                                df[_U(xo)] += cf[_U(o)]
                                df[_U(xo + 1)] += cf[_U(o + 1)]
                                df[_U(xo + 2)] += cf[_U(o + 2)]
                            elif kw == 1:
                                df[_U(xo)] += cf[_U(o)]
                            else:
                                for j in range(kw):
                                    df[_U(xo + j)] += cf[_U(o + j)]
                            o += kw
                else:
                    for c in range(c0, c1):
                        xc = xn + c * HW + w0
                        for i in range(kh):
                            if i >= ilo and i < ihi:
                                xo = xc + i * W
                                for j in range(kw):
                                    df[_U(xo + j)] += cf[_U(o + j)]
                            o += kw
            else:
                for c in range(c0, c1):
                    xc = xn + c * HW + w0
                    for i in range(kh):
                        if i >= ilo and i < ihi:
                            xo = xc + i * W
                            for j in range(kw):
                                w = w0 + j
                                if w >= 0 and w < W:
                                    df[_U(xo + j)] += cf[_U(o + j)]
                        o += kw


@njit(cache=True, nogil=True)
def _col2im_serial(cols, kh, kw, s, pad, dx, OH, OW, ncb):
    N, C, H, W = dx.shape
    cf = cols.reshape(-1)
    df = dx.reshape(-1)
    cb = (C + ncb - 1) // ncb
    for t in range(N * ncb):
        n = t // ncb
        c0 = (t - n * ncb) * cb
        c1 = min(c0 + cb, C)
        if c0 < c1:
            _col2im_task(cf, C, H, W, kh, kw, s, pad, df, OH, OW, n, c0, c1)


@njit(cache=True, nogil=True, parallel=True)
def _col2im_parallel(cols, kh, kw, s, pad, dx, OH, OW, ncb):
    N, C, H, W = dx.shape
    cf = cols.reshape(-1)
    df = dx.reshape(-1)
    cb = (C + ncb - 1) // ncb
    for t in prange(N * ncb):
        n = t // ncb
        c0 = (t - n * ncb) * cb
        c1 = min(c0 + cb, C)
        if c0 < c1:
            _col2im_task(cf, C, H, W, kh, kw, s, pad, df, OH, OW, n, c0, c1)


def col2im(cols, kh, kw, stride, pad, dx):
    N, C, H, W = dx.shape
    kh, kw, stride, pad = int(kh), int(kw), int(stride), int(pad)
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    if kh == 1 and kw == 1 and stride == 1 and pad == 0:  # a plain (N*HW, C) -> (N, C, HW) transpose
        _transpose(cols, dx.reshape(-1), False, dx, N, H * W, C, True)
    elif cols.size < PARALLEL_MIN_WORK:
        _col2im_serial(cols, kh, kw, stride, pad, dx, OH, OW, 1)
    else:
        # Channel blocks only when there are too few images to keep every thread busy; the
        # partition does not change the result (each dx element has a fixed summation order).
        ncb = 1 if N >= 8 else min(C, -(-8 // N))
        _col2im_parallel(cols, kh, kw, stride, pad, dx, OH, OW, ncb)


# ---------------------------------------------------------------- forward epilogue: y = tmp^T + b


@njit(cache=True, nogil=True)
def _tr_pf_to_fp(tf, b, use_b, yf, P, F, n, p0, p1):
    """y[n, :, p0:p1] = t[n*P + p0 : n*P + p1, :].T (+ b[:, None] if use_b), in 16x16 tiles.

    t is (N*P, F) and y is (N, F, P), both flat."""
    T = 16
    for q0 in range(p0, p1, T):
        qe = min(q0 + T, p1)
        for f0 in range(0, F, T):
            fe = min(f0 + T, F)
            if qe - q0 == T and fe - f0 == T:
                if use_b:
                    for f in range(T):
                        bf = b[_U(f0 + f)]
                        yo = (n * F + f0 + f) * P + q0
                        to = (n * P + q0) * F + f0 + f
                        for p in range(T):
                            yf[_U(yo + p)] = tf[_U(to + p * F)] + bf
                else:  # a pure copy (no "+ 0", which would turn -0.0 into 0.0)
                    for f in range(T):
                        yo = (n * F + f0 + f) * P + q0
                        to = (n * P + q0) * F + f0 + f
                        for p in range(T):
                            yf[_U(yo + p)] = tf[_U(to + p * F)]
            else:
                for f in range(f0, fe):
                    yo = (n * F + f) * P
                    to = n * P * F + f
                    for p in range(q0, qe):
                        v = tf[_U(to + p * F)]
                        yf[_U(yo + p)] = v + b[_U(f)] if use_b else v


@njit(cache=True, nogil=True)
def _tr_fp_to_pf(sf, df, P, F, n, p0, p1):
    """d[n*P + p0 : n*P + p1, :] = s[n, :, p0:p1].T, in 16x16 tiles (s (N, F, P), d (N*P, F))."""
    T = 16
    for f0 in range(0, F, T):
        fe = min(f0 + T, F)
        for q0 in range(p0, p1, T):
            qe = min(q0 + T, p1)
            if qe - q0 == T and fe - f0 == T:
                for p in range(T):
                    ro = (n * P + q0 + p) * F + f0
                    so = (n * F + f0) * P + q0 + p
                    for f in range(T):
                        df[_U(ro + f)] = sf[_U(so + f * P)]
            else:
                for p in range(q0, qe):
                    ro = (n * P + p) * F
                    so = n * F * P + p
                    for f in range(f0, fe):
                        df[_U(ro + f)] = sf[_U(so + f * P)]


@njit(cache=True, nogil=True)
def _transpose_serial(sf, b, use_b, df, N, P, F, to_fp):
    """Flat arrays. to_fp: d (N, F, P) = s (N*P, F) transposed (+ b); else d (N*P, F) = s (N, F, P)^T."""
    nPB = (P + _PB - 1) // _PB
    for t in range(N * nPB):
        n = t // nPB
        p0 = (t - n * nPB) * _PB
        if to_fp:
            _tr_pf_to_fp(sf, b, use_b, df, P, F, n, p0, min(p0 + _PB, P))
        else:
            _tr_fp_to_pf(sf, df, P, F, n, p0, min(p0 + _PB, P))


@njit(cache=True, nogil=True, parallel=True)
def _transpose_parallel(sf, b, use_b, df, N, P, F, to_fp):
    nPB = (P + _PB - 1) // _PB
    for t in prange(N * nPB):
        n = t // nPB
        p0 = (t - n * nPB) * _PB
        if to_fp:
            _tr_pf_to_fp(sf, b, use_b, df, P, F, n, p0, min(p0 + _PB, P))
        else:
            _tr_fp_to_pf(sf, df, P, F, n, p0, min(p0 + _PB, P))


def _transpose(src, b, use_b, dst, N, P, F, to_fp):
    """One compiled signature for every use: flat float32 arrays, b ignored unless use_b."""
    sf, df = src.reshape(-1), dst.reshape(-1)
    if df.size < PARALLEL_MIN_WORK:
        _transpose_serial(sf, b, use_b, df, N, P, F, to_fp)
    else:
        _transpose_parallel(sf, b, use_b, df, N, P, F, to_fp)


def conv2d_forward(x, W, b, stride, pad, y, cols, tmp):
    F, C, kh, kw = W.shape
    N, _, OH, OW = y.shape
    im2col(x, kh, kw, stride, pad, cols)
    np.matmul(cols, W.reshape(F, -1).T, out=tmp)  # (N*OH*OW, F)
    _transpose(tmp, b, True, y, N, OH * OW, F, True)  # y = tmp^T + b


# ------------------------------------------- backward: dyt = dy^T fused with the db partial sums


@njit(cache=True, nogil=True)
def _transpose_db_task(dyf, dytf, part, P, F, n, t, p0, p1):
    """dyt[n*P + p0 : n*P + p1, :] = dy[n, :, p0:p1].T; part[t, f] = float64 sum of those dy."""
    T = 16
    zero = np.float64(0.0)
    for f in range(F):
        part[_U(t * F + f)] = zero
    for f0 in range(0, F, T):
        fe = min(f0 + T, F)
        for q0 in range(p0, p1, T):
            qe = min(q0 + T, p1)
            if qe - q0 == T and fe - f0 == T:
                for p in range(T):
                    ro = (n * P + q0 + p) * F + f0
                    so = (n * F + f0) * P + q0 + p
                    po = t * F + f0
                    for f in range(T):
                        v = dyf[_U(so + f * P)]
                        dytf[_U(ro + f)] = v
                        part[_U(po + f)] += np.float64(v)
            else:
                for p in range(q0, qe):
                    ro = (n * P + p) * F
                    so = n * F * P + p
                    po = t * F
                    for f in range(f0, fe):
                        v = dyf[_U(so + f * P)]
                        dytf[_U(ro + f)] = v
                        part[_U(po + f)] += np.float64(v)


@njit(cache=True, nogil=True)
def _db_combine(part, db, nt):
    F = db.shape[0]
    for f in range(F):
        acc = np.float64(0.0)
        for t in range(nt):
            acc += part[_U(t * F + f)]
        db[_U(f)] = np.float32(acc)


@njit(cache=True, nogil=True)
def _transpose_db_serial(dy, dyt, part, db, nPB):
    N, F, OH, OW = dy.shape
    P = OH * OW
    dyf = dy.reshape(-1)
    dytf = dyt.reshape(-1)
    for t in range(N * nPB):
        n = t // nPB
        p0 = (t - n * nPB) * _PB
        _transpose_db_task(dyf, dytf, part, P, F, n, t, p0, min(p0 + _PB, P))
    _db_combine(part, db, N * nPB)


@njit(cache=True, nogil=True, parallel=True)
def _transpose_db_parallel(dy, dyt, part, db, nPB):
    N, F, OH, OW = dy.shape
    P = OH * OW
    dyf = dy.reshape(-1)
    dytf = dyt.reshape(-1)
    for t in prange(N * nPB):
        n = t // nPB
        p0 = (t - n * nPB) * _PB
        _transpose_db_task(dyf, dytf, part, P, F, n, t, p0, min(p0 + _PB, P))
    _db_combine(part, db, N * nPB)


@njit(cache=True, nogil=True)
def _transpose_db_noscratch(dy, dyt, db, nPB):
    """Fallback when dcols is too small to hold the partials (tiny P*C*kh*kw): same grouping."""
    N, F, OH, OW = dy.shape
    P = OH * OW
    dyf = dy.reshape(-1)
    dytf = dyt.reshape(-1)
    for f in range(F):
        acc = np.float64(0.0)
        for t in range(N * nPB):
            n = t // nPB
            p0 = (t - n * nPB) * _PB
            s = np.float64(0.0)
            for p in range(p0, min(p0 + _PB, P)):
                v = dyf[_U((n * F + f) * P + p)]
                dytf[_U((n * P + p) * F + f)] = v
                s += np.float64(v)
            acc += s
        db[_U(f)] = np.float32(acc)


def conv2d_backward(dy, cols, W, stride, pad, dx, dW, db, dyt, dcols):
    F, C, kh, kw = W.shape
    N, _, OH, OW = dy.shape
    nPB = -(-(OH * OW) // _PB)
    nt = N * nPB
    if 2 * nt * F <= dcols.size:
        # float64 partials in the dcols workspace (its contents are overwritten by the GEMM below)
        part = dcols.reshape(-1)[: 2 * nt * F].view(np.float64)
        if dy.size < PARALLEL_MIN_WORK:
            _transpose_db_serial(dy, dyt, part, db, nPB)
        else:
            _transpose_db_parallel(dy, dyt, part, db, nPB)
    else:
        _transpose_db_noscratch(dy, dyt, db, nPB)
    np.matmul(dyt.T, cols, out=dW.reshape(F, -1))
    if dx is None:  # the first layer: nobody needs dL/dx
        return
    np.matmul(dyt, W.reshape(F, -1), out=dcols)
    col2im(dcols, kh, kw, stride, pad, dx)
