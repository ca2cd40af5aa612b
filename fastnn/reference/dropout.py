"""Inverted dropout on flat arrays: keep where u >= rate, scale kept values by 1/(1 - rate).

u holds uniform [0, 1) float32 draws from the caller's seeded numpy.random.Generator, so every
backend makes the same mask from the same seed."""

import numpy as np


def dropout_forward(x, u, rate, y, mask):
    np.greater_equal(u, np.float32(rate), out=mask.view(np.bool_))
    y[...] = x * mask * np.float32(1.0 / (1.0 - rate))


def dropout_backward(dy, mask, rate, dx):
    dx[...] = dy * mask * np.float32(1.0 / (1.0 - rate))
