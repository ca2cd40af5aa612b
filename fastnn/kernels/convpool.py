"""A first convolution block, Conv2D (stride 1) -> ReLU -> MaxPool2D(2), as one kernel: validated,
on the current backend. The math: fastnn/reference/convpool.py."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import Workspace, as_float32, buffer, nonempty, same_shape
from .conv import _conv_args


def _pooled_shape(x, W, pad):
    x, W, _, pad, OH, OW = _conv_args(x, W, 1, pad)
    if OH < 2 or OW < 2:
        raise ValueError(f"x: expected a convolution output of at least 2x2 for 2x2 pooling, got "
                         f"{OH}x{OW} (input {x.shape[2]}x{x.shape[3]}, kernel "
                         f"{W.shape[2]}x{W.shape[3]}, pad {pad})")
    return x, W, pad, (x.shape[0], W.shape[0], OH // 2, OW // 2)


def conv2d_relu_pool_forward(x, W, b, pad=0, *, ws: Workspace | None = None):
    """(p, argmax): p = relu(maxpool2d(conv2d(x, W, b, stride 1, pad), 2x2, stride 2)), argmax the
    int32 flat index oh * OW + ow of each window's maximum in its (OH, OW) convolution plane (the
    first maximum in row-major window order; a NaN wins). The convolution's output is never
    stored."""
    x, W, pad, shape = _pooled_shape(x, W, pad)
    b = as_float32("b", b, ndim=1)
    same_shape("b", b, (W.shape[0],), "W.shape[0], the output channels")
    p = buffer(ws, "p", shape)
    argmax = buffer(ws, "argmax", shape, np.int32)
    impl("conv2d_relu_pool_forward")(x, W, b, pad, p, argmax)
    return p, argmax


def conv2d_relu_pool_backward(dp, p, argmax, x, W, pad=0, *, ws: Workspace | None = None):
    """(dW, db) for dp = dL/dp, from the forward's p and argmax (the block is a first layer: no dx).
    """
    x, W, pad, shape = _pooled_shape(x, W, pad)
    dp = as_float32("dp", dp, ndim=4)
    same_shape("dp", dp, shape, "the conv2d_relu_pool_forward output")
    p = as_float32("p", p, ndim=4)
    same_shape("p", p, shape, "the conv2d_relu_pool_forward output")
    nonempty("x", x)
    if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax: expected the int32 array from conv2d_relu_pool_forward, got "
                        f"{getattr(argmax, 'dtype', type(argmax).__name__)}")
    same_shape("argmax", argmax, shape, "dp")
    OHW = (x.shape[2] + 2 * pad - W.shape[2] + 1) * (x.shape[3] + 2 * pad - W.shape[3] + 1)
    if argmax.dtype != np.int32 and argmax.size and (int(argmax.min()) < 0
                                                     or int(argmax.max()) >= OHW):
        _out_of_range(argmax, OHW)
    argmax32 = np.ascontiguousarray(argmax, dtype=np.int32)
    dW = buffer(ws, "dW", W.shape)
    db = buffer(ws, "db", (W.shape[0],))
    if not impl("conv2d_relu_pool_backward")(dp, p, argmax32, x, pad, dW, db):
        _out_of_range(argmax, OHW)
    return dW, db


def _out_of_range(argmax, OHW):
    raise ValueError(f"argmax: expected indices in [0, {OHW}) (OH*OW of the convolution), got "
                     f"[{int(argmax.min())}, {int(argmax.max())}]")
