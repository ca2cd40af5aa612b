/* fnn_pool.h: 2x2 stride-2 max pooling of one (H, W) float32 plane with even H and W (the windows
   tile the plane), forward and backward, used by kernels/pool.pyx (`cdef extern from`).

   Why: the output rows of the shapes that matter are short (OW = 7, 12, 14), too short for a
   loop over one output row to vectorise. The forward therefore works on a band of output rows
   in two passes over a small stack scratch:
     1. per output row oh, over the full input width: the vertical pair max of input rows 2oh and
        2oh+1, and the flat input index of the winner (contiguous, vectorises);
     2. flat over the band's outputs o = oh*OW + ow: since W = 2*OW, the window of o is the
        scratch pair (2o, 2o+1), so one loop covers all the band's outputs.

   Semantics (those of fastnn.reference.pool): the first maximum in row-major window order wins,
   and a NaN is the maximum (the first NaN in row-major order wins). Both merges keep that exactly:
   "first in row-major order" is "smallest flat index", so each merge picks the better candidate
   of the order (NaN > numbers, then value, then the smaller index on equal values or two NaNs):
     vertical (top t, bottom u; u's index is larger): u wins iff !(u <= t) & !isnan(t)
     horizontal (left vL, kL; right vR, kR):          R wins iff (!(vR <= vL) & !isnan(vL))
                                  | (((vR == vL) | (isnan(vR) & isnan(vL))) & (kR < kL))
   The value written is the winner's own load, so -0.0 and NaN payloads come out bit for bit.

   fnn_math.h's pragmas apply (no trapping math: the selects if-convert; nothing else changes
   in IEEE results). FNN_CLONES compiles AVX-512, AVX2 and baseline variants of each kernel. */
#ifndef FNN_POOL_H
#define FNN_POOL_H

#include "fnn_math.h"

/* Scratch per band: this many floats of vertical maxima plus as many int32 indices (8 KiB in
   all, in L1). A band is FNN_POOL_BAND / W output rows; the callers keep W <= FNN_POOL_BAND. */
#define FNN_POOL_BAND 1024

/* Why explicit vectors (GCC/clang vector extensions, 8 lanes; the baseline variant runs each as
   two SSE halves): the loops' trip counts are short (W = 14, 28, 24 floats per row), so gcc's
   auto-vectorised loops spent most of their time in the scalar remainder, where the selects
   became mispredicted branches. Here every row or band is covered by whole vectors, the last one
   shifted back to end at the end (it overlaps the one before and recomputes a few lanes with the
   same values: the writes are idempotent). Rows or bands shorter than a vector take the scalar
   loops (tiny planes only). */
#if defined(__clang__)
#define FNN_POOL_EVEN(a, b) __builtin_shufflevector((a), (b), 0, 2, 4, 6, 8, 10, 12, 14)
#define FNN_POOL_ODD(a, b) __builtin_shufflevector((a), (b), 1, 3, 5, 7, 9, 11, 13, 15)
#define FNN_POOL_LO(a, b) __builtin_shufflevector((a), (b), 0, 8, 1, 9, 2, 10, 3, 11)
#define FNN_POOL_HI(a, b) __builtin_shufflevector((a), (b), 4, 12, 5, 13, 6, 14, 7, 15)
#elif defined(__GNUC__)
#define FNN_POOL_EVEN(a, b) __builtin_shuffle((a), (b), (fnn_v8i){0, 2, 4, 6, 8, 10, 12, 14})
#define FNN_POOL_ODD(a, b) __builtin_shuffle((a), (b), (fnn_v8i){1, 3, 5, 7, 9, 11, 13, 15})
#define FNN_POOL_LO(a, b) __builtin_shuffle((a), (b), (fnn_v8i){0, 8, 1, 9, 2, 10, 3, 11})
#define FNN_POOL_HI(a, b) __builtin_shuffle((a), (b), (fnn_v8i){4, 12, 5, 13, 6, 14, 7, 15})
#endif
#if FNN_VEC
typedef int32_t fnn_v8i __attribute__((vector_size(32)));
#define FNN_LD8I(v, p) memcpy(&(v), (p), sizeof(fnn_v8i))
#define FNN_ST8I(p, v) memcpy((p), &(v), sizeof(fnn_v8i))
/* m ? b : a, lane by lane (m: all-ones or zero lanes) */
#define FNN_SEL8F(m, b, a) ((fnn_v8f)(((m) & (fnn_v8i)(b)) | (~(m) & (fnn_v8i)(a))))
#define FNN_SEL8I(m, b, a) (((m) & (b)) | (~(m) & (a)))
#endif

/* vertical pair max of x rows t and u (flat index k0 + j for row t) into v[j], k[j], j in [j0, j1) */
FNN_INLINE void fnn_pool_vpair_scalar(const float *t, const float *u, int32_t k0, int W,
                                      ptrdiff_t j0, ptrdiff_t j1, float *v, int32_t *k)
{
    for (ptrdiff_t j = j0; j < j1; j++) {
        const float a = t[j], b = u[j];
        const int down = !(b <= a) & (a == a);
        v[j] = down ? b : a;
        k[j] = k0 + (int32_t)j + (down ? W : 0);
    }
}

/* horizontal merge of scratch pairs (2o, 2o+1) into y[o], am[o], o in [o0, o1) */
FNN_INLINE void fnn_pool_hpair_scalar(const float *vm, const int32_t *vk, ptrdiff_t o0,
                                      ptrdiff_t o1, float *y, int32_t *am)
{
    for (ptrdiff_t o = o0; o < o1; o++) {
        const float vl = vm[2 * o], vr = vm[2 * o + 1];
        const int32_t kl = vk[2 * o], kr = vk[2 * o + 1];
        const int right = (!(vr <= vl) & (vl == vl))
                          | (((vr == vl) | ((vr != vr) & (vl != vl))) & (kr < kl));
        y[o] = right ? vr : vl;
        am[o] = right ? kr : kl;
    }
}

FNN_CLONES static void fnn_pool2x2_plane(const float *x, int H, int W, float *y, int32_t *am)
{
    float vm[FNN_POOL_BAND];
    int32_t vk[FNN_POOL_BAND];
    const int OH = H / 2, OW = W / 2, R = FNN_POOL_BAND / W;
    for (int oh0 = 0; oh0 < OH; oh0 += R) {
        const int nr = OH - oh0 < R ? OH - oh0 : R;
        /* pass 1: vertical pairs, row by row over the full width */
        for (int r = 0; r < nr; r++) {
            const float *t = x + (ptrdiff_t)(2 * (oh0 + r)) * W;
            const float *u = t + W;
            float *v = vm + (ptrdiff_t)r * W;
            int32_t *k = vk + (ptrdiff_t)r * W;
            const int32_t k0 = 2 * (oh0 + r) * W;
#if FNN_VEC
            if (W >= 8) {
                const fnn_v8i iota = {0, 1, 2, 3, 4, 5, 6, 7};
                for (ptrdiff_t j = 0;; j += 8) {
                    if (j > W - 8) j = W - 8;
                    fnn_v8f a, b;
                    FNN_LD8(a, t + j);
                    FNN_LD8(b, u + j);
                    const fnn_v8i down = ~(b <= a) & (a == a);
                    const fnn_v8f vv = FNN_SEL8F(down, b, a);
                    const fnn_v8i kk = (k0 + (int32_t)j) + iota + (down & W);
                    FNN_ST8(v + j, vv);
                    FNN_ST8I(k + j, kk);
                    if (j == W - 8) break;
                }
                continue;
            }
#endif
            fnn_pool_vpair_scalar(t, u, k0, W, 0, W, v, k);
        }
        /* pass 2: W = 2*OW, so output o's window is the scratch pair (2o, 2o+1), across row
           ends too: one flat loop over the band's outputs */
        const ptrdiff_t n = (ptrdiff_t)nr * OW;
        float *yo = y + (ptrdiff_t)oh0 * OW;
        int32_t *ao = am + (ptrdiff_t)oh0 * OW;
#if FNN_VEC
        if (n >= 8) {
            for (ptrdiff_t o = 0;; o += 8) {
                if (o > n - 8) o = n - 8;
                fnn_v8f v0, v1;
                fnn_v8i k0, k1;
                FNN_LD8(v0, vm + 2 * o);
                FNN_LD8(v1, vm + 2 * o + 8);
                FNN_LD8I(k0, vk + 2 * o);
                FNN_LD8I(k1, vk + 2 * o + 8);
                const fnn_v8f vl = FNN_POOL_EVEN(v0, v1), vr = FNN_POOL_ODD(v0, v1);
                const fnn_v8i kl = FNN_POOL_EVEN(k0, k1), kr = FNN_POOL_ODD(k0, k1);
                const fnn_v8i right = (~(vr <= vl) & (vl == vl))
                                      | (((vr == vl) | ((vr != vr) & (vl != vl))) & (kr < kl));
                const fnn_v8f best = FNN_SEL8F(right, vr, vl);
                const fnn_v8i kb = FNN_SEL8I(right, kr, kl);
                FNN_ST8(yo + o, best);
                FNN_ST8I(ao + o, kb);
                if (o == n - 8) break;
            }
            continue;
        }
#endif
        fnn_pool_hpair_scalar(vm, vk, 0, n, yo, ao);
    }
}

#if FNN_VEC
/* One output row of the backward in vectors of L outputs (OW >= L), the last one shifted back
   to end at OW. Each lane's dy goes to the pixel its r selects (bit masks: no branches), the
   LO/HI shuffles interleave the columns of a block; lanes with r outside the block set BAD. */
#define FNN_UNPOOL_VECS(L, VF, VI, IOTA2, BAD, LO, HI)                                          \
    for (ptrdiff_t ow = 0;; ow += L) {                                                         \
        if (ow > OW - L) ow = OW - L;                                                          \
        VF dv;                                                                                 \
        VI av;                                                                                 \
        memcpy(&dv, d + ow, sizeof dv);                                                        \
        memcpy(&av, a + ow, sizeof av);                                                        \
        const VI r = av - ((int32_t)(k0 + 2 * (uint32_t)ow) + IOTA2);                          \
        const VI v = (VI)(0.0f + dv);                                                          \
        const VI m0 = r == 0, m1 = r == 1, mw = r == W, mw1 = r == W + 1;                      \
        const VF t0 = (VF)(v & m0), t1 = (VF)(v & m1), b0 = (VF)(v & mw), b1 = (VF)(v & mw1);  \
        const VF tl = LO(t0, t1), th = HI(t0, t1), bl = LO(b0, b1), bh = HI(b0, b1);           \
        memcpy(t + 2 * ow, &tl, sizeof tl);                                                    \
        memcpy(t + 2 * ow + L, &th, sizeof th);                                                \
        memcpy(b + 2 * ow, &bl, sizeof bl);                                                    \
        memcpy(b + 2 * ow + L, &bh, sizeof bh);                                                \
        BAD |= ~(m0 | m1 | mw | mw1);                                                          \
        if (ow == OW - L) break;                                                               \
    }
#endif

/* Backward of one plane with OH = H/2, OW = W/2 (H, W even): every output o owns its own 2x2
   block, so when each argmax lies in its own block, dx is each block's 4 pixels (dy at the argmax,
   0 elsewhere) with no memset and no scatter. That holds for any pooling geometry with these
   shapes (the check is on the indices, not on the geometry). 0 + dy, as the scatter's
   zero-then-add gives (-0.0 becomes +0.0).
   Returns 1 when every argmax was in its block (dx complete); 0 otherwise, and then dx holds
   partial garbage (only this plane's pixels were written) and the caller redoes the plane.
   The relative index r = argmax - (top-left of the block) is unsigned: no overflow for any
   argmax, and it is 0, 1, W or W+1 only inside the block.
   kernels/pool.pyx calls it for OW >= 8 only: for OW = 7 (14x14 input) a 4-lane version took
   206 us against 132 us for memset + checked scatter (64x64x14x14, one thread). */
FNN_CLONES static int fnn_unpool2x2_plane(const float *dy, const int32_t *am, int H, int W,
                                          float *dx)
{
    const int OH = H / 2, OW = W / 2;
    const uint32_t w = (uint32_t)W, w1 = (uint32_t)W + 1;
    int ok = 1;
#if FNN_VEC
    fnn_v8i bad = {0};
    const fnn_v8i iota2 = {0, 2, 4, 6, 8, 10, 12, 14};
#endif
    for (int oh = 0; oh < OH; oh++) {
        const float *d = dy + (ptrdiff_t)oh * OW;
        const int32_t *a = am + (ptrdiff_t)oh * OW;
        float *t = dx + (ptrdiff_t)(2 * oh) * W;
        float *b = t + W;
        const uint32_t k0 = (uint32_t)(2 * oh * W);
#if FNN_VEC
        if (OW >= 8) {
            FNN_UNPOOL_VECS(8, fnn_v8f, fnn_v8i, iota2, bad, FNN_POOL_LO, FNN_POOL_HI);
            continue;
        }
#endif
        for (ptrdiff_t ow = 0; ow < OW; ow++) {
            const uint32_t r = (uint32_t)a[ow] - (k0 + 2 * (uint32_t)ow);
            const float v = 0.0f + d[ow];
            t[2 * ow] = r == 0 ? v : 0.0f;
            t[2 * ow + 1] = r == 1 ? v : 0.0f;
            b[2 * ow] = r == w ? v : 0.0f;
            b[2 * ow + 1] = r == w1 ? v : 0.0f;
            ok &= (r == 0) | (r == 1) | (r == w) | (r == w1);
        }
    }
#if FNN_VEC
    for (int i = 0; i < 8; i++) ok &= bad[i] == 0;
#endif
    return ok;
}

#endif
