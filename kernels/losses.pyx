# fastnn Cython kernels: losses fused with their gradients (softmax cross-entropy, sigmoid binary
# cross-entropy on logits, mean squared error). Interface: docs/backends.md; oracle:
# fastnn/reference/losses.py. Each returns the mean loss as a Python float and overwrites the
# gradient (already divided by the number of rows or elements).
#
# Inner loops are C (verbatim block below), compiled in AVX-512/AVX2/baseline variants with gcc
# `target_clones` and FMA contraction off, so every variant gives bitwise the same results; exp and
# log1p are vectorisable polynomial versions (about 1 ulp). exp, log1p, the row max and the double
# sum come from fnn_math.h, shared with activations.pyx and norm.pyx.
# Loss sums are float64: per-row (or per-element) losses are summed inside fixed blocks whose
# boundaries depend only on the array size, then the block partials are added in block order, so the
# result is bitwise the same on any thread count and on the serial path.

include "_parallel.pxi"

cdef extern from "fnn_math.h" nogil:
    # shared helpers (kernels/fnn_math.h), called from the C kernels below
    float fnn_exp_nonpos(float x)
    float fnn_log1p01(float u)
    float fnn_max_nan(const float* x, Py_ssize_t n)
    double fnn_sum_d(const float* x, Py_ssize_t n)
    double fnn_exp_shift_sum(const float* x, float mx, float* e, Py_ssize_t n)

cdef extern from * nogil:
    """
    /* Rows [0, nrows) of (nrows, C) logits: dl = (softmax - onehot)/N, as e * (1/(s*N)) (one
       multiply per element: two divisions cost ~2x the whole row on this kind of CPU);
       returns the sum of the row losses log(s) - (x[k] - max) in double. */
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
            float sc = (float)(1.0 / (s * (double)fN));
            for (Py_ssize_t i = 0; i < C; i++) dr[i] = dr[i] * sc;
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
    One pass per row (max, exp and sum, loss, gradient), rows in fixed blocks. A label outside
    [0, C) returns -1.0 with nothing computed (a real loss is never negative)."""
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
    cdef unsigned long long worst = 0
    with nogil:
        for k in range(N):  # a label outside [0, C) (a negative one wraps to a huge value)
            worst = worst if <unsigned long long>lp[k] <= worst else <unsigned long long>lp[k]
        if worst >= <unsigned long long>C:
            with gil:
                return -1.0  # nothing computed (see docs/backends.md)
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
