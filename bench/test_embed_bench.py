"""Embedding in CPU-bound loops (issue 5): one step of a small network, called thousands of times
a second by an agent, a simulation or a service.

  tiny_train_step   4-64-64-2 ReLU MLP, batch 32, softmax cross-entropy, Adam
  tiny_predict      the same network, one observation (inference)
  small_train_step  128-256-256-18 ReLU MLP (an Atari-RAM-size policy), batch 64, same loss/Adam

Each for the fastnn backends (`train_on_batch` / `predict_on_batch`, warm), a plain hand-written
NumPy loop (what one writes without a framework) and PyTorch eager (skipped without torch). Every
implementation starts from the same weights and batch; one step of each is checked against the
NumPy loop before timing. Adam updates in place, so the timed rounds drift (as a training loop
does); nothing in the step depends on the values. The issue's goals (tiny_train_step <= 40 us,
tiny_predict <= 4 us) are for one thread: `pytest bench/test_embed_bench.py --threads 1`, with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from _workloads import record_settings

from fastnn import bench as B

IMPLS = (*B.FASTNN_IMPLS, "numpy_loop", "torch")
LR = 1e-3


@dataclass(frozen=True)
class Embed:
    name: str
    sizes: tuple[int, ...]
    batch: int
    train: bool

    @property
    def id(self) -> str:
        net = "-".join(map(str, self.sizes))
        return f"{self.name}[{net}, batch {self.batch}]"


WORKLOADS = (Embed("tiny_train_step", (4, 64, 64, 2), 32, True),
             Embed("tiny_predict", (4, 64, 64, 2), 1, False),
             Embed("small_train_step", (128, 256, 256, 18), 64, True))


def weights(sizes):
    rng = np.random.default_rng(0)
    Ws = [(rng.standard_normal((a, b), dtype=np.float32) * np.float32((2 / a) ** 0.5))
          for a, b in zip(sizes, sizes[1:], strict=False)]
    bs = [rng.standard_normal(b, dtype=np.float32) * np.float32(0.1) for b in sizes[1:]]
    return Ws, bs


def data(w: Embed):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((w.batch, w.sizes[0]), dtype=np.float32)
    return x, rng.integers(0, w.sizes[-1], w.batch)


# --- implementations: each returns (run, result) with result() the arrays to check --------------

def fastnn_impl(w: Embed):
    from fastnn import Sequential
    from fastnn.layers import Dense, ReLU
    from fastnn.losses import SoftmaxCrossEntropy
    from fastnn.optim import Adam

    Ws, bs = weights(w.sizes)
    layers = []
    for i, W in enumerate(Ws):
        layers.append(Dense(*W.shape))
        layers += [ReLU()] if i < len(Ws) - 1 else []
    model = Sequential(layers)
    for layer, W, b in zip(model.layers[::2], Ws, bs, strict=True):
        layer.params["W"][...], layer.params["b"][...] = W, b
    x, y = data(w)
    if not w.train:
        out = [None]

        def predict():
            out[0] = model.predict_on_batch(x)

        return predict, lambda: (out[0],)
    loss, opt = SoftmaxCrossEntropy(), Adam(model.parameters(), lr=LR)
    value = [None]

    def step():
        value[0] = model.train_on_batch(x, y, loss=loss, optimizer=opt)

    return step, lambda: (value[0], *(layer.params["W"] for layer in model.layers[::2]))


class NumpyLoop:
    """A hand-written NumPy MLP with softmax cross-entropy and Adam, as one writes it without a
    framework (float32 throughout, fresh arrays each step)."""

    def __init__(self, Ws, bs, lr=LR, betas=(0.9, 0.999), eps=1e-8):
        self.params = [a.copy() for pair in zip(Ws, bs, strict=True) for a in pair]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t, self.lr, self.betas, self.eps = 0, lr, betas, eps

    def predict(self, x):
        h, P = x, self.params
        for i in range(0, len(P), 2):
            h = h @ P[i] + P[i + 1]
            if i + 2 < len(P):
                h = np.maximum(h, 0)
        return h

    def step(self, x, y):
        P, hs, h = self.params, [x], x
        for i in range(0, len(P), 2):
            h = h @ P[i] + P[i + 1]
            if i + 2 < len(P):
                h = np.maximum(h, 0)
            hs.append(h)
        n, rows = len(x), np.arange(len(x))
        z = h - h.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
        d = e / s
        d[rows, y] -= 1
        d /= np.float32(n)
        grads = [None] * len(P)
        for i in range(len(P) - 2, -1, -2):
            grads[i], grads[i + 1] = hs[i // 2].T @ d, d.sum(axis=0)
            if i:
                d = (d @ P[i].T) * (hs[i // 2] > 0)
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(P, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)
        return loss


def numpy_loop_impl(w: Embed):
    net = NumpyLoop(*weights(w.sizes))
    x, y = data(w)
    out = [None]
    if not w.train:
        def predict():
            out[0] = net.predict(x)

        return predict, lambda: (out[0],)

    def step():
        out[0] = net.step(x, y)

    return step, lambda: (out[0], *net.params[::2])


def torch_impl(w: Embed):
    torch = B.torch_module()
    if torch is None:
        raise B.Unavailable(B.unavailable_reason("torch"))
    Ws, bs = weights(w.sizes)
    mods = []
    for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        lin = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin, torch.nn.ReLU()] if i < len(Ws) - 1 else [lin]
    net = torch.nn.Sequential(*mods)
    x, y = data(w)
    out = [None]
    if not w.train:
        def predict():  # numpy in, numpy out: what an agent's loop does
            with torch.no_grad():
                out[0] = net(torch.from_numpy(x)).numpy()

        return predict, lambda: (out[0],)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    cross_entropy = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad()
        loss = cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        out[0] = loss.item()

    weights_ = [m.weight for m in mods if isinstance(m, torch.nn.Linear)]
    return step, lambda: (out[0], *(W.detach().numpy().T for W in weights_))


def setup(w: Embed, impl: str):
    if impl == "numpy_loop":
        return numpy_loop_impl(w)
    if impl == "torch":
        return torch_impl(w)
    reason = B.unavailable_reason(impl)
    if reason:
        raise B.Unavailable(reason)
    with B.activate(impl):
        return fastnn_impl(w)


def check(w: Embed, impl: str, result) -> float:
    """One step's result against the NumPy loop's (relative to each output's magnitude)."""
    run, ref = numpy_loop_impl(w)
    run()
    err = B.max_error(tuple(result()), tuple(np.asarray(a, dtype=np.float64) for a in ref()))
    assert err <= 1e-4, f"{w.id} {impl}: differs from the NumPy loop by {err:.3g}"
    return err


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("w", WORKLOADS, ids=[w.name for w in WORKLOADS])
def test_embed(benchmark, w, impl):
    try:
        run, result = setup(w, impl)
    except B.Unavailable as exc:
        pytest.skip(str(exc))
    with B.activate(impl) if impl in B.FASTNN_IMPLS else B.activate("torch"):
        run()
        err = check(w, impl, result)
        for _ in range(0 if benchmark.disabled else 20):  # JIT, first-call validation, caches
            run()
        benchmark.group = w.id
        record_settings(benchmark, workload=w.name, sizes=list(w.sizes), batch=w.batch, impl=impl,
                        max_rel_error=err)
        benchmark(run)
