"""adam_update, sgd_update, adagrad_update, rmsprop_update on every backend: several steps against
float64 transcriptions of torch.optim's update rules (and torch itself when installed)."""

import math

import numpy as np
import pytest
from conftest import randn

from fastnn import backend
from fastnn import kernels as K

SIZES = [1, 13, 100_003]  # the last one takes the parallel path


def adam64(p, grads, lr, b1, b2, eps, wd, decoupled):
    p = p.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if wd and decoupled:
            p = p * (1 - lr * wd)
        elif wd:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        p = p - lr / (1 - b1**t) * m / denom
    return p


def sgd64(p, grads, lr, mom, nesterov, wd):
    p = p.astype(np.float64)
    buf = None
    for g in grads:
        g = g.astype(np.float64) + wd * p
        if mom:
            buf = g.copy() if buf is None else mom * buf + g
            g = g + mom * buf if nesterov else buf
        p = p - lr * g
    return p


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("wd,decoupled", [(0.0, False), (0.01, False), (0.05, True)])
def test_adam_several_steps(backend_name, n, wd, decoupled, rng):
    p0 = randn(rng, n)
    grads = [randn(rng, n) for _ in range(5)]
    p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    for t, g in enumerate(grads, start=1):
        K.adam_update(p, g, m, v, t, lr=1e-2, weight_decay=wd, decoupled=decoupled)
    assert p.dtype == m.dtype == v.dtype == np.float32
    want = adam64(p0, grads, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)
    np.testing.assert_allclose(p, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("mom,nesterov,wd", [(0.0, False, 0.0), (0.0, False, 0.1), (0.9, False, 0.0),
                                             (0.9, True, 1e-3)])
def test_sgd_several_steps(backend_name, n, mom, nesterov, wd, rng):
    p0 = randn(rng, n)
    grads = [randn(rng, n) for _ in range(5)]
    p = p0.copy()
    vel = np.zeros(n, np.float32) if mom else None
    for g in grads:
        K.sgd_update(p, g, vel, lr=0.05, momentum=mom, nesterov=nesterov, weight_decay=wd)
    np.testing.assert_allclose(p, sgd64(p0, grads, 0.05, mom, nesterov, wd), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", SIZES)
def test_adagrad_and_rmsprop(backend_name, n, rng):
    p0 = randn(rng, n)
    grads = [randn(rng, n) for _ in range(4)]
    pa, acc = p0.copy(), np.zeros(n, np.float32)
    pr, sq = p0.copy(), np.zeros(n, np.float32)
    for g in grads:
        K.adagrad_update(pa, g, acc, lr=0.1, weight_decay=0.01)
        K.rmsprop_update(pr, g, sq, lr=0.01, alpha=0.9)
    wa, s = p0.astype(np.float64), np.zeros(n)
    wr, q = p0.astype(np.float64), np.zeros(n)
    for g in grads:
        ga = g + 0.01 * wa
        s += ga * ga
        wa = wa - 0.1 * ga / (np.sqrt(s) + 1e-10)
        q = 0.9 * q + 0.1 * g.astype(np.float64) ** 2
        wr = wr - 0.01 * g / (np.sqrt(q) + 1e-8)
    np.testing.assert_allclose(pa, wa, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pr, wr, rtol=1e-5, atol=1e-6)


def test_updates_work_on_multidimensional_params(backend_name, rng):
    p = randn(rng, 4, 3, 2)
    m, v = np.zeros_like(p), np.zeros_like(p)
    K.adam_update(p, randn(rng, 4, 3, 2), m, v, 1)
    assert np.all(m != 0)


def test_optimizers_match_torch_when_installed(rng):
    torch = pytest.importorskip("torch")
    p0, grads = randn(rng, 1000), [randn(rng, 1000) for _ in range(5)]
    for make, call in [
        (lambda t: torch.optim.Adam([t], lr=1e-2, weight_decay=0.01),
         lambda p, st, g, i: K.adam_update(p, g, st[0], st[1], i, lr=1e-2, weight_decay=0.01)),
        (lambda t: torch.optim.AdamW([t], lr=1e-2, weight_decay=0.05),
         lambda p, st, g, i: K.adam_update(p, g, st[0], st[1], i, lr=1e-2, weight_decay=0.05,
                                           decoupled=True)),
        (lambda t: torch.optim.SGD([t], lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
         lambda p, st, g, i: K.sgd_update(p, g, st[0], 0.05, 0.9, True, 1e-3)),
    ]:
        t = torch.tensor(p0.copy(), requires_grad=True)
        opt = make(t)
        for g in grads:
            t.grad = torch.tensor(g)
            opt.step()
        for name in backend.available():
            with backend.using(name):
                p, st = p0.copy(), (np.zeros(1000, np.float32), np.zeros(1000, np.float32))
                for i, g in enumerate(grads, start=1):
                    call(p, st, g, i)
            np.testing.assert_allclose(p, t.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
