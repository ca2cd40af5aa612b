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
    # torch's lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps) with sqrt(bc2) moved into the scalars:
    # one division per element instead of two (Adam at L2/L3-resident sizes is bound by them)
    step_size, eps_hat = adam_scalars(step, lr, beta1, beta2, eps)
    param -= step_size * m / (np.sqrt(v) + eps_hat)


def adam_scalars(step, lr, beta1, beta2, eps):
    """(lr * sqrt(bc2) / bc1, eps * sqrt(bc2)) as float32, bc = 1 - beta**step: computed in double,
    then rounded, by every backend."""
    bc2_sqrt = math.sqrt(1 - beta2**step)
    return (np.float32(lr * bc2_sqrt / (1 - beta1**step)), np.float32(eps * bc2_sqrt))


def adagrad_update(param, grad, sum_sq, lr, eps, weight_decay):
    g = grad + np.float32(weight_decay) * param if weight_decay != 0 else grad
    sum_sq += g * g
    param -= np.float32(lr) * g / (np.sqrt(sum_sq) + np.float32(eps))


def rmsprop_update(param, grad, sq_avg, lr, alpha, eps, weight_decay):
    g = grad + np.float32(weight_decay) * param if weight_decay != 0 else grad
    sq_avg *= np.float32(alpha)
    sq_avg += np.float32(1 - alpha) * g * g
    param -= np.float32(lr) * g / (np.sqrt(sq_avg) + np.float32(eps))
