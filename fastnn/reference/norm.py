"""Batch normalisation on a (N, C, L) view: per channel c over the N*L values (L = 1 for dense
input (N, F), L = H*W for images). Statistics are accumulated in float64 scalars, stored float32."""

import numpy as np


def batchnorm_forward_train(x, gamma, beta, eps, y, mean, invstd):
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=(0, 2))
    var = ((x64 - mu[None, :, None]) ** 2).mean(axis=(0, 2))  # biased, as in the paper
    mean[...] = mu
    invstd[...] = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    y[...] = gamma[None, :, None] * xhat + beta[None, :, None]


def batchnorm_forward_infer(x, scale, shift, y):
    """y = x * scale + shift per channel, with scale = gamma/sqrt(running_var + eps) and
    shift = beta - running_mean * scale folded by the caller."""
    y[...] = x * scale[None, :, None] + shift[None, :, None]


def batchnorm_backward(dy, x, gamma, mean, invstd, dx, dgamma, dbeta):
    M = x.shape[0] * x.shape[2]
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    dbeta[...] = dy.astype(np.float64).sum(axis=(0, 2))
    dgamma[...] = (dy.astype(np.float64) * xhat).sum(axis=(0, 2))
    k = (gamma * invstd / M)[None, :, None]
    dx[...] = k * (M * dy - dbeta[None, :, None] - xhat * dgamma[None, :, None])
