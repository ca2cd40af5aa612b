/* fnn_convpool.h: a network's first convolution block, Conv2D (stride 1) -> ReLU -> MaxPool2D(2),
   as one kernel, forward and backward, used by kernels/convpool.pyx (`cdef extern from`).
   The math and its readable form: fastnn/reference/convpool.py.

   Why: for a first layer (C * kh * kw = 9 or 25) the im2col + sgemm path spends most of its time
   outside the multiply-adds: the columns (25x the input), BLAS packing for an inner dimension of
   25, the bias pass, then the pooling pass over the (N, F, OH, OW) output and, in backward, the
   unpooling into a gradient of that size and the ReLU mask. Here each image is copied once into
   a zero-padded scratch, and

   forward: a register block of filters x 2 output rows x 8 output columns (one pooling band, four
     windows wide) accumulates its taps from the padded rows directly; the epilogue adds the bias,
     takes each 2x2 window's max and argmax, applies the ReLU and writes the pooled outputs: the
     convolution's output never reaches memory.
   backward (no dx: the block is a first layer): the conv output's gradient is nonzero only at
     each window's argmax, so dW sums g * (the kh x kw patch at the argmax) over the pooled
     outputs whose g is not zero (compacted first: after the ReLU about half are), one 8-lane
     vector per kernel row: at most a quarter of the dense correlation's products (the sparse
     path, used when the image is finite and every argmax lies in its window). Else
     the pooled gradient is scattered into a dense (F, OH, OW) plane (L2-sized scratch) and dW is
     the correlation of that plane with the padded image; this dense path forms exactly the
     products the reference's GEMM forms (0 * x included), so an inf or NaN in x gives NaN in the
     same dW entries.

   The hot loops are explicit AVX2 + FMA vectors (gcc left the portable lane loops as scalar FMAs,
   10x slower); CPUs without AVX2/FMA run the portable loops. A 16-lane AVX-512 forward (both rows
   of a block in one vector, the weight broadcast folded into the FMA) measured 1.6x slower on
   Zen 4 and was not kept.

   Semantics (those of the reference composition): the bias is added before the comparison; the
   first maximum in row-major window order wins and a NaN is the maximum (first NaN wins), as in
   fnn_pool.h; p = v < 0 ? 0 : v (NaN propagates); g = dp * (p > 0 ? 1 : 0).

   Bits: each forward output's sum runs over (c, i, j) in order, one FNN_FMA per tap, in the
   vector and the portable loops alike; dW per image, then per fixed chunk of images summed in
   chunk order (convpool.pyx): results do not depend on the thread count. */
#ifndef FNN_CONVPOOL_H
#define FNN_CONVPOOL_H

#include "fnn_math.h"

#define FNN_CP_FB 4   /* filters per register block */
#define FNN_CP_TW 8   /* output columns per register block (one vector) */

/* 1: run the portable loops even where AVX2 + FMA exist (convpool.pyx's _set_portable, so the
   tests cover the loops other CPUs run) */
static int fnn_cp_portable = 0;

#if defined(__GNUC__) && !defined(__clang__)
#define FNN_CP_UNROLL _Pragma("GCC unroll 8")
#else
#define FNN_CP_UNROLL
#endif

/* Geometry of one image's padded copy: rows of Wp floats, Hp rows per channel. The rows are
   long enough for whole 8-column blocks past the last output column. */
typedef struct {
    int C, H, W, F, kh, kw, pad, OH, OW, PH, PW, Hp, Wp, OWv;
} fnn_cp_geom;

static void fnn_cp_geometry(int C, int H, int W, int F, int kh, int kw, int pad, fnn_cp_geom* g) {
    g->C = C; g->H = H; g->W = W; g->F = F; g->kh = kh; g->kw = kw; g->pad = pad;
    g->OH = H + 2 * pad - kh + 1;
    g->OW = W + 2 * pad - kw + 1;
    g->PH = g->OH / 2;
    g->PW = g->OW / 2;
    g->OWv = (g->OW + FNN_CP_TW - 1) / FNN_CP_TW * FNN_CP_TW;
    g->Hp = H + 2 * pad;
    g->Wp = g->OWv + kw - 1;
}

/* Floats of the padded image copy. */
static Py_ssize_t fnn_cp_image_floats(const fnn_cp_geom* g) {
    return (Py_ssize_t)g->C * g->Hp * g->Wp + FNN_CP_TW;  /* + a vector's slack past the end */
}

/* 1 when none of x[0..n) is inf or NaN. */
FNN_INLINE int fnn_cp_all_finite(const float* x, Py_ssize_t n) {
    uint32_t any = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t b;
        memcpy(&b, x + i, sizeof b);
        any |= (uint32_t)((b & 0x7f800000u) == 0x7f800000u);
    }
    return !any;
}

/* x (C, H, W) into xp (C, Hp, Wp): zero border and zero columns past the padded width. */
FNN_INLINE void fnn_cp_pad_image(const float* x, const fnn_cp_geom* g, float* xp) {
    memset(xp, 0, (size_t)fnn_cp_image_floats(g) * sizeof(float));
    for (int c = 0; c < g->C; c++)
        for (int h = 0; h < g->H; h++)
            memcpy(xp + ((Py_ssize_t)c * g->Hp + h + g->pad) * g->Wp + g->pad,
                   x + ((Py_ssize_t)c * g->H + h) * g->W, (size_t)g->W * sizeof(float));
}

/* W (F, K) into wt (K, Fp): the taps of a block of filters side by side. Fp = F rounded up to
   FNN_CP_FB, padded with zero filters. */
static void fnn_cp_pack_weights(const float* w, int F, int K, float* wt) {
    int Fp = (F + FNN_CP_FB - 1) / FNN_CP_FB * FNN_CP_FB;
    for (int k = 0; k < K; k++)
        for (int f = 0; f < Fp; f++) wt[(Py_ssize_t)k * Fp + f] = f < F ? w[(Py_ssize_t)f * K + k] : 0.0f;
}

/* The pooled outputs of one block: filters f0..f0+nf, pooled row ph, pooled columns from
   pw0 (at most 4). acc holds the conv sums of rows 2ph, 2ph+1, columns 2pw0 .. 2pw0+7. */
FNN_INLINE void fnn_cp_pool_epilogue(float acc[FNN_CP_FB][2][FNN_CP_TW], int nf, const float* b,
                                     int f0, int ph, int pw0, const fnn_cp_geom* g, float* p,
                                     int32_t* am) {
    int nq = g->PW - pw0 < FNN_CP_TW / 2 ? g->PW - pw0 : FNN_CP_TW / 2;
    Py_ssize_t plane = (Py_ssize_t)g->PH * g->PW;
    for (int f = 0; f < nf; f++) {
        float bf = b[f0 + f];
        float* pr = p + (f0 + f) * plane + (Py_ssize_t)ph * g->PW + pw0;
        int32_t* ar = am + (f0 + f) * plane + (Py_ssize_t)ph * g->PW + pw0;
        for (int q = 0; q < nq; q++) {
            float v0 = acc[f][0][2 * q] + bf, v1 = acc[f][0][2 * q + 1] + bf;
            float v2 = acc[f][1][2 * q] + bf, v3 = acc[f][1][2 * q + 1] + bf;
            int32_t k = (int32_t)(2 * ph) * g->OW + 2 * (pw0 + q);
            float best = v0;
            int32_t bk = k;
            /* a later value wins when larger or NaN, unless the best is already NaN */
            int t = !(v1 <= best) & (best == best);
            best = t ? v1 : best; bk = t ? k + 1 : bk;
            t = !(v2 <= best) & (best == best);
            best = t ? v2 : best; bk = t ? k + g->OW : bk;
            t = !(v3 <= best) & (best == best);
            best = t ? v3 : best; bk = t ? k + g->OW + 1 : bk;
            pr[q] = best < 0.0f ? 0.0f : best;
            ar[q] = bk;
        }
    }
}

/* One register block: nf (a constant after inlining) filters x rows 2ph, 2ph+1 x 8 columns. */
FNN_INLINE void fnn_cp_fwd_block(const float* xp, const float* wt, int Fp, int f0, int ph,
                                 int ow0, const fnn_cp_geom* g, float acc[FNN_CP_FB][2][FNN_CP_TW],
                                 const int nf) {
    FNN_CP_UNROLL for (int f = 0; f < nf; f++)
        for (int l = 0; l < FNN_CP_TW; l++) acc[f][0][l] = acc[f][1][l] = 0.0f;
    const float* w = wt + f0;
    for (int c = 0; c < g->C; c++) {
        for (int i = 0; i < g->kh; i++) {
            const float* r0 = xp + ((Py_ssize_t)c * g->Hp + 2 * ph + i) * g->Wp + ow0;
            const float* r1 = r0 + g->Wp;
            /* pointers, not r0[j + l]: under CPython's -fwrapv, int index sums keep gcc from
               vectorising (see _parallel.pxi) */
            for (int j = 0; j < g->kw; j++, w += Fp, r0++, r1++) {
                FNN_CP_UNROLL for (int f = 0; f < nf; f++) {
                    float wf = w[f];
                    for (int l = 0; l < FNN_CP_TW; l++) {
                        acc[f][0][l] = FNN_FMA(wf, r0[l], acc[f][0][l]);
                        acc[f][1][l] = FNN_FMA(wf, r1[l], acc[f][1][l]);
                    }
                }
            }
        }
    }
}

/* ---- AVX2 + FMA variants (x86-64 with gcc or clang): the same arithmetic in explicit 8-lane
   vectors. gcc does not vectorise the lane loops above (it unrolls them into scalar FMAs), so on
   CPUs with AVX2 and FMA these run instead; elsewhere the portable loops above do. Each output is
   the same chain of single-rounding FMAs in both, so the bits agree. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FNN_CP_AVX2 1
#include <immintrin.h>
#define FNN_CP_T __attribute__((target("avx2,fma")))
#define FNN_CP_VFB 6  /* filters per block: 12 accumulators + 2 rows + 1 weight of 16 registers */

static int fnn_cp_avx2_usable(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return known && !fnn_cp_portable;
}

/* Bias, 2x2 max/argmax and ReLU of one filter's block (rows r0, r1 of 8 columns from column
   2*pw0): at most 4 pooled outputs. The merges are those of fnn_pool.h (first maximum in
   row-major order, NaN wins). */
FNN_CP_T static inline void fnn_cp_pool8(__m256 r0, __m256 r1, float bf, int32_t k0, int32_t OW,
                                         int nq, float* pr, int32_t* ar) {
    const __m256 b = _mm256_set1_ps(bf);
    __m256 a = _mm256_add_ps(r0, b), c = _mm256_add_ps(r1, b);
    /* vertical: the bottom value wins iff !(c <= a) and a is not NaN */
    __m256 down = _mm256_andnot_ps(_mm256_cmp_ps(c, a, _CMP_LE_OQ), _mm256_cmp_ps(a, a, _CMP_EQ_OQ));
    __m256 v = _mm256_blendv_ps(a, c, down);
    __m256i k = _mm256_add_epi32(_mm256_set1_epi32(k0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    k = _mm256_add_epi32(k, _mm256_and_si256(_mm256_castps_si256(down), _mm256_set1_epi32(OW)));
    /* horizontal: even lanes (left) against odd lanes (right) */
    const __m256i ev = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256 vp = _mm256_permutevar8x32_ps(v, ev);
    __m256i kp = _mm256_permutevar8x32_epi32(k, ev);
    __m128 vl = _mm256_castps256_ps128(vp), vr = _mm256_extractf128_ps(vp, 1);
    __m128i kl = _mm256_castsi256_si128(kp), kr = _mm256_extracti128_si256(kp, 1);
    __m128 lnan = _mm_cmpunord_ps(vl, vl), rnan = _mm_cmpunord_ps(vr, vr);
    __m128 bigger = _mm_andnot_ps(_mm_cmp_ps(vr, vl, _CMP_LE_OQ), _mm_cmpord_ps(vl, vl));
    __m128 same = _mm_or_ps(_mm_cmp_ps(vr, vl, _CMP_EQ_OQ), _mm_and_ps(lnan, rnan));
    __m128 earlier = _mm_castsi128_ps(_mm_cmpgt_epi32(kl, kr));
    __m128 right = _mm_or_ps(bigger, _mm_and_ps(same, earlier));
    __m128 best = _mm_blendv_ps(vl, vr, right);
    __m128i bk = _mm_castps_si128(_mm_blendv_ps(_mm_castsi128_ps(kl), _mm_castsi128_ps(kr), right));
    /* ReLU: v < 0 ? 0 : v (NaN stays) */
    best = _mm_andnot_ps(_mm_cmp_ps(best, _mm_setzero_ps(), _CMP_LT_OQ), best);
    if (nq == 4) {
        _mm_storeu_ps(pr, best);
        _mm_storeu_si128((__m128i*)ar, bk);
    } else {
        float t[4];
        int32_t u[4];
        _mm_storeu_ps(t, best);
        _mm_storeu_si128((__m128i*)u, bk);
        for (int q = 0; q < nq; q++) { pr[q] = t[q]; ar[q] = u[q]; }
    }
}

/* The epilogue of two filters' blocks at once (rows a, c of A and B, bias added), when none of
   their values is NaN: the merges above without the NaN terms, the horizontal one on both filters
   in one vector ([A q0 q1, B q0 q1 | A q2 q3, B q2 q3], then reordered). */
FNN_CP_T static inline void fnn_cp_pool8_pair(__m256 aA, __m256 cA, __m256 aB, __m256 cB,
                                              __m256i kbase, __m256i owv, int nq, float* pA,
                                              int32_t* amA, float* pB, int32_t* amB, int two) {
    __m256 dA = _mm256_cmp_ps(cA, aA, _CMP_GT_OQ), dB = _mm256_cmp_ps(cB, aB, _CMP_GT_OQ);
    __m256 vA = _mm256_blendv_ps(aA, cA, dA), vB = _mm256_blendv_ps(aB, cB, dB);
    __m256 kA = _mm256_castsi256_ps(_mm256_add_epi32(kbase,
                                                     _mm256_and_si256(_mm256_castps_si256(dA), owv)));
    __m256 kB = _mm256_castsi256_ps(_mm256_add_epi32(kbase,
                                                     _mm256_and_si256(_mm256_castps_si256(dB), owv)));
    __m256 vl = _mm256_shuffle_ps(vA, vB, 0x88), vr = _mm256_shuffle_ps(vA, vB, 0xDD);
    __m256 kl = _mm256_shuffle_ps(kA, kB, 0x88), kr = _mm256_shuffle_ps(kA, kB, 0xDD);
    __m256 earlier = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_castps_si256(kl),
                                                            _mm256_castps_si256(kr)));
    __m256 right = _mm256_or_ps(_mm256_cmp_ps(vr, vl, _CMP_GT_OQ),
                                _mm256_and_ps(_mm256_cmp_ps(vr, vl, _CMP_EQ_OQ), earlier));
    __m256 best = _mm256_blendv_ps(vl, vr, right), bk = _mm256_blendv_ps(kl, kr, right);
    best = _mm256_andnot_ps(_mm256_cmp_ps(best, _mm256_setzero_ps(), _CMP_LT_OQ), best);
    best = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(best), 0xD8));
    bk = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(bk), 0xD8));
    if (nq == 4) {
        _mm_storeu_ps(pA, _mm256_castps256_ps128(best));
        _mm_storeu_ps((float*)amA, _mm256_castps256_ps128(bk));
        if (two) {
            _mm_storeu_ps(pB, _mm256_extractf128_ps(best, 1));
            _mm_storeu_ps((float*)amB, _mm256_extractf128_ps(bk, 1));
        }
    } else {
        float t[8];
        int32_t u[8];
        _mm256_storeu_ps(t, best);
        _mm256_storeu_ps((float*)u, bk);
        for (int q = 0; q < nq; q++) {
            pA[q] = t[q];
            amA[q] = u[q];
            if (two) {
                pB[q] = t[4 + q];
                amB[q] = u[4 + q];
            }
        }
    }
}

/* One block of nf (constant after inlining) filters x 2 rows x 8 columns, then its epilogue. */
FNN_CP_T static inline __attribute__((always_inline)) void fnn_cp_fwd_block_avx2(
        const float* xp, const float* wt, int Fp, int f0, int ph, int ow0, const fnn_cp_geom* g,
        const float* b, float* p, int32_t* am, const int nf) {
    __m256 acc[FNN_CP_VFB][2];
    FNN_CP_UNROLL for (int f = 0; f < nf; f++) acc[f][0] = acc[f][1] = _mm256_setzero_ps();
    const float* w = wt + f0;
    for (int c = 0; c < g->C; c++) {
        for (int i = 0; i < g->kh; i++) {
            const float* r0 = xp + ((Py_ssize_t)c * g->Hp + 2 * ph + i) * g->Wp + ow0;
            const float* r1 = r0 + g->Wp;
            for (int j = 0; j < g->kw; j++, w += Fp) {
                __m256 x0 = _mm256_loadu_ps(r0 + j), x1 = _mm256_loadu_ps(r1 + j);
                FNN_CP_UNROLL for (int f = 0; f < nf; f++) {
                    __m256 wf = _mm256_broadcast_ss(w + f);
                    acc[f][0] = _mm256_fmadd_ps(wf, x0, acc[f][0]);
                    acc[f][1] = _mm256_fmadd_ps(wf, x1, acc[f][1]);
                }
            }
        }
    }
    int pw0 = ow0 / 2, nq = g->PW - pw0 < 4 ? g->PW - pw0 : 4;
    Py_ssize_t plane = (Py_ssize_t)g->PH * g->PW, o = (Py_ssize_t)ph * g->PW + pw0;
    int32_t k0 = (int32_t)(2 * ph) * g->OW + ow0;
    __m256 nan = _mm256_setzero_ps();
    FNN_CP_UNROLL for (int f = 0; f < nf; f++) {
        __m256 bf = _mm256_set1_ps(b[f0 + f]);
        acc[f][0] = _mm256_add_ps(acc[f][0], bf);
        acc[f][1] = _mm256_add_ps(acc[f][1], bf);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(acc[f][0], acc[f][1], _CMP_UNORD_Q));
    }
    if (_mm256_movemask_ps(nan)) {  /* a NaN somewhere (x or W held inf/NaN): the full merges
                                       (the bias is in: adding -0.0 changes no value) */
        FNN_CP_UNROLL for (int f = 0; f < nf; f++)
            fnn_cp_pool8(acc[f][0], acc[f][1], -0.0f, k0, g->OW, nq, p + (f0 + f) * plane + o,
                         am + (f0 + f) * plane + o);
        return;
    }
    __m256i kbase = _mm256_add_epi32(_mm256_set1_epi32(k0),
                                     _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i owv = _mm256_set1_epi32(g->OW);
    FNN_CP_UNROLL for (int f = 0; f < nf; f += 2) {
        int f1 = f + 1 < nf ? f + 1 : f;  /* an odd last filter pairs with itself */
        fnn_cp_pool8_pair(acc[f][0], acc[f][1], acc[f1][0], acc[f1][1], kbase, owv, nq,
                          p + (f0 + f) * plane + o, am + (f0 + f) * plane + o,
                          p + (f0 + f1) * plane + o, am + (f0 + f1) * plane + o, f1 != f);
    }
}

FNN_CP_T static void fnn_cp_forward_image_avx2(const float* xp, const float* wt, int Fp,
                                               const float* b, const fnn_cp_geom* g, float* p,
                                               int32_t* am) {
    for (int ph = 0; ph < g->PH; ph++)
        for (int ow0 = 0; ow0 < 2 * g->PW; ow0 += FNN_CP_TW) {
            int f0 = 0;
            for (; f0 + FNN_CP_VFB <= g->F; f0 += FNN_CP_VFB)
                fnn_cp_fwd_block_avx2(xp, wt, Fp, f0, ph, ow0, g, b, p, am, FNN_CP_VFB);
            switch (g->F - f0) {
                case 5: fnn_cp_fwd_block_avx2(xp, wt, Fp, f0, ph, ow0, g, b, p, am, 5); break;
                case 4: fnn_cp_fwd_block_avx2(xp, wt, Fp, f0, ph, ow0, g, b, p, am, 4); break;
                case 3: fnn_cp_fwd_block_avx2(xp, wt, Fp, f0, ph, ow0, g, b, p, am, 3); break;
                case 2: fnn_cp_fwd_block_avx2(xp, wt, Fp, f0, ph, ow0, g, b, p, am, 2); break;
                case 1: fnn_cp_fwd_block_avx2(xp, wt, Fp, f0, ph, ow0, g, b, p, am, 1); break;
                default: break;
            }
        }
}

/* dW of filters f0..f0+nf, taps j0..j0+nj of row i of channel c (constants after inlining), as
   fnn_cp_dw_block. */
FNN_CP_T static inline __attribute__((always_inline)) void fnn_cp_dw_block_avx2(
        const float* dy, const float* xp, const fnn_cp_geom* g, int f0, int c, int i, int j0,
        float* dW, const int nf, const int nj) {
    __m256 acc[2][5], dv[2];
    Py_ssize_t OHW = (Py_ssize_t)g->OH * g->OW;
    int OW = g->OW, full = OW / FNN_CP_TW * FNN_CP_TW;
    FNN_CP_UNROLL for (int f = 0; f < nf; f++)
        FNN_CP_UNROLL for (int j = 0; j < nj; j++) acc[f][j] = _mm256_setzero_ps();
    __m256 tail = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(full - (OW - FNN_CP_TW) - 1)));
    for (int oh = 0; oh < g->OH; oh++) {
        const float* xr = xp + ((Py_ssize_t)c * g->Hp + oh + i) * g->Wp + j0;
        const float* dr = dy + f0 * OHW + (Py_ssize_t)oh * OW;
        for (int ow = 0; ow < full; ow += FNN_CP_TW) {
            FNN_CP_UNROLL for (int f = 0; f < nf; f++) dv[f] = _mm256_loadu_ps(dr + f * OHW + ow);
            FNN_CP_UNROLL for (int j = 0; j < nj; j++) {
                __m256 xv = _mm256_loadu_ps(xr + ow + j);
                FNN_CP_UNROLL for (int f = 0; f < nf; f++)
                    acc[f][j] = _mm256_fmadd_ps(dv[f], xv, acc[f][j]);
            }
        }
        if (full < OW) {  /* one vector ending at OW, the lanes already counted zeroed */
            int ow = OW - FNN_CP_TW;
            FNN_CP_UNROLL for (int f = 0; f < nf; f++)
                dv[f] = _mm256_and_ps(_mm256_loadu_ps(dr + f * OHW + ow), tail);
            FNN_CP_UNROLL for (int j = 0; j < nj; j++) {
                __m256 xv = _mm256_loadu_ps(xr + ow + j);
                FNN_CP_UNROLL for (int f = 0; f < nf; f++)
                    acc[f][j] = _mm256_fmadd_ps(dv[f], xv, acc[f][j]);
            }
        }
    }
    int K = g->C * g->kh * g->kw;
    FNN_CP_UNROLL for (int f = 0; f < nf; f++)
        FNN_CP_UNROLL for (int j = 0; j < nj; j++) {
            float a[8];
            _mm256_storeu_ps(a, acc[f][j]);
            dW[(Py_ssize_t)(f0 + f) * K + (c * g->kh + i) * g->kw + j0 + j] += FNN_TREE8(a);
        }
}

FNN_CP_T static void fnn_cp_dw_avx2(const float* dy, const float* xp, const fnn_cp_geom* g,
                                    float* dW) {
    for (int f0 = 0; f0 < g->F; f0 += 2) {
        int two = f0 + 1 < g->F;
        for (int c = 0; c < g->C; c++)
            for (int i = 0; i < g->kh; i++) {
                if (g->kw == 5 && two)
                    fnn_cp_dw_block_avx2(dy, xp, g, f0, c, i, 0, dW, 2, 5);
                else if (g->kw == 3 && two)
                    fnn_cp_dw_block_avx2(dy, xp, g, f0, c, i, 0, dW, 2, 3);
                else if (two)
                    for (int j = 0; j < g->kw; j++)
                        fnn_cp_dw_block_avx2(dy, xp, g, f0, c, i, j, dW, 2, 1);
                else
                    for (int j = 0; j < g->kw; j++)
                        fnn_cp_dw_block_avx2(dy, xp, g, f0, c, i, j, dW, 1, 1);
            }
    }
}

/* ---- Sparse dW (AVX2): the gradient of the conv output is nonzero only at the argmax of each
   window, so dW[f, c, i, j] = sum over pooled outputs of g * x[c, argmax row + i, argmax col + j]
   (a quarter of the dense correlation's products). One vector of 8 columns starting at the
   argmax column covers the kw <= 8 taps of a row (the other lanes are dropped); per filter, kh
   such rows accumulate in registers over the image. Exact only where the dense form adds zero
   products that change nothing: the caller takes this path when every x of the image is finite
   (0 * inf would be NaN) and every argmax lies in its own window. */

/* Per pooled output (filter-major): g = dp * (p > 0) into gs, the offset of its argmax in the
   padded channel plane into os. wb, ob: PHW uint32 of scratch. Returns the number of argmax
   entries outside their own window. Unsigned arithmetic: any int32 argmax wraps to a defined
   value, and one outside the window fails the test. */
FNN_INLINE Py_ssize_t fnn_cp_sparse_prepare(const float* dp, const float* p, const int32_t* am,
                                            const fnn_cp_geom* g, float* gs, int32_t* os,
                                            uint32_t* wb, uint32_t* ob) {
    const uint32_t OW = (uint32_t)g->OW, step = (uint32_t)(g->Wp - g->OW);
    Py_ssize_t PHW = (Py_ssize_t)g->PH * g->PW;
    uint32_t bad = 0;
    for (int ph = 0; ph < g->PH; ph++)  /* each window's first index, in the conv / padded plane */
        for (int pw = 0; pw < g->PW; pw++) {
            wb[ph * g->PW + pw] = (uint32_t)(2 * ph) * OW + 2 * (uint32_t)pw;
            ob[ph * g->PW + pw] = (uint32_t)(2 * ph) * (uint32_t)g->Wp + 2 * (uint32_t)pw;
        }
    for (int f = 0; f < g->F; f++) {
        const int32_t* a = am + f * PHW;
        const float* d = dp + f * PHW;
        const float* q = p + f * PHW;
        float* gf = gs + f * PHW;
        uint32_t* of = (uint32_t*)(os + f * PHW);
        for (Py_ssize_t k = 0; k < PHW; k++) {
            uint32_t dd = (uint32_t)a[k] - wb[k];   /* 0, 1, OW or OW+1 when valid */
            uint32_t down = (uint32_t)(dd >= OW), col = dd - down * OW;
            uint32_t out = (uint32_t)(col > 1) | (uint32_t)(dd > OW + 1);
            bad |= out;
            of[k] = ob[k] + (dd + down * step) * (1 - out);
            gf[k] = d[k] * (float)(q[k] > 0.0f);
        }
    }
    return bad;
}

/* Compaction table: for an 8-bit mask, the lanes of its set bits in order (then zeros), and how
   many there are. Filled once at import (fnn_cp_init). */
static int32_t fnn_cp_lut[256][8] __attribute__((aligned(32)));
static uint8_t fnn_cp_lutn[256];

static void fnn_cp_lut_init(void) {
    for (int m = 0; m < 256; m++) {
        int n = 0;
        for (int l = 0; l < 8; l++)
            if (m & (1 << l)) fnn_cp_lut[m][n++] = l;
        fnn_cp_lutn[m] = (uint8_t)n;
        for (int l = n; l < 8; l++) fnn_cp_lut[m][l] = 0;
    }
}

/* In place: keep the pooled outputs of one filter whose g is not zero (NaN kept), in order;
   returns how many. A zero g adds nothing: x is finite here, so g * x is +-0 and an accumulator
   that starts at +0 never changes by it. (After a ReLU about half the outputs are zero.) */
FNN_CP_T static Py_ssize_t fnn_cp_compact(float* gf, int32_t* of, Py_ssize_t m) {
    Py_ssize_t n = 0, k = 0;
    const __m256 zero = _mm256_setzero_ps();
    for (; k + 8 <= m; k += 8) {  /* stores at n <= k: never past what was read */
        __m256 gv = _mm256_loadu_ps(gf + k);
        __m256i ov = _mm256_loadu_si256((const __m256i*)(of + k));
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(gv, zero, _CMP_NEQ_UQ));
        __m256i perm = _mm256_load_si256((const __m256i*)fnn_cp_lut[mask]);
        _mm256_storeu_ps(gf + n, _mm256_permutevar8x32_ps(gv, perm));
        _mm256_storeu_si256((__m256i*)(of + n), _mm256_permutevar8x32_epi32(ov, perm));
        n += fnn_cp_lutn[mask];
    }
    for (; k < m; k++) {
        float v = gf[k];
        int32_t o = of[k];
        gf[n] = v;
        of[n] = o;
        n += (v != 0.0f);
    }
    return n;
}

/* dW rows i0 .. i0+nr of one filter and channel (d: their first entry) += sum over the n kept
   outputs of g * (the patch rows at the argmax): two accumulator sets (even and odd outputs) so
   that consecutive FMAs into one register do not wait for each other. */
FNN_CP_T static inline __attribute__((always_inline)) void fnn_cp_dw_sparse_rows(
        const float* gf, const int32_t* of, Py_ssize_t n, const float* xc, Py_ssize_t Wp,
        float* d, int kw, const int nr) {
    __m256 a0[5], a1[5];
    FNN_CP_UNROLL for (int i = 0; i < nr; i++) a0[i] = a1[i] = _mm256_setzero_ps();
    Py_ssize_t k = 0;
    for (; k + 2 <= n; k += 2) {
        __m256 g0 = _mm256_broadcast_ss(gf + k), g1 = _mm256_broadcast_ss(gf + k + 1);
        const float* x0 = xc + of[k];
        const float* x1 = xc + of[k + 1];
        FNN_CP_UNROLL for (int i = 0; i < nr; i++) {
            a0[i] = _mm256_fmadd_ps(g0, _mm256_loadu_ps(x0 + i * Wp), a0[i]);
            a1[i] = _mm256_fmadd_ps(g1, _mm256_loadu_ps(x1 + i * Wp), a1[i]);
        }
    }
    if (k < n) {
        __m256 g0 = _mm256_broadcast_ss(gf + k);
        const float* x0 = xc + of[k];
        FNN_CP_UNROLL for (int i = 0; i < nr; i++)
            a0[i] = _mm256_fmadd_ps(g0, _mm256_loadu_ps(x0 + i * Wp), a0[i]);
    }
    FNN_CP_UNROLL for (int i = 0; i < nr; i++) {
        float a[8];
        _mm256_storeu_ps(a, _mm256_add_ps(a0[i], a1[i]));
        for (int j = 0; j < kw; j++) d[i * kw + j] += a[j];
    }
}

/* The sparse dW of one image: per filter, its nonzero g compacted (gs, os are overwritten), then
   every channel's kernel rows in groups of 5, 3 and 1. */
FNN_CP_T static void fnn_cp_dw_sparse_avx2(float* gs, int32_t* os, const float* xp,
                                           const fnn_cp_geom* g, float* dW) {
    Py_ssize_t PHW = (Py_ssize_t)g->PH * g->PW, Wp = g->Wp;
    int K = g->C * g->kh * g->kw, kw = g->kw;
    for (int f = 0; f < g->F; f++) {
        float* gf = gs + f * PHW;
        int32_t* of = os + f * PHW;
        Py_ssize_t n = fnn_cp_compact(gf, of, PHW);
        for (int c = 0; c < g->C; c++) {
            int i0 = 0;
            const float* xc = xp + (Py_ssize_t)c * g->Hp * Wp;
            float* d = dW + (Py_ssize_t)f * K + c * g->kh * kw;
            for (; i0 + 5 <= g->kh; i0 += 5)
                fnn_cp_dw_sparse_rows(gf, of, n, xc + i0 * Wp, Wp, d + i0 * kw, kw, 5);
            if (g->kh - i0 == 3) {
                fnn_cp_dw_sparse_rows(gf, of, n, xc + i0 * Wp, Wp, d + i0 * kw, kw, 3);
                i0 += 3;
            }
            for (; i0 < g->kh; i0++)
                fnn_cp_dw_sparse_rows(gf, of, n, xc + i0 * Wp, Wp, d + i0 * kw, kw, 1);
        }
    }
}
#else
#define FNN_CP_AVX2 0
#endif

/* Once, at import (one thread): the compaction table and the CPU check. */
static void fnn_cp_init(void) {
#if FNN_CP_AVX2
    fnn_cp_lut_init();
    (void)fnn_cp_avx2_usable();
#endif
}

/* Forward of one image: x (C, H, W) -> p, am (F, PH, PW). xp: fnn_cp_image_floats scratch;
   wt: fnn_cp_pack_weights of W. */
FNN_CLONES static void fnn_cp_forward_image(const float* x, const float* wt, const float* b,
                                            const fnn_cp_geom* g, float* xp, float* p,
                                            int32_t* am) {
    float acc[FNN_CP_FB][2][FNN_CP_TW];
    int Fp = (g->F + FNN_CP_FB - 1) / FNN_CP_FB * FNN_CP_FB;
    fnn_cp_pad_image(x, g, xp);
#if FNN_CP_AVX2
    if (fnn_cp_avx2_usable()) {
        fnn_cp_forward_image_avx2(xp, wt, Fp, b, g, p, am);
        return;
    }
#endif
    for (int ph = 0; ph < g->PH; ph++) {
        for (int ow0 = 0; ow0 < 2 * g->PW; ow0 += FNN_CP_TW) {
            int f0 = 0;
            for (; f0 + FNN_CP_FB <= g->F; f0 += FNN_CP_FB) {
                fnn_cp_fwd_block(xp, wt, Fp, f0, ph, ow0, g, acc, FNN_CP_FB);
                fnn_cp_pool_epilogue(acc, FNN_CP_FB, b, f0, ph, ow0 / 2, g, p, am);
            }
            for (; f0 < g->F; f0++) {
                fnn_cp_fwd_block(xp, wt, Fp, f0, ph, ow0, g, acc, 1);
                fnn_cp_pool_epilogue(acc, 1, b, f0, ph, ow0 / 2, g, p, am);
            }
        }
    }
}

/* The gradient of one image's conv output, dense: dy (F, OH, OW) = g scattered at argmax, with
   g = dp * (p > 0). Returns the number of argmax entries outside [0, OH*OW) (dropped). */
FNN_INLINE Py_ssize_t fnn_cp_unpool_image(const float* dp, const float* p, const int32_t* am,
                                          const fnn_cp_geom* g, float* dy) {
    Py_ssize_t OHW = (Py_ssize_t)g->OH * g->OW, PHW = (Py_ssize_t)g->PH * g->PW, bad = 0;
    memset(dy, 0, (size_t)(g->F * OHW) * sizeof(float));
    for (int f = 0; f < g->F; f++) {
        float* d = dy + f * OHW;
        for (Py_ssize_t k = f * PHW; k < (f + 1) * PHW; k++) {
            uint32_t a = (uint32_t)am[k];  /* a negative index becomes >= 2**31 > OHW */
            float m = (float)(p[k] > 0.0f);  /* not a select: gcc made that a branch */
            if (a < (uint64_t)OHW)
                d[a] += dp[k] * m;
            else
                bad++;
        }
    }
    return bad;
}

/* dW partial (F, C, kh, kw) += correlation of dy (F, OH, OW) with the padded image, for filters
   f0..f0+nf and taps j0..j0+nj of row i of channel c (nf, nj constants after inlining). Vectors
   of 8 output columns; the last one of a row is shifted back to end at OW, its lanes already
   counted masked to zero gradient (so every product is one the reference forms too). */
FNN_INLINE void fnn_cp_dw_block(const float* dy, const float* xp, const fnn_cp_geom* g, int f0,
                                int c, int i, int j0, float* dW, const int nf, const int nj) {
    float acc[FNN_CP_FB][5][FNN_CP_TW];
    float dv[FNN_CP_FB][FNN_CP_TW];
    Py_ssize_t OHW = (Py_ssize_t)g->OH * g->OW;
    int OW = g->OW, full = OW / FNN_CP_TW * FNN_CP_TW;
    FNN_CP_UNROLL for (int f = 0; f < nf; f++)
        FNN_CP_UNROLL for (int j = 0; j < nj; j++)
            for (int l = 0; l < FNN_CP_TW; l++) acc[f][j][l] = 0.0f;
    for (int oh = 0; oh < g->OH; oh++) {
        const float* xr = xp + ((Py_ssize_t)c * g->Hp + oh + i) * g->Wp + j0;
        const float* dr = dy + f0 * OHW + (Py_ssize_t)oh * OW;
        for (int ow = 0; ow < full; ow += FNN_CP_TW) {
            FNN_CP_UNROLL for (int f = 0; f < nf; f++) {
                const float* d = dr + f * OHW + ow;
                for (int l = 0; l < FNN_CP_TW; l++) dv[f][l] = d[l];
            }
            FNN_CP_UNROLL for (int j = 0; j < nj; j++) {
                const float* xs = xr + ow + j;
                FNN_CP_UNROLL for (int f = 0; f < nf; f++)
                    for (int l = 0; l < FNN_CP_TW; l++)
                        acc[f][j][l] = FNN_FMA(dv[f][l], xs[l], acc[f][j][l]);
            }
        }
        if (full < OW) {  /* OW >= 8 here: one vector ending at OW, lanes below `full` zeroed */
            int ow = OW - FNN_CP_TW, keep = full - ow;
            FNN_CP_UNROLL for (int f = 0; f < nf; f++) {
                const float* d = dr + f * OHW + ow;
                for (int l = 0; l < FNN_CP_TW; l++) dv[f][l] = l >= keep ? d[l] : 0.0f;
            }
            FNN_CP_UNROLL for (int j = 0; j < nj; j++) {
                const float* xs = xr + ow + j;
                FNN_CP_UNROLL for (int f = 0; f < nf; f++)
                    for (int l = 0; l < FNN_CP_TW; l++)
                        acc[f][j][l] = FNN_FMA(dv[f][l], xs[l], acc[f][j][l]);
            }
        }
    }
    int K = g->C * g->kh * g->kw;
    for (int f = 0; f < nf; f++)
        for (int j = 0; j < nj; j++) {
            float* a = acc[f][j];
            dW[(Py_ssize_t)(f0 + f) * K + (c * g->kh + i) * g->kw + j0 + j] += FNN_TREE8(a);
        }
}

/* dW for filters f0..f0+nf of one image, every tap. */
FNN_INLINE void fnn_cp_dw_filters(const float* dy, const float* xp, const fnn_cp_geom* g, int f0,
                                  float* dW, const int nf) {
    for (int c = 0; c < g->C; c++)
        for (int i = 0; i < g->kh; i++) {
            if (g->kw == 5)
                fnn_cp_dw_block(dy, xp, g, f0, c, i, 0, dW, nf, 5);
            else if (g->kw == 3)
                fnn_cp_dw_block(dy, xp, g, f0, c, i, 0, dW, nf, 3);
            else
                for (int j = 0; j < g->kw; j++) fnn_cp_dw_block(dy, xp, g, f0, c, i, j, dW, nf, 1);
        }
}

/* dW without vectors, for rows shorter than one vector (OW < 8). */
static void fnn_cp_dw_scalar(const float* dy, const float* xp, const fnn_cp_geom* g, float* dW) {
    Py_ssize_t OHW = (Py_ssize_t)g->OH * g->OW;
    int K = g->C * g->kh * g->kw;
    for (int f = 0; f < g->F; f++)
        for (int c = 0; c < g->C; c++)
            for (int i = 0; i < g->kh; i++)
                for (int j = 0; j < g->kw; j++) {
                    float s = 0.0f;
                    for (int oh = 0; oh < g->OH; oh++)
                        for (int ow = 0; ow < g->OW; ow++)
                            s = FNN_FMA(dy[f * OHW + (Py_ssize_t)oh * g->OW + ow],
                                        xp[((Py_ssize_t)c * g->Hp + oh + i) * g->Wp + ow + j], s);
                    dW[(Py_ssize_t)f * K + (c * g->kh + i) * g->kw + j] += s;
                }
}

/* db (F) += sum of g = dp * (p > 0) per filter: 8 lanes (k % 8), a fixed tree, then the tail. */
FNN_INLINE void fnn_cp_db(const float* dp, const float* p, const fnn_cp_geom* g, float* db) {
    Py_ssize_t PHW = (Py_ssize_t)g->PH * g->PW, full = PHW / 8 * 8;
    for (int f = 0; f < g->F; f++) {
        const float* d = dp + f * PHW;
        const float* q = p + f * PHW;
        float lanes[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (Py_ssize_t k = 0; k < full; k += 8, d += 8, q += 8)
            for (int l = 0; l < 8; l++) lanes[l] += d[l] * (q[l] > 0.0f ? 1.0f : 0.0f);
        float s = FNN_TREE8(lanes);
        for (Py_ssize_t k = full; k < PHW; k++, d++, q++) s += d[0] * (q[0] > 0.0f ? 1.0f : 0.0f);
        db[f] += s;
    }
}

/* The same sums from g itself (gs: g per pooled output, filter-major): the same bits. */
FNN_INLINE void fnn_cp_db_from_g(const float* gs, const fnn_cp_geom* g, float* db) {
    Py_ssize_t PHW = (Py_ssize_t)g->PH * g->PW, full = PHW / 8 * 8;
    for (int f = 0; f < g->F; f++) {
        const float* d = gs + f * PHW;
        float lanes[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (Py_ssize_t k = 0; k < full; k += 8, d += 8)
            for (int l = 0; l < 8; l++) lanes[l] += d[l];
        float s = FNN_TREE8(lanes);
        for (Py_ssize_t k = full; k < PHW; k++, d++) s += d[0];
        db[f] += s;
    }
}

/* Backward of one image into the partials dW (F, K) and db (F), which it adds to. xp, dy:
   scratch of fnn_cp_image_floats and F*OH*OW floats. Returns the number of argmax entries
   outside [0, OH*OW) (nothing is added then). The sparse dW where it is exact (AVX2 CPUs, kw <= 8,
   x finite, every argmax in its window), else the dense correlation. */
FNN_CLONES static Py_ssize_t fnn_cp_backward_image(const float* x, const float* dp, const float* p,
                                                   const int32_t* am, const fnn_cp_geom* g,
                                                   float* xp, float* dy, float* dW, float* db) {
    fnn_cp_pad_image(x, g, xp);
#if FNN_CP_AVX2
    if (fnn_cp_avx2_usable() && g->kw <= FNN_CP_TW
        && fnn_cp_all_finite(x, (Py_ssize_t)g->C * g->H * g->W)) {
        Py_ssize_t PHW = (Py_ssize_t)g->PH * g->PW;
        float* gs = dy;  /* (2 F + 2) PHW <= F OH OW floats of scratch */
        int32_t* os = (int32_t*)(dy + g->F * PHW);
        uint32_t* wb = (uint32_t*)(dy + 2 * g->F * PHW);
        if (fnn_cp_sparse_prepare(dp, p, am, g, gs, os, wb, wb + PHW) == 0) {
            fnn_cp_db_from_g(gs, g, db);
            fnn_cp_dw_sparse_avx2(gs, os, xp, g, dW);
            return 0;
        }
    }
#endif
    Py_ssize_t bad = fnn_cp_unpool_image(dp, p, am, g, dy);
    if (bad)
        return bad;
    fnn_cp_db(dp, p, g, db);
#if FNN_CP_AVX2
    if (fnn_cp_avx2_usable() && g->OW >= FNN_CP_TW) {
        fnn_cp_dw_avx2(dy, xp, g, dW);
        return 0;
    }
#endif
    if (g->OW < FNN_CP_TW) {
        fnn_cp_dw_scalar(dy, xp, g, dW);
        return 0;
    }
    int f0 = 0;
    for (; f0 + FNN_CP_FB <= g->F; f0 += FNN_CP_FB) fnn_cp_dw_filters(dy, xp, g, f0, dW, FNN_CP_FB);
    for (; f0 < g->F; f0++) fnn_cp_dw_filters(dy, xp, g, f0, dW, 1);
    return 0;
}

#endif /* FNN_CONVPOOL_H */
