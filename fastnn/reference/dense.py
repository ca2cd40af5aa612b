"""Dense (affine) layer: y = act(x @ W + b), with W of shape (in_features, out_features).

act codes: 0 none, 1 relu, 2 sigmoid.
"""

import numpy as np

from .activations import sigmoid


def bias_add_act(y, b, act):
    """The epilogue, in place on y (N, M): y = act(y + b)."""
    y += b
    if act == 1:
        np.maximum(y, 0, out=y)
    elif act == 2:
        sigmoid(y.reshape(-1), y.reshape(-1))


def dense_forward(x, W, b, act, y):
    np.matmul(x, W, out=y)
    bias_add_act(y, b, act)


def dense_backward(dy, x, W, dx, dW, db):
    """dx may be None (first layer: nobody needs it)."""
    if dx is not None:
        np.matmul(dy, W.T, out=dx)
    np.matmul(x.T, dy, out=dW)
    db[...] = dy.sum(axis=0)
