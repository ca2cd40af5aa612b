"""Winograd F(2x2, 3x3) for the Numba backend's conv2d: the Numba form of kernels/_winograd.pxi
(the math, in NumPy: fastnn/reference/winograd.py). A 3x3, stride-1 convolution with >= 8 input
and output channels runs as 16 GEMMs over 4x4 transformed tiles, 2.25x fewer multiplies than
im2col + GEMM.

Images go in blocks of G (from the shapes only, ~WG_TILES tiles per block, so every GEMM has the
same shape whatever the threads). Forward per block (t = the block's tiles):
    V (16, C, T) = B^T d B  ->  M[p] (F, T) = U[p] (F, C) @ V[p]  ->  y = A^T M A + b
and the columns buffer keeps each block's V transposed, Vt (16, T, C); backward per block (dU
summed per fixed chunk of blocks, the chunks added in order at the end):
    dM = A dy A^T  ->  dU[p] += dM[p] @ Vt[p]  ->  dV[p] = U[p].T @ dM[p]  ->  dx = B dV B^T
Scratch (one flat buffer, `scratch_floats` floats, from the caller's workspace):
    U (16*F*C) | per chunk: dU partial (16*F*C) + db (F) | per worker: M or dM + dV, and V
Tiles of a plane are numbered t = ty*TW + tx; tile t covers the input pixels 2ty - pad ..
2ty - pad + 3 (rows; columns alike), zero outside the image, and the output pixels 2ty, 2ty + 1.
"""

import numpy as np
from numba import njit, prange

from ._common import fetch_add, row_sum
from ._gemm import gemm

WG_TILES = 100     # tiles per block (GEMM width) to aim for
WG_MIN_CH = 8      # input and output channels at least this many
WG_MAX_CHUNKS = 8  # dU partials in the backward pass
_U = np.uint64     # unsigned indexes: no negative-index wraparound selects in the loops


class Plan:
    """The blocking of one Winograd convolution (all from the shapes, plus the worker count)."""

    __slots__ = ("N", "C", "H", "W", "F", "pad", "OH", "OW", "TH", "TW", "TPI", "G", "nblk",
                 "nchunk", "Tmax", "sU", "sPart", "sThread", "workers")

    def __init__(self, N, C, H, W, F, pad, workers):
        self.N, self.C, self.H, self.W, self.F, self.pad = N, C, H, W, F, pad
        self.OH, self.OW = H + 2 * pad - 2, W + 2 * pad - 2
        self.TH, self.TW = (self.OH + 1) // 2, (self.OW + 1) // 2
        self.TPI = self.TH * self.TW
        self.G = min(N, WG_TILES // self.TPI if self.TPI < WG_TILES else 1)
        self.nblk = -(-N // self.G)
        self.nchunk = min(self.nblk, WG_MAX_CHUNKS)
        self.Tmax = self.G * self.TPI
        self.sU = 16 * F * C
        self.sPart = self.nchunk * (self.sU + F)
        self.sThread = 16 * (F + C) * self.Tmax
        self.workers = workers

    def scratch_floats(self) -> int:
        return self.sU + self.sPart + self.workers * self.sThread


def plan(N, C, H, W, F, kh, kw, stride, pad, workers) -> Plan | None:
    """The Plan when this convolution runs as Winograd, else None (same rule as the Cython one)."""
    OH, OW = H + 2 * pad - 2, W + 2 * pad - 2
    if kh != 3 or kw != 3 or stride != 1 or OH < 2 or OW < 2:
        return None
    if C < WG_MIN_CH or F < WG_MIN_CH or N < 1:
        return None
    if 16 * ((OH + 1) // 2) * ((OW + 1) // 2) > 9 * OH * OW:  # V must fit in the columns buffer
        return None
    return Plan(N, C, H, W, F, pad, max(1, workers))


# ------------------------------------------------------------------------- tile transforms


@njit(cache=True, nogil=True)
def _weights(Wf, F, C, U):
    """U[p*F*C + k] = (G g G^T)[p] for every filter g = W[f, c] (k = f*C + c)."""
    FC = F * C
    h = np.float32(0.5)
    t = np.empty(12, np.float32)
    for k in range(FC):
        g = 9 * k
        for j in range(3):  # G g
            g0, g1, g2 = Wf[_U(g + j)], Wf[_U(g + 3 + j)], Wf[_U(g + 6 + j)]
            t[j] = g0
            t[3 + j] = h * (g0 + g1 + g2)
            t[6 + j] = h * (g0 - g1 + g2)
            t[9 + j] = g2
        for i in range(4):  # (G g) G^T
            a, b, c = t[3 * i], t[3 * i + 1], t[3 * i + 2]
            U[_U((4 * i) * FC + k)] = a
            U[_U((4 * i + 1) * FC + k)] = h * (a + b + c)
            U[_U((4 * i + 2) * FC + k)] = h * (a - b + c)
            U[_U((4 * i + 3) * FC + k)] = c


@njit(cache=True, nogil=True)
def _weights_grad(dU, F, C, dWf):
    """dW[f, c] (3x3) = G^T dU[f, c] G, from dU[p*F*C + k]."""
    FC = F * C
    h = np.float32(0.5)
    x = np.empty(16, np.float32)
    r = np.empty(12, np.float32)
    for k in range(FC):
        for p in range(16):
            x[p] = dU[_U(p * FC + k)]
        for j in range(4):  # G^T dU
            r[j] = x[j] + h * (x[4 + j] + x[8 + j])
            r[4 + j] = h * (x[4 + j] - x[8 + j])
            r[8 + j] = h * (x[4 + j] + x[8 + j]) + x[12 + j]
        for i in range(3):  # (G^T dU) G
            a, b, c, d = r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]
            dWf[_U(9 * k + 3 * i)] = a + h * (b + c)
            dWf[_U(9 * k + 3 * i + 1)] = h * (b - c)
            dWf[_U(9 * k + 3 * i + 2)] = h * (b + c) + d


@njit(cache=True, nogil=True)
def _input_plane(xf, xo, H, W, pad, TH, TW, V, vo, ldp, d):
    """V[vo + p*ldp + t] = (B^T d B)[p] for every tile t of the plane xf[xo:] (H, W)."""
    for ty in range(TH):
        h0 = 2 * ty - pad
        for tx in range(TW):
            w0 = 2 * tx - pad
            if h0 >= 0 and h0 + 4 <= H and w0 >= 0 and w0 + 4 <= W:
                for i in range(4):
                    o = xo + (h0 + i) * W + w0
                    for j in range(4):
                        d[4 * i + j] = xf[_U(o + j)]
            else:
                for i in range(4):
                    for j in range(4):
                        hh, ww = h0 + i, w0 + j
                        inside = hh >= 0 and hh < H and ww >= 0 and ww < W
                        d[4 * i + j] = xf[_U(xo + hh * W + ww)] if inside else np.float32(0.0)
            o = vo + ty * TW + tx
            for i in range(4):  # rows: B^T d, then columns: (B^T d) B
                if i == 0:
                    r0, r1, r2, r3 = d[0] - d[8], d[1] - d[9], d[2] - d[10], d[3] - d[11]
                elif i == 1:
                    r0, r1, r2, r3 = d[4] + d[8], d[5] + d[9], d[6] + d[10], d[7] + d[11]
                elif i == 2:
                    r0, r1, r2, r3 = d[8] - d[4], d[9] - d[5], d[10] - d[6], d[11] - d[7]
                else:
                    r0, r1, r2, r3 = d[4] - d[12], d[5] - d[13], d[6] - d[14], d[7] - d[15]
                V[_U(o + (4 * i) * ldp)] = r0 - r2
                V[_U(o + (4 * i + 1) * ldp)] = r1 + r2
                V[_U(o + (4 * i + 2) * ldp)] = r2 - r1
                V[_U(o + (4 * i + 3) * ldp)] = r1 - r3


@njit(cache=True, nogil=True)
def _output_plane(M, mo, ldp, TH, TW, OH, OW, b, yf, yo):
    """y (OH, OW) at yf[yo:] = A^T m A + b from M[mo + p*ldp + t]."""
    for ty in range(TH):
        for tx in range(TW):
            o = mo + ty * TW + tx
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0.0)
            for j in range(4):  # A^T m
                m0, m1 = M[_U(o + j * ldp)], M[_U(o + (4 + j) * ldp)]
                m2, m3 = M[_U(o + (8 + j) * ldp)], M[_U(o + (12 + j) * ldp)]
                u, v = m0 + m1 + m2, m1 - m2 - m3
                if j == 0:
                    s00, s10 = u, v
                elif j == 1:
                    s01, s11 = u, v
                elif j == 2:
                    s02, s12 = u, v
                else:
                    s03, s13 = u, v
            oh, ow = 2 * ty, 2 * tx
            q = yo + oh * OW + ow
            yf[_U(q)] = (s00 + s01 + s02) + b
            if ow + 1 < OW:
                yf[_U(q + 1)] = (s01 - s02 - s03) + b
            if oh + 1 < OH:
                yf[_U(q + OW)] = (s10 + s11 + s12) + b
                if ow + 1 < OW:
                    yf[_U(q + OW + 1)] = (s11 - s12 - s13) + b


@njit(cache=True, nogil=True)
def _dout_plane(dyf, dyo, OH, OW, TH, TW, dM, mo, ldp):
    """dM[mo + p*ldp + t] = (A dy A^T)[p] for every tile of the plane dyf[dyo:] (OH, OW)."""
    z = np.float32(0.0)
    for ty in range(TH):
        for tx in range(TW):
            oh, ow = 2 * ty, 2 * tx
            q = dyo + oh * OW + ow
            right, down = ow + 1 < OW, oh + 1 < OH
            a = dyf[_U(q)]
            b = dyf[_U(q + 1)] if right else z
            c = dyf[_U(q + OW)] if down else z
            e = dyf[_U(q + OW + 1)] if down and right else z
            o = mo + ty * TW + tx
            for i in range(4):  # rows of A dy, then (A dy) A^T
                if i == 0:
                    u, v = a, b
                elif i == 1:
                    u, v = a + c, b + e
                elif i == 2:
                    u, v = a - c, b - e
                else:
                    u, v = -c, -e
                dM[_U(o + (4 * i) * ldp)] = u
                dM[_U(o + (4 * i + 1) * ldp)] = u + v
                dM[_U(o + (4 * i + 2) * ldp)] = u - v
                dM[_U(o + (4 * i + 3) * ldp)] = -v


@njit(cache=True, nogil=True)
def _dinput_plane(dV, vo, ldp, TH, TW, H, W, pad, dxf, dxo, z):
    """dx (H, W) at dxf[dxo:] = the sum over tiles (in order t) of B dv B^T at the tile's input
    pixels inside the image. Overwrites dx."""
    for k in range(H * W):
        dxf[_U(dxo + k)] = np.float32(0.0)
    for ty in range(TH):
        h0 = 2 * ty - pad
        for tx in range(TW):
            w0 = 2 * tx - pad
            o = vo + ty * TW + tx
            for j in range(4):  # B dv, by columns
                x0, x1 = dV[_U(o + j * ldp)], dV[_U(o + (4 + j) * ldp)]
                x2, x3 = dV[_U(o + (8 + j) * ldp)], dV[_U(o + (12 + j) * ldp)]
                z[j] = x0
                z[4 + j] = x1 - x2 + x3
                z[8 + j] = x1 + x2 - x0
                z[12 + j] = -x3
            for i in range(4):  # (B dv) B^T, added at the tile's pixels
                hh = h0 + i
                if hh < 0 or hh >= H:
                    continue
                q0, q1, q2, q3 = z[4 * i], z[4 * i + 1], z[4 * i + 2], z[4 * i + 3]
                for j in range(4):
                    ww = w0 + j
                    if ww < 0 or ww >= W:
                        continue
                    if j == 0:
                        v = q0
                    elif j == 1:
                        v = q1 - q2 + q3
                    elif j == 2:
                        v = q1 + q2 - q0
                    else:
                        v = -q3
                    dxf[_U(dxo + hh * W + ww)] += v


@njit(cache=True, nogil=True)
def _keep_block(S, so, C, T, Vt, vo):
    """Vt[vo:] (16, T, C) = S[so:] (16, C, T) transposed per position (what dU[p] = dM[p] @ Vt[p]
    reads: a plain GEMM runs ~1.5x faster in OpenBLAS than one with op(B) = B.T)."""
    for p in range(16):
        src, dst = so + p * C * T, vo + p * T * C
        for c in range(C):
            for t in range(T):
                Vt[_U(dst + t * C + c)] = S[_U(src + c * T + t)]


# ------------------------------------------------------------------------------- forward


@njit(cache=True, nogil=True)
def _fwd_block(fn, xf, b, N, C, H, W, F, pad, OH, OW, TH, TW, TPI, G, Tmax, blk, S, uo, so, Vt,
               yf):
    n0 = blk * G
    n1 = min(N, n0 + G)
    T = (n1 - n0) * TPI
    mo, vs = so, so + 16 * F * Tmax  # this worker's M, then its V block
    d = np.empty(16, np.float32)
    for c in range(C):
        for n in range(n0, n1):
            _input_plane(xf, (n * C + c) * H * W, H, W, pad, TH, TW, S, vs + c * T + (n - n0) * TPI,
                         C * T, d)
    one, zero = np.float32(1.0), np.float32(0.0)
    for p in range(16):
        gemm(fn, False, False, F, T, C, one, S, uo + p * F * C, C, S, vs + p * C * T, T, zero, S,
             mo + p * F * T, T)
    _keep_block(S, vs, C, T, Vt, n0 * TPI * 16 * C)
    for n in range(n0, n1):
        for f in range(F):
            _output_plane(S, mo + f * T + (n - n0) * TPI, F * T, TH, TW, OH, OW, b[_U(f)], yf,
                          (n * F + f) * OH * OW)


@njit(cache=True, nogil=True)
def _forward_serial(fn, x, W, b, pad, Vt, S, sU, sPart, G, nblk, Tmax, y):
    N, C, H, Wd = x.shape
    F = W.shape[0]
    OH, OW = y.shape[2], y.shape[3]
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    _weights(W.reshape(-1), F, C, S)
    xf, yf = x.reshape(-1), y.reshape(-1)
    for blk in range(nblk):
        _fwd_block(fn, xf, b, N, C, H, Wd, F, pad, OH, OW, TH, TW, TH * TW, G, Tmax, blk, S, 0,
                   sU + sPart, Vt, yf)


@njit(cache=True, nogil=True, parallel=True)
def _forward_parallel(fn, x, W, b, pad, Vt, S, sU, sPart, sThread, G, nblk, Tmax, y, workers):
    N, C, H, Wd = x.shape
    F = W.shape[0]
    OH, OW = y.shape[2], y.shape[3]
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    _weights(W.reshape(-1), F, C, S)
    xf, yf = x.reshape(-1), y.reshape(-1)
    next_blk = np.zeros(1, np.int64)
    for w in prange(workers):  # each worker takes the next block; its scratch is slot w
        blk = fetch_add(next_blk, 0, 1)
        while blk < nblk:
            _fwd_block(fn, xf, b, N, C, H, Wd, F, pad, OH, OW, TH, TW, TH * TW, G, Tmax, blk, S,
                       0, sU + sPart + w * sThread, Vt, yf)
            blk = fetch_add(next_blk, 0, 1)


def forward(fn, x, W, b, pad, cols, scratch, y, pl: Plan):
    """y = conv(x, W) + b; cols keeps the blocks' Vt for backward. scratch: flat float32 of at
    least pl.scratch_floats() (else one is allocated for this call)."""
    S = scratch if scratch.size >= pl.scratch_floats() else np.empty(pl.scratch_floats(),
                                                                      np.float32)
    Vt = cols.reshape(-1)
    if pl.workers > 1 and pl.nblk > 1:
        _forward_parallel(fn, x, W, b, pad, Vt, S, pl.sU, pl.sPart, pl.sThread, pl.G, pl.nblk,
                          pl.Tmax, y, min(pl.workers, pl.nblk))
    else:
        _forward_serial(fn, x, W, b, pad, Vt, S, pl.sU, pl.sPart, pl.G, pl.nblk, pl.Tmax, y)


@njit(cache=True, nogil=True)
def _cols_block(xf, N, C, H, W, pad, TH, TW, TPI, G, blk, S, so, Vt):
    n0 = blk * G
    n1 = min(N, n0 + G)
    T = (n1 - n0) * TPI
    d = np.empty(16, np.float32)
    for c in range(C):
        for n in range(n0, n1):
            _input_plane(xf, (n * C + c) * H * W, H, W, pad, TH, TW, S, so + c * T + (n - n0) * TPI,
                         C * T, d)
    _keep_block(S, so, C, T, Vt, n0 * TPI * 16 * C)


@njit(cache=True, nogil=True)
def _cols_serial(x, pad, Vt, S, G, nblk):
    N, C, H, W = x.shape
    TH, TW = (H + 2 * pad - 1) // 2, (W + 2 * pad - 1) // 2
    xf = x.reshape(-1)
    for blk in range(nblk):
        _cols_block(xf, N, C, H, W, pad, TH, TW, TH * TW, G, blk, S, 0, Vt)


def cols(x, pad, out, pl: Plan):
    """What forward keeps in the columns buffer, without the rest."""
    _cols_serial(x, pad, out.reshape(-1), np.empty(16 * pl.C * pl.Tmax, np.float32), pl.G,
                 pl.nblk)


# ------------------------------------------------------------------------------ backward


@njit(cache=True, nogil=True)
def _bwd_chunk(fn, dyf, N, C, H, W, F, pad, OH, OW, TH, TW, TPI, G, Tmax, nblk, nchunk, chunk,
               S, Vt, po, so, dxf, has_dx):
    """Blocks of this chunk in order: S[po:] = their dU (16*F*C) then db (F); dx of each."""
    b0, b1 = nblk * chunk // nchunk, nblk * (chunk + 1) // nchunk
    sU = 16 * F * C
    mo, vo = so, so + 16 * F * Tmax  # this worker's dM, then its dV
    one, zero = np.float32(1.0), np.float32(0.0)
    z = np.empty(16, np.float32)
    P = OH * OW
    for blk in range(b0, b1):
        n0 = blk * G
        n1 = min(N, n0 + G)
        T = (n1 - n0) * TPI
        vb = n0 * TPI * 16 * C
        for n in range(n0, n1):
            for f in range(F):
                _dout_plane(dyf, (n * F + f) * P, OH, OW, TH, TW, S, mo + f * T + (n - n0) * TPI,
                            F * T)
                s = row_sum(dyf, (n * F + f) * P, P)
                q = po + sU + f
                S[_U(q)] = s if (blk == b0 and n == n0) else S[_U(q)] + s
        for p in range(16):
            gemm(fn, False, False, F, C, T, one, S, mo + p * F * T, T, Vt, vb + p * T * C, C,
                 zero if blk == b0 else one, S, po + p * F * C, C)
        if not has_dx:
            continue
        for p in range(16):
            gemm(fn, True, False, C, T, F, one, S, p * F * C, C, S, mo + p * F * T, T, zero, S,
                 vo + p * C * T, T)
        for n in range(n0, n1):
            for c in range(C):
                _dinput_plane(S, vo + c * T + (n - n0) * TPI, C * T, TH, TW, H, W, pad, dxf,
                              (n * C + c) * H * W, z)


@njit(cache=True, nogil=True)
def _bwd_finish(S, F, C, nchunk, dW, db):
    """The chunks' partials added in chunk order into the first; dW and db from it."""
    sU = 16 * F * C
    stride = sU + F
    for c in range(1, nchunk):
        for k in range(stride):
            S[_U(sU + k)] += S[_U(sU + c * stride + k)]
    _weights_grad(S[sU:], F, C, dW.reshape(-1))
    for f in range(F):
        db[_U(f)] = S[_U(sU + sU + f)]


@njit(cache=True, nogil=True)
def _backward_serial(fn, dy, W, pad, H, Wd, Vt, S, sPart, G, nblk, nchunk, Tmax, dW, db, dxf,
                     has_dx):
    N, F, OH, OW = dy.shape
    C = W.shape[1]
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    sU = 16 * F * C
    _weights(W.reshape(-1), F, C, S)
    dyf = dy.reshape(-1)
    for chunk in range(nchunk):
        _bwd_chunk(fn, dyf, N, C, H, Wd, F, pad, OH, OW, TH, TW, TH * TW, G, Tmax, nblk, nchunk,
                   chunk, S, Vt, sU + chunk * (sU + F), sU + sPart, dxf, has_dx)
    _bwd_finish(S, F, C, nchunk, dW, db)


@njit(cache=True, nogil=True, parallel=True)
def _backward_parallel(fn, dy, W, pad, H, Wd, Vt, S, sPart, sThread, G, nblk, nchunk, Tmax, dW,
                       db, dxf, has_dx, workers):
    N, F, OH, OW = dy.shape
    C = W.shape[1]
    TH, TW = (OH + 1) // 2, (OW + 1) // 2
    sU = 16 * F * C
    _weights(W.reshape(-1), F, C, S)
    dyf = dy.reshape(-1)
    next_chunk = np.zeros(1, np.int64)
    for w in prange(workers):  # each worker takes the next chunk; its scratch is slot w
        chunk = fetch_add(next_chunk, 0, 1)
        while chunk < nchunk:
            _bwd_chunk(fn, dyf, N, C, H, Wd, F, pad, OH, OW, TH, TW, TH * TW, G, Tmax, nblk,
                       nchunk, chunk, S, Vt, sU + chunk * (sU + F), sU + sPart + w * sThread, dxf,
                       has_dx)
            chunk = fetch_add(next_chunk, 0, 1)
    _bwd_finish(S, F, C, nchunk, dW, db)


_NO_DX = np.empty(0, np.float32)


def backward(fn, dy, cols, W, pad, dx, dW, db, scratch, pl: Plan):
    """dW, db and dx (skipped when dx is None) from dy and the Vt forward kept in cols."""
    S = scratch if scratch.size >= pl.scratch_floats() else np.empty(pl.scratch_floats(),
                                                                      np.float32)
    dxf = _NO_DX if dx is None else dx.reshape(-1)
    args = (fn, dy, W, pad, pl.H, pl.W, cols.reshape(-1), S, pl.sPart)
    if pl.workers > 1 and pl.nchunk > 1:
        _backward_parallel(*args, pl.sThread, pl.G, pl.nblk, pl.nchunk, pl.Tmax, dW, db, dxf,
                           dx is not None, min(pl.workers, pl.nchunk))
    else:
        _backward_serial(*args, pl.G, pl.nblk, pl.nchunk, pl.Tmax, dW, db, dxf, dx is not None)
