# Winograd F(2x2, 3x3) for the Cython conv2d (included by conv.pyx, after _gemm.pxi and _row_sum).
# A 3x3, stride-1 convolution as 16 GEMMs over 4x4 transformed tiles: 2.25x fewer multiplies
# than im2col + GEMM (the math: fastnn/reference/winograd.py; the tile transforms:
# fnn_winograd.h). Runs for C, F >= _WG_MIN_CH (below that the GEMMs are too thin to pay).
#
# Images go in blocks of G (from the shapes only: ~_WG_TILES tiles, so every GEMM has the same
# shape whatever the threads). Forward per block (t = the block's tiles):
#     V (16, C, T) = B^T d B  ->  M[p] (F, T) = U[p] (F, C) @ V[p]  ->  y = A^T M A + b
# and the columns buffer keeps each block's V transposed, Vt (16, T, C); backward per block (dU
# summed per fixed chunk of blocks, the chunks added in order at the end):
#     dM = A dy A^T  ->  dU[p] += dM[p] @ Vt[p]  ->  dV[p] = U[p].T @ dM[p]  ->  dx = B dV B^T
# Scratch (one flat buffer, `conv_scratch_size` floats, from the caller's workspace):
#     U (16*F*C) | per chunk: dU partial (16*F*C) + db (F) | per thread: M + V (forward)
#     or dM + dV (backward), 16*(F + C)*T floats
# fastnn.backend.set_winograd(False) turns the path off (its error is bounded normwise only).

from cython.parallel cimport threadid
from libc.stdlib cimport malloc, free

cdef extern from "fnn_winograd.h" nogil:
    void fnn_wg_input_plane(const float* x, int H, int W, int pad, int TH, int TW, float* V,
                            Py_ssize_t ldp)
    void fnn_wg_output_plane(const float* M, Py_ssize_t ldp, int TH, int TW, int OH, int OW,
                             float b, float* y)
    void fnn_wg_dout_plane(const float* dy, int OH, int OW, int TH, int TW, float* dM,
                           Py_ssize_t ldp)
    void fnn_wg_dinput_plane(const float* dV, Py_ssize_t ldp, int TH, int TW, int H, int W,
                             int pad, float* dx)
    void fnn_wg_weights(const float* W, Py_ssize_t F, Py_ssize_t C, float* U)
    void fnn_wg_weights_grad(const float* dU, Py_ssize_t F, Py_ssize_t C, float* dW)
    void fnn_transpose(const float* src, Py_ssize_t lds, float* dst, Py_ssize_t ldd,
                       Py_ssize_t rows, Py_ssize_t cols)

cdef enum:
    _WG_TILES = 100     # tiles per block (GEMM width) to aim for
    _WG_MIN_CH = 8      # input and output channels at least this many
    _WG_MAX_CHUNKS = 8  # dU partials in the backward pass

cdef bint _wg_enabled = True   # fastnn.backend.set_winograd, through _set_winograd below


def _set_winograd(bint enabled):
    """Winograd for the 3x3, stride-1 convolutions it suits, or im2col + GEMM for all."""
    global _wg_enabled
    _wg_enabled = enabled


def _get_winograd():
    return _wg_enabled


cdef struct _Wg:
    int N, C, H, W, F, pad, OH, OW, TH, TW
    Py_ssize_t TPI, G, nblk, nchunk, Tmax, sU, sPart, sThread, nslots


cdef bint _wg_plan(int N, int C, int H, int W, int F, int kh, int kw, int stride, int pad,
                   _Wg* g) noexcept nogil:
    """Fill g and return True when this convolution runs as Winograd F(2x2, 3x3)."""
    cdef int OH = H + 2 * pad - 2, OW = W + 2 * pad - 2
    if not _wg_enabled or _sgemm == NULL or kh != 3 or kw != 3 or stride != 1 or OH < 2 or OW < 2:
        return False
    if C < _WG_MIN_CH or F < _WG_MIN_CH or N < 1:
        return False
    g.N, g.C, g.H, g.W, g.F, g.pad, g.OH, g.OW = N, C, H, W, F, pad, OH, OW
    g.TH, g.TW = (OH + 1) // 2, (OW + 1) // 2
    g.TPI = <Py_ssize_t>g.TH * g.TW
    if 16 * g.TPI > 9 * <Py_ssize_t>OH * OW:  # V must fit where im2col's columns would
        return False
    g.G = _WG_TILES // g.TPI if g.TPI < _WG_TILES else 1
    if g.G > N:
        g.G = N
    g.nblk = (N + g.G - 1) // g.G
    g.nchunk = g.nblk if g.nblk < _WG_MAX_CHUNKS else _WG_MAX_CHUNKS
    g.Tmax = g.G * g.TPI
    g.sU = 16 * <Py_ssize_t>F * C
    g.sPart = g.nchunk * (g.sU + F)
    g.sThread = 16 * <Py_ssize_t>(F + C) * g.Tmax
    g.nslots = _nthreads
    return True


cdef inline Py_ssize_t _wg_scratch_floats(_Wg* g) noexcept nogil:
    return g.sU + g.sPart + g.nslots * g.sThread


cdef inline bint _wg_parallel(_Wg* g, Py_ssize_t tasks) noexcept nogil:
    return (tasks > 1 and _nthreads > 1
            and <Py_ssize_t>g.N * g.OH * g.OW * g.C * 9 >= PARALLEL_MIN_WORK)


cdef inline void _wg_block(_Wg* g, Py_ssize_t blk, Py_ssize_t* n0, Py_ssize_t* n1,
                           Py_ssize_t* T) noexcept nogil:
    n0[0] = blk * g.G
    n1[0] = n0[0] + g.G if n0[0] + g.G < g.N else g.N
    T[0] = (n1[0] - n0[0]) * g.TPI


cdef void _wg_input_block(const float* x, _Wg* g, Py_ssize_t n0, Py_ssize_t n1,
                          float* Vs) noexcept nogil:
    # Vs (16, C, T) = the V tiles of images n0:n1, position-major: V[p] is a (C, T) operand.
    cdef Py_ssize_t n, T = (n1 - n0) * g.TPI, HW = <Py_ssize_t>g.H * g.W
    cdef int c
    for c in range(g.C):
        for n in range(n0, n1):
            fnn_wg_input_plane(x + (n * g.C + c) * HW, g.H, g.W, g.pad, g.TH, g.TW,
                               Vs + c * T + (n - n0) * g.TPI, g.C * T)


cdef void _wg_keep_block(const float* Vs, Py_ssize_t C, Py_ssize_t T, float* Vt) noexcept nogil:
    # Vt (16, T, C) = Vs (16, C, T) transposed per position: what the backward pass's
    # dU[p] = dM[p] @ Vt[p] reads (a plain GEMM runs ~1.5x faster than one with op(B) = B.T).
    cdef int p
    for p in range(16):
        fnn_transpose(Vs + p * C * T, T, Vt + p * T * C, C, C, T)


cdef void _wg_fwd_block(const float* x, const float* b, _Wg* g, Py_ssize_t blk, const float* U,
                        float* V, float* slot, float* y) noexcept nogil:
    cdef Py_ssize_t n0, n1, T, n, P = <Py_ssize_t>g.OH * g.OW
    cdef int p, f, F = g.F, C = g.C
    cdef float* M = slot
    cdef float* Vs = slot + 16 * F * g.Tmax
    _wg_block(g, blk, &n0, &n1, &T)
    _wg_input_block(x, g, n0, n1, Vs)
    for p in range(16):
        _gemm(False, False, F, T, C, 1, U + p * F * C, C, Vs + p * C * T, T, 0, M + p * F * T, T)
    _wg_keep_block(Vs, C, T, V + n0 * g.TPI * 16 * C)
    for n in range(n0, n1):
        for f in range(F):
            fnn_wg_output_plane(M + f * T + (n - n0) * g.TPI, F * T, g.TH, g.TW, g.OH, g.OW,
                                b[f], y + (n * F + f) * P)


cdef void _wg_forward(const float* x, const float* Wt, const float* b, _Wg* g, float* V,
                      float* scratch, float* y) noexcept nogil:
    cdef float* U = scratch
    cdef float* slots = scratch + g.sU + g.sPart
    cdef Py_ssize_t blk
    fnn_wg_weights(Wt, g.F, g.C, U)
    if _wg_parallel(g, g.nblk):
        for blk in prange(g.nblk, schedule="dynamic", num_threads=_nthreads):
            _wg_fwd_block(x, b, g, blk, U, V, slots + threadid() * g.sThread, y)
    else:
        for blk in range(g.nblk):
            _wg_fwd_block(x, b, g, blk, U, V, slots, y)


cdef void _wg_cols_block(const float* x, _Wg* g, Py_ssize_t blk, float* Vs,
                         float* V) noexcept nogil:
    cdef Py_ssize_t n0, n1, T
    _wg_block(g, blk, &n0, &n1, &T)
    _wg_input_block(x, g, n0, n1, Vs)
    _wg_keep_block(Vs, g.C, T, V + n0 * g.TPI * 16 * g.C)


cdef int _wg_cols(const float* x, _Wg* g, float* V) noexcept nogil:
    # What the forward pass keeps in V, without the rest (-1: no memory for the scratch).
    cdef Py_ssize_t blk, per = 16 * <Py_ssize_t>g.C * g.Tmax
    cdef float* Vs = <float*>malloc(g.nslots * per * sizeof(float))
    if Vs == NULL:
        return -1
    if _wg_parallel(g, g.nblk):
        for blk in prange(g.nblk, schedule="dynamic", num_threads=_nthreads):
            _wg_cols_block(x, g, blk, Vs + threadid() * per, V)
    else:
        for blk in range(g.nblk):
            _wg_cols_block(x, g, blk, Vs, V)
    free(Vs)
    return 0


cdef void _wg_bwd_chunk(const float* dy, _Wg* g, Py_ssize_t chunk, const float* U,
                        const float* V, float* part, float* slot, float* dx) noexcept nogil:
    # Blocks of this chunk, one after another: part = their dU (16*F*C) then db (F); dx of each.
    cdef Py_ssize_t b0 = g.nblk * chunk // g.nchunk, b1 = g.nblk * (chunk + 1) // g.nchunk
    cdef Py_ssize_t blk, n0, n1, T, n, P = <Py_ssize_t>g.OH * g.OW, HW = <Py_ssize_t>g.H * g.W
    cdef int p, f, c, F = g.F, C = g.C
    cdef float s
    cdef float* dU = part
    cdef float* db = part + g.sU
    cdef float* dM = slot
    cdef float* dV = slot + 16 * F * g.Tmax
    cdef const float* Vb
    cdef const float* dyp
    for blk in range(b0, b1):
        _wg_block(g, blk, &n0, &n1, &T)
        Vb = V + n0 * g.TPI * 16 * C
        for n in range(n0, n1):
            for f in range(F):
                dyp = dy + (n * F + f) * P
                fnn_wg_dout_plane(dyp, g.OH, g.OW, g.TH, g.TW, dM + f * T + (n - n0) * g.TPI,
                                  F * T)
                s = _row_sum(dyp, P)
                db[f] = s if (blk == b0 and n == n0) else db[f] + s
        for p in range(16):
            _gemm(False, False, F, C, T, 1, dM + p * F * T, T, Vb + p * T * C, C,
                  0 if blk == b0 else 1, dU + p * F * C, C)
        if dx == NULL:
            continue
        for p in range(16):
            _gemm(True, False, C, T, F, 1, U + p * F * C, C, dM + p * F * T, T, 0,
                  dV + p * C * T, T)
        for n in range(n0, n1):
            for c in range(C):
                fnn_wg_dinput_plane(dV + c * T + (n - n0) * g.TPI, C * T, g.TH, g.TW, g.H, g.W,
                                    g.pad, dx + (n * C + c) * HW)


cdef void _wg_backward(const float* dy, const float* Wt, const float* V, _Wg* g, float* scratch,
                       float* dW, float* db, float* dx) noexcept nogil:
    cdef float* U = scratch
    cdef float* parts = scratch + g.sU
    cdef float* slots = scratch + g.sU + g.sPart
    cdef Py_ssize_t chunk, k, stride = g.sU + g.F
    fnn_wg_weights(Wt, g.F, g.C, U)
    if _wg_parallel(g, g.nchunk):
        for chunk in prange(g.nchunk, schedule="dynamic", num_threads=_nthreads):
            _wg_bwd_chunk(dy, g, chunk, U, V, parts + chunk * stride,
                          slots + threadid() * g.sThread, dx)
    else:
        for chunk in range(g.nchunk):
            _wg_bwd_chunk(dy, g, chunk, U, V, parts + chunk * stride, slots, dx)
    for chunk in range(1, g.nchunk):  # partials in chunk order, into the first
        for k in range(stride):
            parts[k] += parts[chunk * stride + k]
    fnn_wg_weights_grad(parts, g.F, g.C, dW)
    for k in range(g.F):
        db[k] = parts[g.sU + k]


cdef float* _wg_scratch(_Wg* g, float[::1] given, bint* owned) noexcept nogil:
    # The caller's scratch when it is large enough, else a fresh one for this call only.
    owned[0] = given.shape[0] < _wg_scratch_floats(g)
    if owned[0]:
        return <float*>malloc(_wg_scratch_floats(g) * sizeof(float))
    return &given[0]


def conv_scratch_size(int N, int C, int H, int W, int F, int kh, int kw, int stride, int pad):
    """Floats of scratch conv2d_forward / conv2d_backward want for this geometry (passed as their
    `tmp` / `dyt`), or 0 when it does not run as Winograd (then those take their reference
    shapes)."""
    cdef _Wg g
    if not _wg_plan(N, C, H, W, F, kh, kw, stride, pad, &g):
        return 0
    return _wg_scratch_floats(&g)
