"""ReLU, Sigmoid, Tanh. After a Dense layer in a Sequential, ReLU and Sigmoid are fused into the
Dense epilogue (`fused = True`): their forward then passes the already-activated input through."""

from __future__ import annotations

from .. import kernels as K
from .base import Layer


class _Activation(Layer):
    kernel = ""

    def __init__(self) -> None:
        super().__init__()
        self.fused = False

    def forward(self, x, train=True):
        self.y = x if self.fused else getattr(K, self.kernel)(x, ws=self.ws)
        return self.y

    def backward(self, dy):
        return getattr(K, self.kernel + "_backward")(dy, self.y, ws=self.ws)


class ReLU(_Activation):
    kernel = "relu"


class Sigmoid(_Activation):
    kernel = "sigmoid"


class Tanh(_Activation):
    kernel = "tanh"
