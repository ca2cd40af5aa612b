"""A network's first convolution block as one kernel (Numba backend): Conv2D (stride 1) -> ReLU ->
MaxPool2D(2). Same interface as fastnn.reference.convpool.

The (N, F, OH, OW) convolution output and im2col's columns are never stored. Both passes work one
image at a time on a zero-padded copy of it, xp (C, Hp, Wp) (Hp = H + 2 pad, Wp = W + 2 pad, plus
kw zeros of slack at the end), and on convolution planes with xp's row stride Wp: the output pixel
(oh, ow) sits at k = oh * Wp + ow, so the tap (c, i, j) of every pixel is xp[(c Hp + i) Wp + j + k]
and each loop over k is one long contiguous range that LLVM vectorises. The columns ow >= OW of a
plane are junk (they read the next row) and are never used.

Forward, per image and per block of _FB filters (W padded with zero filters to a multiple of _FB):
one pass per kernel row (c, i) accumulates the kw taps of the _FB filters into _FB planes (every
xp load serves _FB filters, the weights sit in registers), over the 2 PH rows the pooling reads;
then each plane gets its bias, is pooled 2x2 (the first maximum in window order, a NaN wins: as
maxpool2d_forward) and goes through the ReLU. The images go to the workers one at a time.

Backward, images in fixed chunks of _CHUNK (from N alone: the bits never depend on the threads):
per image and block of _FB filters, dense dy planes (zero, then g = dp * (p > 0) added at each
argmax), and per kernel row (c, i) the kw * _FB dot products of those planes with the shifted xp
rows (reassociated float32 sums: _dots), and db += row_sum(g) (_common: a fixed 16-lane tree).
Each chunk writes its own partial dW and db; the partials are added in chunk order at the end.
An image with an inf or NaN anywhere takes exact per-row sums instead (a junk column must not turn
a 0 * inf into a NaN the reference has not).

Every array is indexed with unsigned integers (`_U(i)`), as in pool.py and conv.py: Numba's
negative-index wraparound would otherwise put a select on every access and stop the vectoriser.
"""

import numba
import numpy as np
from numba import njit, prange

from ._common import PARALLEL_MIN_WORK, fetch_add, row_sum
from .pool import _take

_U = np.uint64
_FB = 4      # filters per pass (forward and backward)
# A sum's start: +0, as BLAS's accumulators (and so the reference's GEMM) start; adding it changes
# no value but the sign of a zero (a sum of -0 products is +0 there)
_Z = np.float32(0.0)
_CHUNK = 4   # images per partial dW / db in the backward pass (fixed: it defines the sums)


# ------------------------------------------------------------------------------------- helpers


@njit(cache=True, nogil=True)
def _copy_padded(xf, n, C, H, Wd, pad, Hp, Wp, xp):
    """The interior of xp = image n (its border and slack stay the zeros they were created with)."""
    for c in range(C):
        for h in range(H):
            src = ((n * C + c) * H + h) * Wd
            dst = (c * Hp + h + pad) * Wp + pad
            for w in range(Wd):
                xp[_U(dst + w)] = xf[_U(src + w)]


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _finite(xf, o, m):
    """Whether xf[o:o+m] holds finite numbers only (0 * v is 0 unless v is inf or NaN)."""
    s = np.float32(0.0)
    for k in range(m):
        s += xf[_U(o + k)] * np.float32(0.0)
    return s == np.float32(0.0)


# ------------------------------------------------------------------------------------- forward
# acc holds _FB planes of L floats; one pass adds row i of channel c of the kernels:
#   acc[q L + k] (+)= sum_j w[wo + q K + j] * xp[xo + k + j]      (assigned when `first`)


@njit(cache=True, nogil=True)
def _pass_k5(xp, xo, acc, L, w, wo, K, first):
    a0, a1, a2, a3, a4 = w[_U(wo)], w[_U(wo + 1)], w[_U(wo + 2)], w[_U(wo + 3)], w[_U(wo + 4)]
    o = wo + K
    b0, b1, b2, b3, b4 = w[_U(o)], w[_U(o + 1)], w[_U(o + 2)], w[_U(o + 3)], w[_U(o + 4)]
    o += K
    c0, c1, c2, c3, c4 = w[_U(o)], w[_U(o + 1)], w[_U(o + 2)], w[_U(o + 3)], w[_U(o + 4)]
    o += K
    d0, d1, d2, d3, d4 = w[_U(o)], w[_U(o + 1)], w[_U(o + 2)], w[_U(o + 3)], w[_U(o + 4)]
    if first:
        for k in range(L):
            x0, x1, x2 = xp[_U(xo + k)], xp[_U(xo + k + 1)], xp[_U(xo + k + 2)]
            x3, x4 = xp[_U(xo + k + 3)], xp[_U(xo + k + 4)]
            acc[_U(k)] = _Z + a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4
            acc[_U(L + k)] = _Z + b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4
            acc[_U(2 * L + k)] = _Z + c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3 + c4 * x4
            acc[_U(3 * L + k)] = _Z + d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3 + d4 * x4
    else:
        for k in range(L):
            x0, x1, x2 = xp[_U(xo + k)], xp[_U(xo + k + 1)], xp[_U(xo + k + 2)]
            x3, x4 = xp[_U(xo + k + 3)], xp[_U(xo + k + 4)]
            acc[_U(k)] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4
            acc[_U(L + k)] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4
            acc[_U(2 * L + k)] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3 + c4 * x4
            acc[_U(3 * L + k)] += d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3 + d4 * x4


@njit(cache=True, nogil=True)
def _pass_k3(xp, xo, acc, L, w, wo, K, first):
    a0, a1, a2 = w[_U(wo)], w[_U(wo + 1)], w[_U(wo + 2)]
    o = wo + K
    b0, b1, b2 = w[_U(o)], w[_U(o + 1)], w[_U(o + 2)]
    o += K
    c0, c1, c2 = w[_U(o)], w[_U(o + 1)], w[_U(o + 2)]
    o += K
    d0, d1, d2 = w[_U(o)], w[_U(o + 1)], w[_U(o + 2)]
    if first:
        for k in range(L):
            x0, x1, x2 = xp[_U(xo + k)], xp[_U(xo + k + 1)], xp[_U(xo + k + 2)]
            acc[_U(k)] = _Z + a0 * x0 + a1 * x1 + a2 * x2
            acc[_U(L + k)] = _Z + b0 * x0 + b1 * x1 + b2 * x2
            acc[_U(2 * L + k)] = _Z + c0 * x0 + c1 * x1 + c2 * x2
            acc[_U(3 * L + k)] = _Z + d0 * x0 + d1 * x1 + d2 * x2
    else:
        for k in range(L):
            x0, x1, x2 = xp[_U(xo + k)], xp[_U(xo + k + 1)], xp[_U(xo + k + 2)]
            acc[_U(k)] += a0 * x0 + a1 * x1 + a2 * x2
            acc[_U(L + k)] += b0 * x0 + b1 * x1 + b2 * x2
            acc[_U(2 * L + k)] += c0 * x0 + c1 * x1 + c2 * x2
            acc[_U(3 * L + k)] += d0 * x0 + d1 * x1 + d2 * x2


@njit(cache=True, nogil=True)
def _pass_k1(xp, xo, acc, L, w, wo, K, first):
    """One tap (any kernel width: called once per column j)."""
    a, b, c, d = w[_U(wo)], w[_U(wo + K)], w[_U(wo + 2 * K)], w[_U(wo + 3 * K)]
    if first:
        for k in range(L):
            x = xp[_U(xo + k)]
            acc[_U(k)] = _Z + a * x
            acc[_U(L + k)] = _Z + b * x
            acc[_U(2 * L + k)] = _Z + c * x
            acc[_U(3 * L + k)] = _Z + d * x
    else:
        for k in range(L):
            x = xp[_U(xo + k)]
            acc[_U(k)] += a * x
            acc[_U(L + k)] += b * x
            acc[_U(2 * L + k)] += c * x
            acc[_U(3 * L + k)] += d * x


@njit(cache=True, nogil=True)
def _pool_plane(acc, ao, Wp, bf, PH, PW, OW, pf, af, po):
    """p[po:po + PH PW] = relu(2x2 max of (plane + bf)), argmax = oh OW + ow (as pool.py)."""
    zero = np.float32(0.0)
    for ph in range(PH):
        r = ao + 2 * ph * Wp
        a0 = 2 * ph * OW
        o = po + ph * PW
        for pw in range(PW):
            k = r + 2 * pw
            a = a0 + 2 * pw
            best = acc[_U(k)] + bf
            bk = a
            best, bk = _take(acc[_U(k + 1)] + bf, a + 1, best, bk)
            best, bk = _take(acc[_U(k + Wp)] + bf, a + OW, best, bk)
            best, bk = _take(acc[_U(k + Wp + 1)] + bf, a + OW + 1, best, bk)
            pf[_U(o + pw)] = zero if best < zero else best
            af[_U(o + pw)] = np.int32(bk)


@njit(cache=True, nogil=True)
def _fwd_image(xf, wq, b, C, H, Wd, F, kh, kw, pad, PH, PW, n, xp, acc, pf, af):
    Hp, Wp = H + 2 * pad, Wd + 2 * pad
    OW = Wp - kw + 1
    K = C * kh * kw
    L = 2 * PH * Wp  # the rows the pooling reads
    _copy_padded(xf, n, C, H, Wd, pad, Hp, Wp, xp)
    for f0 in range(0, F, _FB):
        first = True
        for c in range(C):
            for i in range(kh):
                xo = (c * Hp + i) * Wp
                wo = f0 * K + (c * kh + i) * kw
                if kw == 5:
                    _pass_k5(xp, xo, acc, L, wq, wo, K, first)
                elif kw == 3:
                    _pass_k3(xp, xo, acc, L, wq, wo, K, first)
                else:
                    for j in range(kw):
                        _pass_k1(xp, xo + j, acc, L, wq, wo + j, K, first and j == 0)
                first = False
        for q in range(min(_FB, F - f0)):
            f = f0 + q
            _pool_plane(acc, q * L, Wp, b[_U(f)], PH, PW, OW, pf, af, (n * F + f) * PH * PW)


@njit(cache=True, nogil=True)
def _fwd_worker(xf, wq, b, N, C, H, Wd, F, kh, kw, pad, PH, PW, pf, af, next_n):
    """Images from the shared counter next_n until none is left (all of them, in order, when
    next_n is empty)."""
    xp = np.zeros(C * (H + 2 * pad) * (Wd + 2 * pad) + kw, np.float32)
    acc = np.empty(_FB * 2 * PH * (Wd + 2 * pad), np.float32)
    if next_n.size == 0:
        for n in range(N):
            _fwd_image(xf, wq, b, C, H, Wd, F, kh, kw, pad, PH, PW, n, xp, acc, pf, af)
        return
    n = fetch_add(next_n, 0, 1)
    while n < N:
        _fwd_image(xf, wq, b, C, H, Wd, F, kh, kw, pad, PH, PW, n, xp, acc, pf, af)
        n = fetch_add(next_n, 0, 1)


@njit(cache=True, nogil=True)
def _padded_weights(W):
    """W as (F rounded up to _FB, C kh kw), flat, the extra filters zero (their planes unused)."""
    F = W.shape[0]
    FK = W.size
    Fq = (F + _FB - 1) // _FB * _FB
    wq = np.zeros(Fq * (FK // F), np.float32)
    Wf = W.reshape(-1)
    for t in range(FK):
        wq[_U(t)] = Wf[_U(t)]
    return wq


@njit(cache=True, nogil=True)
def _fwd_serial(x, W, b, pad, p, argmax):
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    PH, PW = p.shape[2], p.shape[3]
    _fwd_worker(x.reshape(-1), _padded_weights(W), b, N, C, H, Wd, F, kh, kw, pad, PH, PW,
                p.reshape(-1), argmax.reshape(-1), np.empty(0, np.int64))


@njit(cache=True, nogil=True, parallel=True)
def _fwd_parallel(x, W, b, pad, p, argmax, workers):
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    PH, PW = p.shape[2], p.shape[3]
    xf, pf, af = x.reshape(-1), p.reshape(-1), argmax.reshape(-1)
    wq = _padded_weights(W)
    next_n = np.zeros(1, np.int64)
    for _ in prange(workers):  # each worker takes the next image (dynamic scheduling)
        _fwd_worker(xf, wq, b, N, C, H, Wd, F, kh, kw, pad, PH, PW, pf, af, next_n)


def _work(x, W, pad):
    """Multiply-adds of the convolution (the parallel threshold's measure, as conv2d's cols)."""
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    return N * (H + 2 * pad - kh + 1) * (Wd + 2 * pad - kw + 1) * C * kh * kw


def conv2d_relu_pool_forward(x, W, b, pad, p, argmax):
    if p.size == 0:
        return
    pad = int(pad)
    threads = numba.get_num_threads()
    N = x.shape[0]
    if N > 1 and threads > 1 and _work(x, W, pad) >= PARALLEL_MIN_WORK:
        _fwd_parallel(x, W, b, pad, p, argmax, min(threads, N))
    else:
        _fwd_serial(x, W, b, pad, p, argmax)


# ------------------------------------------------------------------------------------ backward
# d holds _FB dy planes of L = OH Wp floats; per kernel row (c, i):
#   out[oo + q K + j] += sum_k d[q L + k] * xp[xo + k + j]     (q < nf)
# as float32 sums that LLVM may reassociate (vector lanes, a fixed tree at the end: the same bits
# on every call).


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dots_k5(xp, xo, d, L, out, oo, K, nf):
    z = np.float32(0.0)
    s00 = s01 = s02 = s03 = s04 = s10 = s11 = s12 = s13 = s14 = z
    s20 = s21 = s22 = s23 = s24 = s30 = s31 = s32 = s33 = s34 = z
    for k in range(L):
        x0, x1, x2 = xp[_U(xo + k)], xp[_U(xo + k + 1)], xp[_U(xo + k + 2)]
        x3, x4 = xp[_U(xo + k + 3)], xp[_U(xo + k + 4)]
        g0, g1, g2, g3 = d[_U(k)], d[_U(L + k)], d[_U(2 * L + k)], d[_U(3 * L + k)]
        s00 += g0 * x0
        s01 += g0 * x1
        s02 += g0 * x2
        s03 += g0 * x3
        s04 += g0 * x4
        s10 += g1 * x0
        s11 += g1 * x1
        s12 += g1 * x2
        s13 += g1 * x3
        s14 += g1 * x4
        s20 += g2 * x0
        s21 += g2 * x1
        s22 += g2 * x2
        s23 += g2 * x3
        s24 += g2 * x4
        s30 += g3 * x0
        s31 += g3 * x1
        s32 += g3 * x2
        s33 += g3 * x3
        s34 += g3 * x4
    _add5(out, oo, s00, s01, s02, s03, s04)
    if nf > 1:
        _add5(out, oo + K, s10, s11, s12, s13, s14)
    if nf > 2:
        _add5(out, oo + 2 * K, s20, s21, s22, s23, s24)
    if nf > 3:
        _add5(out, oo + 3 * K, s30, s31, s32, s33, s34)


@njit(cache=True, nogil=True)
def _add5(out, o, s0, s1, s2, s3, s4):
    out[_U(o)] += s0
    out[_U(o + 1)] += s1
    out[_U(o + 2)] += s2
    out[_U(o + 3)] += s3
    out[_U(o + 4)] += s4


@njit(cache=True, nogil=True)
def _add3(out, o, s0, s1, s2):
    out[_U(o)] += s0
    out[_U(o + 1)] += s1
    out[_U(o + 2)] += s2


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dots_k3(xp, xo, d, L, out, oo, K, nf):
    z = np.float32(0.0)
    s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = z
    for k in range(L):
        x0, x1, x2 = xp[_U(xo + k)], xp[_U(xo + k + 1)], xp[_U(xo + k + 2)]
        g0, g1, g2, g3 = d[_U(k)], d[_U(L + k)], d[_U(2 * L + k)], d[_U(3 * L + k)]
        s00 += g0 * x0
        s01 += g0 * x1
        s02 += g0 * x2
        s10 += g1 * x0
        s11 += g1 * x1
        s12 += g1 * x2
        s20 += g2 * x0
        s21 += g2 * x1
        s22 += g2 * x2
        s30 += g3 * x0
        s31 += g3 * x1
        s32 += g3 * x2
    _add3(out, oo, s00, s01, s02)
    if nf > 1:
        _add3(out, oo + K, s10, s11, s12)
    if nf > 2:
        _add3(out, oo + 2 * K, s20, s21, s22)
    if nf > 3:
        _add3(out, oo + 3 * K, s30, s31, s32)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _dots_k1(xp, xo, d, L, out, oo, K, nf):
    """One tap (any kernel width: called once per column j)."""
    z = np.float32(0.0)
    s0 = s1 = s2 = s3 = z
    for k in range(L):
        x = xp[_U(xo + k)]
        s0 += d[_U(k)] * x
        s1 += d[_U(L + k)] * x
        s2 += d[_U(2 * L + k)] * x
        s3 += d[_U(3 * L + k)] * x
    out[_U(oo)] += s0
    if nf > 1:
        out[_U(oo + K)] += s1
    if nf > 2:
        out[_U(oo + 2 * K)] += s2
    if nf > 3:
        out[_U(oo + 3 * K)] += s3


@njit(cache=True, nogil=True)
def _dots_exact(xp, xo, d, OH, OW, Wp, L, out, oo, K, kw, nf):
    """As the _dots_* (every j), summing the OW real columns of each row only, in order."""
    for q in range(nf):
        for j in range(kw):
            s = np.float32(0.0)
            for oh in range(OH):
                r = oh * Wp
                for ow in range(OW):
                    s += d[_U(q * L + r + ow)] * xp[_U(xo + r + ow + j)]
            out[_U(oo + q * K + j)] += s


@njit(cache=True, nogil=True)
def _bwd_chunk(dpf, pf, af, xf, C, H, Wd, F, kh, kw, pad, PH, PW, n0, n1, part, po, xp, d, gq):
    """dW (F, C kh kw) at part[po:] and db (F) after it, of images n0:n1 only. Returns how many
    argmax were outside [0, OH OW) (their g is dropped: nothing is written out of bounds)."""
    Hp, Wp = H + 2 * pad, Wd + 2 * pad
    OH, OW = Hp - kh + 1, Wp - kw + 1
    HW = OH * OW
    L = OH * Wp
    K = C * kh * kw
    Q = PH * PW
    zero, one = np.float32(0.0), np.float32(1.0)
    dbo = po + F * K
    for t in range(F * K + F):
        part[_U(po + t)] = zero
    bad = 0
    for n in range(n0, n1):
        _copy_padded(xf, n, C, H, Wd, pad, Hp, Wp, xp)
        finite = _finite(xf, n * C * H * Wd, C * H * Wd)
        for f0 in range(0, F, _FB):
            nf = min(_FB, F - f0)
            for t in range(_FB * L):
                d[_U(t)] = zero
            for q in range(nf):
                o = (n * F + f0 + q) * Q
                for t in range(Q):
                    gq[_U(t)] = dpf[_U(o + t)] * (one if pf[_U(o + t)] > zero else zero)
                part[_U(dbo + f0 + q)] += row_sum(gq, 0, Q)
                for ph in range(PH):
                    lo = 2 * ph * OW  # the window's rows: argmax in [lo, lo + 2 OW), as forward
                    for pw in range(PW):
                        g = gq[_U(ph * PW + pw)]
                        a = af[_U(o + ph * PW + pw)]
                        if a >= lo and a < lo + 2 * OW:
                            oh = 2 * ph + (1 if a >= lo + OW else 0)
                        elif a >= 0 and a < HW:  # anywhere else in the plane
                            oh = a // OW
                        else:
                            bad += 1
                            continue
                        d[_U(q * L + a + oh * (Wp - OW))] += g
            for c in range(C):
                for i in range(kh):
                    xo = (c * Hp + i) * Wp
                    oo = po + f0 * K + (c * kh + i) * kw
                    if not finite:
                        _dots_exact(xp, xo, d, OH, OW, Wp, L, part, oo, K, kw, nf)
                    elif kw == 5:
                        _dots_k5(xp, xo, d, L, part, oo, K, nf)
                    elif kw == 3:
                        _dots_k3(xp, xo, d, L, part, oo, K, nf)
                    else:
                        for j in range(kw):
                            _dots_k1(xp, xo + j, d, L, part, oo + j, K, nf)
    return bad


@njit(cache=True, nogil=True)
def _bwd_worker(dpf, pf, af, xf, N, C, H, Wd, F, kh, kw, pad, PH, PW, nchunk, part, stride,
                next_c):
    """Chunks from the shared counter next_c (all of them, in order, when next_c is empty).
    Returns how many argmax were out of range."""
    Hp, Wp = H + 2 * pad, Wd + 2 * pad
    xp = np.zeros(C * Hp * Wp + kw, np.float32)
    d = np.empty(_FB * (Hp - kh + 1) * Wp, np.float32)
    gq = np.empty(PH * PW, np.float32)
    nb = 0
    if next_c.size == 0:
        for c in range(nchunk):
            nb += _bwd_chunk(dpf, pf, af, xf, C, H, Wd, F, kh, kw, pad, PH, PW, c * _CHUNK,
                             min(N, (c + 1) * _CHUNK), part, c * stride, xp, d, gq)
    else:
        c = fetch_add(next_c, 0, 1)
        while c < nchunk:
            nb += _bwd_chunk(dpf, pf, af, xf, C, H, Wd, F, kh, kw, pad, PH, PW, c * _CHUNK,
                             min(N, (c + 1) * _CHUNK), part, c * stride, xp, d, gq)
            c = fetch_add(next_c, 0, 1)
    return nb


@njit(cache=True, nogil=True)
def _sum_parts(part, nchunk, stride, out, o):
    """out[i] = part[o + i] + part[o + stride + i] + ... (chunk order)."""
    m = out.size
    for i in range(m):
        out[_U(i)] = part[_U(o + i)]
    for c in range(1, nchunk):
        po = o + c * stride
        for i in range(m):
            out[_U(i)] += part[_U(po + i)]


@njit(cache=True, nogil=True)
def _bwd_serial(dp, p, argmax, x, pad, dW, db):
    N, C, H, Wd = x.shape
    F = dW.shape[0]
    kh, kw = dW.shape[2], dW.shape[3]
    PH, PW = p.shape[2], p.shape[3]
    nchunk = (N + _CHUNK - 1) // _CHUNK
    FK = dW.size
    part = np.empty(nchunk * (FK + F), np.float32)
    bad = _bwd_worker(dp.reshape(-1), p.reshape(-1), argmax.reshape(-1), x.reshape(-1), N, C, H,
                      Wd, F, kh, kw, pad, PH, PW, nchunk, part, FK + F, np.empty(0, np.int64))
    _sum_parts(part, nchunk, FK + F, dW.reshape(-1), 0)
    _sum_parts(part, nchunk, FK + F, db, FK)
    return bad


@njit(cache=True, nogil=True, parallel=True)
def _bwd_parallel(dp, p, argmax, x, pad, dW, db, workers):
    N, C, H, Wd = x.shape
    F = dW.shape[0]
    kh, kw = dW.shape[2], dW.shape[3]
    PH, PW = p.shape[2], p.shape[3]
    nchunk = (N + _CHUNK - 1) // _CHUNK
    FK = dW.size
    part = np.empty(nchunk * (FK + F), np.float32)
    dpf, pf, af, xf = dp.reshape(-1), p.reshape(-1), argmax.reshape(-1), x.reshape(-1)
    next_c = np.zeros(1, np.int64)
    bads = np.zeros(workers, np.int64)
    for w in prange(workers):  # each worker takes the next chunk (dynamic scheduling)
        bads[w] = _bwd_worker(dpf, pf, af, xf, N, C, H, Wd, F, kh, kw, pad, PH, PW, nchunk, part,
                              FK + F, next_c)
    _sum_parts(part, nchunk, FK + F, dW.reshape(-1), 0)
    _sum_parts(part, nchunk, FK + F, db, FK)
    return bads.sum()


def conv2d_relu_pool_backward(dp, p, argmax, x, pad, dW, db):
    """dW, db; False (dW, db unspecified) when an argmax is outside [0, OH*OW)."""
    pad = int(pad)
    N = x.shape[0]
    threads = numba.get_num_threads()
    nchunk = -(-N // _CHUNK)
    if nchunk > 1 and threads > 1 and _work(x, dW, pad) >= PARALLEL_MIN_WORK:
        bad = _bwd_parallel(dp, p, argmax, x, pad, dW, db, min(threads, nchunk))
    else:
        bad = _bwd_serial(dp, p, argmax, x, pad, dW, db)
    return bad == 0
