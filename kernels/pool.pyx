"""Max pooling for the Cython backend, one task per (n, c) plane. argmax is the int32 flat index
i * W + j of each window's maximum in its (H, W) plane; the first maximum wins, and a NaN is the
maximum (the first NaN wins), as in PyTorch and the reference. 2x2 stride-2 pooling of planes with
even H and W runs the banded kernels of fnn_pool.h; every other case the loops below."""

include "_parallel.pxi"

from libc.string cimport memset

cdef extern from "fnn_pool.h" nogil:
    enum: FNN_POOL_BAND
    void fnn_pool2x2_plane(const float* x, int H, int W, float* y, int* am)
    int fnn_unpool2x2_plane(const float* dy, const int* am, int H, int W, float* dx)


cdef inline bint _takes(float v, float best, bint best_is_nan) noexcept nogil:
    # v replaces best when it is larger or NaN, unless best is already a NaN (first NaN wins);
    # equal values keep the earlier one. `&`, not `and`: no branch, so gcc vectorises the loops.
    return (not (v <= best)) & (not best_is_nan)


cdef inline void _pool_plane(const float* x, int H, int W, int ph, int pw, int stride, int OH,
                             int OW, float* y, int* am) noexcept nogil:
    # One output row at a time, the window offsets (i, j) outermost and ow innermost: the
    # running maxima stay in y/am (in L1) and the ow loop vectorises (strided loads).
    cdef int oh, ow, i, j, base, k
    cdef float v, best
    cdef bint take
    cdef const float* src
    cdef float* yr
    cdef int* ar
    for oh in range(OH):
        base = oh * stride * W
        yr = y + oh * OW
        ar = am + oh * OW
        src = x + base
        k = base
        for ow in range(OW):
            yr[ow] = src[0]
            ar[ow] = k
            src += stride
            k += stride
        for i in range(ph):
            for j in range(pw):
                if i == 0 and j == 0:
                    continue
                k = base + i * W + j
                src = x + k
                for ow in range(OW):
                    v = src[0]
                    best = yr[ow]
                    take = _takes(v, best, best != best)
                    yr[ow] = v if take else best
                    ar[ow] = k if take else ar[ow]
                    src += stride
                    k += stride


cdef inline void _pool_plane_2x2s2(const float* x, int H, int W, int OH, int OW, float* y,
                                   int* am) noexcept nogil:
    # The common case, unrolled and branch-free so that gcc vectorises the ow loop. The NaN flag
    # is tracked from the loaded values (best is NaN iff one of the values seen so far is).
    # Pointer increments, not `2 * ow` indexing: under CPython's -fwrapv, int index arithmetic
    # makes gcc's vectorised loop fall back to its scalar version at run time.
    cdef int oh, ow, k, off, one = 1
    cdef float a, b, c, d, best
    cdef bint take, nan
    cdef const float* r0
    cdef const float* r1
    for oh in range(OH):
        k = 2 * oh * W
        r0 = x + k
        r1 = r0 + W
        for ow in range(OW):
            a = r0[0]
            b = r0[1]
            c = r1[0]
            d = r1[1]
            best = a
            off = 0
            nan = a != a
            take = _takes(b, best, nan)
            off = one if take else off
            best = b if take else best
            nan = nan | (b != b)
            take = _takes(c, best, nan)
            off = W if take else off
            best = c if take else best
            nan = nan | (c != c)
            take = _takes(d, best, nan)
            off = W + one if take else off
            best = d if take else best
            y[0] = best
            am[0] = k + off
            r0 += 2
            r1 += 2
            k += 2
            y += 1
            am += 1


cdef void _pool_task(const float* x, int H, int W, int ph, int pw, int stride, int OH, int OW,
                     Py_ssize_t t, float* y, int* am) noexcept nogil:
    # One (n, c) plane. Not inline: the serial and the parallel path share one compiled copy.
    cdef Py_ssize_t xo = t * H * W, yo = t * OH * OW
    if ph == 2 and pw == 2 and stride == 2 and H % 2 == 0 and W % 2 == 0 and W <= FNN_POOL_BAND:
        fnn_pool2x2_plane(x + xo, H, W, y + yo, am + yo)  # windows tile the plane
    elif ph == 2 and pw == 2 and stride == 2:
        _pool_plane_2x2s2(x + xo, H, W, OH, OW, y + yo, am + yo)
    elif stride == 2:  # a constant stride lets gcc use interleaved vector loads
        _pool_plane(x + xo, H, W, ph, pw, 2, OH, OW, y + yo, am + yo)
    elif stride == 1:
        _pool_plane(x + xo, H, W, ph, pw, 1, OH, OW, y + yo, am + yo)
    else:
        _pool_plane(x + xo, H, W, ph, pw, stride, OH, OW, y + yo, am + yo)


cdef Py_ssize_t _scatter_plane(const float* d, const int* a, Py_ssize_t HW, Py_ssize_t OHW,
                               float* p) noexcept nogil:
    # dx zeroed, then each dy added at its argmax (overlapping windows accumulate). Each index is
    # checked before its write; returns the number of out-of-range ones (their dy is dropped).
    cdef Py_ssize_t k, bad = 0
    cdef unsigned int i
    memset(p, 0, HW * sizeof(float))
    for k in range(OHW):
        i = <unsigned int>a[k]  # a negative index becomes >= 2**31 > HW
        if i < HW:
            p[i] += d[k]
        else:
            bad += 1
    return bad


cdef Py_ssize_t _unpool_task(const float* dy, const int* am, int H, int W, Py_ssize_t OH,
                             Py_ssize_t OW, Py_ssize_t t, float* dx) noexcept nogil:
    # One (n, c) plane; returns the number of argmax entries outside [0, H*W). With OH = H/2 and
    # OW = W/2 the 2x2 blocks tile the plane: fnn_pool.h writes each block once, unless some
    # argmax lies outside its own block, and then the plane is redone by the checked scatter.
    # OW >= 8: one vector of outputs per row at least; shorter rows scatter faster (fnn_pool.h).
    # Not inline: the serial and the parallel path share one compiled copy.
    cdef Py_ssize_t HW = <Py_ssize_t>H * W, OHW = OH * OW
    cdef const float* d = dy + t * OHW
    cdef const int* a = am + t * OHW
    cdef float* p = dx + t * HW
    if 2 * OH == H and 2 * OW == W and OW >= 8:
        if fnn_unpool2x2_plane(d, a, H, W, p):
            return 0
    return _scatter_plane(d, a, HW, OHW, p)


def maxpool2d_forward(const float[:, :, :, ::1] x, int ph, int pw, int stride,
                      float[:, :, :, ::1] y, int[:, :, :, ::1] argmax):
    """y (N, C, OH, OW) = window maxima, argmax (int32) = i * W + j of each in its plane."""
    cdef Py_ssize_t t, planes = x.shape[0] * x.shape[1]
    cdef int H = <int>x.shape[2], W = <int>x.shape[3], OH = <int>y.shape[2], OW = <int>y.shape[3]
    if planes == 0 or OH == 0 or OW == 0:
        return
    cdef const float* xp = &x[0, 0, 0, 0]
    cdef float* yp = &y[0, 0, 0, 0]
    cdef int* ap = &argmax[0, 0, 0, 0]
    with nogil:
        if planes * (<Py_ssize_t>H * W + 2 * OH * OW) >= PARALLEL_MIN_WORK and _nthreads > 1:
            for t in prange(planes, schedule="static", num_threads=_nthreads):
                _pool_task(xp, H, W, ph, pw, stride, OH, OW, t, yp, ap)
        else:
            for t in range(planes):
                _pool_task(xp, H, W, ph, pw, stride, OH, OW, t, yp, ap)


def maxpool2d_backward(const float[:, :, :, ::1] dy, const int[:, :, :, ::1] argmax,
                       float[:, :, :, ::1] dx):
    """dx zeroed, then each dy added at its argmax (overlapping windows accumulate). Returns True
    when every argmax is in [0, H*W); False otherwise (nothing written out of bounds, dx is
    then unspecified and the caller raises)."""
    cdef Py_ssize_t t, planes = dx.shape[0] * dx.shape[1]
    cdef int H = <int>dx.shape[2], W = <int>dx.shape[3]
    cdef Py_ssize_t OH = dy.shape[2], OW = dy.shape[3], bad = 0
    if planes == 0 or H == 0 or W == 0:
        return True
    if OH == 0 or OW == 0:
        dx[...] = 0
        return True
    cdef const float* dyp = &dy[0, 0, 0, 0]
    cdef const int* ap = &argmax[0, 0, 0, 0]
    cdef float* dxp = &dx[0, 0, 0, 0]
    with nogil:
        if planes * (<Py_ssize_t>H * W + 2 * OH * OW) >= PARALLEL_MIN_WORK and _nthreads > 1:
            for t in prange(planes, schedule="static", num_threads=_nthreads):
                bad += _unpool_task(dyp, ap, H, W, OH, OW, t, dxp)
        else:
            for t in range(planes):
                bad += _unpool_task(dyp, ap, H, W, OH, OW, t, dxp)
    return bad == 0
