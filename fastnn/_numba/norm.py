"""Batch normalisation on a (N, C, L) view for the Numba backend (see fastnn/reference/norm.py).

Statistics are float64 per channel, accumulated in an order fixed by the shape alone:

* plane path (L >= LPLANE, images): per (n, c) plane a float64 partial (vectorised, reassoc-only
  helper), then the N plane partials of a channel summed in n order. Parallel over channels when
  C >= CPAR, else over planes (partials stored, then combined in the same n order).
* row path (L < LPLANE, e.g. dense input with L = 1): per (c, l) float64 accumulators updated row
  by row (n order, vectorised across the contiguous (c, l) run), then summed over l. Parallel over
  blocks of CBLK channels.

The variance is one-pass on data shifted by the channel's first value (x[0, c, 0]): float64 sums
of (x - shift) and (x - shift)**2, so there is no cancellation unless that value is an outlier by
many orders of magnitude. Serial and parallel kernels share the grouping, so outputs are bitwise
identical on any thread count. The normalisation passes are float32 and follow the reference
operation by operation.
"""

import numpy as np
from numba import njit, prange

from ._common import PARALLEL_MIN_WORK
from .activations import _dot_f64, _sum_f64

LPLANE = 32  # L at or above which the per-plane path is used
CPAR = 8     # plane path: parallel over channels when C >= CPAR, else over (n, c) planes
CBLK = 16    # row path: channels per parallel task

_f32 = np.float32


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _shifted_sums(a, sh):
    """(sum(a - sh), sum((a - sh)**2)) in float64; reassoc only reorders the two sums."""
    s = 0.0
    q = 0.0
    for i in range(a.size):
        d = np.float64(a[i]) - sh
        s += d
        q += d * d
    return s, q


@njit(cache=True, nogil=True, error_model="numpy")
def _finish_stats(S, Q, sh, Mf, eps, mean, invstd, c):
    mu = S / Mf
    var = Q / Mf - mu * mu
    if var < 0.0:
        var = 0.0
    mean[c] = _f32(sh + mu)
    invstd[c] = _f32(1.0 / np.sqrt(var + eps))


@njit(cache=True, nogil=True, error_model="numpy")
def _plane_stats_chan(x, c, eps, mean, invstd):
    N, C, L = x.shape
    sh = np.float64(x[0, c, 0])
    S = 0.0
    Q = 0.0
    for n in range(N):
        s, q = _shifted_sums(x[n, c], sh)
        S += s
        Q += q
    _finish_stats(S, Q, sh, np.float64(N * L), eps, mean, invstd, c)


@njit(cache=True, nogil=True, error_model="numpy")
def _row_stats_blk(x2, L, c0, c1, eps, mean, invstd, aS, aQ, shv):
    """Row path: channels [c0, c1) of x2 = x.reshape(N, C*L); aS, aQ, shv are (C*L,) float64."""
    N = x2.shape[0]
    k0 = c0 * L
    k1 = c1 * L
    for c in range(c0, c1):
        sh = np.float64(x2[0, c * L])
        for k in range(c * L, c * L + L):
            shv[k] = sh
            aS[k] = 0.0
            aQ[k] = 0.0
    ws = aS[k0:k1]
    wq = aQ[k0:k1]
    wh = shv[k0:k1]
    for n in range(N):
        row = x2[n, k0:k1]
        for k in range(k1 - k0):
            d = np.float64(row[k]) - wh[k]
            ws[k] += d
            wq[k] += d * d
    Mf = np.float64(N * L)
    for c in range(c0, c1):
        S = 0.0
        Q = 0.0
        for k in range(c * L, c * L + L):
            S += aS[k]
            Q += aQ[k]
        _finish_stats(S, Q, shv[c * L], Mf, eps, mean, invstd, c)


@njit(cache=True, nogil=True, error_model="numpy")
def _norm_plane(xp, yp, g, mu, ist, b):
    for i in range(xp.size):
        yp[i] = g * ((xp[i] - mu) * ist) + b


@njit(cache=True, nogil=True, error_model="numpy")
def _norm_row(xr, yr, C, L, gamma, mean, invstd, beta):
    """One sample row x[n] (flat C*L) normalised; L == 1 vectorises across channels."""
    if L == 1:
        for c in range(C):
            yr[c] = gamma[c] * ((xr[c] - mean[c]) * invstd[c]) + beta[c]
    else:
        for c in range(C):
            g = gamma[c]
            mu = mean[c]
            ist = invstd[c]
            b = beta[c]
            for k in range(c * L, c * L + L):
                yr[k] = g * ((xr[k] - mu) * ist) + b


# ---------------------------------------------------------------------------------------------
# forward (training). One kernel per path, so only the path a model uses gets compiled.
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _fwd_plane_ser(x, gamma, beta, eps, y, mean, invstd):
    N, C, L = x.shape
    for c in range(C):
        _plane_stats_chan(x, c, eps, mean, invstd)
    for n in range(N):
        for c in range(C):
            _norm_plane(x[n, c], y[n, c], gamma[c], mean[c], invstd[c], beta[c])


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _fwd_plane_par_c(x, gamma, beta, eps, y, mean, invstd):
    N, C, L = x.shape
    for c in prange(C):
        _plane_stats_chan(x, c, eps, mean, invstd)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        _norm_plane(x[n, c], y[n, c], gamma[c], mean[c], invstd[c], beta[c])


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _fwd_plane_par_p(x, gamma, beta, eps, y, mean, invstd):
    """Few channels: plane partials in parallel, combined per channel in n order."""
    N, C, L = x.shape
    part = np.empty((2, N * C), dtype=np.float64)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        s, q = _shifted_sums(x[n, c], np.float64(x[0, c, 0]))
        part[0, p] = s
        part[1, p] = q
    Mf = np.float64(N * L)
    for c in range(C):
        S = 0.0
        Q = 0.0
        for n in range(N):
            S += part[0, n * C + c]
            Q += part[1, n * C + c]
        _finish_stats(S, Q, np.float64(x[0, c, 0]), Mf, eps, mean, invstd, c)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        _norm_plane(x[n, c], y[n, c], gamma[c], mean[c], invstd[c], beta[c])


@njit(cache=True, nogil=True, error_model="numpy")
def _fwd_row_ser(x, gamma, beta, eps, y, mean, invstd):
    N, C, L = x.shape
    x2 = x.reshape(N, C * L)
    y2 = y.reshape(N, C * L)
    aS = np.empty(C * L, dtype=np.float64)
    aQ = np.empty(C * L, dtype=np.float64)
    shv = np.empty(C * L, dtype=np.float64)
    _row_stats_blk(x2, L, 0, C, eps, mean, invstd, aS, aQ, shv)
    for n in range(N):
        _norm_row(x2[n], y2[n], C, L, gamma, mean, invstd, beta)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _fwd_row_par(x, gamma, beta, eps, y, mean, invstd):
    N, C, L = x.shape
    x2 = x.reshape(N, C * L)
    y2 = y.reshape(N, C * L)
    aS = np.empty(C * L, dtype=np.float64)
    aQ = np.empty(C * L, dtype=np.float64)
    shv = np.empty(C * L, dtype=np.float64)
    for cb in prange((C + CBLK - 1) // CBLK):
        c0 = cb * CBLK
        _row_stats_blk(x2, L, c0, min(c0 + CBLK, C), eps, mean, invstd, aS, aQ, shv)
    for n in prange(N):
        _norm_row(x2[n], y2[n], C, L, gamma, mean, invstd, beta)


def batchnorm_forward_train(x, gamma, beta, eps, y, mean, invstd):
    N, C, L = x.shape
    if L >= LPLANE:
        if x.size < PARALLEL_MIN_WORK:
            k = _fwd_plane_ser
        else:
            k = _fwd_plane_par_c if C >= CPAR else _fwd_plane_par_p
    else:
        k = _fwd_row_ser if x.size < PARALLEL_MIN_WORK else _fwd_row_par
    k(x, gamma, beta, float(eps), y, mean, invstd)


# ---------------------------------------------------------------------------------------------
# forward (inference): y = x * scale[c] + shift[c]
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _affine_plane(xp, yp, a, b):
    for i in range(xp.size):
        yp[i] = xp[i] * a + b


@njit(cache=True, nogil=True, error_model="numpy")
def _affine_row(xr, yr, C, L, scale, shift):
    if L == 1:
        for c in range(C):
            yr[c] = xr[c] * scale[c] + shift[c]
    else:
        for c in range(C):
            _affine_plane(xr[c * L:c * L + L], yr[c * L:c * L + L], scale[c], shift[c])


@njit(cache=True, nogil=True, error_model="numpy")
def _inf_ser(x, scale, shift, y):
    N, C, L = x.shape
    x2 = x.reshape(N, C * L)
    y2 = y.reshape(N, C * L)
    for n in range(N):
        _affine_row(x2[n], y2[n], C, L, scale, shift)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _inf_plane_par(x, scale, shift, y):
    N, C, L = x.shape
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        _affine_plane(x[n, c], y[n, c], scale[c], shift[c])


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _inf_row_par(x, scale, shift, y):
    N, C, L = x.shape
    x2 = x.reshape(N, C * L)
    y2 = y.reshape(N, C * L)
    for n in prange(N):
        _affine_row(x2[n], y2[n], C, L, scale, shift)


def batchnorm_forward_infer(x, scale, shift, y):
    if x.size < PARALLEL_MIN_WORK:
        _inf_ser(x, scale, shift, y)
    elif x.shape[2] >= LPLANE:
        _inf_plane_par(x, scale, shift, y)
    else:
        _inf_row_par(x, scale, shift, y)


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _plane_bsums(xp, dyp, mu, ist, xh):
    """(sum dy, sum dy * xhat) of one plane in float64; xh: float32 scratch (>= plane)."""
    L = xp.size
    for i in range(L):
        xh[i] = (xp[i] - mu) * ist
    return _sum_f64(dyp), _dot_f64(dyp, xh[:L])


@njit(cache=True, nogil=True, error_model="numpy")
def _plane_bwd_chan(x, dy, c, mean, invstd, dgamma, dbeta, xh):
    N = x.shape[0]
    mu = mean[c]
    ist = invstd[c]
    B = 0.0
    G = 0.0
    for n in range(N):
        sb, sg = _plane_bsums(x[n, c], dy[n, c], mu, ist, xh)
        B += sb
        G += sg
    dbeta[c] = _f32(B)
    dgamma[c] = _f32(G)


@njit(cache=True, nogil=True, error_model="numpy")
def _row_bwd_blk(x2, dy2, L, c0, c1, mean, invstd, dgamma, dbeta, aB, aG, muv, isv, xh):
    """Row path sums for channels [c0, c1): aB, aG (C*L,) float64; muv, isv, xh (C*L,) float32."""
    N = x2.shape[0]
    k0 = c0 * L
    k1 = c1 * L
    for c in range(c0, c1):
        for k in range(c * L, c * L + L):
            muv[k] = mean[c]
            isv[k] = invstd[c]
            aB[k] = 0.0
            aG[k] = 0.0
    wb = aB[k0:k1]
    wg = aG[k0:k1]
    wm = muv[k0:k1]
    wi = isv[k0:k1]
    wx = xh[k0:k1]
    for n in range(N):
        xr = x2[n, k0:k1]
        dr = dy2[n, k0:k1]
        for k in range(k1 - k0):
            wx[k] = (xr[k] - wm[k]) * wi[k]
        for k in range(k1 - k0):
            d = np.float64(dr[k])
            wb[k] += d
            wg[k] += d * np.float64(wx[k])
    for c in range(c0, c1):
        B = 0.0
        G = 0.0
        for k in range(c * L, c * L + L):
            B += aB[k]
            G += aG[k]
        dbeta[c] = _f32(B)
        dgamma[c] = _f32(G)


@njit(cache=True, nogil=True, error_model="numpy")
def _dx_plane(xp, dyp, dxp, mu, ist, kc, Mf, db, dg):
    for i in range(xp.size):
        xh = (xp[i] - mu) * ist
        dxp[i] = kc * ((Mf * dyp[i] - db) - xh * dg)


@njit(cache=True, nogil=True, error_model="numpy")
def _dx_row(xr, dyr, dxr, C, L, gamma, mean, invstd, dgamma, dbeta, Mf):
    if L == 1:
        for c in range(C):
            ist = invstd[c]
            xh = (xr[c] - mean[c]) * ist
            dxr[c] = (gamma[c] * ist / Mf) * ((Mf * dyr[c] - dbeta[c]) - xh * dgamma[c])
    else:
        for c in range(C):
            ist = invstd[c]
            s = c * L
            _dx_plane(xr[s:s + L], dyr[s:s + L], dxr[s:s + L], mean[c], ist, gamma[c] * ist / Mf,
                      Mf, dbeta[c], dgamma[c])


@njit(cache=True, nogil=True, error_model="numpy")
def _bwd_plane_ser(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    N, C, L = x.shape
    Mf = _f32(N * L)
    xh = np.empty(L, dtype=np.float32)
    for c in range(C):
        _plane_bwd_chan(x, dy, c, mean, invstd, dgamma, dbeta, xh)
    for n in range(N):
        for c in range(C):
            ist = invstd[c]
            _dx_plane(x[n, c], dy[n, c], dx[n, c], mean[c], ist, gamma[c] * ist / Mf, Mf,
                      dbeta[c], dgamma[c])


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _bwd_plane_par_c(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    N, C, L = x.shape
    Mf = _f32(N * L)
    for c in prange(C):
        xh = np.empty(L, dtype=np.float32)
        _plane_bwd_chan(x, dy, c, mean, invstd, dgamma, dbeta, xh)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        ist = invstd[c]
        _dx_plane(x[n, c], dy[n, c], dx[n, c], mean[c], ist, gamma[c] * ist / Mf, Mf, dbeta[c],
                  dgamma[c])


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _bwd_plane_par_p(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    """Few channels: plane partials in parallel, combined per channel in n order."""
    N, C, L = x.shape
    Mf = _f32(N * L)
    part = np.empty((2, N * C), dtype=np.float64)
    for p in prange(N * C):
        xh = np.empty(L, dtype=np.float32)
        n = p // C
        c = p - n * C
        sb, sg = _plane_bsums(x[n, c], dy[n, c], mean[c], invstd[c], xh)
        part[0, p] = sb
        part[1, p] = sg
    for c in range(C):
        B = 0.0
        G = 0.0
        for n in range(N):
            B += part[0, n * C + c]
            G += part[1, n * C + c]
        dbeta[c] = _f32(B)
        dgamma[c] = _f32(G)
    for p in prange(N * C):
        n = p // C
        c = p - n * C
        ist = invstd[c]
        _dx_plane(x[n, c], dy[n, c], dx[n, c], mean[c], ist, gamma[c] * ist / Mf, Mf, dbeta[c],
                  dgamma[c])


@njit(cache=True, nogil=True, error_model="numpy")
def _bwd_row_ser(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    N, C, L = x.shape
    Mf = _f32(N * L)
    x2 = x.reshape(N, C * L)
    dy2 = dy.reshape(N, C * L)
    dx2 = dx.reshape(N, C * L)
    aB = np.empty(C * L, dtype=np.float64)
    aG = np.empty(C * L, dtype=np.float64)
    muv = np.empty(C * L, dtype=np.float32)
    isv = np.empty(C * L, dtype=np.float32)
    xh = np.empty(C * L, dtype=np.float32)
    _row_bwd_blk(x2, dy2, L, 0, C, mean, invstd, dgamma, dbeta, aB, aG, muv, isv, xh)
    for n in range(N):
        _dx_row(x2[n], dy2[n], dx2[n], C, L, gamma, mean, invstd, dgamma, dbeta, Mf)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _bwd_row_par(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    N, C, L = x.shape
    Mf = _f32(N * L)
    x2 = x.reshape(N, C * L)
    dy2 = dy.reshape(N, C * L)
    dx2 = dx.reshape(N, C * L)
    aB = np.empty(C * L, dtype=np.float64)
    aG = np.empty(C * L, dtype=np.float64)
    muv = np.empty(C * L, dtype=np.float32)
    isv = np.empty(C * L, dtype=np.float32)
    xh = np.empty(C * L, dtype=np.float32)
    for cb in prange((C + CBLK - 1) // CBLK):
        c0 = cb * CBLK
        _row_bwd_blk(x2, dy2, L, c0, min(c0 + CBLK, C), mean, invstd, dgamma, dbeta, aB, aG,
                     muv, isv, xh)
    for n in prange(N):
        _dx_row(x2[n], dy2[n], dx2[n], C, L, gamma, mean, invstd, dgamma, dbeta, Mf)


def batchnorm_backward(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    N, C, L = x.shape
    if L >= LPLANE:
        if x.size < PARALLEL_MIN_WORK:
            k = _bwd_plane_ser
        else:
            k = _bwd_plane_par_c if C >= CPAR else _bwd_plane_par_p
    else:
        k = _bwd_row_ser if x.size < PARALLEL_MIN_WORK else _bwd_row_par
    k(dy, x, gamma, mean, invstd, dx, dgamma, dbeta)
