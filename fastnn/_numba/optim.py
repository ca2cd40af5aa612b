"""In-place optimizer updates on flat float32 buffers for the Numba backend (torch.optim semantics).

Each update is one fused pass: every element of param, grad and the state is read once and written
once. The float32 arithmetic follows the reference operation by operation (no FMA contraction, no
fast-math), so results match fastnn.reference bit for bit. Scalars arrive as np.float32 (bias
corrections are computed in float64 in Python, then rounded once, as the reference does). The
weight-decay / momentum / Nesterov / decoupled cases are separate loops, so no branch sits in a
vectorised loop body.
"""


import numpy as np
from numba import njit, prange

from ..reference.optim import adam_scalars
from ._common import PARALLEL_MIN_WORK

CHUNK = 4096  # elements per prange task (fixed, not thread-derived)

_f32 = np.float32


# ---------------------------------------------------------------------------------------------
# SGD (dampening 0)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _sgd_rng(p, g, v, lr, mom, nesterov, wd):
    n = p.size
    if v.size == 0:  # momentum == 0
        if wd == _f32(0.0):
            for i in range(n):
                p[i] = p[i] - lr * g[i]
        else:
            for i in range(n):
                pi = p[i]
                p[i] = pi - lr * (g[i] + wd * pi)
    elif wd == _f32(0.0):
        if nesterov:
            for i in range(n):
                gi = g[i]
                vi = v[i] * mom + gi
                v[i] = vi
                p[i] = p[i] - lr * (gi + mom * vi)
        else:
            for i in range(n):
                vi = v[i] * mom + g[i]
                v[i] = vi
                p[i] = p[i] - lr * vi
    else:
        if nesterov:
            for i in range(n):
                pi = p[i]
                gi = g[i] + wd * pi
                vi = v[i] * mom + gi
                v[i] = vi
                p[i] = pi - lr * (gi + mom * vi)
        else:
            for i in range(n):
                pi = p[i]
                vi = v[i] * mom + (g[i] + wd * pi)
                v[i] = vi
                p[i] = pi - lr * vi


@njit(cache=True, nogil=True, error_model="numpy")
def _sgd_ser(p, g, v, lr, mom, nesterov, wd):
    _sgd_rng(p, g, v, lr, mom, nesterov, wd)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sgd_par(p, g, v, lr, mom, nesterov, wd):
    n = p.size
    has_v = v.size > 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        if has_v:
            _sgd_rng(p[s:e], g[s:e], v[s:e], lr, mom, nesterov, wd)
        else:
            _sgd_rng(p[s:e], g[s:e], v, lr, mom, nesterov, wd)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """velocity starts at zeros; it is an empty array when momentum == 0."""
    args = (param, grad, velocity, np.float32(lr), np.float32(momentum), bool(nesterov),
            np.float32(weight_decay))
    if param.size >= PARALLEL_MIN_WORK:
        _sgd_par(*args)
    else:
        _sgd_ser(*args)


# ---------------------------------------------------------------------------------------------
# Adam / AdamW
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _adam_rng(p, g, m, v, mode, wd, decay, b1, omb1, b2, omb2, eps, step_size):
    """mode 0: no weight decay; 1: L2 (g += wd * p); 2: decoupled (p *= decay first). step_size and
    eps carry sqrt(1 - beta2**step): see reference.optim.adam_scalars."""
    n = p.size
    if mode == 0:
        for i in range(n):
            gi = g[i]
            mi = m[i] * b1 + omb1 * gi
            vi = v[i] * b2 + omb2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] - step_size * mi / (np.sqrt(vi) + eps)
    elif mode == 1:
        for i in range(n):
            pi = p[i]
            gi = g[i] + wd * pi
            mi = m[i] * b1 + omb1 * gi
            vi = v[i] * b2 + omb2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - step_size * mi / (np.sqrt(vi) + eps)
    else:
        for i in range(n):
            gi = g[i]
            mi = m[i] * b1 + omb1 * gi
            vi = v[i] * b2 + omb2 * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] * decay - step_size * mi / (np.sqrt(vi) + eps)


@njit(cache=True, nogil=True, error_model="numpy")
def _adam_ser(p, g, m, v, mode, wd, decay, b1, omb1, b2, omb2, eps, step_size):
    _adam_rng(p, g, m, v, mode, wd, decay, b1, omb1, b2, omb2, eps, step_size)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _adam_par(p, g, m, v, mode, wd, decay, b1, omb1, b2, omb2, eps, step_size):
    n = p.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _adam_rng(p[s:e], g[s:e], m[s:e], v[s:e], mode, wd, decay, b1, omb1, b2, omb2, eps,
                  step_size)


def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    mode = 0 if weight_decay == 0 else (2 if decoupled else 1)
    step_size, eps_hat = adam_scalars(step, lr, beta1, beta2, eps)
    args = (param, grad, m, v, mode, np.float32(weight_decay),
            np.float32(1 - lr * weight_decay), np.float32(beta1), np.float32(1 - beta1),
            np.float32(beta2), np.float32(1 - beta2), eps_hat, step_size)
    if param.size >= PARALLEL_MIN_WORK:
        _adam_par(*args)
    else:
        _adam_ser(*args)


# ---------------------------------------------------------------------------------------------
# Adagrad (no lr decay)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _adagrad_rng(p, g, ss, lr, eps, wd):
    n = p.size
    if wd == _f32(0.0):
        for i in range(n):
            gi = g[i]
            si = ss[i] + gi * gi
            ss[i] = si
            p[i] = p[i] - lr * gi / (np.sqrt(si) + eps)
    else:
        for i in range(n):
            pi = p[i]
            gi = g[i] + wd * pi
            si = ss[i] + gi * gi
            ss[i] = si
            p[i] = pi - lr * gi / (np.sqrt(si) + eps)


@njit(cache=True, nogil=True, error_model="numpy")
def _adagrad_ser(p, g, ss, lr, eps, wd):
    _adagrad_rng(p, g, ss, lr, eps, wd)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _adagrad_par(p, g, ss, lr, eps, wd):
    n = p.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _adagrad_rng(p[s:e], g[s:e], ss[s:e], lr, eps, wd)


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay):
    args = (param, grad, sum_sq, np.float32(lr), np.float32(eps), np.float32(weight_decay))
    if param.size >= PARALLEL_MIN_WORK:
        _adagrad_par(*args)
    else:
        _adagrad_ser(*args)


# ---------------------------------------------------------------------------------------------
# RMSprop (no momentum, not centred)
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_rng(p, g, sq, lr, alpha, oma, eps, wd):
    n = p.size
    if wd == _f32(0.0):
        for i in range(n):
            gi = g[i]
            si = sq[i] * alpha + oma * gi * gi
            sq[i] = si
            p[i] = p[i] - lr * gi / (np.sqrt(si) + eps)
    else:
        for i in range(n):
            pi = p[i]
            gi = g[i] + wd * pi
            si = sq[i] * alpha + oma * gi * gi
            sq[i] = si
            p[i] = pi - lr * gi / (np.sqrt(si) + eps)


@njit(cache=True, nogil=True, error_model="numpy")
def _rmsprop_ser(p, g, sq, lr, alpha, oma, eps, wd):
    _rmsprop_rng(p, g, sq, lr, alpha, oma, eps, wd)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _rmsprop_par(p, g, sq, lr, alpha, oma, eps, wd):
    n = p.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _rmsprop_rng(p[s:e], g[s:e], sq[s:e], lr, alpha, oma, eps, wd)


def rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay):
    args = (param, grad, sq_avg, np.float32(lr), np.float32(alpha), np.float32(1 - alpha),
            np.float32(eps), np.float32(weight_decay))
    if param.size >= PARALLEL_MIN_WORK:
        _rmsprop_par(*args)
    else:
        _rmsprop_ser(*args)
