"""The book's optimizers (common/optimizer.py): `update(params, grads)` changes each params[key] in
place, with the book's numerics (eps 1e-7; Adam folds both bias corrections into the step size,
lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), and adds eps to the uncorrected sqrt(v)).

A float32, C-contiguous, writeable parameter (what fastnn.dlfs networks hold) is updated by
fastnn's optimizer kernels in one fused pass; anything else (the book's float64 arrays, plain
Python numbers) by the book's NumPy formulas, in its own dtype. State (`v`, `h`, `m`) lives in
dicts keyed like params, created on the first update, as in the book.
"""

import math

import numpy as np

from fastnn import kernels as _k


def _on_kernel(p) -> bool:
    return (isinstance(p, np.ndarray) and p.dtype == np.float32 and p.flags.c_contiguous
            and p.flags.writeable and p.size > 0)


def _zeros_like_all(params):
    return {key: np.zeros_like(val) for key, val in params.items()}


class SGD:
    """Stochastic gradient descent: p -= lr * g."""

    def __init__(self, lr=0.01):
        self.lr = lr

    def update(self, params, grads):
        for key in params.keys():
            p, g = params[key], grads[key]
            if _on_kernel(p):
                _k.sgd_update(p, g, lr=self.lr)
            else:
                params[key] -= self.lr * g


class Momentum:
    """v = momentum * v - lr * g; p += v."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = _zeros_like_all(params)
        for key in params.keys():
            v, g = self.v[key], grads[key]
            if isinstance(v, np.ndarray) and v.ndim:
                v *= v.dtype.type(self.momentum)
                v -= v.dtype.type(self.lr) * np.asarray(g, dtype=v.dtype)
            else:
                self.v[key] = v = self.momentum * v - self.lr * g
            params[key] += v


class Nesterov:
    """Nesterov's accelerated gradient (http://arxiv.org/abs/1212.0901), in the book's form:
    p += momentum^2 * v - (1 + momentum) * lr * g; v = momentum * v - lr * g."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def update(self, params, grads):
        if self.v is None:
            self.v = _zeros_like_all(params)
        mom, lr = self.momentum, self.lr
        for key in params.keys():
            v, g = self.v[key], grads[key]
            params[key] += mom * mom * v
            params[key] -= (1 + mom) * lr * g
            self.v[key] *= mom
            self.v[key] -= lr * g


class AdaGrad:
    """h += g^2; p -= lr * g / (sqrt(h) + 1e-7)."""

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = _zeros_like_all(params)
        for key in params.keys():
            p, g, h = params[key], grads[key], self.h[key]
            if _on_kernel(p) and _on_kernel(h):
                _k.adagrad_update(p, g, h, lr=self.lr, eps=1e-7)
            else:
                self.h[key] += g * g
                params[key] -= self.lr * g / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop:
    """h = decay_rate * h + (1 - decay_rate) * g^2; p -= lr * g / (sqrt(h) + 1e-7)."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def update(self, params, grads):
        if self.h is None:
            self.h = _zeros_like_all(params)
        for key in params.keys():
            p, g, h = params[key], grads[key], self.h[key]
            if _on_kernel(p) and _on_kernel(h):
                _k.rmsprop_update(p, g, h, lr=self.lr, alpha=self.decay_rate, eps=1e-7)
            else:
                self.h[key] *= self.decay_rate
                self.h[key] += (1 - self.decay_rate) * g * g
                params[key] -= self.lr * g / (np.sqrt(self.h[key]) + 1e-7)


class Adam:
    """Adam (http://arxiv.org/abs/1412.6980v8) as the book writes it:
    m += (1 - beta1) * (g - m); v += (1 - beta2) * (g^2 - v);
    p -= lr_t * m / (sqrt(v) + 1e-7) with lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)."""

    EPS = 1e-7

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        if self.m is None:
            self.m = _zeros_like_all(params)
            self.v = _zeros_like_all(params)
        self.iter += 1
        bc2_sqrt = math.sqrt(1.0 - self.beta2 ** self.iter)
        lr_t = self.lr * bc2_sqrt / (1.0 - self.beta1 ** self.iter)
        for key in params.keys():
            p, g, m, v = params[key], grads[key], self.m[key], self.v[key]
            if _on_kernel(p) and _on_kernel(m) and _on_kernel(v):
                # The kernel takes torch's eps (p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)) and
                # computes p -= lr_t * m / (sqrt(v) + eps*sqrt(bc2)): eps = 1e-7/sqrt(bc2) makes
                # that the book's lr_t * m / (sqrt(v) + 1e-7).
                _k.adam_update(p, g, m, v, self.iter, lr=self.lr, beta1=self.beta1,
                               beta2=self.beta2, eps=self.EPS / bc2_sqrt)
            else:
                self.m[key] += (1 - self.beta1) * (g - self.m[key])
                self.v[key] += (1 - self.beta2) * (g ** 2 - self.v[key])
                params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + self.EPS)
