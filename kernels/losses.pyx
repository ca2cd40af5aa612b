# fastnn Cython kernels: losses fused with their gradients (softmax cross-entropy, sigmoid binary
# cross-entropy on logits, mean squared error). Interface: docs/backends.md; oracle:
# fastnn/reference/losses.py. Each returns the mean loss as a Python float and overwrites the
# gradient (already divided by the number of rows or elements).
#
# Inner loops are C (verbatim block below), compiled in AVX-512/AVX2/baseline variants with gcc
# `target_clones` and FMA contraction off, so every variant gives bitwise the same results; exp and
# log1p are vectorisable polynomial versions (about 1 ulp). exp, the row max and the double sum are
# the same helpers as in activations.pyx (kept in sync by hand).
# Loss sums are float64: per-row (or per-element) losses are summed inside fixed blocks whose
# boundaries depend only on the array size, then the block partials are added in block order, so the
# result is bitwise the same on any thread count and on the serial path.

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

    /* log1p(u) for u in [0, 1] (or NaN): w = 1 + u rounded, log(w) by the Cephes logf
       polynomial on [sqrt(1/2), sqrt(2)] (w in [1, 2] needs only a halving), plus the first-order
       correction (u - (w - 1))/w for the rounding of 1 + u. About 1 ulp. */
    FNN_INLINE float fnn_log1p01(float u) {
        float w = 1.0f + u;
        float c = (u - (w - 1.0f)) / w;
        float big = w > 1.41421356f ? 1.0f : 0.0f;
        float m = w > 1.41421356f ? w * 0.5f : w;
        float f = m - 1.0f;
        float z = f * f;
        float y = 7.0376836292e-2f;
        y = y * f - 1.1514610310e-1f;
        y = y * f + 1.1676998740e-1f;
        y = y * f - 1.2420140846e-1f;
        y = y * f + 1.4249322787e-1f;
        y = y * f - 1.6668057665e-1f;
        y = y * f + 2.0000714765e-1f;
        y = y * f - 2.4999993993e-1f;
        y = y * f + 3.3333331174e-1f;
        y = y * f * z;
        y = y + big * -2.12194440e-4f;
        y = y - 0.5f * z;
        float r = f + y;
        r = r + big * 0.693359375f;
        return r + c;
    }

    /* Rows [0, nrows) of (nrows, C) logits: dl = (softmax - onehot)/N, computed as the reference
       does ((e/s - [k]) / N); returns the sum of the row losses log(s) - (x[k] - max) in double. */
    FNN_CLONES static double fnn_sce_rows_k(const float* x, const long long* lab, float* dl,
                                            Py_ssize_t nrows, Py_ssize_t C, float fN) {
        double loss = 0.0;
        for (Py_ssize_t r = 0; r < nrows; r++) {
            const float* xr = x + r * C;
            float* dr = dl + r * C;
            long long k = lab[r];
            float mx = fnn_max_nan(xr, C);
            double s = fnn_exp_shift_sum(xr, mx, dr, C);
            float sf = (float)s;
            float ek = dr[k];
            loss += log(s) - (double)(xr[k] - mx);
            for (Py_ssize_t i = 0; i < C; i++) dr[i] = (dr[i] / sf) / fN;
            dr[k] = (ek / sf - 1.0f) / fN;
        }
        return loss;
    }

    /* Stable BCE on logits over n elements; returns the float64 sum of the float32 losses
       max(z,0) - z*t + log1p(exp(-|z|)); dl = (sigmoid(z) - t)/fn. Chunks of 256: one vectorised
       loop computes losses (into a stack buffer) and gradients, then the buffer is summed in
       double; chunk sums are added in order. */
    FNN_CLONES static double fnn_bce_k(const float* z, const float* t, float* dl, Py_ssize_t n,
                                       float fn) {
        float buf[256];
        double total = 0.0;
        for (Py_ssize_t s = 0; s < n; s += 256) {
            Py_ssize_t m = n - s < 256 ? n - s : 256;
            const float* zs = z + s;
            const float* ts = t + s;
            float* ds = dl + s;
            for (Py_ssize_t i = 0; i < m; i++) {
                float zz = zs[i], tt = ts[i];
                float e = fnn_exp_nonpos(-fabsf(zz));
                buf[i] = ((zz > 0.0f ? zz : 0.0f) - zz * tt) + fnn_log1p01(e);
                float p = (zz >= 0.0f ? 1.0f : e) / (1.0f + e);
                ds[i] = (p - tt) / fn;
            }
            total += fnn_sum_d(buf, m);
        }
        return total;
    }

    /* d = p - t; dp = d * scale; returns the float64 sum of d*d (16 lanes as fnn_sum_d). */
    FNN_CLONES static double fnn_mse_k(const float* p, const float* t, float* dp, Py_ssize_t n,
                                       float scale) {
        Py_ssize_t i = 0;
    #if FNN_VEC
        fnn_v8d a = {0}, a1 = {0};
        fnn_v8f p0, p1, t0, t1;
        for (; i + 16 <= n; i += 16) {
            FNN_LD8(p0, p + i);
            FNN_LD8(p1, p + i + 8);
            FNN_LD8(t0, t + i);
            FNN_LD8(t1, t + i + 8);
            fnn_v8f d0 = p0 - t0, d1 = p1 - t1;
            fnn_v8f s0 = d0 * scale, s1 = d1 * scale;
            FNN_ST8(dp + i, s0);
            FNN_ST8(dp + i + 8, s1);
            fnn_v8d e0 = FNN_CVT8(d0), e1 = FNN_CVT8(d1);
            a += e0 * e0;
            a1 += e1 * e1;
        }
        a += a1;
    #else
        double a[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) {
                float d = p[i + j] - t[i + j];
                dp[i + j] = d * scale;
                a[j] += (double)d * (double)d;
            }
        for (int j = 0; j < 8; j++) a[j] += a[j + 8];
    #endif
        double total = FNN_TREE8(a);
        for (; i < n; i++) {
            float d = p[i] - t[i];
            dp[i] = d * scale;
            total += (double)d * (double)d;
        }
        return total;
    }
    """
    double fnn_sce_rows_k(const float* x, const long long* lab, float* dl,
                          Py_ssize_t nrows, Py_ssize_t C, float fN)
    double fnn_bce_k(const float* z, const float* t, float* dl, Py_ssize_t n, float fn)
    double fnn_mse_k(const float* p, const float* t, float* dp, Py_ssize_t n, float scale)


ctypedef double (*_flat_loss_fn)(const float*, const float*, float*, Py_ssize_t, float) noexcept nogil

cdef enum:
    _MAX_BLOCKS = 64        # reduction blocks per call (their size depends only on the array size)
    _MIN_BLOCK = 2048       # elements per block at least (flat losses)


cdef double _flat_loss(_flat_loss_fn f, const float* a, const float* b, float* g, Py_ssize_t n,
                       float c) noexcept nogil:
    """Sum of f over fixed blocks of [0, n), block partials added in block order."""
    cdef double part[_MAX_BLOCKS]
    cdef double total = 0.0
    cdef Py_ssize_t R, nb, k, s
    R = (n + _MAX_BLOCKS - 1) // _MAX_BLOCKS
    R = ((R + 15) // 16) * 16
    if R < _MIN_BLOCK:
        R = _MIN_BLOCK
    nb = (n + R - 1) // R
    if n >= PARALLEL_MIN_WORK and nb > 1 and _nthreads > 1:
        for k in prange(nb, schedule="static", num_threads=_nthreads):
            s = k * R
            part[k] = f(a + s, b + s, g + s, min(R, n - s), c)
    else:
        for k in range(nb):
            s = k * R
            part[k] = f(a + s, b + s, g + s, min(R, n - s), c)
    for k in range(nb):
        total += part[k]
    return total


def softmax_cross_entropy(const float[:, ::1] logits, const long long[::1] labels,
                          float[:, ::1] dlogits):
    """Mean over rows of logsumexp(row) - row[label]; dlogits = (softmax - onehot)/N.
    One pass per row (max, exp and sum, loss, gradient), rows in fixed blocks."""
    cdef Py_ssize_t N = logits.shape[0], C = logits.shape[1]
    cdef double part[_MAX_BLOCKS]
    cdef double total = 0.0
    cdef Py_ssize_t R, nb, k, s
    if N == 0 or C == 0:
        return float("nan")
    cdef const float* xp = &logits[0, 0]
    cdef const long long* lp = &labels[0]
    cdef float* dp = &dlogits[0, 0]
    cdef float fN = <float>N
    with nogil:
        R = (N + _MAX_BLOCKS - 1) // _MAX_BLOCKS
        nb = (N + R - 1) // R
        if N * C >= PARALLEL_MIN_WORK and nb > 1 and _nthreads > 1:
            for k in prange(nb, schedule="static", num_threads=_nthreads):
                s = k * R
                part[k] = fnn_sce_rows_k(xp + s * C, lp + s, dp + s * C, min(R, N - s), C, fN)
        else:
            for k in range(nb):
                s = k * R
                part[k] = fnn_sce_rows_k(xp + s * C, lp + s, dp + s * C, min(R, N - s), C, fN)
        for k in range(nb):
            total += part[k]
    return total / N


def sigmoid_binary_cross_entropy(const float[::1] logits, const float[::1] targets,
                                 float[::1] dlogits):
    """Mean of max(z,0) - z*t + log1p(exp(-|z|)); dlogits = (sigmoid(z) - t)/n (flat 1-D)."""
    cdef Py_ssize_t n = logits.shape[0]
    cdef double total
    if n == 0:
        return float("nan")
    with nogil:
        total = _flat_loss(fnn_bce_k, &logits[0], &targets[0], &dlogits[0], n, <float>n)
    return total / n


def mse(const float[::1] pred, const float[::1] target, float[::1] dpred):
    """Mean of (p-t)^2 (float64 sum of squares); dpred = (p-t) * float32(2/n) (flat 1-D)."""
    cdef Py_ssize_t n = pred.shape[0]
    cdef double total
    if n == 0:
        return float("nan")
    with nogil:
        total = _flat_loss(fnn_mse_k, &pred[0], &target[0], &dpred[0], n, <float>(2.0 / n))
    return total / n
