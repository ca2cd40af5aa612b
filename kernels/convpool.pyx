"""Conv2D (stride 1) -> ReLU -> MaxPool2D(2) as one kernel, for the Cython backend: a network's first
convolution block (the math: fastnn/reference/convpool.py; the loops: fnn_convpool.h). Forward runs
one task per image, backward one task per fixed chunk of _CHUNK images, each into its own partial
dW/db, added in chunk order at the end: the results do not depend on the thread count."""

include "_parallel.pxi"

from cython.parallel cimport threadid
from libc.stdint cimport int32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cdef extern from "fnn_convpool.h" nogil:
    ctypedef struct fnn_cp_geom:
        int C, H, W, F, kh, kw, pad, OH, OW, PH, PW, Hp, Wp, OWv
    enum: FNN_CP_FB
    int fnn_cp_portable
    void fnn_cp_geometry(int C, int H, int W, int F, int kh, int kw, int pad, fnn_cp_geom* g)
    Py_ssize_t fnn_cp_image_floats(const fnn_cp_geom* g)
    void fnn_cp_pack_weights(const float* w, int F, int K, float* wt)
    void fnn_cp_forward_image(const float* x, const float* wt, const float* b,
                              const fnn_cp_geom* g, float* xp, float* p, int32_t* am)
    Py_ssize_t fnn_cp_backward_image(const float* x, const float* dp, const float* p,
                                     const int32_t* am, const fnn_cp_geom* g, float* xp,
                                     float* dy, float* dW, float* db)
    void fnn_cp_init()

fnn_cp_init()  # tables and the CPU check, once, before any thread runs a kernel

cdef enum:
    _CHUNK = 4  # images per backward task (fixed: the partial sums' grouping)


def _set_portable(bint on):
    """Run the portable loops instead of the AVX2 + FMA ones (True), for tests: the loops CPUs
    without AVX2 run. Returns the old setting."""
    global fnn_cp_portable
    old = bool(fnn_cp_portable)
    fnn_cp_portable = 1 if on else 0
    return old


cdef int _threads_for(Py_ssize_t tasks, Py_ssize_t work) noexcept nogil:
    if tasks < 2 or _nthreads < 2 or work < PARALLEL_MIN_WORK:
        return 1
    return _nthreads if _nthreads < tasks else <int>tasks


def conv2d_relu_pool_forward(const float[:, :, :, ::1] x, const float[:, :, :, ::1] W,
                             const float[::1] b, int pad, float[:, :, :, ::1] p,
                             int[:, :, :, ::1] argmax):
    """p, argmax (N, F, PH, PW) = relu(maxpool2x2(conv2d(x, W, b, stride 1, pad)))."""
    cdef fnn_cp_geom g
    cdef int N = <int>x.shape[0], F = <int>W.shape[0]
    fnn_cp_geometry(<int>x.shape[1], <int>x.shape[2], <int>x.shape[3], F, <int>W.shape[2],
                    <int>W.shape[3], pad, &g)
    if N == 0 or g.PH == 0 or g.PW == 0:
        return
    cdef int K = g.C * g.kh * g.kw, Fp = (F + FNN_CP_FB - 1) // FNN_CP_FB * FNN_CP_FB
    cdef Py_ssize_t n, per = fnn_cp_image_floats(&g), plane = <Py_ssize_t>F * g.PH * g.PW
    cdef Py_ssize_t xs = <Py_ssize_t>g.C * g.H * g.W
    cdef int nth = _threads_for(N, <Py_ssize_t>N * F * K * g.OH * g.OW)
    cdef float* wt = <float*>malloc((<Py_ssize_t>K * Fp + nth * per) * sizeof(float))
    if wt == NULL:
        raise MemoryError("conv2d_relu_pool_forward: no memory for the scratch")
    cdef float* xps = wt + <Py_ssize_t>K * Fp
    cdef const float* xp0 = &x[0, 0, 0, 0]
    cdef float* p0 = &p[0, 0, 0, 0]
    cdef int32_t* a0 = <int32_t*>&argmax[0, 0, 0, 0]
    with nogil:
        fnn_cp_pack_weights(&W[0, 0, 0, 0], F, K, wt)
        if nth > 1:
            for n in prange(N, schedule="static", num_threads=nth):
                fnn_cp_forward_image(xp0 + n * xs, wt, &b[0], &g, xps + threadid() * per,
                                     p0 + n * plane, a0 + n * plane)
        else:
            for n in range(N):
                fnn_cp_forward_image(xp0 + n * xs, wt, &b[0], &g, xps, p0 + n * plane,
                                     a0 + n * plane)
    free(wt)


cdef Py_ssize_t _backward_chunk(const float* x, const float* dp, const float* p, const int32_t* am,
                                const fnn_cp_geom* g, Py_ssize_t t, Py_ssize_t N, float* scratch,
                                float* part) noexcept nogil:
    # images t*_CHUNK .. into part = dW (F*K) | db (F), zeroed here; scratch: xp | dy
    cdef Py_ssize_t n, bad = 0, K = <Py_ssize_t>g.C * g.kh * g.kw
    cdef Py_ssize_t xs = <Py_ssize_t>g.C * g.H * g.W, plane = <Py_ssize_t>g.F * g.PH * g.PW
    cdef float* dy = scratch + fnn_cp_image_floats(g)
    memset(part, 0, (g.F * K + g.F) * sizeof(float))
    for n in range(t * _CHUNK, min((t + 1) * _CHUNK, N)):
        bad += fnn_cp_backward_image(x + n * xs, dp + n * plane, p + n * plane, am + n * plane, g,
                                     scratch, dy, part, part + g.F * K)
    return bad


def conv2d_relu_pool_backward(const float[:, :, :, ::1] dp, const float[:, :, :, ::1] p,
                              const int[:, :, :, ::1] argmax, const float[:, :, :, ::1] x, int pad,
                              float[:, :, :, ::1] dW, float[::1] db):
    """dW, db of the block for dp = dL/dp. Returns False (dW, db unspecified) when an argmax is
    outside [0, OH*OW); nothing is written out of bounds."""
    cdef fnn_cp_geom g
    cdef int N = <int>x.shape[0], F = <int>dW.shape[0]
    fnn_cp_geometry(<int>x.shape[1], <int>x.shape[2], <int>x.shape[3], F, <int>dW.shape[2],
                    <int>dW.shape[3], pad, &g)
    cdef Py_ssize_t K = <Py_ssize_t>g.C * g.kh * g.kw, k, t, bad = 0
    if N == 0 or g.PH == 0 or g.PW == 0:
        dW[...] = 0
        db[...] = 0
        return True
    cdef Py_ssize_t chunks = (N + _CHUNK - 1) // _CHUNK, per_part = F * K + F
    cdef Py_ssize_t per = fnn_cp_image_floats(&g) + <Py_ssize_t>F * g.OH * g.OW
    cdef int nth = _threads_for(chunks, <Py_ssize_t>N * F * K * g.OH * g.OW)
    cdef float* parts = <float*>malloc((chunks * per_part + nth * per) * sizeof(float))
    if parts == NULL:
        raise MemoryError("conv2d_relu_pool_backward: no memory for the scratch")
    cdef float* scratch = parts + chunks * per_part
    cdef const float* x0 = &x[0, 0, 0, 0]
    cdef const float* dp0 = &dp[0, 0, 0, 0]
    cdef const float* p0 = &p[0, 0, 0, 0]
    cdef const int32_t* a0 = <const int32_t*>&argmax[0, 0, 0, 0]
    cdef float* dW0 = &dW[0, 0, 0, 0]
    with nogil:
        if nth > 1:
            for t in prange(chunks, schedule="static", num_threads=nth):
                bad += _backward_chunk(x0, dp0, p0, a0, &g, t, N, scratch + threadid() * per,
                                       parts + t * per_part)
        else:
            for t in range(chunks):
                bad += _backward_chunk(x0, dp0, p0, a0, &g, t, N, scratch, parts + t * per_part)
        if bad == 0:
            for k in range(F * K):
                dW0[k] = parts[k]
            for k in range(F):
                db[k] = parts[F * K + k]
            for t in range(1, chunks):
                for k in range(F * K):
                    dW0[k] += parts[t * per_part + k]
                for k in range(F):
                    db[k] += parts[t * per_part + F * K + k]
    free(parts)
    return bad == 0
