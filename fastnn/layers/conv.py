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
