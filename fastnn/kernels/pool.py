"""Max pooling kernels, validated. argmax is int32: the flat index i*W + j of each window's
maximum in its (H, W) input plane (PyTorch's convention)."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import Workspace, as_float32, buffer, nonempty, positive_int, same_shape


def _pool_geometry(shape, pool_size, stride):
    ph = pw = positive_int("pool_size", pool_size)
    stride = ph if stride is None else positive_int("stride", stride)
    N, C, H, W = shape
    if ph > H or pw > W:
        raise ValueError(f"pool_size: expected <= the input's height {H} and width {W}, got {ph}")
    return ph, pw, stride, (H - ph) // stride + 1, (W - pw) // stride + 1


def maxpool2d_forward(x, pool_size=2, stride=None, *, ws: Workspace | None = None):
    """(y, argmax) for max pooling over pool_size x pool_size windows (stride defaults to the
    window size). Ties go to the first maximum in row-major window order."""
    x = as_float32("x", x, ndim=4)
    nonempty("x", x)
    ph, pw, stride, OH, OW = _pool_geometry(x.shape, pool_size, stride)
    N, C = x.shape[:2]
    y = buffer(ws, "y", (N, C, OH, OW))
    argmax = buffer(ws, "argmax", (N, C, OH, OW), np.int32)
    impl("maxpool2d_forward")(x, ph, pw, stride, y, argmax)
    return y, argmax


def maxpool2d_backward(dy, argmax, x_shape, pool_size=2, stride=None, *,
                       ws: Workspace | None = None) -> np.ndarray:
    """dx (x_shape) with dy added at each window's argmax."""
    try:
        x_shape = tuple(int(s) for s in x_shape)
    except TypeError:
        raise TypeError(f"x_shape: expected a shape tuple (N, C, H, W), got {x_shape!r}") from None
    if len(x_shape) != 4 or min(x_shape) < 1:
        raise ValueError(f"x_shape: expected (N, C, H, W) of positive sizes, got {x_shape}")
    ph, pw, stride, OH, OW = _pool_geometry(x_shape, pool_size, stride)
    N, C, H, W = x_shape
    dy = as_float32("dy", dy, ndim=4)
    same_shape("dy", dy, (N, C, OH, OW), "the maxpool2d_forward output")
    if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax: expected the integer array from maxpool2d_forward, got "
                        f"{getattr(argmax, 'dtype', type(argmax).__name__)}")
    same_shape("argmax", argmax, dy.shape, "dy")
    # Each backend checks the indices before it writes (in its compiled pass over them) and
    # returns False when one is outside [0, H*W). Other integer dtypes are checked here first:
    # the int32 conversion could wrap an out-of-range index into range.
    if argmax.dtype != np.int32 and argmax.size and (int(argmax.min()) < 0
                                                     or int(argmax.max()) >= H * W):
        _argmax_out_of_range(argmax, H * W)
    argmax32 = np.ascontiguousarray(argmax, dtype=np.int32)
    dx = buffer(ws, "dx", x_shape)
    if not impl("maxpool2d_backward")(dy, argmax32, dx):
        _argmax_out_of_range(argmax, H * W)
    return dx


def _argmax_out_of_range(argmax, HW):
    raise ValueError(f"argmax: expected indices in [0, {HW}) (H*W of x_shape), got "
                     f"[{int(argmax.min())}, {int(argmax.max())}]")
