"""Loss kernels fused with their gradients, validated. Each returns (mean loss as a Python float,
gradient already divided by the batch)."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import Workspace, as_float32, buffer, labels_int64, nonempty, same_shape


def softmax_cross_entropy(logits, labels, *, ws: Workspace | None = None):
    """(loss, dlogits) for integer labels (N,) in [0, C): one fused pass over the logits."""
    logits = as_float32("logits", logits, ndim=2)
    nonempty("logits", logits)
    N, C = logits.shape
    labels = labels_int64("labels", labels, N, C, check_range=False)
    dlogits = buffer(ws, "dlogits", logits.shape)
    loss = impl("softmax_cross_entropy")(logits, labels, dlogits)
    if loss < 0:  # the kernel found a label outside [0, C) before touching anything
        labels_int64("labels", labels, N, C)  # raises, naming it
    return loss, dlogits


def sigmoid_binary_cross_entropy(logits, targets, *, ws: Workspace | None = None):
    """(loss, dlogits) for logits and targets in [0, 1] of the same shape; the mean over elements."""
    logits = as_float32("logits", logits)
    targets = as_float32("targets", targets)
    nonempty("logits", logits)
    same_shape("targets", targets, logits.shape, "logits")
    dlogits = buffer(ws, "dlogits", logits.shape)
    loss = impl("sigmoid_binary_cross_entropy")(logits.reshape(-1), targets.reshape(-1),
                                                dlogits.reshape(-1))
    return loss, dlogits


def mse(pred, target, *, ws: Workspace | None = None):
    """(loss, dpred): the mean of (pred - target)^2 over all elements and its gradient."""
    pred = as_float32("pred", pred)
    target = as_float32("target", target)
    nonempty("pred", pred)
    same_shape("target", target, pred.shape, "pred")
    dpred = buffer(ws, "dpred", pred.shape)
    loss = impl("mse")(pred.reshape(-1), target.reshape(-1), dpred.reshape(-1))
    return loss, dpred
