"""Inverted dropout kernels, validated. The mask comes from a seeded numpy.random.Generator, so
the same seed gives the same mask on every backend."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import Workspace, as_float32, buffer, finite_float, nonempty, same_shape


def as_generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng: expected a numpy.random.Generator, an int seed or None, got {rng!r}")


def dropout_forward(x, rate, rng=None, *, ws: Workspace | None = None):
    """(y, mask): each element kept with probability 1 - rate and scaled by 1 / (1 - rate);
    mask is uint8 (1 = kept)."""
    x = as_float32("x", x)
    nonempty("x", x)
    rate = finite_float("rate", rate, minimum=0.0, maximum=1.0, max_open=True)
    rng = as_generator(rng)
    u = buffer(ws, "u", (x.size,))
    rng.random(out=u, dtype=np.float32)
    y = buffer(ws, "y", x.shape)
    mask = buffer(ws, "mask", x.shape, np.uint8)
    impl("dropout_forward")(x.reshape(-1), u, rate, y.reshape(-1), mask.reshape(-1))
    return y, mask


def dropout_backward(dy, mask, rate, *, ws: Workspace | None = None) -> np.ndarray:
    """dx = dy * mask / (1 - rate)."""
    dy = as_float32("dy", dy)
    nonempty("dy", dy)
    rate = finite_float("rate", rate, minimum=0.0, maximum=1.0, max_open=True)
    if not isinstance(mask, np.ndarray) or mask.dtype not in (np.uint8, np.bool_):
        raise TypeError(f"mask: expected the uint8 mask from dropout_forward, got "
                        f"{getattr(mask, 'dtype', type(mask).__name__)}")
    same_shape("mask", mask, dy.shape, "dy")
    mask = np.ascontiguousarray(mask).view(np.uint8)
    dx = buffer(ws, "dx", dy.shape)
    impl("dropout_backward")(dy.reshape(-1), mask.reshape(-1), rate, dx.reshape(-1))
    return dx
