"""Inverted dropout: in training each unit is kept with probability 1 - rate and scaled by
1 / (1 - rate); in inference it is the identity. Masks come from the layer's seeded Generator."""

from __future__ import annotations

import numpy as np

from .. import kernels as K
from .base import Layer


class Dropout(Layer):
    def __init__(self, rate: float, seed=None) -> None:
        super().__init__()
        self.rate = K._check.finite_float("rate", rate, minimum=0.0, maximum=1.0, max_open=True)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.mask = None

    def forward(self, x, train=True):
        x = K._check.as_float32("x", x)
        if not train or self.rate == 0.0:
            self.mask = None
            return x
        y, self.mask = K.dropout_forward(x, self.rate, self.rng, ws=self.ws)
        return y

    def backward(self, dy):
        if self.mask is None:
            return dy
        return K.dropout_backward(dy, self.mask, self.rate, ws=self.ws)

    def get_config(self):
        return {"rate": self.rate, "seed": self.seed}
