# fastnn Cython kernels: elementwise activations (flat 1-D) and the row softmax (2-D).
# Interface and semantics: docs/backends.md and fastnn/reference/activations.py.
#
# The inner loops are small C functions (verbatim block below; shared helpers, macros and pragma in
# fnn_math.h) so that they can be compiled in several ISA variants (gcc `target_clones`: AVX-512,
# AVX2, baseline; picked at load time) while the wheel itself stays built for the baseline x86-64.
# Contraction into FMA is switched off, so every variant computes bitwise the same IEEE results.
# exp and tanh are vectorisable polynomial versions (Cephes coefficients; max relative error
# against float64: exp 8e-8, tanh 1.4e-7, sigmoid 1.7e-7, i.e. 1-3 ulp; NumPy's own tanh is
# 1.1e-7); exp is only ever called on arguments <= 0 (or NaN), so it cannot overflow.
# Cython keeps the typed-memoryview interface, the GIL release and the serial/parallel split.

include "_parallel.pxi"

cdef extern from "fnn_math.h" nogil:
    # shared helpers (kernels/fnn_math.h), called from the C kernels below
    float fnn_exp_nonpos(float x)
    float fnn_max_nan(const float* x, Py_ssize_t n)
    double fnn_exp_shift_sum(const float* x, float mx, float* e, Py_ssize_t n)

cdef extern from * nogil:
    """
    FNN_CLONES static void fnn_relu_k(const float* x, float* y, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float v = x[i];
            y[i] = v < 0.0f ? 0.0f : v;                      /* NaN propagates, like np.maximum */
        }
    }

    FNN_CLONES static void fnn_relu_bw_k(const float* dy, const float* y, float* dx, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dx[i] = dy[i] * (y[i] > 0.0f ? 1.0f : 0.0f);
    }

    FNN_CLONES static void fnn_sigmoid_k(const float* x, float* y, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float v = x[i];
            float e = fnn_exp_nonpos(-fabsf(v));
            y[i] = (v >= 0.0f ? 1.0f : e) / (1.0f + e);
        }
    }

    FNN_CLONES static void fnn_sigmoid_bw_k(const float* dy, const float* y, float* dx, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1.0f - y[i]);
    }

    FNN_CLONES static void fnn_tanh_k(const float* x, float* y, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float v = x[i];
            float a = fabsf(v);
            /* |x| >= 0.625: (1 - t)/(1 + t) with t = exp(-2|x|) in (0, 0.29]: no cancellation */
            float t = fnn_exp_nonpos(-2.0f * a);
            float big = copysignf((1.0f - t) / (1.0f + t), v);
            /* |x| < 0.625: odd polynomial (Cephes tanhf), exact sign and -0 */
            float z = v * v;
            float p = -5.70498872745e-3f;
            p = p * z + 2.06390887954e-2f;
            p = p * z - 5.37397155531e-2f;
            p = p * z + 1.33314422036e-1f;
            p = p * z - 3.33332819422e-1f;
            p = p * z * v + v;
            y[i] = a < 0.625f ? p : big;
        }
    }

    FNN_CLONES static void fnn_tanh_bw_k(const float* dy, const float* y, float* dx, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) dx[i] = dy[i] * (1.0f - y[i] * y[i]);
    }

    /* rows [0, nrows) of a (nrows, C) block, C >= 1 */
    FNN_CLONES static void fnn_softmax_rows_k(const float* x, float* p, Py_ssize_t nrows, Py_ssize_t C) {
        for (Py_ssize_t r = 0; r < nrows; r++) {
            const float* xr = x + r * C;
            float* pr = p + r * C;
            float mx = fnn_max_nan(xr, C);
            float s = (float)fnn_exp_shift_sum(xr, mx, pr, C);
            for (Py_ssize_t i = 0; i < C; i++) pr[i] = pr[i] / s;
        }
    }
    """
    void fnn_relu_k(const float* x, float* y, Py_ssize_t n)
    void fnn_relu_bw_k(const float* dy, const float* y, float* dx, Py_ssize_t n)
    void fnn_sigmoid_k(const float* x, float* y, Py_ssize_t n)
    void fnn_sigmoid_bw_k(const float* dy, const float* y, float* dx, Py_ssize_t n)
    void fnn_tanh_k(const float* x, float* y, Py_ssize_t n)
    void fnn_tanh_bw_k(const float* dy, const float* y, float* dx, Py_ssize_t n)
    void fnn_softmax_rows_k(const float* x, float* p, Py_ssize_t nrows, Py_ssize_t C)


ctypedef void (*_unary_fn)(const float*, float*, Py_ssize_t) noexcept nogil
ctypedef void (*_binary_fn)(const float*, const float*, float*, Py_ssize_t) noexcept nogil

cdef enum:
    _BLOCK = 16384      # elements per parallel work item (elementwise)


cdef void _run_unary(_unary_fn f, const float* x, float* y, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t nb, b, s
    if n >= PARALLEL_MIN_WORK and _nthreads > 1:
        nb = (n + _BLOCK - 1) // _BLOCK
        for b in prange(nb, schedule="static", num_threads=_nthreads):
            s = b * _BLOCK
            f(x + s, y + s, min(n - s, <Py_ssize_t>_BLOCK))
    elif n > 0:
        f(x, y, n)


cdef void _run_binary(_binary_fn f, const float* a, const float* c, float* out,
                      Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t nb, b, s
    if n >= PARALLEL_MIN_WORK and _nthreads > 1:
        nb = (n + _BLOCK - 1) // _BLOCK
        for b in prange(nb, schedule="static", num_threads=_nthreads):
            s = b * _BLOCK
            f(a + s, c + s, out + s, min(n - s, <Py_ssize_t>_BLOCK))
    elif n > 0:
        f(a, c, out, n)


def relu(const float[::1] x, float[::1] y):
    """y = max(x, 0) (flat 1-D; NaN propagates)."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _run_unary(fnn_relu_k, &x[0], &y[0], n)


def relu_backward(const float[::1] dy, const float[::1] y, float[::1] dx):
    """dx = dy where y > 0 else 0 (as dy * (y > 0))."""
    cdef Py_ssize_t n = dy.shape[0]
    if n == 0:
        return
    with nogil:
        _run_binary(fnn_relu_bw_k, &dy[0], &y[0], &dx[0], n)


def sigmoid(const float[::1] x, float[::1] y):
    """y = 1/(1+exp(-x)), computed from exp(-|x|) only (never overflows)."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _run_unary(fnn_sigmoid_k, &x[0], &y[0], n)


def sigmoid_backward(const float[::1] dy, const float[::1] y, float[::1] dx):
    """dx = dy*y*(1-y)."""
    cdef Py_ssize_t n = dy.shape[0]
    if n == 0:
        return
    with nogil:
        _run_binary(fnn_sigmoid_bw_k, &dy[0], &y[0], &dx[0], n)


def tanh(const float[::1] x, float[::1] y):
    """y = tanh(x)."""
    cdef Py_ssize_t n = x.shape[0]
    if n == 0:
        return
    with nogil:
        _run_unary(fnn_tanh_k, &x[0], &y[0], n)


def tanh_backward(const float[::1] dy, const float[::1] y, float[::1] dx):
    """dx = dy*(1-y*y)."""
    cdef Py_ssize_t n = dy.shape[0]
    if n == 0:
        return
    with nogil:
        _run_binary(fnn_tanh_bw_k, &dy[0], &y[0], &dx[0], n)


def softmax(const float[:, ::1] x, float[:, ::1] p):
    """Row softmax of a 2-D array, max-subtracted (a row holding NaN or +inf gives NaN)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], r
    if N == 0 or C == 0:
        return
    cdef const float* xp = &x[0, 0]
    cdef float* pp = &p[0, 0]
    with nogil:
        if N * C >= PARALLEL_MIN_WORK and N > 1 and _nthreads > 1:
            for r in prange(N, schedule="static", num_threads=_nthreads):
                fnn_softmax_rows_k(xp + r * C, pp + r * C, 1, C)
        else:
            fnn_softmax_rows_k(xp, pp, N, C)
