# fastnn Cython kernels: batch normalisation on a (N, C, L) view (L = 1 for dense input, H*W for
# images). Interface: docs/backends.md; oracle: fastnn/reference/norm.py. Per channel statistics
# are accumulated in float64 (two passes: mean, then the biased variance of x - mean), stored float32;
# the elementwise parts use the same float32 operations in the same order as the reference.
#
# Two layouts, chosen from the shape only (so results never depend on the thread count):
#   L > 1  "planes": one channel at a time, its N contiguous planes of L values; parallel over
#          channels.
#   L == 1 "rows":   channels in chunks of FNN_CW (32); every row's chunk segment is contiguous and the
#          per-channel accumulators are vector lanes; parallel over chunks.
# Every sum has a fixed order (per plane: 16 double lanes combined in a fixed tree, then the tail;
# planes added in n order; rows: n order per channel), independent of the thread count.
#
# Inner loops are C (verbatim block below; shared helpers, macros and pragma in fnn_math.h),
# compiled in AVX-512/AVX2/baseline variants with gcc `target_clones` and FMA contraction off, so
# every variant gives bitwise the same results.

include "_parallel.pxi"

cdef extern from *:
    """
    #if defined(__GNUC__) && !defined(__clang__)
    /* sqrt without errno (vectorisable) here, on top of fnn_math.h's options; set before the
       #include so that the helpers inlined from there are compiled with the same options. */
    #pragma GCC optimize("no-math-errno")
    #endif
    """

cdef extern from "fnn_math.h" nogil:
    # shared helpers (kernels/fnn_math.h), called from the C kernels below
    double fnn_sum_d(const float* x, Py_ssize_t n)

cdef extern from * nogil:
    """
    #define FNN_CW 32   /* channels per chunk in the L == 1 layout */

    /* sum of ((double)x - mu)^2 over x[0..n) (16 lanes as fnn_sum_d) */
    FNN_INLINE double fnn_sqdev_d(const float* x, Py_ssize_t n, double mu) {
        Py_ssize_t i = 0;
    #if FNN_VEC
        fnn_v8d a = {0}, a1 = {0};
        fnn_v8f v0, v1;
        for (; i + 16 <= n; i += 16) {
            FNN_LD8(v0, x + i);
            FNN_LD8(v1, x + i + 8);
            fnn_v8d d0 = FNN_CVT8(v0) - mu, d1 = FNN_CVT8(v1) - mu;
            a += d0 * d0;
            a1 += d1 * d1;
        }
        a += a1;
    #else
        double a[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) {
                double d = (double)x[i + j] - mu;
                a[j] += d * d;
            }
        for (int j = 0; j < 8; j++) a[j] += a[j + 8];
    #endif
        double t = FNN_TREE8(a);
        for (; i < n; i++) {
            double d = (double)x[i] - mu;
            t += d * d;
        }
        return t;
    }

    /* sb += sum dy; sg += sum dy * xhat, xhat = (x - mf) * sf in float32, products in double
       (16 lanes as fnn_sum_d) */
    FNN_INLINE void fnn_bw_sums(const float* dy, const float* x, Py_ssize_t n, float mf,
                                   float sf, double* sb, double* sg) {
        Py_ssize_t i = 0;
    #if FNN_VEC
        fnn_v8d a = {0}, a1 = {0}, b = {0}, b1 = {0};
        fnn_v8f x0, x1, y0, y1;
        for (; i + 16 <= n; i += 16) {
            FNN_LD8(x0, x + i);
            FNN_LD8(x1, x + i + 8);
            FNN_LD8(y0, dy + i);
            FNN_LD8(y1, dy + i + 8);
            fnn_v8f h0 = (x0 - mf) * sf, h1 = (x1 - mf) * sf;
            fnn_v8d d0 = FNN_CVT8(y0), d1 = FNN_CVT8(y1);
            a += d0;
            a1 += d1;
            b += d0 * FNN_CVT8(h0);
            b1 += d1 * FNN_CVT8(h1);
        }
        a += a1;
        b += b1;
    #else
        double a[16] = {0}, b[16] = {0};
        for (; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) {
                float xh = (x[i + j] - mf) * sf;
                a[j] += (double)dy[i + j];
                b[j] += (double)dy[i + j] * (double)xh;
            }
        for (int j = 0; j < 8; j++) {
            a[j] += a[j + 8];
            b[j] += b[j + 8];
        }
    #endif
        double tb = FNN_TREE8(a), tg = FNN_TREE8(b);
        for (; i < n; i++) {
            float xh = (x[i] - mf) * sf;
            tb += (double)dy[i];
            tg += (double)dy[i] * (double)xh;
        }
        *sb += tb;
        *sg += tg;
    }

    /* ---- L > 1: one channel c over its N planes ---- */
    FNN_CLONES static void fnn_bn_train_plane_k(const float* x, float* y, Py_ssize_t N,
                                                Py_ssize_t C, Py_ssize_t L, Py_ssize_t c,
                                                double eps, const float* gamma,
                                                const float* beta, float* mean, float* invstd) {
        Py_ssize_t n, l, M = N * L;
        double s = 0.0, q = 0.0;
        for (n = 0; n < N; n++) s += fnn_sum_d(x + (n * C + c) * L, L);
        double mu = s / (double)M;
        for (n = 0; n < N; n++) q += fnn_sqdev_d(x + (n * C + c) * L, L, mu);
        float mf = (float)mu;
        float sf = (float)(1.0 / sqrt(q / (double)M + eps));
        mean[c] = mf;
        invstd[c] = sf;
        float g = gamma[c], b = beta[c];
        for (n = 0; n < N; n++) {
            const float* xp = x + (n * C + c) * L;
            float* yp = y + (n * C + c) * L;
            for (l = 0; l < L; l++) yp[l] = g * ((xp[l] - mf) * sf) + b;
        }
    }

    FNN_CLONES static void fnn_bn_bw_plane_k(const float* dy, const float* x, float* dx,
                                             Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                                             Py_ssize_t c, const float* gamma, const float* mean,
                                             const float* invstd, float* dgamma, float* dbeta) {
        Py_ssize_t n, l, M = N * L;
        double sb = 0.0, sg = 0.0;
        float mf = mean[c], sf = invstd[c];
        for (n = 0; n < N; n++)
            fnn_bw_sums(dy + (n * C + c) * L, x + (n * C + c) * L, L, mf, sf, &sb, &sg);
        float db = (float)sb, dg = (float)sg;
        dbeta[c] = db;
        dgamma[c] = dg;
        float fM = (float)M;
        float k = (gamma[c] * sf) / fM;
        for (n = 0; n < N; n++) {
            Py_ssize_t o = (n * C + c) * L;
            for (l = 0; l < L; l++) {
                float xh = (x[o + l] - mf) * sf;
                dx[o + l] = k * ((fM * dy[o + l] - db) - xh * dg);
            }
        }
    }

    /* planes [p0, p0 + np) of the N*C planes: y = x*scale[c] + shift[c] */
    FNN_CLONES static void fnn_bn_infer_planes_k(const float* x, const float* scale,
                                                 const float* shift, float* y, Py_ssize_t C,
                                                 Py_ssize_t L, Py_ssize_t p0, Py_ssize_t np) {
        for (Py_ssize_t p = p0; p < p0 + np; p++) {
            float a = scale[p % C], b = shift[p % C];
            const float* xp = x + p * L;
            float* yp = y + p * L;
            for (Py_ssize_t l = 0; l < L; l++) yp[l] = xp[l] * a + b;
        }
    }

    /* ---- L == 1: channels [c0, c0 + cw), cw <= FNN_CW, over all N rows ---- */
    FNN_CLONES static void fnn_bn_train_rows_k(const float* x, float* y, Py_ssize_t N,
                                               Py_ssize_t C, Py_ssize_t c0, Py_ssize_t cw,
                                               double eps, const float* gamma,
                                               const float* beta, float* mean, float* invstd) {
        double acc[FNN_CW], mu[FNN_CW];
        float mf[FNN_CW], sf[FNN_CW], g[FNN_CW], b[FNN_CW];
        Py_ssize_t n, j;
        for (j = 0; j < cw; j++) acc[j] = 0.0;
        for (n = 0; n < N; n++) {
            const float* xr = x + n * C + c0;
            for (j = 0; j < cw; j++) acc[j] += (double)xr[j];
        }
        for (j = 0; j < cw; j++) {
            mu[j] = acc[j] / (double)N;
            acc[j] = 0.0;
        }
        for (n = 0; n < N; n++) {
            const float* xr = x + n * C + c0;
            for (j = 0; j < cw; j++) {
                double d = (double)xr[j] - mu[j];
                acc[j] += d * d;
            }
        }
        for (j = 0; j < cw; j++) {
            mf[j] = (float)mu[j];
            sf[j] = (float)(1.0 / sqrt(acc[j] / (double)N + eps));
            mean[c0 + j] = mf[j];
            invstd[c0 + j] = sf[j];
            g[j] = gamma[c0 + j];
            b[j] = beta[c0 + j];
        }
        for (n = 0; n < N; n++) {
            const float* xr = x + n * C + c0;
            float* yr = y + n * C + c0;
            for (j = 0; j < cw; j++) yr[j] = g[j] * ((xr[j] - mf[j]) * sf[j]) + b[j];
        }
    }

    FNN_CLONES static void fnn_bn_bw_rows_k(const float* dy, const float* x, float* dx,
                                            Py_ssize_t N, Py_ssize_t C, Py_ssize_t c0,
                                            Py_ssize_t cw, const float* gamma, const float* mean,
                                            const float* invstd, float* dgamma, float* dbeta) {
        double ab[FNN_CW], ag[FNN_CW];
        float mf[FNN_CW], sf[FNN_CW], db[FNN_CW], dg[FNN_CW], k[FNN_CW];
        Py_ssize_t n, j;
        float fM = (float)N;
        for (j = 0; j < cw; j++) {
            ab[j] = 0.0;
            ag[j] = 0.0;
            mf[j] = mean[c0 + j];
            sf[j] = invstd[c0 + j];
        }
        for (n = 0; n < N; n++) {
            const float* xr = x + n * C + c0;
            const float* dr = dy + n * C + c0;
            for (j = 0; j < cw; j++) {
                float xh = (xr[j] - mf[j]) * sf[j];
                ab[j] += (double)dr[j];
                ag[j] += (double)dr[j] * (double)xh;
            }
        }
        for (j = 0; j < cw; j++) {
            db[j] = (float)ab[j];
            dg[j] = (float)ag[j];
            dbeta[c0 + j] = db[j];
            dgamma[c0 + j] = dg[j];
            k[j] = (gamma[c0 + j] * sf[j]) / fM;
        }
        for (n = 0; n < N; n++) {
            const float* xr = x + n * C + c0;
            const float* dr = dy + n * C + c0;
            float* or_ = dx + n * C + c0;
            for (j = 0; j < cw; j++) {
                float xh = (xr[j] - mf[j]) * sf[j];
                or_[j] = k[j] * ((fM * dr[j] - db[j]) - xh * dg[j]);
            }
        }
    }

    /* rows [r0, r0 + nr) of (N, C): y = x*scale + shift */
    FNN_CLONES static void fnn_bn_infer_rows_k(const float* x, const float* scale,
                                               const float* shift, float* y, Py_ssize_t C,
                                               Py_ssize_t r0, Py_ssize_t nr) {
        for (Py_ssize_t r = r0; r < r0 + nr; r++) {
            const float* xr = x + r * C;
            float* yr = y + r * C;
            for (Py_ssize_t j = 0; j < C; j++) yr[j] = xr[j] * scale[j] + shift[j];
        }
    }
    """
    enum: FNN_CW
    void fnn_bn_train_plane_k(const float* x, float* y, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                              Py_ssize_t c, double eps, const float* gamma, const float* beta,
                              float* mean, float* invstd)
    void fnn_bn_bw_plane_k(const float* dy, const float* x, float* dx, Py_ssize_t N, Py_ssize_t C,
                           Py_ssize_t L, Py_ssize_t c, const float* gamma, const float* mean,
                           const float* invstd, float* dgamma, float* dbeta)
    void fnn_bn_infer_planes_k(const float* x, const float* scale, const float* shift, float* y,
                               Py_ssize_t C, Py_ssize_t L, Py_ssize_t p0, Py_ssize_t np)
    void fnn_bn_train_rows_k(const float* x, float* y, Py_ssize_t N, Py_ssize_t C, Py_ssize_t c0,
                             Py_ssize_t cw, double eps, const float* gamma, const float* beta,
                             float* mean, float* invstd)
    void fnn_bn_bw_rows_k(const float* dy, const float* x, float* dx, Py_ssize_t N, Py_ssize_t C,
                          Py_ssize_t c0, Py_ssize_t cw, const float* gamma, const float* mean,
                          const float* invstd, float* dgamma, float* dbeta)
    void fnn_bn_infer_rows_k(const float* x, const float* scale, const float* shift, float* y,
                             Py_ssize_t C, Py_ssize_t r0, Py_ssize_t nr)


cdef enum:
    _BLOCK = 8192           # elements per parallel work item in the inference paths


def batchnorm_forward_train(const float[:, :, ::1] x, const float[::1] gamma,
                            const float[::1] beta, double eps, float[:, :, ::1] y,
                            float[::1] mean, float[::1] invstd):
    """Per channel over N*L: mean, invstd = 1/sqrt(biased var + eps) (float64 accumulation);
    y = gamma*((x - mean)*invstd) + beta."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c, k, nch
    if N == 0 or C == 0 or L == 0:
        return
    cdef const float* xp = &x[0, 0, 0]
    cdef float* yp = &y[0, 0, 0]
    cdef const float* gp = &gamma[0]
    cdef const float* bp = &beta[0]
    cdef float* mp = &mean[0]
    cdef float* sp = &invstd[0]
    cdef bint par = N * C * L >= PARALLEL_MIN_WORK and _nthreads > 1
    with nogil:
        if L > 1:
            if par and C > 1:
                for c in prange(C, schedule="static", num_threads=_nthreads):
                    fnn_bn_train_plane_k(xp, yp, N, C, L, c, eps, gp, bp, mp, sp)
            else:
                for c in range(C):
                    fnn_bn_train_plane_k(xp, yp, N, C, L, c, eps, gp, bp, mp, sp)
        else:
            nch = (C + FNN_CW - 1) // FNN_CW
            if par and nch > 1:
                for k in prange(nch, schedule="static", num_threads=_nthreads):
                    fnn_bn_train_rows_k(xp, yp, N, C, k * FNN_CW, min(<Py_ssize_t>FNN_CW, C - k * FNN_CW),
                                        eps, gp, bp, mp, sp)
            else:
                for k in range(nch):
                    fnn_bn_train_rows_k(xp, yp, N, C, k * FNN_CW, min(<Py_ssize_t>FNN_CW, C - k * FNN_CW),
                                        eps, gp, bp, mp, sp)


def batchnorm_forward_infer(const float[:, :, ::1] x, const float[::1] scale,
                            const float[::1] shift, float[:, :, ::1] y):
    """y = x*scale[c] + shift[c]."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], p, r, nb, per
    if N == 0 or C == 0 or L == 0:
        return
    cdef const float* xp = &x[0, 0, 0]
    cdef float* yp = &y[0, 0, 0]
    cdef const float* ap = &scale[0]
    cdef const float* bp = &shift[0]
    cdef bint par = N * C * L >= PARALLEL_MIN_WORK and _nthreads > 1
    with nogil:
        if L > 1:
            per = max(<Py_ssize_t>1, _BLOCK // L)              # planes per work item
            nb = (N * C + per - 1) // per
            if par and nb > 1:
                for p in prange(nb, schedule="static", num_threads=_nthreads):
                    fnn_bn_infer_planes_k(xp, ap, bp, yp, C, L, p * per, min(per, N * C - p * per))
            else:
                fnn_bn_infer_planes_k(xp, ap, bp, yp, C, L, 0, N * C)
        else:
            per = max(<Py_ssize_t>1, _BLOCK // C)              # rows per work item
            nb = (N + per - 1) // per
            if par and nb > 1:
                for r in prange(nb, schedule="static", num_threads=_nthreads):
                    fnn_bn_infer_rows_k(xp, ap, bp, yp, C, r * per, min(per, N - r * per))
            else:
                fnn_bn_infer_rows_k(xp, ap, bp, yp, C, 0, N)


def batchnorm_backward(const float[:, :, ::1] dy, const float[:, :, ::1] x,
                       const float[::1] gamma, const float[::1] mean, const float[::1] invstd,
                       float[:, :, ::1] dx, float[::1] dgamma, float[::1] dbeta):
    """dbeta = sum dy, dgamma = sum dy*xhat (float64 accumulation);
    dx = gamma*invstd/M * (M*dy - dbeta - xhat*dgamma), M = N*L."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c, k, nch
    if N == 0 or C == 0 or L == 0:
        return
    cdef const float* dyp = &dy[0, 0, 0]
    cdef const float* xp = &x[0, 0, 0]
    cdef const float* gp = &gamma[0]
    cdef const float* mp = &mean[0]
    cdef const float* sp = &invstd[0]
    cdef float* dxp = &dx[0, 0, 0]
    cdef float* dgp = &dgamma[0]
    cdef float* dbp = &dbeta[0]
    cdef bint par = N * C * L >= PARALLEL_MIN_WORK and _nthreads > 1
    with nogil:
        if L > 1:
            if par and C > 1:
                for c in prange(C, schedule="static", num_threads=_nthreads):
                    fnn_bn_bw_plane_k(dyp, xp, dxp, N, C, L, c, gp, mp, sp, dgp, dbp)
            else:
                for c in range(C):
                    fnn_bn_bw_plane_k(dyp, xp, dxp, N, C, L, c, gp, mp, sp, dgp, dbp)
        else:
            nch = (C + FNN_CW - 1) // FNN_CW
            if par and nch > 1:
                for k in prange(nch, schedule="static", num_threads=_nthreads):
                    fnn_bn_bw_rows_k(dyp, xp, dxp, N, C, k * FNN_CW, min(<Py_ssize_t>FNN_CW, C - k * FNN_CW),
                                     gp, mp, sp, dgp, dbp)
            else:
                for k in range(nch):
                    fnn_bn_bw_rows_k(dyp, xp, dxp, N, C, k * FNN_CW, min(<Py_ssize_t>FNN_CW, C - k * FNN_CW),
                                     gp, mp, sp, dgp, dbp)
