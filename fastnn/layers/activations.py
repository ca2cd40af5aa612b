"""ReLU, Sigmoid, Tanh. A Sequential fuses them into their neighbours (`fused`): after a Dense
layer, ReLU and Sigmoid run in the Dense epilogue (`fused = True`: forward passes the activated
input through, backward still applies the derivative); a ReLU before a MaxPool2D runs after the
pooling, on the 4x smaller output (`fused = "pool"`: forward and backward pass through; max and
ReLU commute, and the gradient is the same)."""

from __future__ import annotations

from .. import kernels as K
from .base import Layer


class _Activation(Layer):
    # Kernel names are class constants, never built per call: CPython's type-attribute cache keeps
    # a reference to every new name string that getattr looks up (up to 4096 of them).
    kernel = ""
    backward_kernel = ""

    def __init__(self) -> None:
        super().__init__()
        self.fused = False

    def forward(self, x, train=True):
        self.y = x if self.fused else getattr(K, self.kernel)(x, ws=self.ws)
        return self.y

    def backward(self, dy):
        if self.fused == "pool":
            return dy
        return getattr(K, self.backward_kernel)(dy, self.y, ws=self.ws)


class ReLU(_Activation):
    kernel = "relu"
    backward_kernel = "relu_backward"


class Sigmoid(_Activation):
    kernel = "sigmoid"
    backward_kernel = "sigmoid_backward"


class Tanh(_Activation):
    kernel = "tanh"
    backward_kernel = "tanh_backward"
