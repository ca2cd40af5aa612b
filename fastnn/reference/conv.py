"""Convolution as im2col + one GEMM (the reference form).

cols has one row per output pixel, ordered (n, oh, ow), and one column per weight, ordered
(c, i, j): then y = cols @ W.reshape(F, -1).T, and the backward pass is two more GEMMs and col2im.
"""

import numpy as np


def _out_size(size: int, k: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - k) // stride + 1


def im2col(x, kh, kw, stride, pad, cols):
    N, C, H, W = x.shape
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    col = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = xp[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride]
    cols[...] = col.transpose(0, 4, 5, 1, 2, 3).reshape(N * OH * OW, C * kh * kw)


def col2im(cols, kh, kw, stride, pad, dx):
    N, C, H, W = dx.shape
    OH, OW = _out_size(H, kh, stride, pad), _out_size(W, kw, stride, pad)
    col = cols.reshape(N, OH, OW, C, kh, kw).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i : i + stride * OH : stride, j : j + stride * OW : stride] += col[:, :, i, j]
    dx[...] = dxp[:, :, pad : pad + H, pad : pad + W]


def conv2d_forward(x, W, b, stride, pad, y, cols, tmp):
    F, C, kh, kw = W.shape
    N, _, OH, OW = y.shape
    im2col(x, kh, kw, stride, pad, cols)
    np.matmul(cols, W.reshape(F, -1).T, out=tmp)  # (N*OH*OW, F)
    y[...] = tmp.reshape(N, OH, OW, F).transpose(0, 3, 1, 2) + b.reshape(1, F, 1, 1)


def conv2d_backward(dy, cols, W, stride, pad, dx, dW, db, dyt, dcols):
    F, C, kh, kw = W.shape
    dyt[...] = dy.transpose(0, 2, 3, 1).reshape(-1, F)  # (N*OH*OW, F)
    db[...] = dyt.sum(axis=0)
    np.matmul(dyt.T, cols, out=dW.reshape(F, -1))
    if dx is None:  # skipped: nobody needs dL/dx (the first layer)
        return
    np.matmul(dyt, W.reshape(F, -1), out=dcols)
    col2im(dcols, kh, kw, stride, pad, dx)
