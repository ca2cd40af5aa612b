"""Conv2D: cross-correlation of NCHW input with W (out_channels, in_channels, kh, kw) plus bias,
as im2col + one GEMM; the im2col columns of forward are reused by backward."""

from __future__ import annotations

import numpy as np

from .. import kernels as K
from .base import Layer, check_init, init_std


class Conv2D(Layer):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride: int = 1,
                 padding: int = 0, init="auto", seed=None) -> None:
        super().__init__()
        pos = K._check.positive_int
        self.in_channels = pos("in_channels", in_channels)
        self.out_channels = pos("out_channels", out_channels)
        ks = kernel_size if isinstance(kernel_size, (tuple, list)) else (kernel_size, kernel_size)
        if len(ks) != 2:
            raise ValueError(f"kernel_size: expected an int or a pair (kh, kw), got {kernel_size!r}")
        self.kernel_size = (pos("kernel_size", ks[0]), pos("kernel_size", ks[1]))
        self.stride = pos("stride", stride)
        self.padding = pos("padding", padding, minimum=0)
        check_init(init)
        self.init, self.seed = init, seed
        self.reset_parameters()

    def reset_parameters(self, activation_hint: str | None = None) -> None:
        rng = np.random.default_rng(self.seed)
        kh, kw = self.kernel_size
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        std = init_std(self.init, fan_in, fan_out, activation_hint)
        W = rng.standard_normal((self.out_channels, self.in_channels, kh, kw), dtype=np.float32)
        self._new_params(W=W * np.float32(std), b=np.zeros(self.out_channels, np.float32))

    def forward(self, x, train=True):
        x = K._check.as_float32("x", x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"Conv2D: expected input of shape (N, {self.in_channels}, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self.x = x
        return K.conv2d_forward(x, self.params["W"], self.params["b"], self.stride, self.padding,
                                ws=self.ws)

    def backward(self, dy):
        dx, _, _ = K.conv2d_backward(dy, self.x, self.params["W"], self.stride, self.padding,
                                     ws=self.ws, cols=self.ws["cols"],
                                     need_dx=getattr(self, "need_dx", True))
        return dx

    def output_shape(self, input_shape):
        _, H, W = input_shape
        (kh, kw), s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, (H + 2 * p - kh) // s + 1, (W + 2 * p - kw) // s + 1)

    def get_config(self):
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": self.stride,
                "padding": self.padding, "init": self.init, "seed": self.seed}


class ConvReLUPool:
    """Conv2D (stride 1) -> ReLU -> MaxPool2D(2) of a Sequential, run as one kernel
    (fastnn.kernels.conv2d_relu_pool_forward/backward): the convolution's output is never stored.
    Sequential runs it in place of the three layers when they open the network (no parameters
    before them: training never needs their dx); the layers themselves keep their own meaning when
    called directly. The gradients land in the Conv2D's `grads`."""

    def __init__(self, conv: Conv2D, relu, pool) -> None:
        self.conv, self.relu, self.pool = conv, relu, pool
        self.need_dx = True

    @property
    def params(self):
        return self.conv.params

    @property
    def grads(self):
        return self.conv.grads

    @property
    def state(self):
        return self.conv.state

    @property
    def ws(self):  # the step plans swap workspaces per layer: this one is the Conv2D's
        return self.conv.ws

    @ws.setter
    def ws(self, value):
        self.conv.ws = value

    def bind_grads(self, ws=None) -> None:
        self.conv.bind_grads(ws)

    def forward(self, x, train=True):
        conv = self.conv
        x = K._check.as_float32("x", x)
        if x.ndim != 4 or x.shape[1] != conv.in_channels:
            raise ValueError(f"Conv2D: expected input of shape (N, {conv.in_channels}, H, W), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self.x = x
        self.p, self.argmax = K.conv2d_relu_pool_forward(x, conv.params["W"], conv.params["b"],
                                                         conv.padding, ws=conv.ws.child("fused"))
        return self.p

    def backward(self, dp):
        conv, W, pad = self.conv, self.conv.params["W"], self.conv.padding
        if not self.need_dx:
            K.conv2d_relu_pool_backward(dp, self.p, self.argmax, self.x, W, pad, ws=conv.ws)
            return None
        # dx wanted (Sequential.backward): the unfused gradient; the columns are recomputed
        N, _, H, Wd = self.x.shape
        kh, kw = conv.kernel_size
        y_shape = (N, conv.out_channels, H + 2 * pad - kh + 1, Wd + 2 * pad - kw + 1)
        g = K.relu_backward(dp, self.p, ws=conv.ws.child("relu"))
        dy = K.maxpool2d_backward(g, self.argmax, y_shape, 2, ws=conv.ws.child("unpool"))
        dx, _, _ = K.conv2d_backward(dy, self.x, W, 1, pad, ws=conv.ws)
        return dx

    @staticmethod
    def fits(conv, relu, pool) -> bool:
        """Whether (conv, relu, pool) is a block this kernel runs: a stride-1 convolution with a
        small inner dimension (a network's first layer: direct convolution beats im2col + GEMM)
        and 2x2, stride-2 pooling."""
        from .activations import ReLU
        from .pool import MaxPool2D

        if not (type(conv) is Conv2D and type(relu) is ReLU and type(pool) is MaxPool2D):
            return False
        kh, kw = conv.kernel_size
        return (conv.stride == 1 and conv.in_channels * kh * kw <= 75
                and pool.pool_size == 2 and pool.stride == 2)
