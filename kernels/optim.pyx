# fastnn Cython kernels: in-place optimizer updates on flat float32 buffers, torch.optim semantics.
# Interface: docs/backends.md; oracle: fastnn/reference/optim.py. Each update is one fused pass over
# param, grad and the state (reads each once, writes each once), with the same float32 operations
# in the same order as the reference; scalar constants (bias corrections etc.) are computed once in
# double and rounded to float32, as the reference does.
#
# Inner loops are C (verbatim block below; macros and pragma in fnn_math.h), compiled in
# AVX-512/AVX2/baseline variants with gcc `target_clones` and FMA contraction off, so every variant
# gives bitwise the same results.

include "_parallel.pxi"

from libc.math cimport pow, sqrt

cdef extern from "fnn_math.h" nogil:
    pass    # FNN_CLONES, FNN_INLINE and the pragma (no-trapping-math, fp-contract=off) for the C

cdef extern from * nogil:
    """
    /* IEEE sqrtf with the negative-argument case spelled out (NaN, as sqrtf gives): the compiler
       then knows errno is never set and vectorises it without -fno-math-errno. */
    FNN_INLINE float fnn_sqrtf(float a) { return sqrtf(a < 0.0f ? NAN : a); }

    /* SGD: g = grad (+ wd*p); v = v*mom + g; g = nesterov ? g + mom*v : v; p -= lr*g */
    FNN_CLONES static void fnn_sgd_k(float* p, const float* g, float* vel, Py_ssize_t n, float lr,
                                     float mom, float wd, int use_wd, int use_mom, int nesterov) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float gi = g[i];
            if (use_wd) gi = gi + wd * p[i];
            if (use_mom) {
                float v = vel[i] * mom + gi;
                vel[i] = v;
                gi = nesterov ? gi + mom * v : v;
            }
            p[i] = p[i] - lr * gi;
        }
    }

    /* Adam / AdamW. mode 0: no weight decay; 1: L2 (g += wd*p); 2: decoupled (p *= decay).
       step_size and eps carry sqrt(1 - beta2^t) (reference.optim.adam_scalars): one division. */
    FNN_CLONES static void fnn_adam_k(float* p, const float* g, float* m, float* v, Py_ssize_t n,
                                      float b1, float omb1, float b2, float omb2, float step_size,
                                      float eps, float wd, float decay, int mode) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float pi = p[i], gi = g[i];
            if (mode == 1) gi = gi + wd * pi;
            if (mode == 2) pi = pi * decay;
            float mi = m[i] * b1 + omb1 * gi;
            float vi = v[i] * b2 + omb2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] = pi - (step_size * mi) / (fnn_sqrtf(vi) + eps);
        }
    }

    /* Adagrad: g = grad (+ wd*p); s += g*g; p -= lr*g / (sqrt(s) + eps) */
    FNN_CLONES static void fnn_adagrad_k(float* p, const float* g, float* s, Py_ssize_t n,
                                         float lr, float eps, float wd, int use_wd) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float gi = g[i];
            if (use_wd) gi = gi + wd * p[i];
            float si = s[i] + gi * gi;
            s[i] = si;
            p[i] = p[i] - (lr * gi) / (fnn_sqrtf(si) + eps);
        }
    }

    /* RMSprop: g = grad (+ wd*p); a = a*alpha + (1-alpha)*g*g; p -= lr*g / (sqrt(a) + eps) */
    FNN_CLONES static void fnn_rmsprop_k(float* p, const float* g, float* a, Py_ssize_t n,
                                         float lr, float alpha, float omalpha, float eps, float wd,
                                         int use_wd) {
        for (Py_ssize_t i = 0; i < n; i++) {
            float gi = g[i];
            if (use_wd) gi = gi + wd * p[i];
            float ai = a[i] * alpha + omalpha * gi * gi;
            a[i] = ai;
            p[i] = p[i] - (lr * gi) / (fnn_sqrtf(ai) + eps);
        }
    }
    """
    void fnn_sgd_k(float* p, const float* g, float* vel, Py_ssize_t n, float lr, float mom,
                   float wd, int use_wd, int use_mom, int nesterov)
    void fnn_adam_k(float* p, const float* g, float* m, float* v, Py_ssize_t n, float b1,
                    float omb1, float b2, float omb2, float step_size, float eps, float wd,
                    float decay, int mode)
    void fnn_adagrad_k(float* p, const float* g, float* s, Py_ssize_t n, float lr, float eps,
                       float wd, int use_wd)
    void fnn_rmsprop_k(float* p, const float* g, float* a, Py_ssize_t n, float lr, float alpha,
                       float omalpha, float eps, float wd, int use_wd)


cdef enum:
    _BLOCK = 16384      # elements per parallel work item


cdef inline bint _parallel(Py_ssize_t n) noexcept nogil:
    return n >= PARALLEL_MIN_WORK and _nthreads > 1


def sgd_update(float[::1] param, const float[::1] grad, float[::1] velocity, double lr,
               double momentum, bint nesterov, double weight_decay):
    """torch.optim.SGD step (dampening 0); velocity is empty when momentum == 0."""
    cdef Py_ssize_t n = param.shape[0], nb, b, s
    cdef int use_wd = weight_decay != 0
    cdef int use_mom = momentum != 0
    cdef float flr = <float>lr, fmom = <float>momentum, fwd = <float>weight_decay
    if n == 0:
        return
    cdef float* pp = &param[0]
    cdef const float* gp = &grad[0]
    cdef float* vp = &velocity[0] if use_mom else NULL
    with nogil:
        if _parallel(n):
            nb = (n + _BLOCK - 1) // _BLOCK
            for b in prange(nb, schedule="static", num_threads=_nthreads):
                s = b * _BLOCK
                fnn_sgd_k(pp + s, gp + s, vp + s if use_mom else NULL,
                          min(n - s, <Py_ssize_t>_BLOCK), flr, fmom, fwd, use_wd, use_mom, nesterov)
        else:
            fnn_sgd_k(pp, gp, vp, n, flr, fmom, fwd, use_wd, use_mom, nesterov)


def adam_update(float[::1] param, const float[::1] grad, float[::1] m, float[::1] v, long step,
                double lr, double beta1, double beta2, double eps, double weight_decay,
                bint decoupled):
    """torch.optim.Adam (decoupled=False: L2 added to the gradient) / AdamW (decoupled=True)."""
    cdef Py_ssize_t n = param.shape[0], nb, b, s
    cdef int mode = 0 if weight_decay == 0 else (2 if decoupled else 1)
    cdef float b1 = <float>beta1, omb1 = <float>(1 - beta1)
    cdef float b2 = <float>beta2, omb2 = <float>(1 - beta2)
    cdef double bc2_sqrt = sqrt(1 - pow(beta2, <double>step))  # as reference.optim.adam_scalars
    cdef float step_size = <float>(lr * bc2_sqrt / (1 - pow(beta1, <double>step)))
    cdef float feps = <float>(eps * bc2_sqrt), fwd = <float>weight_decay
    cdef float decay = <float>(1 - lr * weight_decay)
    if n == 0:
        return
    cdef float* pp = &param[0]
    cdef const float* gp = &grad[0]
    cdef float* mp = &m[0]
    cdef float* vp = &v[0]
    with nogil:
        if _parallel(n):
            nb = (n + _BLOCK - 1) // _BLOCK
            for b in prange(nb, schedule="static", num_threads=_nthreads):
                s = b * _BLOCK
                fnn_adam_k(pp + s, gp + s, mp + s, vp + s, min(n - s, <Py_ssize_t>_BLOCK),
                           b1, omb1, b2, omb2, step_size, feps, fwd, decay, mode)
        else:
            fnn_adam_k(pp, gp, mp, vp, n, b1, omb1, b2, omb2, step_size, feps, fwd, decay, mode)


def adagrad_update(float[::1] param, const float[::1] grad, float[::1] sum_sq, double lr,
                   double eps, double weight_decay):
    """torch.optim.Adagrad step (no lr decay)."""
    cdef Py_ssize_t n = param.shape[0], nb, b, s
    cdef int use_wd = weight_decay != 0
    cdef float flr = <float>lr, feps = <float>eps, fwd = <float>weight_decay
    if n == 0:
        return
    cdef float* pp = &param[0]
    cdef const float* gp = &grad[0]
    cdef float* sp = &sum_sq[0]
    with nogil:
        if _parallel(n):
            nb = (n + _BLOCK - 1) // _BLOCK
            for b in prange(nb, schedule="static", num_threads=_nthreads):
                s = b * _BLOCK
                fnn_adagrad_k(pp + s, gp + s, sp + s, min(n - s, <Py_ssize_t>_BLOCK),
                              flr, feps, fwd, use_wd)
        else:
            fnn_adagrad_k(pp, gp, sp, n, flr, feps, fwd, use_wd)


def rmsprop_update(float[::1] param, const float[::1] grad, float[::1] sq_avg, double lr,
                   double alpha, double eps, double weight_decay):
    """torch.optim.RMSprop step (no momentum, not centred)."""
    cdef Py_ssize_t n = param.shape[0], nb, b, s
    cdef int use_wd = weight_decay != 0
    cdef float flr = <float>lr, falpha = <float>alpha, fom = <float>(1 - alpha)
    cdef float feps = <float>eps, fwd = <float>weight_decay
    if n == 0:
        return
    cdef float* pp = &param[0]
    cdef const float* gp = &grad[0]
    cdef float* ap = &sq_avg[0]
    with nogil:
        if _parallel(n):
            nb = (n + _BLOCK - 1) // _BLOCK
            for b in prange(nb, schedule="static", num_threads=_nthreads):
                s = b * _BLOCK
                fnn_rmsprop_k(pp + s, gp + s, ap + s, min(n - s, <Py_ssize_t>_BLOCK),
                              flr, falpha, fom, feps, fwd, use_wd)
        else:
            fnn_rmsprop_k(pp, gp, ap, n, flr, falpha, fom, feps, fwd, use_wd)
