"""Dense (affine) kernels: GEMM with a fused bias + activation epilogue, validated."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import Workspace, as_float32, buffer, nonempty, same_shape

ACTIVATIONS = {None: 0, "relu": 1, "sigmoid": 2}


def activation_code(activation) -> int:
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"activation: expected None, 'relu' or 'sigmoid', got {activation!r}") from None


def _dense_args(x, W):
    x = as_float32("x", x, ndim=2)
    W = as_float32("W", W, ndim=2)
    nonempty("x", x)
    nonempty("W", W)
    if W.shape[0] != x.shape[1]:
        raise ValueError(f"W: expected {x.shape[1]} rows (W is (in_features, out_features) and x has "
                         f"{x.shape[1]} features), got shape {W.shape}")
    return x, W


def dense_forward(x, W, b, activation=None, *, ws: Workspace | None = None) -> np.ndarray:
    """y = activation(x @ W + b) with x (N, in), W (in, out), b (out,)."""
    act = activation_code(activation)
    x, W = _dense_args(x, W)
    b = as_float32("b", b, ndim=1)
    same_shape("b", b, (W.shape[1],), "W.shape[1], the output features")
    y = buffer(ws, "y", (x.shape[0], W.shape[1]))
    impl("dense_forward")(x, W, b, act, y)
    return y


def dense_backward(dy, x, W, *, ws: Workspace | None = None, need_dx: bool = True):
    """(dx, dW, db) for dy the gradient of the affine output x @ W + b. With need_dx=False
    (a first layer), dx is not computed and None is returned in its place."""
    x, W = _dense_args(x, W)
    dy = as_float32("dy", dy, ndim=2)
    same_shape("dy", dy, (x.shape[0], W.shape[1]), "x @ W")
    dx = buffer(ws, "dx", x.shape) if need_dx else None
    dW = buffer(ws, "dW", W.shape)
    db = buffer(ws, "db", (W.shape[1],))
    impl("dense_backward")(dy, x, W, dx, dW, db)
    return dx, dW, db
