# fastnn Cython kernels: inverted dropout on flat arrays. Interface: docs/backends.md; oracle:
# fastnn/reference/dropout.py. mask = u >= rate (uint8 0/1, compared in float32);
# y = (x * mask) * float32(1/(1 - rate)), the same operations as the reference (so a masked inf or
# NaN gives NaN there as here, and kept values are bitwise equal).

include "_parallel.pxi"

cdef extern from "fnn_math.h" nogil:
    pass    # FNN_CLONES and the pragma (no-trapping-math, fp-contract=off) for the C kernels below

cdef extern from * nogil:
    """
    FNN_CLONES static void fnn_dropout_fw_k(const float* x, const float* u, float* y,
                                            unsigned char* mask, Py_ssize_t n, float rate,
                                            float scale) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float keep = u[i] >= rate ? 1.0f : 0.0f;       /* == (float)mask[i] */
            mask[i] = u[i] >= rate ? 1 : 0;
            y[i] = (x[i] * keep) * scale;
        }
    }

    FNN_CLONES static void fnn_dropout_bw_k(const float* dy, const unsigned char* mask, float* dx,
                                            Py_ssize_t n, float scale) {
        for (Py_ssize_t i = 0; i < n; i++) dx[i] = (dy[i] * (float)mask[i]) * scale;
    }
    """
    void fnn_dropout_fw_k(const float* x, const float* u, float* y, unsigned char* mask,
                          Py_ssize_t n, float rate, float scale)
    void fnn_dropout_bw_k(const float* dy, const unsigned char* mask, float* dx, Py_ssize_t n,
                          float scale)


cdef enum:
    _BLOCK = 16384      # elements per parallel work item


def dropout_forward(const float[::1] x, const float[::1] u, double rate, float[::1] y,
                    unsigned char[::1] mask):
    """mask = u >= rate; y = x*mask/(1-rate) (flat 1-D)."""
    cdef Py_ssize_t n = x.shape[0], nb, b, s
    cdef float frate = <float>rate
    cdef float scale = <float>(1.0 / (1.0 - rate))
    if n == 0:
        return
    cdef const float* xp = &x[0]
    cdef const float* up = &u[0]
    cdef float* yp = &y[0]
    cdef unsigned char* mp = &mask[0]
    with nogil:
        if n >= PARALLEL_MIN_WORK and _nthreads > 1:
            nb = (n + _BLOCK - 1) // _BLOCK
            for b in prange(nb, schedule="static", num_threads=_nthreads):
                s = b * _BLOCK
                fnn_dropout_fw_k(xp + s, up + s, yp + s, mp + s, min(n - s, <Py_ssize_t>_BLOCK),
                                 frate, scale)
        else:
            fnn_dropout_fw_k(xp, up, yp, mp, n, frate, scale)


def dropout_backward(const float[::1] dy, const unsigned char[::1] mask, double rate,
                     float[::1] dx):
    """dx = dy*mask/(1-rate) (flat 1-D)."""
    cdef Py_ssize_t n = dy.shape[0], nb, b, s
    cdef float scale = <float>(1.0 / (1.0 - rate))
    if n == 0:
        return
    cdef const float* dyp = &dy[0]
    cdef const unsigned char* mp = &mask[0]
    cdef float* dxp = &dx[0]
    with nogil:
        if n >= PARALLEL_MIN_WORK and _nthreads > 1:
            nb = (n + _BLOCK - 1) // _BLOCK
            for b in prange(nb, schedule="static", num_threads=_nthreads):
                s = b * _BLOCK
                fnn_dropout_bw_k(dyp + s, mp + s, dxp + s, min(n - s, <Py_ssize_t>_BLOCK), scale)
        else:
            fnn_dropout_bw_k(dyp, mp, dxp, n, scale)
