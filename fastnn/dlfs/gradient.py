"""Central-difference gradients (common/gradient.py), h = 1e-4, perturbing x in place.

On fastnn.dlfs networks the parameters and the loss are float32, so these estimates carry an
error of about 1e-7 * |loss| / h ~ 1e-3 (the book's float64 ones ~1e-10): enough to catch a wrong
backward, not to match digits.
"""

import numpy as np

H = 1e-4


def _numerical_gradient_1d(f, x):
    grad = np.zeros_like(x)
    for idx in range(x.size):
        old = x[idx]
        x[idx] = float(old) + H
        fxh1 = f(x)
        x[idx] = old - H
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * H)
        x[idx] = old
    return grad


def numerical_gradient_2d(f, X):
    if X.ndim == 1:
        return _numerical_gradient_1d(f, X)
    grad = np.zeros_like(X)
    for idx, x in enumerate(X):
        grad[idx] = _numerical_gradient_1d(f, x)
    return grad


def numerical_gradient(f, x):
    """df/dx of the scalar f(x) at every element of the array x (any shape)."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        old = x[idx]
        x[idx] = old + H
        fxh1 = f(x)
        x[idx] = old - H
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * H)
        x[idx] = old
        it.iternext()
    return grad
