"""Losses: `forward(outputs, targets) -> float` (the batch mean) and `backward() -> doutputs`.
Each also reports `accuracy(outputs, targets)` for training logs."""

from __future__ import annotations

import numpy as np

from . import kernels as K
from .kernels._check import as_float32, labels_int64


class Loss:
    def __init__(self) -> None:
        self.ws = K.Workspace()
        self.grad = None

    def backward(self) -> np.ndarray:
        if self.grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward() called before forward()")
        return self.grad

    def get_config(self) -> dict:
        return {}


def _targets_as_labels(targets, n: int, c: int):
    """Integer labels (N,) stay labels; exact one-hot (N, C) becomes labels; any other (N, C)
    float array is a soft target distribution (returned as float32)."""
    t = np.asarray(targets)
    if t.ndim == 1:
        return t, None
    if t.ndim == 2 and t.shape == (n, c):
        if t.dtype.kind == "f":
            lab = t.argmax(axis=1)
            if np.array_equal(t, np.eye(c, dtype=t.dtype)[lab]):
                return lab, None
            return None, as_float32("targets", t)
        return None, as_float32("targets", t.astype(np.float32))
    raise ValueError(f"targets: expected integer labels ({n},) or one-hot ({n}, {c}), got shape {t.shape}")


class SoftmaxCrossEntropy(Loss):
    """Softmax + cross-entropy in one fused kernel; integer labels or one-hot (soft) targets."""

    def forward(self, outputs, targets) -> float:
        outputs = as_float32("outputs", outputs, ndim=2)
        labels, soft = _targets_as_labels(targets, *outputs.shape)
        if labels is not None:
            loss, self.grad = K.softmax_cross_entropy(outputs, labels, ws=self.ws)
            return loss
        if np.any(soft < 0) or not np.allclose(soft.sum(1), 1, atol=1e-4):
            raise ValueError("targets: expected rows of non-negative probabilities summing to 1")
        p = K.softmax(outputs, ws=self.ws)
        n = outputs.shape[0]
        logp = np.log(np.maximum(p, np.finfo(np.float32).tiny))
        self.grad = (p - soft) / np.float32(n)
        return float(-(soft * logp).sum(dtype=np.float64) / n)

    @staticmethod
    def accuracy(outputs, targets) -> float:
        t = np.asarray(targets)
        labels = t if t.ndim == 1 else t.argmax(axis=1)
        return float((outputs.argmax(axis=1) == labels).mean())


class SigmoidBinaryCrossEntropy(Loss):
    """Binary cross-entropy on logits (stable): targets in [0, 1], same shape as the outputs."""

    def forward(self, outputs, targets) -> float:
        t = np.asarray(targets)
        if t.dtype.kind in "iub":  # 0/1 integer or boolean labels
            t = t.astype(np.float32)
        loss, self.grad = K.sigmoid_binary_cross_entropy(outputs, t, ws=self.ws)
        return loss

    @staticmethod
    def accuracy(outputs, targets) -> float:
        t = np.asarray(targets).reshape(np.shape(outputs))
        return float(((outputs > 0) == (t > 0.5)).mean())


class MeanSquaredError(Loss):
    """The mean of (outputs - targets)^2 over all elements."""

    def forward(self, outputs, targets) -> float:
        outputs = as_float32("outputs", outputs)
        t = np.asarray(targets)
        if t.shape != outputs.shape and t.ndim == 1 and outputs.ndim == 2 and t.dtype.kind in "iu":
            # labels -> one-hot; checked first, as a label of -1 would silently index the last class
            t = labels_int64("targets", t, *outputs.shape)
            t = np.eye(outputs.shape[1], dtype=np.float32)[t]
        loss, self.grad = K.mse(outputs, t, ws=self.ws)
        return loss

    @staticmethod
    def accuracy(outputs, targets) -> float:
        t = np.asarray(targets)
        if outputs.ndim == 2 and outputs.shape[1] > 1:
            labels = t if t.ndim == 1 else t.argmax(axis=1)
            return float((outputs.argmax(axis=1) == labels).mean())
        return float("nan")


LOSS_TYPES = {c.__name__: c for c in (SoftmaxCrossEntropy, SigmoidBinaryCrossEntropy, MeanSquaredError)}
