# fastnn Cython kernels: elementwise activations (flat 1-D) and the row softmax (2-D).
# Interface and semantics: docs/backends.md and fastnn/reference/activations.py.
#
# The inner loops are small C functions (verbatim block below) so that they can be compiled in
# several ISA variants (gcc `target_clones`: AVX-512, AVX2, baseline; picked at load time) while
# the wheel itself stays built for the baseline x86-64. Contraction into FMA is switched off, so
# every variant computes bitwise the same IEEE results. exp and tanh are vectorisable polynomial
# versions (Cephes coefficients; max relative error against float64: exp 8e-8, tanh 1.4e-7,
# sigmoid 1.7e-7, i.e. 1-3 ulp; NumPy's own tanh is 1.1e-7); exp is only ever called on arguments
# <= 0 (or NaN), so it cannot overflow.
# Cython keeps the typed-memoryview interface, the GIL release and the serial/parallel split.

include "_parallel.pxi"

cdef extern from * nogil:
    """
    #if defined(__GNUC__) && !defined(__clang__)
    /* Let gcc if-convert float selects (needed to vectorise them) and keep a*b+c unfused, so
       every ISA variant rounds identically. Neither changes IEEE results or inf/NaN handling. */
    #pragma GCC optimize("no-trapping-math", "fp-contract=off")
    #endif
    #if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    #define FNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
    #else
    #define FNN_CLONES
    #endif
    /* helpers must be inlined into every ISA variant (an out-of-line call runs baseline code) */
    #if defined(__GNUC__) || defined(__clang__)
    #define FNN_INLINE static inline __attribute__((always_inline))
    #else
    #define FNN_INLINE static inline
    #endif
    #include <math.h>
    #include <stdint.h>
    #include <string.h>

    /* exp(x) for x <= 0 (or NaN): Cody-Waite reduction + degree-6 polynomial, about 1 ulp.
       Results below FLT_MIN (x < -87.34) flush to 0; exp(-inf) = 0; NaN propagates. */
    FNN_INLINE float fnn_exp_nonpos(float x) {
        float xc = x < -88.0f ? -88.0f : x;
        float fn = xc * 1.44269504088896341f;
        fn = (fn - 12582912.0f) + 12582912.0f;            /* round to nearest integer */
        float r = xc - fn * 0.693359375f;
        r = r - fn * -2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        p = p * r * r + r + 1.0f;
        int32_t bits = ((int32_t)fn + 127) << 23;         /* 2^n, n in [-127, 0] */
        float s;
        memcpy(&s, &bits, sizeof s);
        float res = p * s;
        res = x < -87.33654f ? 0.0f : res;
        return x != x ? x : res;
    }

    /* NaN-propagating maximum of x[0..n), n >= 1. Floats map to order-preserving int32 keys
       (an integer max reduction vectorises; a NaN-aware float max does not). Any NaN (either
       sign) gives NaN, like np.max; max(-0, +0) = +0. */
    FNN_INLINE float fnn_max_nan(const float* x, Py_ssize_t n) {
        int32_t km = INT32_MIN, am = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int32_t b;
            memcpy(&b, x + i, sizeof b);
            int32_t k = b ^ ((b >> 31) & 0x7fffffff);
            int32_t a = b & 0x7fffffff;
            km = k > km ? k : km;
            am = a > am ? a : am;
        }
        if (am > 0x7f800000) return NAN;
        int32_t b = km ^ ((km >> 31) & 0x7fffffff);
        float r;
        memcpy(&r, &b, sizeof r);
        return r;
    }

    /* Float64 sums over 16 lanes: lane j takes the elements i with i % 16 == j, lanes j and j+8
       are added, then the 8 lanes in a fixed tree, then the tail in order: the order depends on n
       only. Written with GCC/clang vector extensions, which vectorise reliably in every ISA
       variant (lane arrays and scalar lanes do not); the plain-C fallback has the same order. */
    #if defined(__GNUC__) || defined(__clang__)
    #define FNN_VEC 1
    typedef float fnn_v8f __attribute__((vector_size(32)));
    typedef double fnn_v8d __attribute__((vector_size(64)));
    #define FNN_LD8(v, p) memcpy(&(v), (p), sizeof(fnn_v8f))
    #define FNN_ST8(p, v) memcpy((p), &(v), sizeof(fnn_v8f))
    #define FNN_CVT8(v) __builtin_convertvector((v), fnn_v8d)
    #else
    #define FNN_VEC 0
    #endif
    #define FNN_TREE8(a) (((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])))

    /* sum of x[0..n) in double */
    FNN_INLINE double fnn_sum_d(const float* x, Py_ssize_t n) {
        Py_ssize_t i = 0;
    #if FNN_VEC
        fnn_v8d a = {0}, a1 = {0};
        fnn_v8f v0, v1;
        for (; i + 16 <= n; i += 16) {
            FNN_LD8(v0, x + i);
            FNN_LD8(v1, x + i + 8);
            a += FNN_CVT8(v0);
            a1 += FNN_CVT8(v1);
        }
        a += a1;
    #else
        double a[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) a[j] += (double)x[i + j];
        for (int j = 0; j < 8; j++) a[j] += a[j + 8];
    #endif
        double t = FNN_TREE8(a);
        for (; i < n; i++) t += (double)x[i];
        return t;
    }

    /* e[i] = exp(x[i] - mx) for one row; returns the sum of e in double. */
    FNN_INLINE double fnn_exp_shift_sum(const float* x, float mx, float* e, Py_ssize_t n) {
        for (Py_ssize_t i = 0; i < n; i++) e[i] = fnn_exp_nonpos(x[i] - mx);
        return fnn_sum_d(e, n);
    }

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
