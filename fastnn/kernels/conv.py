"""Convolution kernels (im2col + GEMM), validated, on the current backend."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..backend import impl
from ._check import Workspace, as_float32, buffer, conv_out_size, nonempty, positive_int, same_shape


def _geometry(x_shape, kh, kw, stride, pad):
    kh = positive_int("kh", kh)
    kw = positive_int("kw", kw)
    stride = positive_int("stride", stride)
    pad = positive_int("pad", pad, minimum=0)
    N, C, H, W = x_shape
    OH = conv_out_size(H, kh, stride, pad, "height")
    OW = conv_out_size(W, kw, stride, pad, "width")
    return kh, kw, stride, pad, OH, OW


def _x_shape(name, shape):
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"{name}: expected a shape tuple (N, C, H, W), got {shape!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{name}: expected a shape (N, C, H, W) of positive sizes, got {shape}")
    return shape


def im2col(x, kh, kw, stride=1, pad=0, *, ws: Workspace | None = None) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*kh*kw), rows ordered (n, oh, ow), columns (c, i, j)."""
    x = as_float32("x", x, ndim=4)
    nonempty("x", x)
    kh, kw, stride, pad, OH, OW = _geometry(x.shape, kh, kw, stride, pad)
    N, C = x.shape[:2]
    cols = buffer(ws, "cols", (N * OH * OW, C * kh * kw))
    impl("im2col")(x, kh, kw, stride, pad, cols)
    return cols


def col2im(cols, x_shape, kh, kw, stride=1, pad=0, *, ws: Workspace | None = None) -> np.ndarray:
    """The adjoint of im2col: scatter-add columns back into an (N, C, H, W) image."""
    x_shape = _x_shape("x_shape", x_shape)
    cols = as_float32("cols", cols, ndim=2)
    kh, kw, stride, pad, OH, OW = _geometry(x_shape, kh, kw, stride, pad)
    N, C = x_shape[:2]
    same_shape("cols", cols, (N * OH * OW, C * kh * kw), f"im2col of x_shape {x_shape}")
    dx = buffer(ws, "dx", x_shape)
    impl("col2im")(cols, kh, kw, stride, pad, dx)
    return dx


def _conv_args(x, W, stride, pad):
    x = as_float32("x", x, ndim=4)
    W = as_float32("W", W, ndim=4)
    nonempty("x", x)
    nonempty("W", W)
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"W: expected {x.shape[1]} input channels (W.shape[1], the channels of x), "
                         f"got {W.shape[1]}")
    F, C, kh, kw = W.shape
    kh, kw, stride, pad, OH, OW = _geometry(x.shape, kh, kw, stride, pad)
    return x, W, stride, pad, OH, OW


def cols_layout(kernel: str = "conv2d_backward") -> str:
    """The layout of the columns the backend running `kernel` keeps between conv2d_forward and
    conv2d_backward: "rows" (im2col's, (N*OH*OW, C*kh*kw)) or "planes" (per image (C*kh*kw,
    OH*OW), the Cython backend's). Same size either way."""
    layout = getattr(backend._load(backend.resolve(kernel)), "conv_cols_layout", None)
    return "rows" if layout is None else layout()


def _conv_cols(x, F, kh, kw, stride, pad, cols, layout):
    if layout == "rows":
        impl("im2col")(x, kh, kw, stride, pad, cols)
    else:
        backend._load(backend.resolve("conv2d_backward")).conv_cols(x, kh, kw, stride, pad, cols,
                                                                    F)


def _scratch_size(kernel, x_shape, W_shape, stride, pad) -> int:
    """Floats of scratch the backend running `kernel` wants for this convolution in place of the
    reference's GEMM buffers (the Cython backend's Winograd path), or 0."""
    size = getattr(backend._load(backend.resolve(kernel)), "conv_scratch_size", None)
    if size is None:
        return 0
    F, C, kh, kw = W_shape
    return int(size(x_shape[0], C, x_shape[2], x_shape[3], F, kh, kw, stride, pad))


def conv2d_forward(x, W, b, stride=1, pad=0, *, ws: Workspace | None = None) -> np.ndarray:
    """y[n, f] = sum_c x[n, c] (cross-correlated with) W[f, c] + b[f]; NCHW in and out. With a
    workspace, ws["cols"] keeps the columns of x for conv2d_backward (in the backend's layout,
    see `cols_layout`, noted in the workspace)."""
    x, W, stride, pad, OH, OW = _conv_args(x, W, stride, pad)
    F = W.shape[0]
    b = as_float32("b", b, ndim=1)
    same_shape("b", b, (F,), "W.shape[0], the output channels")
    N = x.shape[0]
    rows, k = N * OH * OW, W.shape[1] * W.shape[2] * W.shape[3]
    y = buffer(ws, "y", (N, F, OH, OW))
    cols = buffer(ws, "cols", (rows, k))
    need = _scratch_size("conv2d_forward", x.shape, W.shape, stride, pad)
    tmp = buffer(ws, "conv_scratch", (1, need)) if need else buffer(ws, "gemm", (rows, F))
    impl("conv2d_forward")(x, W, b, stride, pad, y, cols, tmp)
    if ws is not None:
        ws.tag("cols", cols_layout("conv2d_forward"))
    return y


def conv2d_backward(dy, x, W, stride=1, pad=0, *, ws: Workspace | None = None,
                    cols: np.ndarray | None = None, need_dx: bool = True):
    """(dx, dW, db) for dy = dL/dy. `cols` may pass the columns of x that conv2d_forward left in
    the workspace (`ws["cols"]`), saving their computation; any other `cols` is taken as im2col(x)
    (and recomputed when the backend keeps another layout). With need_dx=False, dx is not
    computed and None is returned in its place (the first layer of a network)."""
    x, W, stride, pad, OH, OW = _conv_args(x, W, stride, pad)
    F, C, kh, kw = W.shape
    N = x.shape[0]
    dy = as_float32("dy", dy, ndim=4)
    same_shape("dy", dy, (N, F, OH, OW), "the conv2d_forward output")
    rows, k = N * OH * OW, C * kh * kw
    layout = cols_layout()
    if cols is not None:
        cols = as_float32("cols", cols, ndim=2)
        same_shape("cols", cols, (rows, k), "im2col of x")
        kept = ws is not None and "cols" in ws and cols is ws["cols"]
        given = ws.tagged("cols") if kept else "rows"
        if given != layout:  # not what this backend reads: compute its own
            cols = None
    if cols is None:
        cols = buffer(ws, "cols", (rows, k))
        _conv_cols(x, F, kh, kw, stride, pad, cols, layout)
        if ws is not None:
            ws.tag("cols", layout)
    dx = buffer(ws, "dx", x.shape) if need_dx else None
    dW = buffer(ws, "dW", W.shape)
    db = buffer(ws, "db", (F,))
    need = _scratch_size("conv2d_backward", x.shape, W.shape, stride, pad)
    if need:  # one scratch for everything (dcols is not read)
        dyt, dcols = buffer(ws, "conv_scratch", (1, need)), buffer(ws, "conv_nodcols", (1, 1))
    else:
        dyt, dcols = buffer(ws, "gemm", (rows, F)), buffer(ws, "dcols", (rows, k))
    impl("conv2d_backward")(dy, cols, W, stride, pad, dx, dW, db, dyt, dcols)
    return dx, dW, db
