"""Batch normalisation kernels, validated. x is (N, F) (per feature) or (N, C, H, W) (per
channel); both run as an (N, C, L) view. Running statistics follow the Keras/"Deep Learning from
Scratch" convention: running = momentum * running + (1 - momentum) * batch (biased variance)."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import Workspace, as_float32, buffer, finite_float, inplace_float32, same_shape


def _view3(name, x):
    x = as_float32(name, x, ndim=(2, 4))
    if x.shape[0] < 1 or x.size == 0:
        raise ValueError(f"{name}: expected a non-empty batch, got shape {x.shape}")
    N, C = x.shape[:2]
    return x, x.reshape(N, C, -1)


def _channel(name, a, C):
    a = as_float32(name, a, ndim=1)
    same_shape(name, a, (C,), "the channels (x.shape[1])")
    return a


def batchnorm_forward(x, gamma, beta, running_mean, running_var, momentum=0.9, eps=1e-5,
                      train=True, *, ws: Workspace | None = None):
    """(y, mean, invstd). train=True normalises with the batch statistics and updates
    running_mean/running_var in place; train=False uses the running statistics (mean and invstd
    returned are then those)."""
    x, x3 = _view3("x", x)
    C = x.shape[1]
    gamma = _channel("gamma", gamma, C)
    beta = _channel("beta", beta, C)
    running_mean = inplace_float32("running_mean", running_mean, (C,))
    running_var = inplace_float32("running_var", running_var, (C,))
    momentum = finite_float("momentum", momentum, minimum=0.0, maximum=1.0)
    eps = finite_float("eps", eps, minimum=0.0, min_open=True)
    y = buffer(ws, "y", x.shape)
    mean = buffer(ws, "mean", (C,))
    invstd = buffer(ws, "invstd", (C,))
    if train:
        impl("batchnorm_forward_train")(x3, gamma, beta, eps, y.reshape(x3.shape), mean, invstd)
        var = 1.0 / invstd.astype(np.float64) ** 2 - eps
        running_mean *= np.float32(momentum)
        running_mean += np.float32(1 - momentum) * mean
        running_var *= np.float32(momentum)
        running_var += (np.float32(1 - momentum) * np.maximum(var, 0.0)).astype(np.float32)
    else:
        mean[...] = running_mean
        invstd[...] = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        scale = gamma * invstd
        shift = beta - mean * scale
        impl("batchnorm_forward_infer")(x3, scale, shift, y.reshape(x3.shape))
    return y, mean, invstd


def batchnorm_backward(dy, x, gamma, mean, invstd, *, ws: Workspace | None = None):
    """(dx, dgamma, dbeta) for the training-mode forward that returned mean and invstd."""
    x, x3 = _view3("x", x)
    C = x.shape[1]
    dy = as_float32("dy", dy)
    same_shape("dy", dy, x.shape, "x")
    gamma = _channel("gamma", gamma, C)
    mean = _channel("mean", mean, C)
    invstd = _channel("invstd", invstd, C)
    dx = buffer(ws, "dx", x.shape)
    dgamma = buffer(ws, "dgamma", (C,))
    dbeta = buffer(ws, "dbeta", (C,))
    impl("batchnorm_backward")(dy.reshape(x3.shape), x3, gamma, mean, invstd, dx.reshape(x3.shape),
                               dgamma, dbeta)
    return dx, dgamma, dbeta
