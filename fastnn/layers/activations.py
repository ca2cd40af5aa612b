"""ReLU, Sigmoid, Tanh. A Sequential fuses them into their neighbours (`fused`): after a Dense
layer, ReLU and Sigmoid run in the Dense epilogue (`fused = True`: forward passes the activated
input through, backward still applies the derivative); a ReLU before a MaxPool2D runs after the
pooling, on the 4x smaller output (`fused = "pool"`: forward and backward pass through; max and
ReLU commute, and the gradient is the same)."""

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
        if self.fused == "pool":
            return dy
        return getattr(K, self.kernel + "_backward")(dy, self.y, ws=self.ws)


class ReLU(_Activation):
    kernel = "relu"


class Sigmoid(_Activation):
    kernel = "sigmoid"


class Tanh(_Activation):
    kernel = "tanh"
