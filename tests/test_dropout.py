"""Dropout with a seeded generator: the same seed gives the same mask on every backend."""

import numpy as np
import pytest
from conftest import randn

from fastnn import backend
from fastnn import kernels as K


@pytest.mark.parametrize("shape", [(1,), (10, 7), (64, 32, 8, 8)])
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.9])
def test_dropout_forward_backward(backend_name, shape, rate, rng):
    x, dy = randn(rng, *shape), randn(rng, *shape)
    y, mask = K.dropout_forward(x, rate, np.random.default_rng(7))
    u = np.random.default_rng(7).random(x.size, dtype=np.float32).reshape(shape)
    keep = u >= np.float32(rate)
    assert mask.dtype == np.uint8 and y.dtype == np.float32
    np.testing.assert_array_equal(mask, keep)
    scale = np.float32(1 / (1 - rate))
    np.testing.assert_allclose(y, np.where(keep, x * scale, 0), rtol=1e-6)
    dx = K.dropout_backward(dy, mask, rate)
    np.testing.assert_allclose(dx, np.where(keep, dy * scale, 0), rtol=1e-6)


def test_dropout_same_seed_same_mask_on_every_backend(rng):
    x = randn(rng, 1000)
    masks = []
    for name in backend.available():
        with backend.using(name):
            masks.append(K.dropout_forward(x, 0.5, 123)[1])
    for m in masks[1:]:
        np.testing.assert_array_equal(m, masks[0])
    assert 400 < int(masks[0].sum()) < 600


def test_dropout_keeps_expected_fraction(backend_name):
    x = np.ones(200_000, np.float32)
    y, mask = K.dropout_forward(x, 0.25, 0)
    assert abs(mask.mean() - 0.75) < 0.01
    assert abs(y.mean() - 1.0) < 0.01  # inverted dropout keeps the expectation
