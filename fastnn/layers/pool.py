"""MaxPool2D and Flatten: layers without parameters that change the shape."""

from __future__ import annotations

from .. import kernels as K
from .base import Layer


class MaxPool2D(Layer):
    def __init__(self, pool_size: int = 2, stride: int | None = None) -> None:
        super().__init__()
        self.pool_size = K._check.positive_int("pool_size", pool_size)
        self.stride = self.pool_size if stride is None else K._check.positive_int("stride", stride)
        self.relu = False  # set by Sequential for ReLU -> MaxPool2D: the ReLU runs here, after

    def forward(self, x, train=True):
        self.x_shape = x.shape
        y, self.argmax = K.maxpool2d_forward(x, self.pool_size, self.stride, ws=self.ws)
        if self.relu:  # relu(max(window)) = max(relu(window)), on 1/4 of the elements
            y = self.y = K.relu(y, ws=self.ws.child("relu"))
        return y

    def backward(self, dy):
        if self.relu:  # the gradient reaches only the argmax, where the ReLU's mask is y > 0
            dy = K.relu_backward(dy, self.y, ws=self.ws.child("relu"))
        return K.maxpool2d_backward(dy, self.argmax, self.x_shape, self.pool_size, self.stride,
                                    ws=self.ws)

    def output_shape(self, input_shape):
        C, H, W = input_shape
        k, s = self.pool_size, self.stride
        return (C, (H - k) // s + 1, (W - k) // s + 1)

    def get_config(self):
        return {"pool_size": self.pool_size, "stride": self.stride}


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)): a view, no copy."""

    def forward(self, x, train=True):
        x = K._check.as_float32("x", x)
        self.x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self.x_shape)

    def output_shape(self, input_shape):
        n = 1
        for s in input_shape:
            n *= s
        return (n,)
