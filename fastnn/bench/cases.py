"""The step of each workload on each implementation, as a `Case`: fastnn's kernels and training
step, and their torch equivalents. A case builds its inputs once; `run()` is what gets timed."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from .. import kernels as K
from .impls import Unavailable, torch_module


class Case:
    """One workload ready to run on one implementation: `run()` is timed, `result()` returns
    numpy arrays (or floats) to check after one run."""

    __slots__ = ("run", "result")

    def __init__(self, run: Callable[[], object], result: Callable[[], tuple]) -> None:
        self.run, self.result = run, result


def _t(a: np.ndarray, grad: bool = False):
    return torch_module().from_numpy(a).requires_grad_(grad)


def _np(t) -> np.ndarray:
    return t.detach().numpy()


def _randn(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


# --- kernels, forward and backward: fastnn through fastnn.kernels with a reused Workspace (as
# the layers call them), torch through torch.nn.functional and autograd -------------------------

def fastnn_case(step: Callable[[K.Workspace], tuple]) -> Case:
    """A case whose run() is `step(ws)`; the outputs it returns are what the check compares."""
    ws, out = K.Workspace(), []

    def run():
        out[:] = step(ws)

    return Case(run, lambda: tuple(out))


def torch_fb_case(forward: Callable, wrt: tuple, dy, transpose: tuple[int, ...] = ()) -> Case:
    """A case whose run() is y = forward() and the gradients of y (seeded with dy; a scalar loss
    without) with respect to `wrt`; outputs listed in `transpose` are transposed for the check."""
    autograd, out = torch_module().autograd, []

    def run():
        y = forward()
        out[:] = (y, *autograd.grad(y, wrt, dy))

    def result():
        arrays = [_np(t) if t.ndim else t.item() for t in out]
        return tuple(a.T if i in transpose else a for i, a in enumerate(arrays))

    return Case(run, result)


def _dense_inputs(n, fin, fout):
    rng = np.random.default_rng(1)
    return (_randn(rng, n, fin), _randn(rng, fin, fout) * np.float32(fin ** -0.5),
            _randn(rng, fout), _randn(rng, n, fout))


def dense_fastnn(n, fin, fout) -> Case:
    x, W, b, dy = _dense_inputs(n, fin, fout)
    return fastnn_case(lambda ws: (K.dense_forward(x, W, b, ws=ws),
                                   *K.dense_backward(dy, x, W, ws=ws)))


def dense_torch(n, fin, fout) -> Case:
    x, W, b, dy = _dense_inputs(n, fin, fout)
    F = torch_module().nn.functional
    xt, Wt, bt = _t(x, True), _t(np.ascontiguousarray(W.T), True), _t(b, True)  # W: (out, in)
    return torch_fb_case(lambda: F.linear(xt, Wt, bt), (xt, Wt, bt), _t(dy), transpose=(2,))


def _conv_inputs(n, c, hw, f, k, pad):
    rng = np.random.default_rng(2)
    oh = hw + 2 * pad - k + 1
    return (_randn(rng, n, c, hw, hw), _randn(rng, f, c, k, k) * np.float32((c * k * k) ** -0.5),
            _randn(rng, f), _randn(rng, n, f, oh, oh))


def conv_fastnn(n, c, hw, f, k, pad) -> Case:
    x, W, b, dy = _conv_inputs(n, c, hw, f, k, pad)
    return fastnn_case(lambda ws: (K.conv2d_forward(x, W, b, 1, pad, ws=ws),
                                   *K.conv2d_backward(dy, x, W, 1, pad, ws=ws, cols=ws["cols"])))


def conv_torch(n, c, hw, f, k, pad) -> Case:
    x, W, b, dy = _conv_inputs(n, c, hw, f, k, pad)
    F = torch_module().nn.functional
    xt, Wt, bt = _t(x, True), _t(W, True), _t(b, True)
    return torch_fb_case(lambda: F.conv2d(xt, Wt, bt, padding=pad), (xt, Wt, bt), _t(dy))


def _convpool_inputs(n, c, hw, f, k):
    rng = np.random.default_rng(5)
    ph = (hw - k + 1) // 2
    return (rng.random((n, c, hw, hw), dtype=np.float32),
            _randn(rng, f, c, k, k) * np.float32((c * k * k) ** -0.5), _randn(rng, f) * 0.1,
            _randn(rng, n, f, ph, ph))


def convpool_fastnn(n, c, hw, f, k) -> Case:
    x, W, b, dp = _convpool_inputs(n, c, hw, f, k)

    def step(ws):
        p, argmax = K.conv2d_relu_pool_forward(x, W, b, 0, ws=ws)
        return (p, *K.conv2d_relu_pool_backward(dp, p, argmax, x, W, 0, ws=ws))

    return fastnn_case(step)


def convpool_torch(n, c, hw, f, k) -> Case:
    x, W, b, dp = _convpool_inputs(n, c, hw, f, k)
    F = torch_module().nn.functional
    xt, Wt, bt = _t(x), _t(W, True), _t(b, True)  # a first layer: no dx
    return torch_fb_case(lambda: F.max_pool2d(F.relu(F.conv2d(xt, Wt, bt)), 2), (Wt, bt), _t(dp))


def _pool_inputs(shape):
    rng = np.random.default_rng(3)
    n, c, h, w = shape
    return _randn(rng, *shape), _randn(rng, n, c, h // 2, w // 2)


def maxpool_fastnn(shape) -> Case:
    x, dy = _pool_inputs(shape)

    def step(ws):
        y, argmax = K.maxpool2d_forward(x, 2, ws=ws)
        return y, K.maxpool2d_backward(dy, argmax, x.shape, 2, ws=ws)

    return fastnn_case(step)


def maxpool_torch(shape) -> Case:
    x, dy = _pool_inputs(shape)
    F, xt = torch_module().nn.functional, _t(x, True)
    return torch_fb_case(lambda: F.max_pool2d(xt, 2), (xt,), _t(dy))


# --- elementwise, loss and optimizer workloads -----------------------------------------------

def _softmax_inputs(n, c):
    rng = np.random.default_rng(4)
    return _randn(rng, n, c) * np.float32(3), rng.integers(0, c, n)


def softmax_ce_fastnn(n, c) -> Case:
    z, labels = _softmax_inputs(n, c)
    return fastnn_case(lambda ws: K.softmax_cross_entropy(z, labels, ws=ws))


def softmax_ce_torch(n, c) -> Case:
    z, labels = _softmax_inputs(n, c)
    F, zt, lt = torch_module().nn.functional, _t(z, True), _t(labels)
    return torch_fb_case(lambda: F.cross_entropy(zt, lt), (zt,), None)


def _sigmoid_inputs(n):
    rng = np.random.default_rng(5)
    return _randn(rng, n) * np.float32(4), _randn(rng, n)


def sigmoid_fastnn(n) -> Case:
    x, dy = _sigmoid_inputs(n)

    def step(ws):
        y = K.sigmoid(x, ws=ws)
        return y, K.sigmoid_backward(dy, y, ws=ws)

    return fastnn_case(step)


def sigmoid_torch(n) -> Case:
    x, dy = _sigmoid_inputs(n)
    torch, xt = torch_module(), _t(x, True)
    return torch_fb_case(lambda: torch.sigmoid(xt), (xt,), _t(dy))


# Adam updates in place, so the timed rounds drift: step k runs on the state left by step k-1 with
# the same gradient. That is what a training loop does; the kernels have no data-dependent
# branches and m, v stay normal floats, so the drift does not change the time per call.
def _adam_inputs(n):
    rng = np.random.default_rng(6)
    return _randn(rng, n), _randn(rng, n)


def adam_fastnn(n) -> Case:
    param, grad = _adam_inputs(n)
    p0, m, v = param.copy(), np.zeros_like(param), np.zeros_like(param)
    steps = itertools.count(1)

    def run():
        K.adam_update(param, grad, m, v, next(steps))

    return Case(run, lambda: (param - p0, m, v))


def adam_torch(n, fused: bool = False) -> Case:
    param, grad = _adam_inputs(n)
    torch = torch_module()
    p0 = param.copy()
    p = torch.nn.Parameter(torch.from_numpy(param))
    p.grad = torch.from_numpy(grad)
    try:
        opt = torch.optim.Adam([p], lr=1e-3, fused=True if fused else None)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise Unavailable(f"torch.optim.Adam(fused=True): {exc}") from None

    def result():
        st = opt.state[p]
        return _np(p) - p0, _np(st["exp_avg"]), _np(st["exp_avg_sq"])

    return Case(opt.step, result)


# --- training steps: forward, loss, backward, Adam ---------------------------------------------

def mlp_model():
    from ..recipes import mlp

    return mlp(seed=0, dropout=0.0)


def cnn_model():
    from ..recipes import cnn

    return cnn(seed=0, batchnorm=False, dropout=0.0)


def textbook_cnn_model():
    """SimpleConvNet of "Deep Learning from Scratch" ch. 7."""
    from ..layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from ..model import Sequential

    return Sequential([Conv2D(1, 30, 5, seed=1), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(4320, 100, seed=2), ReLU(), Dense(100, 10, seed=3)],
                      input_shape=(1, 28, 28))


def _batch(n):
    rng = np.random.default_rng(7)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def step_fastnn(build, n) -> Case:
    from ..losses import SoftmaxCrossEntropy
    from ..optim import Adam

    model = build()
    x, y = _batch(n)
    loss, opt = SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3)
    grads = [g for _, _, g in model.parameters()]
    out = [None]

    def run():
        out[0] = model.train_on_batch(x, y, loss=loss, optimizer=opt)

    return Case(run, lambda: (out[0], *grads))


def torch_net(model):
    """The torch.nn equivalent of a fastnn Sequential, with the same weights."""
    from ..layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

    torch = torch_module()
    nn, mods = torch.nn, []
    for layer in model.layers:
        if isinstance(layer, Dense):
            m = nn.Linear(layer.in_features, layer.out_features)
            m.weight.data.copy_(torch.from_numpy(layer.params["W"].T))
        elif isinstance(layer, Conv2D):
            m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          layer.stride, layer.padding)
            m.weight.data.copy_(torch.from_numpy(layer.params["W"]))
        elif isinstance(layer, (ReLU, MaxPool2D, Flatten)):
            m = {ReLU: nn.ReLU, Flatten: nn.Flatten}.get(type(layer))
            m = m() if m else nn.MaxPool2d(layer.pool_size, layer.stride)
        else:
            raise Unavailable(f"torch_net: no torch equivalent for {type(layer).__name__}")
        if isinstance(layer, (Dense, Conv2D)):
            m.bias.data.copy_(torch.from_numpy(layer.params["b"]))
        mods.append(m)
        if getattr(layer, "activation", None) == "relu":
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def step_torch(build, n) -> Case:
    torch = torch_module()
    net = torch_net(build())
    x, y = _batch(n)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    params = list(net.parameters())
    out = [None]

    def run():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
        out[0] = loss

    def result():
        # fastnn's Dense W is (in, out), torch's Linear weight (out, in)
        return (out[0].item(), *(_np(p.grad).T if p.ndim == 2 else _np(p.grad) for p in params))

    return Case(run, result)


def model_gemm_flops(model, n: int) -> float:
    """FLOPs of the GEMMs of one training step: forward, dW and dx (no dx for the first layer
    with weights: nothing needs it)."""
    from ..layers import Conv2D, Dense

    shape, flops, first = model.input_shape, 0.0, True
    for layer in model.layers:
        out = layer.output_shape(shape)
        if isinstance(layer, Dense):
            f = 2.0 * n * layer.in_features * layer.out_features
        elif isinstance(layer, Conv2D):
            kh, kw = layer.kernel_size
            f = 2.0 * n * out[1] * out[2] * layer.in_channels * kh * kw * layer.out_channels
        else:
            f = 0.0
        if f:
            flops += f * (2 if first else 3)
            first = False
        shape = out
    return flops

