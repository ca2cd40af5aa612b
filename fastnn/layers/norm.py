"""BatchNorm over features (N, F) or per channel (N, C, H, W). Training normalises with the batch
statistics and updates the running ones (running = momentum * running + (1 - momentum) * batch);
inference uses the running statistics."""

from __future__ import annotations

import numpy as np

from .. import kernels as K
from .base import Layer


class BatchNorm(Layer):
    def __init__(self, num_features: int, momentum: float = 0.9, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = K._check.positive_int("num_features", num_features)
        self.momentum = K._check.finite_float("momentum", momentum, minimum=0.0, maximum=1.0)
        self.eps = K._check.finite_float("eps", eps, minimum=0.0, min_open=True)
        self._new_params(gamma=np.ones(num_features, np.float32),
                         beta=np.zeros(num_features, np.float32))
        self.state = {"running_mean": np.zeros(num_features, np.float32),
                      "running_var": np.ones(num_features, np.float32)}

    def forward(self, x, train=True):
        x = K._check.as_float32("x", x)
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm: expected input (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W), got {getattr(x, 'shape', x)}")
        self.x = x
        y, self.mean, self.invstd = K.batchnorm_forward(
            x, self.params["gamma"], self.params["beta"], self.state["running_mean"],
            self.state["running_var"], self.momentum, self.eps, train, ws=self.ws)
        return y

    def backward(self, dy):
        dx, _, _ = K.batchnorm_backward(dy, self.x, self.params["gamma"], self.mean, self.invstd,
                                        ws=self.ws)
        return dx

    def get_config(self):
        return {"num_features": self.num_features, "momentum": self.momentum, "eps": self.eps}
