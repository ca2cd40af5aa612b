"""Winograd F(2x2, 3x3): a 3x3, stride-1 convolution with 16 multiplies per 2x2 output tile
instead of 36 (Lavin & Gray, 2015). The readable NumPy form of what the Cython backend runs for
such layers (kernels/_winograd.pxi); the reference conv2d (im2col + GEMM) stays the oracle.

Every output tile y (2x2) at (2ty, 2tx) comes from the 4x4 input tile d at (2ty - pad, 2tx - pad):
    y = A^T [ (G g G^T) * (B^T d B) ] A          (* elementwise; g the 3x3 filter)
Summed over input channels, each of the 16 positions of the 4x4 product is one GEMM:
    M[p] (F, tiles) = U[p] (F, C) @ V[p] (C, tiles),   U = G g G^T,  V = B^T d B
The backward pass is the adjoint of each step:
    dM = A dy A^T ;  dU[p] = dM[p] @ V[p].T ;  dW = G^T dU G ;  dV[p] = U[p].T @ dM[p] ;
    dx = the sum over tiles of B dV B^T, each added back at its tile's pixels.
"""

import numpy as np

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def tile_counts(H: int, W: int, pad: int) -> tuple[int, int, int, int]:
    """(OH, OW, TH, TW): output size and 2x2 tiles per column and row (the last may overhang)."""
    OH, OW = H + 2 * pad - 2, W + 2 * pad - 2
    return OH, OW, (OH + 1) // 2, (OW + 1) // 2


def transform_weights(W):
    """U (F, C, 4, 4) = G g G^T for every 3x3 filter g = W[f, c]."""
    return G.astype(W.dtype) @ W @ G.T.astype(W.dtype)


def input_tiles(x, pad):
    """V (N, C, TH, TW, 4, 4) = B^T d B for every 4x4 input tile d (zero outside the image)."""
    N, C, H, W = x.shape
    OH, OW, TH, TW = tile_counts(H, W, pad)
    xp = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), x.dtype)
    h, w = min(H, 2 * TH + 2 - pad), min(W, 2 * TW + 2 - pad)
    xp[:, :, pad : pad + h, pad : pad + w] = x[:, :, :h, :w]
    d = np.lib.stride_tricks.sliding_window_view(xp, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    bt = BT.astype(x.dtype)
    return bt @ d @ bt.T


def conv3x3_forward(x, W, b, pad):
    """y (N, F, OH, OW) = conv(x, W) + b; also returns V for the backward pass."""
    N, C, H, Wd = x.shape
    OH, OW, TH, TW = tile_counts(H, Wd, pad)
    V = input_tiles(x, pad)
    M = np.einsum("fcij,nctuij->nftuij", transform_weights(W), V)
    at = AT.astype(x.dtype)
    Y = at @ M @ at.T  # (N, F, TH, TW, 2, 2)
    y = Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, W.shape[0], 2 * TH, 2 * TW)[:, :, :OH, :OW]
    return y + b.reshape(1, -1, 1, 1), V


def conv3x3_backward(dy, V, W, x_shape, pad):
    """(dx, dW, db) from dy and the V of the forward pass."""
    N, C, H, Wd = x_shape
    F = W.shape[0]
    OH, OW, TH, TW = tile_counts(H, Wd, pad)
    dyp = np.zeros((N, F, 2 * TH, 2 * TW), dy.dtype)
    dyp[:, :, :OH, :OW] = dy
    dY = dyp.reshape(N, F, TH, 2, TW, 2).transpose(0, 1, 2, 4, 3, 5)  # (N, F, TH, TW, 2, 2)
    at = AT.astype(dy.dtype)
    dM = at.T @ dY @ at
    dU = np.einsum("nftuij,nctuij->fcij", dM, V)
    g = G.astype(dy.dtype)
    dW = g.T @ dU @ g
    dV = np.einsum("fcij,nftuij->nctuij", transform_weights(W), dM)
    bt = BT.astype(dy.dtype)
    dd = bt.T @ dV @ bt  # (N, C, TH, TW, 4, 4)
    dxp = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), dy.dtype)
    for i in range(4):
        for j in range(4):
            dxp[:, :, i : i + 2 * TH : 2, j : j + 2 * TW : 2] += dd[..., i, j]
    dx = np.zeros(x_shape, dy.dtype)
    h, w = min(H, 2 * TH + 2 - pad), min(Wd, 2 * TW + 2 - pad)
    dx[:, :, :h, :w] = dxp[:, :, pad : pad + h, pad : pad + w]
    return dx, dW, dy.sum(axis=(0, 2, 3))
