"""In-place optimizer updates with torch.optim semantics, validated. param and state arrays are
updated in place, so they must be C-contiguous writeable float32 of one shape; grad is converted if
needed. Kernels run over the flat view, so a whole model's flat buffer is one call."""

from __future__ import annotations

import numpy as np

from ..backend import impl
from ._check import as_float32, finite_float, inplace_float32, positive_int, same_shape

_EMPTY = np.empty(0, dtype=np.float32)


def _param_grad(param, grad):
    param = inplace_float32("param", param)
    grad = as_float32("grad", grad)
    same_shape("grad", grad, param.shape, "param")
    return param, grad


def _state(name, a, param):
    return inplace_float32(name, a, param.shape).reshape(-1)


def sgd_update(param, grad, velocity=None, lr=0.01, momentum=0.0, nesterov=False,
               weight_decay=0.0) -> None:
    """torch.optim.SGD (dampening 0). velocity (zeros at the start) is required when momentum != 0."""
    param, grad = _param_grad(param, grad)
    lr = finite_float("lr", lr, minimum=0.0)
    momentum = finite_float("momentum", momentum, minimum=0.0)
    weight_decay = finite_float("weight_decay", weight_decay, minimum=0.0)
    if nesterov and momentum == 0:
        raise ValueError("nesterov: expected momentum > 0 with nesterov=True, got momentum 0")
    if momentum != 0:
        if velocity is None:
            raise ValueError("velocity: expected a float32 array like param when momentum != 0, "
                             "got None")
        vel = _state("velocity", velocity, param)
    else:
        vel = _EMPTY
    impl("sgd_update")(param.reshape(-1), grad.reshape(-1), vel, lr, momentum, bool(nesterov),
                       weight_decay)


def adam_update(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0, decoupled=False) -> None:
    """torch.optim.Adam (decoupled=False: weight_decay is L2 added to grad) or AdamW
    (decoupled=True). step counts from 1; m and v start at zeros."""
    param, grad = _param_grad(param, grad)
    m = _state("m", m, param)
    v = _state("v", v, param)
    step = positive_int("step", step)
    lr = finite_float("lr", lr, minimum=0.0)
    beta1 = finite_float("beta1", beta1, minimum=0.0, maximum=1.0, max_open=True)
    beta2 = finite_float("beta2", beta2, minimum=0.0, maximum=1.0, max_open=True)
    eps = finite_float("eps", eps, minimum=0.0)
    weight_decay = finite_float("weight_decay", weight_decay, minimum=0.0)
    impl("adam_update")(param.reshape(-1), grad.reshape(-1), m, v, step, lr, beta1, beta2, eps,
                        weight_decay, bool(decoupled))


def adagrad_update(param, grad, sum_sq, lr=0.01, eps=1e-10, weight_decay=0.0) -> None:
    """torch.optim.Adagrad (no lr decay, initial accumulator 0)."""
    param, grad = _param_grad(param, grad)
    sum_sq = _state("sum_sq", sum_sq, param)
    lr = finite_float("lr", lr, minimum=0.0)
    eps = finite_float("eps", eps, minimum=0.0)
    weight_decay = finite_float("weight_decay", weight_decay, minimum=0.0)
    impl("adagrad_update")(param.reshape(-1), grad.reshape(-1), sum_sq, lr, eps, weight_decay)


def rmsprop_update(param, grad, sq_avg, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0) -> None:
    """torch.optim.RMSprop (no momentum, not centred)."""
    param, grad = _param_grad(param, grad)
    sq_avg = _state("sq_avg", sq_avg, param)
    lr = finite_float("lr", lr, minimum=0.0)
    alpha = finite_float("alpha", alpha, minimum=0.0, maximum=1.0)
    eps = finite_float("eps", eps, minimum=0.0)
    weight_decay = finite_float("weight_decay", weight_decay, minimum=0.0)
    impl("rmsprop_update")(param.reshape(-1), grad.reshape(-1), sq_avg, lr, alpha, eps,
                           weight_decay)
