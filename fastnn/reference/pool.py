"""Max pooling over (ph, pw) windows; argmax holds the flat index i * W + j of each window's
maximum within its (H, W) input plane (int32, PyTorch's convention). Ties go to the first maximum in
row-major window order; a NaN in a window wins, as in PyTorch."""

import numpy as np


def maxpool2d_forward(x, ph, pw, stride, y, argmax):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    # windows[n, c, oh, ow, i, j] = x[n, c, oh*stride + i, ow*stride + j]
    sn, sc, sh, sw = x.strides
    windows = np.lib.stride_tricks.as_strided(
        x, (N, C, OH, OW, ph, pw), (sn, sc, sh * stride, sw * stride, sh, sw), writeable=False
    ).reshape(N, C, OH, OW, ph * pw)
    k = np.argmax(windows, axis=-1)  # first maximum; NaN counts as the maximum
    y[...] = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]
    i, j = np.divmod(k, pw)
    oh = np.arange(OH).reshape(OH, 1)
    ow = np.arange(OW).reshape(1, OW)
    argmax[...] = (oh * stride + i) * W + (ow * stride + j)


def maxpool2d_backward(dy, argmax, dx):
    """dx = dy added at each argmax; False (dx untouched) when an index is outside [0, H*W)."""
    N, C, H, W = dx.shape
    if argmax.size and (argmax.min() < 0 or argmax.max() >= H * W):
        return False
    dx[...] = 0
    flat = dx.reshape(N * C, H * W)
    rows = np.arange(N * C).reshape(-1, 1)
    np.add.at(flat, (rows, argmax.reshape(N * C, -1)), dy.reshape(N * C, -1))
    return True
