"""Losses fused with their gradients: each returns the mean loss (a Python float) and writes the
gradient with respect to its input, already divided by the number of rows (or elements)."""

import numpy as np


def softmax_cross_entropy(logits, labels, dlogits):
    N = logits.shape[0]
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        return -1.0  # a label outside [0, C): nothing computed (NumPy would wrap -1 silently)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(N)
    loss = np.log(s[:, 0]) - z[rows, labels]  # log-sum-exp minus the true logit
    dlogits[...] = e / s
    dlogits[rows, labels] -= 1
    dlogits /= N
    return float(loss.astype(np.float64).mean())


def sigmoid_binary_cross_entropy(logits, targets, dlogits):
    """Stable BCE on logits: max(z, 0) - z*t + log(1 + exp(-|z|))."""
    z, t = logits, targets
    loss = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    e = np.exp(-np.abs(z))
    p = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    dlogits[...] = (p - t) / z.size
    return float(loss.astype(np.float64).mean())


def mse(pred, target, dpred):
    d = pred - target
    dpred[...] = d * np.float32(2.0 / d.size)
    return float((d.astype(np.float64) ** 2).mean())
