"""Inverted dropout on flat arrays for the Numba backend (see fastnn/reference/dropout.py).

mask = (u >= rate) as uint8; y = x * mask * (1 / (1 - rate)), one fused pass. u comes from the
caller's seeded numpy Generator, so every backend draws the same mask.
"""

import numpy as np
from numba import njit, prange

from ._common import PARALLEL_MIN_WORK

CHUNK = 4096  # elements per prange task (fixed, not thread-derived)

_f32 = np.float32


@njit(cache=True, nogil=True, error_model="numpy")
def _fwd_rng(x, u, rate, scale, y, mask):
    for i in range(x.size):
        k = u[i] >= rate
        mask[i] = np.uint8(1) if k else np.uint8(0)
        # x * mask * scale, as the reference (x * 0 keeps NaN/inf semantics)
        y[i] = x[i] * (_f32(1.0) if k else _f32(0.0)) * scale


@njit(cache=True, nogil=True, error_model="numpy")
def _fwd_ser(x, u, rate, scale, y, mask):
    _fwd_rng(x, u, rate, scale, y, mask)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _fwd_par(x, u, rate, scale, y, mask):
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _fwd_rng(x[s:e], u[s:e], rate, scale, y[s:e], mask[s:e])


def dropout_forward(x, u, rate, y, mask):
    args = (x, u, np.float32(rate), np.float32(1.0 / (1.0 - rate)), y, mask)
    if x.size >= PARALLEL_MIN_WORK:
        _fwd_par(*args)
    else:
        _fwd_ser(*args)


@njit(cache=True, nogil=True, error_model="numpy")
def _bwd_rng(dy, mask, scale, dx):
    for i in range(dy.size):
        dx[i] = dy[i] * _f32(mask[i]) * scale


@njit(cache=True, nogil=True, error_model="numpy")
def _bwd_ser(dy, mask, scale, dx):
    _bwd_rng(dy, mask, scale, dx)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _bwd_par(dy, mask, scale, dx):
    n = dy.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _bwd_rng(dy[s:e], mask[s:e], scale, dx[s:e])


def dropout_backward(dy, mask, rate, dx):
    scale = np.float32(1.0 / (1.0 - rate))
    if dy.size >= PARALLEL_MIN_WORK:
        _bwd_par(dy, mask, scale, dx)
    else:
        _bwd_ser(dy, mask, scale, dx)
