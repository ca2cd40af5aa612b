"""Losses fused with their gradients for the Numba backend (see fastnn/reference/losses.py).

Each returns the mean loss as a Python float and overwrites the gradient. Loss sums are float64
and deterministic: per-row (softmax CE) or per-block (BCE, MSE) partials are summed in the same
fixed order by the serial and the parallel kernel, so the result is bitwise the same on any thread
count. No fast-math on the loss arithmetic; only the float64 block sums use ``reassoc`` (see
activations.py).
"""

import numpy as np
from numba import njit, prange

from ._common import PARALLEL_MIN_WORK
from .activations import _expf, _fma, _maxf, _sum_f64

_f32 = np.float32

CE_ROWS = 8      # rows per loss partial of softmax_cross_entropy
BLK = 4096       # elements per loss partial of the flat losses (BCE, MSE)
GROUP = 4        # BCE blocks per parallel task (the task's scratch buffer is reused across them)


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _ce_row(logits, labels, dlogits, r, nf):
    """One row: max, exp into dlogits, sum, loss; then dlogits = (softmax - onehot) / N."""
    xr = logits[r]
    dr = dlogits[r]
    C = xr.shape[0]
    m = _maxf(xr)
    for j in range(C):
        dr[j] = _expf(xr[j] - m)
    s = _sum_f64(dr)
    lab = labels[r]
    el = dr[lab]
    sc = _f32(1.0 / (s * nf))
    for j in range(C):
        dr[j] = dr[j] * sc
    dr[lab] = _f32((np.float64(el) / s - 1.0) / nf)
    return np.log(s) - (np.float64(xr[lab]) - np.float64(m))


@njit(cache=True, nogil=True, error_model="numpy")
def _ce_block(logits, labels, dlogits, b, nf):
    N = logits.shape[0]
    r0 = b * CE_ROWS
    r1 = min(r0 + CE_ROWS, N)
    acc = 0.0
    for r in range(r0, r1):
        acc += _ce_row(logits, labels, dlogits, r, nf)
    return acc


@njit(cache=True, nogil=True, error_model="numpy")
def _ce_ser(logits, labels, dlogits):
    N = logits.shape[0]
    nf = np.float64(N)
    total = 0.0
    for b in range((N + CE_ROWS - 1) // CE_ROWS):
        total += _ce_block(logits, labels, dlogits, b, nf)
    return total / nf


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _ce_par(logits, labels, dlogits):
    N = logits.shape[0]
    nf = np.float64(N)
    nb = (N + CE_ROWS - 1) // CE_ROWS
    part = np.empty(nb, dtype=np.float64)
    for b in prange(nb):
        part[b] = _ce_block(logits, labels, dlogits, b, nf)
    total = 0.0
    for b in range(nb):
        total += part[b]
    return total / nf


@njit(cache=True, nogil=True)
def _labels_in_range(labels, C):
    for i in range(labels.shape[0]):
        if labels[i] < 0 or labels[i] >= C:
            return False
    return True


def softmax_cross_entropy(logits, labels, dlogits):
    if not _labels_in_range(labels, logits.shape[1]):
        return -1.0  # a label outside [0, C): nothing computed (see docs/backends.md)
    if logits.size >= PARALLEL_MIN_WORK:
        return float(_ce_par(logits, labels, dlogits))
    return float(_ce_ser(logits, labels, dlogits))


# ---------------------------------------------------------------------------------------------
# sigmoid binary cross-entropy (flat)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _log1pf01(e):
    """float32 log1p(e) for e in [0, 1] (Cephes logf polynomial on the reduced argument)."""
    big = e >= _f32(0.41421356237)
    # 1 + y = (1 + e) / 2**k with k = 1 when 1 + e >= sqrt(2); e * 0.5 - 0.5 errs <= 0.5 ulp
    y = e * _f32(0.5) - _f32(0.5) if big else e
    k = _f32(1.0) if big else _f32(0.0)
    z = y * y
    p = _f32(7.0376836292e-2)
    p = _fma(p, y, _f32(-1.1514610310e-1))
    p = _fma(p, y, _f32(1.1676998740e-1))
    p = _fma(p, y, _f32(-1.2420140846e-1))
    p = _fma(p, y, _f32(1.4249322787e-1))
    p = _fma(p, y, _f32(-1.6668057665e-1))
    p = _fma(p, y, _f32(2.0000714765e-1))
    p = _fma(p, y, _f32(-2.4999993993e-1))
    p = _fma(p, y, _f32(3.3333331174e-1))
    r = y * (z * p)
    r = _fma(k, _f32(-2.12194440e-4), r)
    r = _fma(_f32(-0.5), z, r)
    res = y + r
    return _fma(k, _f32(0.693359375), res)


@njit(cache=True, nogil=True, error_model="numpy")
def _bce_block(z, t, dz, buf, nf):
    """z, t, dz: slices of one block; buf: float32 scratch >= block. Returns the block loss sum."""
    n = z.size
    for i in range(n):
        v = z[i]
        tv = t[i]
        ex = _expf(-abs(v))
        mx = _f32(0.0) if v < _f32(0.0) else v  # np.maximum(z, 0)
        buf[i] = (mx - v * tv) + _log1pf01(ex)
        num = _f32(1.0) if v >= _f32(0.0) else ex
        dz[i] = (num / (_f32(1.0) + ex) - tv) / nf
    return _sum_f64(buf[:n])


@njit(cache=True, nogil=True, error_model="numpy")
def _bce_ser(z, t, dz):
    n = z.size
    nf = _f32(n)
    buf = np.empty(min(BLK, n), dtype=np.float32)
    total = 0.0
    for b in range((n + BLK - 1) // BLK):
        s = b * BLK
        e = min(s + BLK, n)
        total += _bce_block(z[s:e], t[s:e], dz[s:e], buf, nf)
    return total / np.float64(n)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _bce_par(z, t, dz):
    n = z.size
    nf = _f32(n)
    nb = (n + BLK - 1) // BLK
    part = np.empty(nb, dtype=np.float64)
    for g in prange((nb + GROUP - 1) // GROUP):
        buf = np.empty(BLK, dtype=np.float32)
        for b in range(g * GROUP, min(g * GROUP + GROUP, nb)):
            s = b * BLK
            e = min(s + BLK, n)
            part[b] = _bce_block(z[s:e], t[s:e], dz[s:e], buf, nf)
    total = 0.0
    for b in range(nb):
        total += part[b]
    return total / np.float64(n)


def sigmoid_binary_cross_entropy(logits, targets, dlogits):
    if logits.size >= PARALLEL_MIN_WORK:
        return float(_bce_par(logits, targets, dlogits))
    return float(_bce_ser(logits, targets, dlogits))


# ---------------------------------------------------------------------------------------------
# mean squared error (flat)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _mse_block(p, t, dp, sc):
    """dp = (p - t) * sc; returns sum of float64(p - t)**2. reassoc only reorders that sum: every
    other value is a single rounded operation on loaded operands."""
    acc = 0.0
    for i in range(p.size):
        d = p[i] - t[i]
        dp[i] = d * sc
        dd = np.float64(d)
        acc += dd * dd
    return acc


@njit(cache=True, nogil=True, error_model="numpy")
def _mse_ser(p, t, dp, sc):
    n = p.size
    total = 0.0
    for b in range((n + BLK - 1) // BLK):
        s = b * BLK
        e = min(s + BLK, n)
        total += _mse_block(p[s:e], t[s:e], dp[s:e], sc)
    return total / np.float64(n)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _mse_par(p, t, dp, sc):
    n = p.size
    nb = (n + BLK - 1) // BLK
    part = np.empty(nb, dtype=np.float64)
    for b in prange(nb):
        s = b * BLK
        e = min(s + BLK, n)
        part[b] = _mse_block(p[s:e], t[s:e], dp[s:e], sc)
    total = 0.0
    for b in range(nb):
        total += part[b]
    return total / np.float64(n)


def mse(pred, target, dpred):
    sc = np.float32(2.0 / pred.size)
    if pred.size >= PARALLEL_MIN_WORK:
        return float(_mse_par(pred, target, dpred, sc))
    return float(_mse_ser(pred, target, dpred, sc))
