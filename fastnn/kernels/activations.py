"""Activation kernels, validated. Elementwise kernels run on the flat view of any shape."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import Workspace, as_float32, buffer, nonempty, same_shape


def _unary(kernel: str, x, ws: Workspace | None) -> np.ndarray:
    x = as_float32("x", x)
    nonempty("x", x)
    y = buffer(ws, "y", x.shape)
    impl(kernel)(x.reshape(-1), y.reshape(-1))
    return y


def _backward(kernel: str, dy, y, ws: Workspace | None) -> np.ndarray:
    y = as_float32("y", y)
    dy = as_float32("dy", dy)
    same_shape("dy", dy, y.shape, "y")
    nonempty("y", y)
    dx = buffer(ws, "dx", y.shape)
    impl(kernel)(dy.reshape(-1), y.reshape(-1), dx.reshape(-1))
    return dx


def relu(x, *, ws: Workspace | None = None) -> np.ndarray:
    """max(x, 0)."""
    return _unary("relu", x, ws)


def relu_backward(dy, y, *, ws: Workspace | None = None) -> np.ndarray:
    """dy where the relu output y > 0, else 0."""
    return _backward("relu_backward", dy, y, ws)


def sigmoid(x, *, ws: Workspace | None = None) -> np.ndarray:
    """1 / (1 + exp(-x)), with no overflow for any finite x."""
    return _unary("sigmoid", x, ws)


def sigmoid_backward(dy, y, *, ws: Workspace | None = None) -> np.ndarray:
    """dy * y * (1 - y) for y the sigmoid output."""
    return _backward("sigmoid_backward", dy, y, ws)


def tanh(x, *, ws: Workspace | None = None) -> np.ndarray:
    return _unary("tanh", x, ws)


def tanh_backward(dy, y, *, ws: Workspace | None = None) -> np.ndarray:
    """dy * (1 - y^2) for y the tanh output."""
    return _backward("tanh_backward", dy, y, ws)


def softmax(x, *, ws: Workspace | None = None) -> np.ndarray:
    """Row-wise softmax of a 2-D array, stable for any finite logits."""
    x = as_float32("x", x, ndim=2)
    nonempty("x", x)
    p = buffer(ws, "p", x.shape)
    impl("softmax")(x, p)
    return p
