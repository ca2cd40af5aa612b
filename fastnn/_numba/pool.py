"""Max pooling (Numba backend). Same interface as fastnn.reference.pool.

argmax holds i * W + j, the flat index of each window's maximum in its (H, W) input plane (int32).
The first maximum in row-major window order wins; a NaN counts as the maximum (the first NaN wins),
as np.argmax and PyTorch do. Both kernels work one (n, c) plane per task, so the backward scatter
never has two threads on one element and the result is the same on any thread count.
"""

import numpy as np
from numba import njit, prange

from ._common import PARALLEL_MIN_WORK

_U = np.uint64


@njit(cache=True, nogil=True, inline="always")
def _take(v, k, best, bk):
    """Running (max, argmax) update: strict > keeps the first maximum; a NaN wins once."""
    u = (v > best) | ((v != v) & (best == best))
    return (v if u else best), (k if u else bk)


@njit(cache=True, nogil=True, inline="always")
def _window_pass(xf, x0, yf, af, y0, k0, s, OW):
    """Fold x[x0 + k0 + ow*s] (flat in-plane index k0 + ow*s) into the running max of row y0."""
    for ow in range(OW):
        k = k0 + ow * s
        v = xf[_U(x0 + k)]
        best, bk = _take(v, np.int32(k), yf[_U(y0 + ow)], af[_U(y0 + ow)])
        yf[_U(y0 + ow)] = best
        af[_U(y0 + ow)] = bk


@njit(cache=True, nogil=True)
def _maxpool_fwd_plane(xf, H, W, ph, pw, s, yf, af, OH, OW, q):
    """One (n, c) plane. The output row itself holds the running maximum: for each window offset
    (i, j) in row-major order, one branch-free pass over the row, which LLVM vectorises."""
    xo = q * H * W
    if ph == 2 and pw == 2 and s == 2:  # the common case: one pass, four loads per output
        for oh in range(OH):
            yo = (q * OH + oh) * OW
            r0 = 2 * oh * W
            for ow in range(OW):
                k = r0 + 2 * ow
                best = xf[_U(xo + k)]
                bk = k
                best, bk = _take(xf[_U(xo + k + 1)], k + 1, best, bk)
                best, bk = _take(xf[_U(xo + k + W)], k + W, best, bk)
                best, bk = _take(xf[_U(xo + k + W + 1)], k + W + 1, best, bk)
                yf[_U(yo + ow)] = best
                af[_U(yo + ow)] = np.int32(bk)
        return
    for oh in range(OH):
        yo = (q * OH + oh) * OW
        r0 = oh * s * W
        for ow in range(OW):
            yf[_U(yo + ow)] = xf[_U(xo + r0 + ow * s)]
            af[_U(yo + ow)] = np.int32(r0 + ow * s)
        for i in range(ph):
            for j in range(pw):
                if i > 0 or j > 0:
                    k0 = r0 + i * W + j
                    if s == 2:  # constant stride: vectorised with shuffles, not gathers
                        _window_pass(xf, xo, yf, af, yo, k0, 2, OW)
                    else:  # (LLVM versions this loop for s == 1 by itself)
                        _window_pass(xf, xo, yf, af, yo, k0, s, OW)


@njit(cache=True, nogil=True)
def _maxpool_fwd_serial(x, ph, pw, s, y, argmax):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    af = argmax.reshape(-1)
    for q in range(N * C):
        _maxpool_fwd_plane(xf, H, W, ph, pw, s, yf, af, OH, OW, q)


@njit(cache=True, nogil=True, parallel=True)
def _maxpool_fwd_parallel(x, ph, pw, s, y, argmax):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    af = argmax.reshape(-1)
    for q in prange(N * C):
        _maxpool_fwd_plane(xf, H, W, ph, pw, s, yf, af, OH, OW, q)


def maxpool2d_forward(x, ph, pw, stride, y, argmax):
    ph, pw, stride = int(ph), int(pw), int(stride)
    if x.size < PARALLEL_MIN_WORK:
        _maxpool_fwd_serial(x, ph, pw, stride, y, argmax)
    else:
        _maxpool_fwd_parallel(x, ph, pw, stride, y, argmax)


@njit(cache=True, nogil=True)
def _maxpool_bwd_plane(dyf, af, dxf, HW, Q, q):
    """Zero the plane, then add each dy at its argmax. Each index is checked before its write;
    returns how many were outside [0, HW) (their dy is dropped)."""
    zero = np.float32(0.0)
    xo = q * HW
    for k in range(HW):
        dxf[_U(xo + k)] = zero
    yo = q * Q
    bad = 0
    for k in range(Q):
        a = af[_U(yo + k)]
        if a >= 0 and a < HW:
            dxf[_U(xo + a)] += dyf[_U(yo + k)]
        else:
            bad += 1
    return bad


@njit(cache=True, nogil=True)
def _maxpool_bwd_serial(dy, argmax, dx):
    N, C, H, W = dx.shape
    Q = dy.shape[2] * dy.shape[3]
    dyf = dy.reshape(-1)
    af = argmax.reshape(-1)
    dxf = dx.reshape(-1)
    bad = 0
    for q in range(N * C):
        bad += _maxpool_bwd_plane(dyf, af, dxf, H * W, Q, q)
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _maxpool_bwd_parallel(dy, argmax, dx):
    N, C, H, W = dx.shape
    Q = dy.shape[2] * dy.shape[3]
    dyf = dy.reshape(-1)
    af = argmax.reshape(-1)
    dxf = dx.reshape(-1)
    bad = 0
    for q in prange(N * C):
        bad += _maxpool_bwd_plane(dyf, af, dxf, H * W, Q, q)
    return bad


def maxpool2d_backward(dy, argmax, dx):
    """True when every argmax is in [0, H*W); False otherwise (nothing written out of bounds,
    dx unspecified: the caller raises)."""
    if dx.size < PARALLEL_MIN_WORK:
        return _maxpool_bwd_serial(dy, argmax, dx) == 0
    return _maxpool_bwd_parallel(dy, argmax, dx) == 0
