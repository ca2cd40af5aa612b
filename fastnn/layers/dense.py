"""Dense: y = activation(x @ W + b), W (in_features, out_features); GEMM + fused epilogue."""

from __future__ import annotations

import numpy as np

from .. import kernels as K
from .base import Layer, check_init, init_std


class Dense(Layer):
    def __init__(self, in_features: int, out_features: int, activation: str | None = None,
                 init="auto", seed=None) -> None:
        super().__init__()
        self.in_features = K._check.positive_int("in_features", in_features)
        self.out_features = K._check.positive_int("out_features", out_features)
        K.dense.activation_code(activation)
        check_init(init)
        self.activation, self.init, self.seed = activation, init, seed
        self.fused = None  # set by Sequential when a ReLU/Sigmoid layer follows: fused epilogue
        self.reset_parameters()

    def reset_parameters(self, activation_hint: str | None = None) -> None:
        rng = np.random.default_rng(self.seed)
        act = self.activation or activation_hint
        std = init_std(self.init, self.in_features, self.out_features, act)
        W = rng.standard_normal((self.in_features, self.out_features), dtype=np.float32)
        self._new_params(W=W * np.float32(std), b=np.zeros(self.out_features, np.float32))

    def forward(self, x, train=True):
        x = K._check.as_float32("x", x)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"Dense: expected input of shape (N, {self.in_features}), got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        self.x = x
        act = self.activation or self.fused
        self.y = K.dense_forward(x, self.params["W"], self.params["b"], act, ws=self.ws)
        return self.y

    def backward(self, dy):
        if self.activation == "relu":
            dy = K.relu_backward(dy, self.y, ws=self.ws.child("act"))
        elif self.activation == "sigmoid":
            dy = K.sigmoid_backward(dy, self.y, ws=self.ws.child("act"))
        dx, _, _ = K.dense_backward(dy, self.x, self.params["W"], ws=self.ws,
                                    need_dx=getattr(self, "need_dx", True))
        return dx

    def output_shape(self, input_shape):
        return (self.out_features,)

    def get_config(self):
        return {"in_features": self.in_features, "out_features": self.out_features,
                "activation": self.activation, "init": self.init, "seed": self.seed}
