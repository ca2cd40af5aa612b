"""In-place optimizer updates on flat float32 buffers, with the semantics of torch.optim."""

import math

import numpy as np


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """velocity starts at zeros (equal to torch's first-step copy with dampening 0); it is an
    empty array when momentum == 0."""
    g = grad + weight_decay * param if weight_decay != 0 else grad
    if momentum != 0:
        velocity *= momentum
        velocity += g
        g = g + momentum * velocity if nesterov else velocity
    param -= np.float32(lr) * g


def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled):
    g = grad
    if weight_decay != 0:
        if decoupled:
            param *= np.float32(1 - lr * weight_decay)  # AdamW
        else:
            g = grad + np.float32(weight_decay) * param  # L2 (torch.optim.Adam)
    m *= np.float32(beta1)
    m += np.float32(1 - beta1) * g
    v *= np.float32(beta2)
    v += np.float32(1 - beta2) * g * g
    step_size = lr / (1 - beta1**step)
    bc2_sqrt = math.sqrt(1 - beta2**step)
    denom = np.sqrt(v) / np.float32(bc2_sqrt) + np.float32(eps)
    param -= np.float32(step_size) * m / denom


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay):
    g = grad + np.float32(weight_decay) * param if weight_decay != 0 else grad
    sum_sq += g * g
    param -= np.float32(lr) * g / (np.sqrt(sum_sq) + np.float32(eps))


def rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay):
    g = grad + np.float32(weight_decay) * param if weight_decay != 0 else grad
    sq_avg *= np.float32(alpha)
    sq_avg += np.float32(1 - alpha) * g * g
    param -= np.float32(lr) * g / (np.sqrt(sq_avg) + np.float32(eps))
