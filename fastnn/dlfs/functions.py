"""The book's activation and loss functions ("Deep Learning from Scratch", common/functions.py).

`sigmoid` and `softmax` of a non-empty float array run on fastnn's kernels and return float32
(the book computes in the input's dtype, usually float64); scalars and integer input stay NumPy.
The loss functions keep the book's formulas, including the 1e-7 inside the log of
`cross_entropy_error`, and sum in float64.
"""

import numpy as np

from fastnn import kernels as _k


def _kernel_ready(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.size > 0


def identity_function(x):
    return x


def step_function(x):
    return np.array(x > 0, dtype=int)


def sigmoid(x):
    """1 / (1 + exp(-x)); a float array is computed in float32 on the kernels, without overflow."""
    if _kernel_ready(x):
        return _k.sigmoid(x)
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def sigmoid_grad(x):
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    return np.maximum(0, x)


def relu_grad(x):
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def softmax(x):
    """Softmax over the last axis; a 2-D float array runs on the kernels (float32)."""
    if _kernel_ready(x) and x.ndim == 2:
        return _k.softmax(x)
    x = np.asarray(x)
    z = x - np.max(x, axis=-1, keepdims=True)  # the largest logit becomes 0: no overflow
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def sum_squared_error(y, t):
    return 0.5 * np.sum((y - t) ** 2, dtype=np.float64)


def cross_entropy_error(y, t):
    """-mean(log(y[t] + 1e-7)) for probabilities y and labels t (indices or one-hot rows)."""
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:  # one-hot rows: back to class indices
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    picked = y[np.arange(batch_size), t]
    return -np.sum(np.log(picked + picked.dtype.type(1e-7)), dtype=np.float64) / batch_size


def softmax_loss(X, t):
    return cross_entropy_error(softmax(X), t)
