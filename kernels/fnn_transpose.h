/* fnn_transpose.h: a float32 matrix transpose for the Cython kernels (`cdef extern from`): the
   Winograd columns (kernels/_winograd.pxi) and the dense backward's dx (kernels/dense.pyx). */
#ifndef FNN_TRANSPOSE_H
#define FNN_TRANSPOSE_H

#include "fnn_math.h"

#if defined(__SSE2__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FNN_TR_SSE 1
#endif

/* dst (cols, rows) = src (rows, cols) transposed (leading dimensions lds, ldd), in 4x4 blocks
   of SSE shuffles where SSE exists (every x86-64), element by element at the edges. */
static void fnn_transpose(const float* src, Py_ssize_t lds, float* dst, Py_ssize_t ldd,
                          Py_ssize_t rows, Py_ssize_t cols) {
    Py_ssize_t r0 = 0;
#ifdef FNN_TR_SSE
    for (; r0 + 4 <= rows; r0 += 4) {
        Py_ssize_t c0 = 0;
        for (; c0 + 4 <= cols; c0 += 4) {
            const float* s = src + r0 * lds + c0;
            __m128 a = _mm_loadu_ps(s), b = _mm_loadu_ps(s + lds), c = _mm_loadu_ps(s + 2 * lds),
                   d = _mm_loadu_ps(s + 3 * lds);
            _MM_TRANSPOSE4_PS(a, b, c, d);
            float* o = dst + c0 * ldd + r0;
            _mm_storeu_ps(o, a);
            _mm_storeu_ps(o + ldd, b);
            _mm_storeu_ps(o + 2 * ldd, c);
            _mm_storeu_ps(o + 3 * ldd, d);
        }
        for (; c0 < cols; c0++)
            for (Py_ssize_t r = r0; r < r0 + 4; r++) dst[c0 * ldd + r] = src[r * lds + c0];
    }
#endif
    for (; r0 < rows; r0++)
        for (Py_ssize_t c = 0; c < cols; c++) dst[c * ldd + r0] = src[r0 * lds + c];
}

#endif /* FNN_TRANSPOSE_H */
