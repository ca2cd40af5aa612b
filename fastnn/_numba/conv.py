"""Convolution (Numba backend): im2col / col2im layout transforms and conv2d forward / backward.

Same interface as fastnn.reference.conv. cols has one row per output pixel (n, oh, ow) and one
column per weight (c, i, j). With NumPy's cblas_sgemm (_gemm.py), conv2d runs one image per task:
its im2col, GEMM (called from the jitted task) and bias epilogue back to back, and the backward
pass sums dW and db per fixed chunk of images. Without it, the GEMMs are np.matmul(..., out=) calls
made here, in Python, on the whole batch, and the jitted kernels own im2col, col2im, the transpose
+ bias epilogue of the forward pass and the transpose of dy fused with the bias-gradient reduction.

Implementation notes:
- Every kernel works on flat views and indexes with unsigned integers (`_U(i)`): Numba's negative-
  index wraparound otherwise turns every access into a select, which defeats LLVM's vectoriser and
  made these kernels 2-5x slower.
- A kernel is a "task" function (one independent piece of the output) driven by a serial loop
  (small work: no parallel region at all) or a prange loop. Both drivers run the same tasks, so
  the result never depends on the path or the thread count.
- col2im is a scatter: tasks own disjoint (n, channel-range) blocks of dx, and every dx element sums
  its contributions in the same (oh, ow) order whatever the partition.
- db in the np.matmul conv2d_backward: float64 partial sums per (image, block of _PB output
  pixels), written to a scratch carved from the dcols workspace (overwritten by a GEMM right
  after), then combined in a fixed order: bitwise identical on any thread count.
"""

import numba
import numpy as np
from numba import njit, prange

from . import winograd
from ._common import PARALLEL_MIN_WORK, fetch_add, row_sum
from ._gemm import gemm, sgemm_pointer

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


_WINOGRAD = [True]  # fastnn.backend.set_winograd, through set_winograd


def set_winograd(enabled):
    """Run 3x3, stride-1 convolutions with >= 8 channels as Winograd F(2x2, 3x3) (True, the
    default) or as im2col + GEMM (see fastnn.backend.set_winograd)."""
    _WINOGRAD[0] = bool(enabled)


def _winograd_plan(N, C, H, W, F, kh, kw, stride, pad):
    """The Winograd plan when this convolution runs as Winograd F(2x2, 3x3) (winograd.py), else
    None. Needs cblas_sgemm; the workers follow the thread count when the work is large enough."""
    if not _WINOGRAD[0] or not sgemm_pointer():
        return None
    threads = numba.get_num_threads()
    work = N * (H + 2 * pad - 2) * (W + 2 * pad - 2) * C * 9
    return winograd.plan(N, C, H, W, F, kh, kw, stride, pad,
                         threads if PARALLEL_MIN_WORK <= work else 1)


def conv_scratch_size(N, C, H, W, F, kh, kw, stride, pad):
    """Floats of scratch conv2d_forward / conv2d_backward want for this geometry (passed as their
    `tmp` / `dyt`), or 0 when it does not run as Winograd (then those take their reference
    shapes)."""
    pl = _winograd_plan(N, C, H, W, F, kh, kw, stride, pad)
    return 0 if pl is None else pl.scratch_floats()


def conv_cols_layout():
    """The columns conv2d_forward keeps for conv2d_backward: this backend's own, im2col's rows
    ("numba"), with Winograd on the blocks of V tiles for the convolutions that run so
    ("numba+winograd")."""
    return "numba+winograd" if _WINOGRAD[0] else "numba"


def conv_cols(x, kh, kw, stride, pad, cols, F):
    """The columns conv2d_backward reads for F output channels (see conv_cols_layout)."""
    N, C, H, W = x.shape
    pl = _winograd_plan(N, C, H, W, F, kh, kw, stride, pad)
    if pl is None:
        im2col(x, kh, kw, stride, pad, cols)
    else:
        winograd.cols(x, int(pad), cols, pl)


def conv2d_forward(x, W, b, stride, pad, y, cols, tmp):
    """tmp is unused when the GEMMs run per image through cblas_sgemm (_conv_fwd_*), and the
    Winograd scratch (conv_scratch_size) for the convolutions that run as Winograd."""
    F, C, kh, kw = W.shape
    N, _, OH, OW = y.shape
    fn = sgemm_pointer()
    if fn and y.size:
        stride, pad = int(stride), int(pad)
        pl = _winograd_plan(N, C, x.shape[2], x.shape[3], F, kh, kw, stride, pad)
        if pl is not None:
            winograd.forward(fn, x, W, b, pad, cols, tmp.reshape(-1), y, pl)
            return
        threads = numba.get_num_threads()
        if N > 1 and cols.size >= PARALLEL_MIN_WORK and threads > 1:
            _conv_fwd_parallel(fn, x, W, b, stride, pad, cols, y, min(threads, N))
        else:
            _conv_fwd_serial(fn, x, W, b, stride, pad, cols, y)
        return
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
    """With cblas_sgemm: per image (_conv_bwd_*), dyt is the scratch of the per-chunk partial dW
    and db; else dyt = dy transposed."""
    F, C, kh, kw = W.shape
    N, _, OH, OW = dy.shape
    fn = sgemm_pointer()
    if fn and dy.size:
        stride, pad = int(stride), int(pad)
        H, Wd = (OH - 1) * stride + kh - 2 * pad, (OW - 1) * stride + kw - 2 * pad
        if dx is not None:
            H, Wd = dx.shape[2], dx.shape[3]
        pl = _winograd_plan(N, C, H, Wd, F, kh, kw, stride, pad)
        if pl is not None:
            winograd.backward(fn, dy, cols, W, pad, dx, dW, db, dyt.reshape(-1), pl)
            return
        _conv2d_backward_direct(fn, dy, cols, W, int(stride), int(pad), dx, dW, db, dyt, dcols)
        return
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


# ------------------------------------------------------- conv2d per image through cblas_sgemm
# With cols_n = the (P, K) rows of cols for image n (P = OH*OW output pixels, K = C*kh*kw) and
# W2 = W as (F, K): y_n (F, P) = W2 @ cols_n.T + b, already NCHW; dW = sum_n dy_n @ cols_n;
# db = sum_n row sums of dy_n; dcols_n = dy_n.T @ W2; dx_n = col2im(dcols_n). One image per task,
# so its im2col, GEMM and epilogue run back to back while its data is in cache (as
# kernels/conv.pyx). BLAS runs single-threaded in each task (fastnn.backend holds its pool at 1).
# The parallel drivers hand out images (backward: chunks) one at a time from a shared counter
# (fetch_add); which thread runs a task never changes its bits.


@njit(cache=True, nogil=True)
def _conv_fwd_image(fn, xf, W2f, b, C, H, W, F, kh, kw, s, pad, OH, OW, n, cf, yf):
    P = OH * OW
    K = C * kh * kw
    for oh in range(OH):
        _im2col_task(xf, C, H, W, kh, kw, s, pad, cf, OH, OW, n, oh)
    gemm(fn, False, True, F, P, K, np.float32(1.0), W2f, 0, K, cf, n * P * K, K,
         np.float32(0.0), yf, n * F * P, P)
    for f in range(F):
        bf = b[_U(f)]
        o = (n * F + f) * P
        for p in range(P):
            yf[_U(o + p)] += bf


@njit(cache=True, nogil=True)
def _conv_fwd_serial(fn, x, W, b, s, pad, cols, y):
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH, OW = y.shape[2], y.shape[3]
    xf, W2f, cf, yf = x.reshape(-1), W.reshape(-1), cols.reshape(-1), y.reshape(-1)
    for n in range(N):
        _conv_fwd_image(fn, xf, W2f, b, C, H, Wd, F, kh, kw, s, pad, OH, OW, n, cf, yf)


@njit(cache=True, nogil=True, parallel=True)
def _conv_fwd_parallel(fn, x, W, b, s, pad, cols, y, workers):
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    OH, OW = y.shape[2], y.shape[3]
    xf, W2f, cf, yf = x.reshape(-1), W.reshape(-1), cols.reshape(-1), y.reshape(-1)
    next_n = np.zeros(1, np.int64)
    for _ in prange(workers):  # each worker takes the next image (dynamic scheduling)
        n = fetch_add(next_n, 0, 1)
        while n < N:
            _conv_fwd_image(fn, xf, W2f, b, C, H, Wd, F, kh, kw, s, pad, OH, OW, n, cf, yf)
            n = fetch_add(next_n, 0, 1)


@njit(cache=True, nogil=True)
def _conv_bwd_chunk(fn, dyf, cf, W2f, C, H, W, F, kh, kw, s, pad, OH, OW, n0, n1, dWf, dWo, dbf,
                    dbo, dcf, dxf, has_dx):
    """Images n0:n1: dW (F, K) at dWf[dWo:] and db (F) at dbf[dbo:] of these images only; dx of
    each image when has_dx."""
    P = OH * OW
    K = C * kh * kw
    one, zero = np.float32(1.0), np.float32(0.0)
    for n in range(n0, n1):
        first = n == n0
        gemm(fn, False, False, F, K, P, one, dyf, n * F * P, P, cf, n * P * K, K,
             zero if first else one, dWf, dWo, K)
        for f in range(F):
            v = row_sum(dyf, (n * F + f) * P, P)
            dbf[_U(dbo + f)] = v if first else dbf[_U(dbo + f)] + v
        if has_dx:
            gemm(fn, True, False, P, K, F, one, dyf, n * F * P, P, W2f, 0, K, zero, dcf,
                 n * P * K, K)
            _col2im_task(dcf, C, H, W, kh, kw, s, pad, dxf, OH, OW, n, 0, C)


@njit(cache=True, nogil=True)
def _sum_parts(part, base, nparts, stride, i0, i1, out):
    """out[i] = part[base + i] + part[base + stride + i] + ... in this order, i0 <= i < i1."""
    for i in range(i0, i1):
        out[_U(i)] = part[_U(base + i)]
    for c in range(1, nparts):
        o = base + c * stride
        for i in range(i0, i1):
            out[_U(i)] += part[_U(o + i)]


@njit(cache=True, nogil=True)
def _conv_bwd_serial(fn, dy, cols, W, s, pad, H, Wd, dxf, has_dx, dW, db, dcols, part, nchunk):
    N, F, OH, OW = dy.shape
    _, C, kh, kw = W.shape
    FK = F * C * kh * kw
    stride = FK + F
    dyf, cf, W2f, dcf, dWf = dy.reshape(-1), cols.reshape(-1), W.reshape(-1), dcols.reshape(-1), \
        dW.reshape(-1)
    if nchunk <= 1:
        _conv_bwd_chunk(fn, dyf, cf, W2f, C, H, Wd, F, kh, kw, s, pad, OH, OW, 0, N, dWf, 0, db, 0,
                        dcf, dxf, has_dx)
        return
    for c in range(nchunk):
        _conv_bwd_chunk(fn, dyf, cf, W2f, C, H, Wd, F, kh, kw, s, pad, OH, OW, N * c // nchunk,
                        N * (c + 1) // nchunk, part, c * stride, part, c * stride + FK, dcf, dxf,
                        has_dx)
    _sum_parts(part, 0, nchunk, stride, 0, FK, dWf)
    _sum_parts(part, FK, nchunk, stride, 0, F, db)


@njit(cache=True, nogil=True, parallel=True)
def _conv_bwd_parallel(fn, dy, cols, W, s, pad, H, Wd, dxf, has_dx, dW, db, dcols, part, nchunk,
                       workers):
    """As _conv_bwd_serial with nchunk > 1: the chunks, then the partials summed per block of
    4096 elements of dW, over the threads."""
    N, F, OH, OW = dy.shape
    _, C, kh, kw = W.shape
    FK = F * C * kh * kw
    stride = FK + F
    dyf, cf, W2f, dcf, dWf = dy.reshape(-1), cols.reshape(-1), W.reshape(-1), dcols.reshape(-1), \
        dW.reshape(-1)
    next_c = np.zeros(1, np.int64)
    for _ in prange(workers):  # each worker takes the next chunk (dynamic scheduling)
        c = fetch_add(next_c, 0, 1)
        while c < nchunk:
            _conv_bwd_chunk(fn, dyf, cf, W2f, C, H, Wd, F, kh, kw, s, pad, OH, OW,
                            N * c // nchunk, N * (c + 1) // nchunk, part, c * stride, part,
                            c * stride + FK, dcf, dxf, has_dx)
            c = fetch_add(next_c, 0, 1)
    for t in prange((FK + 4095) // 4096):
        _sum_parts(part, 0, nchunk, stride, t * 4096, min((t + 1) * 4096, FK), dWf)
    _sum_parts(part, FK, nchunk, stride, 0, F, db)


_NO_DX = np.empty(0, np.float32)


def _conv2d_backward_direct(fn, dy, cols, W, stride, pad, dx, dW, db, dyt, dcols):
    """Images in nchunk fixed chunks (from the shapes alone, so the bits never depend on the
    threads), each writing its partial dW and db to the dyt scratch, summed in chunk order."""
    F, C, kh, kw = W.shape
    N, _, OH, OW = dy.shape
    K = C * kh * kw
    nchunk = min(N, 8, dyt.size // (F * K + F))
    if dx is not None:
        H, Wd, dxf = dx.shape[2], dx.shape[3], dx.reshape(-1)
    else:  # the input size from the geometry (any H, W with these output sizes would do)
        H, Wd, dxf = (OH - 1) * stride + kh - 2 * pad, (OW - 1) * stride + kw - 2 * pad, _NO_DX
    args = (fn, dy, cols, W, stride, pad, H, Wd, dxf, dx is not None, dW, db, dcols,
            dyt.reshape(-1), nchunk)
    threads = numba.get_num_threads()
    if nchunk > 1 and cols.size >= PARALLEL_MIN_WORK and threads > 1:
        _conv_bwd_parallel(*args, min(threads, nchunk))
    else:
        _conv_bwd_serial(*args)
