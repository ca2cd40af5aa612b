/* fnn_smallk.h: the forward GEMM of a convolution with a small inner dimension K = C*kh*kw (a
   network's first layer: K = 9 for 1x3x3), used by kernels/conv.pyx on its "planes" columns (per
   image, cols (K, P) row-major, P = OH*OW):

     y (F, P) = W2 (F, K) @ cols + b[f]

   Why: BLAS's sgemm with an inner dimension of ~10 spends its time packing and in edge code; this
   loop keeps a block of 4 channels x 16 pixels in registers and streams K panel rows through it.
   (The weight gradient's inner dimension is P, where sgemm does well: it stays on sgemm.)

   Bits: every multiply-add is FNN_FMA (rounded once in every ISA variant), and each output is
     y[f, p] = fma(W2[f, K-1], cols[K-1, p], ... fma(W2[f, 0], cols[0, p], b[f]))
   whatever the blocking, threads or variant. The baseline (non-FMA) x86 variant computes fmaf in
   software: correct but slow, so the caller asks fnn_smallk_usable() first and keeps sgemm
   on such CPUs. */
#ifndef FNN_SMALLK_H
#define FNN_SMALLK_H

#include "fnn_math.h"

#define FNN_SK_MAXK 32  /* largest K (the panel buffer's rows); the caller picks its threshold */
#define FNN_SK_PB 16    /* output pixels per register block */
#define FNN_SK_FB 4     /* output channels per register block */

/* Unroll the loops over a block's channels, so that each output vector is its own register
   (left as loops, gcc keeps the accumulators in memory or vectorises across k instead). */
#if defined(__GNUC__) && !defined(__clang__)
#define FNN_SK_UNROLL _Pragma("GCC unroll 8")
#else
#define FNN_SK_UNROLL
#endif

/* 1 when the kernels below run with a hardware FMA (the variant gcc picks has one). */
static int fnn_smallk_usable(void) {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && __GNUC__ >= 12
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v3") != 0;
#elif defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#elif defined(FP_FAST_FMAF)
    return 1;
#else
    return 0;
#endif
}

/* nf (a constant after inlining) output channels x FNN_SK_PB pixels, held in registers; c is
   the block's packed panel of cols, (K, FNN_SK_PB). */
FNN_INLINE void fnn_sk_fwd_block(const float* w, Py_ssize_t K, const float* b, const float* c,
                                 Py_ssize_t P, float* y, const int nf) {
    float acc[FNN_SK_FB][FNN_SK_PB];
    FNN_SK_UNROLL for (int f = 0; f < nf; f++)
        for (int j = 0; j < FNN_SK_PB; j++) acc[f][j] = b[f];
    for (Py_ssize_t k = 0; k < K; k++) {
        const float* ck = c + k * FNN_SK_PB;
        FNN_SK_UNROLL for (int f = 0; f < nf; f++) {
            float wk = w[f * K + k];
            for (int j = 0; j < FNN_SK_PB; j++) acc[f][j] = FNN_FMA(wk, ck[j], acc[f][j]);
        }
    }
    FNN_SK_UNROLL for (int f = 0; f < nf; f++)
        for (int j = 0; j < FNN_SK_PB; j++) y[f * P + j] = acc[f][j];
}

/* The same for the last np < FNN_SK_PB pixels of a row, one channel at a time. */
FNN_INLINE void fnn_sk_fwd_tail(const float* w, Py_ssize_t K, float bf, const float* c,
                                Py_ssize_t P, float* y, int np) {
    float acc[FNN_SK_PB];
    for (int j = 0; j < np; j++) acc[j] = bf;
    for (Py_ssize_t k = 0; k < K; k++)
        for (int j = 0; j < np; j++) acc[j] = FNN_FMA(w[k], c[k * P + j], acc[j]);
    for (int j = 0; j < np; j++) y[j] = acc[j];
}

/* y (F, P) = W2 (F, K) @ cols (K, P) + b[f], all row-major, K <= FNN_SK_MAXK. Per block of
   pixels, its K x FNN_SK_PB panel of cols is copied to a contiguous buffer first: the rows of
   cols are P floats apart, and for P a multiple of 1024 they all fall in one set of L1. */
FNN_CLONES static void fnn_smallk_forward(const float* W2, const float* b, const float* cols,
                                          Py_ssize_t F, Py_ssize_t K, Py_ssize_t P, float* y) {
    float panel[FNN_SK_MAXK * FNN_SK_PB];
    Py_ssize_t full = P - P % FNN_SK_PB, f0;
    for (Py_ssize_t p = 0; p < full; p += FNN_SK_PB) {
        for (Py_ssize_t k = 0; k < K; k++)
            memcpy(panel + k * FNN_SK_PB, cols + k * P + p, FNN_SK_PB * sizeof(float));
        for (f0 = 0; f0 + FNN_SK_FB <= F; f0 += FNN_SK_FB)
            fnn_sk_fwd_block(W2 + f0 * K, K, b + f0, panel, P, y + f0 * P + p, FNN_SK_FB);
        for (; f0 < F; f0++)
            fnn_sk_fwd_block(W2 + f0 * K, K, b + f0, panel, P, y + f0 * P + p, 1);
    }
    if (full < P)
        for (Py_ssize_t f = 0; f < F; f++)
            fnn_sk_fwd_tail(W2 + f * K, K, b[f], cols + full, P, y + f * P + full,
                            (int)(P - full));
}

#endif /* FNN_SMALLK_H */
