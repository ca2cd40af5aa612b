/* fnn_math.h: vectorisable float32 math and reductions shared by the Cython kernels
   (kernels/<topic>.pyx), which include it with `cdef extern from "fnn_math.h"` (setup.py passes
   include_dirs=["kernels"]).

   Holds: the FNN_CLONES (gcc target_clones: AVX-512, AVX2+FMA, baseline, picked at load time),
   FNN_FMA (an explicit fused multiply-add: same bits in every variant) and
   FNN_INLINE macros; polynomial exp (x <= 0) and log1p (u in [0, 1]), about 1 ulp, that vectorise
   where libm's expf/logf are scalar calls; a NaN-propagating row max; float64 sums in 16 lanes with
   an order that depends on n only.

   Why one header: every module compiles its inner loops in several ISA variants and they must
   all give bitwise the same results. So no -ffast-math (inf/NaN handling and IEEE results stay),
   and fp-contract=off (a*b+c is never fused into an FMA in one variant and not in another). The
   `#pragma GCC optimize` below applies to everything after the #include in the translation unit:
   the module's own kernels and the Cython code around them.

   Needs Py_ssize_t: included after Python.h (Cython's generated .c does so). */
#ifndef FNN_MATH_H
#define FNN_MATH_H

#include <Python.h>

#if defined(__GNUC__) && !defined(__clang__)
/* Let gcc if-convert float selects (needed to vectorise them) and keep a*b+c unfused, so
   every ISA variant rounds identically. Neither changes IEEE results or inf/NaN handling. */
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && __GNUC__ >= 11
/* x86-64-v3 is AVX2 + FMA, v4 adds AVX-512 (plain "avx2" would leave FMA out) */
#define FNN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
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

/* A fused multiply-add, rounded once: the same bits in every ISA variant (one instruction where
   the variant has FMA, libm's exact software fmaf in the baseline one). */
#if defined(__GNUC__) || defined(__clang__)
#define FNN_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define FNN_FMA(a, b, c) fmaf((a), (b), (c))
#endif

/* exp(x) for x <= 0 (or NaN): Cody-Waite reduction + degree-6 polynomial, about 1 ulp.
   Results below FLT_MIN (x < -87.34) flush to 0; exp(-inf) = 0; NaN propagates. */
FNN_INLINE float fnn_exp_nonpos(float x) {
    float xc = x < -88.0f ? -88.0f : x;
    float fn = xc * 1.44269504088896341f;
    fn = (fn - 12582912.0f) + 12582912.0f;            /* round to nearest integer */
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = FNN_FMA(p, r, 1.3981999507e-3f);
    p = FNN_FMA(p, r, 8.3334519073e-3f);
    p = FNN_FMA(p, r, 4.1665795894e-2f);
    p = FNN_FMA(p, r, 1.6666665459e-1f);
    p = FNN_FMA(p, r, 5.0000001201e-1f);
    p = FNN_FMA(p * r, r, r) + 1.0f;
    int32_t bits = ((int32_t)fn + 127) << 23;         /* 2^n, n in [-127, 0] */
    float s;
    memcpy(&s, &bits, sizeof s);
    float res = p * s;
    res = x < -87.33654f ? 0.0f : res;
    return x != x ? x : res;
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

#endif /* FNN_MATH_H */
