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

FNN_INLINE void fnn_wg_in_tile(const float* d, float* v, Py_ssize_t ldp) {
    float r[16];
    for (int j = 0; j < 4; j++) { /* B^T d */
        r[j] = d[j] - d[8 + j];
        r[4 + j] = d[4 + j] + d[8 + j];
        r[8 + j] = d[8 + j] - d[4 + j];
        r[12 + j] = d[4 + j] - d[12 + j];
    }
    for (int i = 0; i < 4; i++) { /* (B^T d) B */
        const float* q = r + 4 * i;
        v[(4 * i) * ldp] = q[0] - q[2];
        v[(4 * i + 1) * ldp] = q[1] + q[2];
        v[(4 * i + 2) * ldp] = q[2] - q[1];
        v[(4 * i + 3) * ldp] = q[1] - q[3];
    }
}

/* V tiles of one image plane x (H, W): V[p*ldp + t]. */
FNN_CLONES static void fnn_wg_input_plane(const float* x, int H, int W, int pad, int TH, int TW,
                                          float* V, Py_ssize_t ldp) {
    float d[16];
    for (int ty = 0; ty < TH; ty++) {
        int h0 = 2 * ty - pad;
        int rows_in = h0 >= 0 && h0 + 4 <= H;
        for (int tx = 0; tx < TW; tx++) {
            int w0 = 2 * tx - pad;
            if (rows_in && w0 >= 0 && w0 + 4 <= W) {
                const float* s = x + (Py_ssize_t)h0 * W + w0;
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) d[4 * i + j] = s[(Py_ssize_t)i * W + j];
            } else {
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) {
                        int h = h0 + i, w = w0 + j;
                        d[4 * i + j] = (h >= 0 && h < H && w >= 0 && w < W)
                                           ? x[(Py_ssize_t)h * W + w] : 0.0f;
                    }
            }
            fnn_wg_in_tile(d, V + (Py_ssize_t)ty * TW + tx, ldp);
        }
    }
}

/* One output plane y (OH, OW) = A^T m A + b from M[p*ldp + t]. */
FNN_CLONES static void fnn_wg_output_plane(const float* M, Py_ssize_t ldp, int TH, int TW, int OH,
                                           int OW, float b, float* y) {
    for (int ty = 0; ty < TH; ty++) {
        for (int tx = 0; tx < TW; tx++) {
            const float* m = M + (Py_ssize_t)ty * TW + tx;
            float s0[4], s1[4];
            for (int j = 0; j < 4; j++) { /* A^T m */
                float m0 = m[j * ldp], m1 = m[(4 + j) * ldp], m2 = m[(8 + j) * ldp],
                      m3 = m[(12 + j) * ldp];
                s0[j] = m0 + m1 + m2;
                s1[j] = m1 - m2 - m3;
            }
            int oh = 2 * ty, ow = 2 * tx;
            float* o = y + (Py_ssize_t)oh * OW + ow;
            o[0] = (s0[0] + s0[1] + s0[2]) + b;
            if (ow + 1 < OW) o[1] = (s0[1] - s0[2] - s0[3]) + b;
            if (oh + 1 < OH) {
                o[OW] = (s1[0] + s1[1] + s1[2]) + b;
                if (ow + 1 < OW) o[OW + 1] = (s1[1] - s1[2] - s1[3]) + b;
            }
        }
    }
}

/* dM[p*ldp + t] = A dy A^T for every tile of one output-gradient plane dy (OH, OW). */
FNN_CLONES static void fnn_wg_dout_plane(const float* dy, int OH, int OW, int TH, int TW,
                                         float* dM, Py_ssize_t ldp) {
    for (int ty = 0; ty < TH; ty++) {
        for (int tx = 0; tx < TW; tx++) {
            int oh = 2 * ty, ow = 2 * tx;
            const float* g = dy + (Py_ssize_t)oh * OW + ow;
            int right = ow + 1 < OW, down = oh + 1 < OH;
            float a = g[0], b = right ? g[1] : 0.0f;
            float c = down ? g[OW] : 0.0f, e = (down && right) ? g[OW + 1] : 0.0f;
            float r[4][2] = {{a, b}, {a + c, b + e}, {a - c, b - e}, {-c, -e}}; /* A dy */
            float* v = dM + (Py_ssize_t)ty * TW + tx;
            for (int k = 0; k < 4; k++) { /* (A dy) A^T */
                v[(4 * k) * ldp] = r[k][0];
                v[(4 * k + 1) * ldp] = r[k][0] + r[k][1];
                v[(4 * k + 2) * ldp] = r[k][0] - r[k][1];
                v[(4 * k + 3) * ldp] = -r[k][1];
            }
        }
    }
}

/* dx (H, W) = the sum over tiles of B dv B^T, each added at its input pixels inside the image
   (tiles in order t, pixels in row order: the same bits wherever it runs). Overwrites dx. */
FNN_CLONES static void fnn_wg_dinput_plane(const float* dV, Py_ssize_t ldp, int TH, int TW, int H,
                                           int W, int pad, float* dx) {
    memset(dx, 0, sizeof(float) * (size_t)H * (size_t)W);
    for (int ty = 0; ty < TH; ty++) {
        int h0 = 2 * ty - pad;
        for (int tx = 0; tx < TW; tx++) {
            int w0 = 2 * tx - pad;
            const float* v = dV + (Py_ssize_t)ty * TW + tx;
            float z[16], dd[16];
            for (int j = 0; j < 4; j++) { /* B dv */
                float x0 = v[j * ldp], x1 = v[(4 + j) * ldp], x2 = v[(8 + j) * ldp],
                      x3 = v[(12 + j) * ldp];
                z[j] = x0;
                z[4 + j] = x1 - x2 + x3;
                z[8 + j] = x1 + x2 - x0;
                z[12 + j] = -x3;
            }
            for (int i = 0; i < 4; i++) { /* (B dv) B^T */
                const float* q = z + 4 * i;
                dd[4 * i] = q[0];
                dd[4 * i + 1] = q[1] - q[2] + q[3];
                dd[4 * i + 2] = q[1] + q[2] - q[0];
                dd[4 * i + 3] = -q[3];
            }
            if (h0 >= 0 && h0 + 4 <= H && w0 >= 0 && w0 + 4 <= W) {
                float* o = dx + (Py_ssize_t)h0 * W + w0;
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) o[(Py_ssize_t)i * W + j] += dd[4 * i + j];
            } else {
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 4; j++) {
                        int h = h0 + i, w = w0 + j;
                        if (h >= 0 && h < H && w >= 0 && w < W) dx[(Py_ssize_t)h * W + w] += dd[4 * i + j];
                    }
            }
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
