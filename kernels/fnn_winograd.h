/* fnn_winograd.h: the tile transforms of Winograd F(2x2, 3x3), used by kernels/_winograd.pxi
   (the math, in NumPy: fastnn/reference/winograd.py). Position p = 4*i + j of a 4x4 tile is
   stored at v[p * ldp]: the 16 positions are the 16 GEMM operands, each (channels, tiles).

     forward   V = B^T d B (input tile d)    U = G g G^T (filter g)    y = A^T m A + b
     backward  dm = A dy A^T                 dW = G^T dU G             dd = B dv B^T

   Tiles of a plane are numbered t = ty*TW + tx; the tile t covers the input pixels
   (2ty - pad .. 2ty - pad + 3, 2tx - pad .. 2tx - pad + 3) (zero outside the image) and the output
   pixels (2ty .. 2ty + 1, 2tx .. 2tx + 1) (the last row or column of tiles may overhang).
   Sums and differences only (and halves for the filters): every ISA variant rounds alike. */
#ifndef FNN_WINOGRAD_H
#define FNN_WINOGRAD_H

#include "fnn_math.h"
#include "fnn_transpose.h"

/* The plane functions take the tiles in chunks of at most FNN_WG_CHUNK (whole rows of tiles, or
   pieces of one row when a row holds more): the chunk's pixels are copied to or from a small
   zero-padded patch, so gathering the tiles needs no bounds checks, and the transform runs over
   the chunk's tiles with every access contiguous, so gcc vectorises it. The tiles t of a chunk are
   consecutive: t = t0 + k, k = tyl * nc + txl. */
#define FNN_WG_CHUNK 64
#define FNN_WG_PATCH 1024 /* (2*nr + 2) * (2*nc + 2) <= 4*64 + 4*65 + 4 floats */

#define FNN_WG_FOR_CHUNKS(TH, TW)                                                              \
    int rpc_ = (TW) <= FNN_WG_CHUNK ? FNN_WG_CHUNK / (TW) : 1;                                 \
    int cpc_ = (TW) <= FNN_WG_CHUNK ? (TW) : FNN_WG_CHUNK;                                     \
    for (int ty0 = 0; ty0 < (TH); ty0 += rpc_)                                                 \
        for (int tx0 = 0, nr = (TH) - ty0 < rpc_ ? (TH) - ty0 : rpc_; tx0 < (TW); tx0 += cpc_) \
            for (int nc = (TW) - tx0 < cpc_ ? (TW) - tx0 : cpc_, once_ = 1; once_; once_ = 0)

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FNN_WG_SSE 1
#endif

/* dst[0:n] = src[0:n] for the short rows here: inline (a libc memcpy call per row of a dozen
   floats cost more than the copy). */
FNN_INLINE void fnn_wg_copy(float* dst, const float* src, int n) {
    int k = 0;
#ifdef FNN_WG_SSE
    for (; k + 4 <= n; k += 4) _mm_storeu_ps(dst + k, _mm_loadu_ps(src + k));
#endif
    for (; k < n; k++) dst[k] = src[k];
}

/* v[p*ldp + k] = o[p][k], k < n: one contiguous copy per position. */
FNN_INLINE void fnn_wg_store(float (*o)[FNN_WG_CHUNK], int n, float* v, Py_ssize_t ldp) {
    for (int p = 0; p < 16; p++) fnn_wg_copy(v + p * ldp, o[p], n);
}

/* patch (rows, cols) = the plane x (H, W) from pixel (h0, w0) on, zero outside the plane. */
FNN_INLINE void fnn_wg_patch(const float* x, int H, int W, int h0, int w0, int rows, int cols,
                             float* patch) {
    memset(patch, 0, sizeof(float) * (size_t)rows * (size_t)cols);
    int lo = w0 < 0 ? -w0 : 0, hi = W - w0 < cols ? W - w0 : cols;
    if (hi <= lo) return;
    for (int r = 0; r < rows; r++) {
        int h = h0 + r;
        if (h >= 0 && h < H)
            fnn_wg_copy(patch + (Py_ssize_t)r * cols + lo, x + (Py_ssize_t)h * W + w0 + lo, hi - lo);
    }
}

/* V tiles of one image plane x (H, W): V[p*ldp + t] = (B^T d B)[p] for every tile t. */
FNN_CLONES static void fnn_wg_input_plane(const float* x, int H, int W, int pad, int TH, int TW,
                                          float* V, Py_ssize_t ldp) {
    float patch[FNN_WG_PATCH], d[16][FNN_WG_CHUNK], o[16][FNN_WG_CHUNK];
    FNN_WG_FOR_CHUNKS(TH, TW) {
        int n = nr * nc, pw = 2 * nc + 2;
        fnn_wg_patch(x, H, W, 2 * ty0 - pad, 2 * tx0 - pad, 2 * nr + 2, pw, patch);
        for (int tyl = 0; tyl < nr; tyl++)
            for (int i = 0; i < 4; i++) { /* pointer steps, not 2*txl indexing (-fwrapv) */
                const float* src = patch + (2 * tyl + i) * pw;
                float *d0 = d[4 * i] + tyl * nc, *d1 = d[4 * i + 1] + tyl * nc,
                      *d2 = d[4 * i + 2] + tyl * nc, *d3 = d[4 * i + 3] + tyl * nc;
                for (int txl = 0; txl < nc; txl++, src += 2) {
                    d0[txl] = src[0];
                    d1[txl] = src[1];
                    d2[txl] = src[2];
                    d3[txl] = src[3];
                }
            }
        for (int k = 0; k < n; k++) {
            float r[16];
            for (int j = 0; j < 4; j++) { /* B^T d */
                r[j] = d[j][k] - d[8 + j][k];
                r[4 + j] = d[4 + j][k] + d[8 + j][k];
                r[8 + j] = d[8 + j][k] - d[4 + j][k];
                r[12 + j] = d[4 + j][k] - d[12 + j][k];
            }
            for (int i = 0; i < 4; i++) { /* (B^T d) B */
                const float* q = r + 4 * i;
                o[4 * i][k] = q[0] - q[2];
                o[4 * i + 1][k] = q[1] + q[2];
                o[4 * i + 2][k] = q[2] - q[1];
                o[4 * i + 3][k] = q[1] - q[3];
            }
        }
        fnn_wg_store(o, n, V + (Py_ssize_t)ty0 * TW + tx0, ldp);
    }
}

/* One output plane y (OH, OW) = A^T m A + b from M[p*ldp + t]. */
FNN_CLONES static void fnn_wg_output_plane(const float* M, Py_ssize_t ldp, int TH, int TW, int OH,
                                           int OW, float b, float* y) {
    float patch[FNN_WG_PATCH], o4[4][FNN_WG_CHUNK];
    FNN_WG_FOR_CHUNKS(TH, TW) {
        int n = nr * nc, pw = 2 * nc;
        const float* m = M + (Py_ssize_t)ty0 * TW + tx0;
        for (int k = 0; k < n; k++) {
            float s0[4], s1[4];
            for (int j = 0; j < 4; j++) { /* A^T m */
                float m0 = m[j * ldp + k], m1 = m[(4 + j) * ldp + k], m2 = m[(8 + j) * ldp + k],
                      m3 = m[(12 + j) * ldp + k];
                s0[j] = m0 + m1 + m2;
                s1[j] = m1 - m2 - m3;
            }
            o4[0][k] = (s0[0] + s0[1] + s0[2]) + b; /* (A^T m) A + b */
            o4[1][k] = (s0[1] - s0[2] - s0[3]) + b;
            o4[2][k] = (s1[0] + s1[1] + s1[2]) + b;
            o4[3][k] = (s1[1] - s1[2] - s1[3]) + b;
        }
        for (int tyl = 0; tyl < nr; tyl++)
            for (int a = 0; a < 2; a++) {
                const float *s0 = o4[2 * a] + tyl * nc, *s1 = o4[2 * a + 1] + tyl * nc;
                float* dst = patch + (2 * tyl + a) * pw;
                for (int txl = 0; txl < nc; txl++, dst += 2) {
                    dst[0] = s0[txl];
                    dst[1] = s1[txl];
                }
            }
        int oh0 = 2 * ty0, ow0 = 2 * tx0, cols = OW - ow0 < pw ? OW - ow0 : pw;
        for (int r = 0; r < 2 * nr && oh0 + r < OH; r++)
            fnn_wg_copy(y + (Py_ssize_t)(oh0 + r) * OW + ow0, patch + r * pw, cols);
    }
}

/* dM[p*ldp + t] = (A dy A^T)[p] for every tile of one output-gradient plane dy (OH, OW). */
FNN_CLONES static void fnn_wg_dout_plane(const float* dy, int OH, int OW, int TH, int TW,
                                         float* dM, Py_ssize_t ldp) {
    float patch[FNN_WG_PATCH], g4[4][FNN_WG_CHUNK], o[16][FNN_WG_CHUNK];
    FNN_WG_FOR_CHUNKS(TH, TW) {
        int n = nr * nc, pw = 2 * nc;
        fnn_wg_patch(dy, OH, OW, 2 * ty0, 2 * tx0, 2 * nr, pw, patch);
        for (int tyl = 0; tyl < nr; tyl++)
            for (int a = 0; a < 2; a++) {
                const float* src = patch + (2 * tyl + a) * pw;
                float *d0 = g4[2 * a] + tyl * nc, *d1 = g4[2 * a + 1] + tyl * nc;
                for (int txl = 0; txl < nc; txl++, src += 2) {
                    d0[txl] = src[0];
                    d1[txl] = src[1];
                }
            }
        for (int k = 0; k < n; k++) {
            float a = g4[0][k], b = g4[1][k], c = g4[2][k], e = g4[3][k];
            float r[4][2] = {{a, b}, {a + c, b + e}, {a - c, b - e}, {-c, -e}}; /* A dy */
            for (int i = 0; i < 4; i++) { /* (A dy) A^T */
                o[4 * i][k] = r[i][0];
                o[4 * i + 1][k] = r[i][0] + r[i][1];
                o[4 * i + 2][k] = r[i][0] - r[i][1];
                o[4 * i + 3][k] = -r[i][1];
            }
        }
        fnn_wg_store(o, n, dM + (Py_ssize_t)ty0 * TW + tx0, ldp);
    }
}

/* dx (H, W) = the sum over tiles of B dv B^T, each added at its input pixels inside the image
   (within a chunk in tile order, chunks in order: the same bits wherever it runs). */
FNN_CLONES static void fnn_wg_dinput_plane(const float* dV, Py_ssize_t ldp, int TH, int TW, int H,
                                           int W, int pad, float* dx) {
    float patch[FNN_WG_PATCH], dd[16][FNN_WG_CHUNK];
    memset(dx, 0, sizeof(float) * (size_t)H * (size_t)W);
    FNN_WG_FOR_CHUNKS(TH, TW) {
        int n = nr * nc, pw = 2 * nc + 2, rows = 2 * nr + 2;
        const float* v = dV + (Py_ssize_t)ty0 * TW + tx0;
        for (int k = 0; k < n; k++) {
            float z[16];
            for (int j = 0; j < 4; j++) { /* B dv */
                float x0 = v[j * ldp + k], x1 = v[(4 + j) * ldp + k], x2 = v[(8 + j) * ldp + k],
                      x3 = v[(12 + j) * ldp + k];
                z[j] = x0;
                z[4 + j] = x1 - x2 + x3;
                z[8 + j] = x1 + x2 - x0;
                z[12 + j] = -x3;
            }
            for (int i = 0; i < 4; i++) { /* (B dv) B^T */
                const float* q = z + 4 * i;
                dd[4 * i][k] = q[0];
                dd[4 * i + 1][k] = q[1] - q[2] + q[3];
                dd[4 * i + 2][k] = q[1] + q[2] - q[0];
                dd[4 * i + 3][k] = -q[3];
            }
        }
        memset(patch, 0, sizeof(float) * (size_t)rows * (size_t)pw);
        for (int tyl = 0; tyl < nr; tyl++)
            for (int txl = 0; txl < nc; txl++) {
                int k = tyl * nc + txl;
                float* o = patch + (2 * tyl) * pw + 2 * txl;
                for (int i = 0; i < 4; i++, o += pw) {
                    o[0] += dd[4 * i][k];
                    o[1] += dd[4 * i + 1][k];
                    o[2] += dd[4 * i + 2][k];
                    o[3] += dd[4 * i + 3][k];
                }
            }
        int h0 = 2 * ty0 - pad, w0 = 2 * tx0 - pad;
        int lo = w0 < 0 ? -w0 : 0, hi = W - w0 < pw ? W - w0 : pw;
        for (int r = 0; r < rows; r++) {
            int h = h0 + r;
            if (h < 0 || h >= H) continue;
            float* dst = dx + (Py_ssize_t)h * W + w0;
            const float* src = patch + r * pw;
            for (int c = lo; c < hi; c++) dst[c] += src[c];
        }
    }
}

/* U[p*F*C + f*C + c] = (G g G^T)[p] for every filter g = W[f, c] (3x3). */
static void fnn_wg_weights(const float* Wt, Py_ssize_t F, Py_ssize_t C, float* U) {
    Py_ssize_t FC = F * C;
    for (Py_ssize_t k = 0; k < FC; k++) {
        const float* g = Wt + 9 * k;
        float t[4][3];
        for (int j = 0; j < 3; j++) { /* G g */
            t[0][j] = g[j];
            t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
            t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
            t[3][j] = g[6 + j];
        }
        for (int i = 0; i < 4; i++) { /* (G g) G^T */
            U[(4 * i) * FC + k] = t[i][0];
            U[(4 * i + 1) * FC + k] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
            U[(4 * i + 2) * FC + k] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
            U[(4 * i + 3) * FC + k] = t[i][2];
        }
    }
}

/* dW[f, c] (3x3) = G^T dU[f, c] G, from dU[p*F*C + f*C + c]. */
static void fnn_wg_weights_grad(const float* dU, Py_ssize_t F, Py_ssize_t C, float* dW) {
    Py_ssize_t FC = F * C;
    for (Py_ssize_t k = 0; k < FC; k++) {
        float x[16], r[3][4];
        for (int p = 0; p < 16; p++) x[p] = dU[p * FC + k];
        for (int j = 0; j < 4; j++) { /* G^T dU */
            r[0][j] = x[j] + 0.5f * (x[4 + j] + x[8 + j]);
            r[1][j] = 0.5f * (x[4 + j] - x[8 + j]);
            r[2][j] = 0.5f * (x[4 + j] + x[8 + j]) + x[12 + j];
        }
        float* g = dW + 9 * k;
        for (int i = 0; i < 3; i++) { /* (G^T dU) G */
            g[3 * i] = r[i][0] + 0.5f * (r[i][1] + r[i][2]);
            g[3 * i + 1] = 0.5f * (r[i][1] - r[i][2]);
            g[3 * i + 2] = 0.5f * (r[i][1] + r[i][2]) + r[i][3];
        }
    }
}

#endif
