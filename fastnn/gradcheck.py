"""Numerical against analytic gradients for any layer or model (float32 central differences)."""

from __future__ import annotations

import numpy as np

from .kernels._check import as_float32


def _rng_states(layers):
    return [(layer, layer.rng.bit_generator.state) for layer in layers
            if isinstance(getattr(layer, "rng", None), np.random.Generator)]


def gradcheck(target, x, y=None, *, loss=None, eps: float = 1e-3, num_checks: int = 20,
              seed: int = 0, wrt_input: bool = True) -> float:
    """Max relative error between backprop and central differences, over `num_checks` random
    coordinates of the input and of every parameter.

    target: a layer or a Sequential. Without `loss` the scalar is sum(output * G) for a fixed
    random G; with `loss` (and targets `y`) it is the loss. Random layers (dropout) replay the
    same mask for every evaluation. Errors below ~1e-2 are float32 round-off."""
    x = as_float32("x", x).copy()
    # a Sequential's steps as it runs them (fused blocks included)
    layers = list(getattr(target, "_run", None) or getattr(target, "layers", [target]))
    rng = np.random.default_rng(seed)
    states = _rng_states(layers)

    def run_forward(inp):
        for layer, st in states:
            layer.rng.bit_generator.state = st
        out = inp
        for layer in layers:
            out = layer.forward(out, True)
        return out

    out = run_forward(x)
    G = rng.standard_normal(out.shape).astype(np.float32)

    def scalar(inp):
        out = run_forward(inp)
        if loss is not None:
            return float(loss.forward(out, y))
        return float(np.dot(out.astype(np.float64).ravel(), G.ravel()))

    out = run_forward(x)
    if loss is not None:
        loss.forward(out, y)
        dy = loss.backward().copy()
    else:
        dy = G
    for layer in reversed(layers):
        dy = layer.backward(dy)
    checks = [(x, np.array(dy, copy=True))] if wrt_input else []
    for layer in layers:
        for name, p in layer.params.items():
            checks.append((p, layer.grads[name].copy()))
    worst = 0.0
    for arr, analytic in checks:
        flat, ana = arr.reshape(-1), analytic.reshape(-1)
        for i in rng.choice(flat.size, min(num_checks, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + np.float32(eps)
            fp = scalar(x)
            flat[i] = old - np.float32(eps)
            fm = scalar(x)
            flat[i] = old
            num = (fp - fm) / (2 * eps)
            err = abs(num - float(ana[i])) / max(abs(num) + abs(float(ana[i])), 1e-2)
            worst = max(worst, err)
    run_forward(x)  # leave the layers' caches consistent with x
    return worst
