"""Max pooling for the Cython backend, one task per (n, c) plane. argmax is the int32 flat index
i * W + j of each window's maximum in its (H, W) plane; the first maximum wins, and a NaN is the
maximum (the first NaN wins), as in PyTorch and the reference."""

include "_parallel.pxi"

from libc.string cimport memset


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
    if ph == 2 and pw == 2 and stride == 2:
        _pool_plane_2x2s2(x + xo, H, W, OH, OW, y + yo, am + yo)
    elif stride == 2:  # a constant stride lets gcc use interleaved vector loads
        _pool_plane(x + xo, H, W, ph, pw, 2, OH, OW, y + yo, am + yo)
    elif stride == 1:
        _pool_plane(x + xo, H, W, ph, pw, 1, OH, OW, y + yo, am + yo)
    else:
        _pool_plane(x + xo, H, W, ph, pw, stride, OH, OW, y + yo, am + yo)


cdef inline void _unpool_task(const float* dy, const int* am, Py_ssize_t HW, Py_ssize_t OHW,
                              Py_ssize_t t, float* dx) noexcept nogil:
    cdef Py_ssize_t k
    cdef const float* d = dy + t * OHW
    cdef const int* a = am + t * OHW
    cdef float* p = dx + t * HW
    memset(p, 0, HW * sizeof(float))
    for k in range(OHW):
        p[a[k]] += d[k]


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
    """dx zeroed, then each dy added at its argmax (overlapping windows accumulate)."""
    cdef Py_ssize_t t, planes = dx.shape[0] * dx.shape[1]
    cdef Py_ssize_t HW = dx.shape[2] * dx.shape[3], OHW = dy.shape[2] * dy.shape[3]
    if planes == 0 or HW == 0:
        return
    if OHW == 0:
        dx[...] = 0
        return
    cdef const float* dyp = &dy[0, 0, 0, 0]
    cdef const int* ap = &argmax[0, 0, 0, 0]
    cdef float* dxp = &dx[0, 0, 0, 0]
    with nogil:
        if planes * (HW + 2 * OHW) >= PARALLEL_MIN_WORK and _nthreads > 1:
            for t in prange(planes, schedule="static", num_threads=_nthreads):
                _unpool_task(dyp, ap, HW, OHW, t, dxp)
        else:
            for t in range(planes):
                _unpool_task(dyp, ap, HW, OHW, t, dxp)
