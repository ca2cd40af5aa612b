"""`fastnn bench`: the workloads of the speed issue, timed for each implementation (the NumPy
reference, Numba, Cython, "auto", and PyTorch's eager CPU mode when torch imports), with the
machine's sgemm and memory-bandwidth limits measured in the same process.

This module is the one definition of the workloads: `bench/` (pytest-benchmark) and the command
both take shapes, inputs and the step of each implementation from `workloads()`. A workload's
`setup(impl)` returns a `Case`: `run()` is the timed call, `result()` the arrays that are checked
against the NumPy reference after one run. fastnn cases run on whichever backend is active: wrap
them in `activate(impl)`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import backend
from .cli import positive_int_arg
from . import kernels as K

FASTNN_IMPLS = ("numpy", "numba", "cython", "auto")
COMPILED_IMPLS = ("numba", "cython", "auto")
TORCH_IMPLS = ("torch", "torch_fused")
COLD_START_CACHES = ("warm cache", "cold cache")


class Unavailable(Exception):
    """An implementation that cannot run here (backend not built, torch not installed...)."""


class Case:
    """One workload ready to run on one implementation: `run()` is timed, `result()` returns
    numpy arrays (or floats) to check after one run."""

    __slots__ = ("run", "result")

    def __init__(self, run: Callable[[], object], result: Callable[[], tuple]) -> None:
        self.run, self.result = run, result


_torch_mod: object = None
_torch_error = ""


def torch_module():
    """torch, or None when it does not import (the reason is in `unavailable_reason`)."""
    global _torch_mod, _torch_error
    if _torch_mod is None and not _torch_error:
        try:
            import torch
        except Exception as exc:  # ImportError, or a broken install
            _torch_error = f"torch does not import: {type(exc).__name__}: {exc}"
        else:
            _torch_mod = torch
    return _torch_mod


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
    from .recipes import mlp

    return mlp(seed=0, dropout=0.0)


def cnn_model():
    from .recipes import cnn

    return cnn(seed=0, batchnorm=False, dropout=0.0)


def textbook_cnn_model():
    """SimpleConvNet of "Deep Learning from Scratch" ch. 7."""
    from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
    from .model import Sequential

    return Sequential([Conv2D(1, 30, 5, seed=1), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(4320, 100, seed=2), ReLU(), Dense(100, 10, seed=3)],
                      input_shape=(1, 28, 28))


def _batch(n):
    rng = np.random.default_rng(7)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def step_fastnn(build, n) -> Case:
    from .losses import SoftmaxCrossEntropy
    from .optim import Adam

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
    from .layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU

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
    from .layers import Conv2D, Dense

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


# --- the registry -------------------------------------------------------------------------------

@dataclass
class Workload:
    """One row of the issue's table: a workload at one shape. `flops` are GEMM FLOPs and `bytes`
    the compulsory memory traffic per call (float32), for the roofline column."""

    name: str
    shape: str
    fastnn: Callable[[], Case]
    torch: dict[str, Callable[[], Case]] = field(default_factory=dict)
    flops: float = 0.0
    bytes: float = 0.0
    quick: bool = False
    tol: float = 1e-3
    key: str = ""  # a short label of the shape, for test ids

    @property
    def id(self) -> str:
        return f"{self.name}[{self.shape}]"

    def impls(self) -> list[str]:
        """Every implementation this workload has (available here or not)."""
        return [*FASTNN_IMPLS, *self.torch]

    def setup(self, impl: str) -> Case:
        """Build inputs and the step for `impl`; raise Unavailable if it cannot run here."""
        reason = unavailable_reason(impl)
        if reason:
            raise Unavailable(reason)
        if impl in FASTNN_IMPLS:
            return self.fastnn()
        if impl not in self.torch:
            raise Unavailable(f"{self.name} has no {impl!r} implementation")
        return self.torch[impl]()

    def roofline_seconds(self, gflops: float, gbs: float) -> tuple[float, str]:
        """The machine's lower bound for one call and what bounds it ("gemm" or "mem")."""
        tf, tm = self.flops / (gflops * 1e9), self.bytes / (gbs * 1e9)
        return (tf, "gemm") if tf >= tm else (tm, "mem")


def _p(f, *args, **kw):
    return lambda: f(*args, **kw)


def _registry() -> list[Workload]:
    W, f32 = [], 4
    for n, quick in ((64, True), (256, False)):
        fi, fo = 784, 256
        W.append(Workload("dense_fb", f"{n}x{fi}->{fo}", _p(dense_fastnn, n, fi, fo),
                          {"torch": _p(dense_torch, n, fi, fo)}, flops=6.0 * n * fi * fo,
                          bytes=f32 * (2 * n * fi + 2 * fi * fo + 2 * n * fo + 2 * fo), quick=quick,
                          key=f"b{n}"))
    for name, (n, c, hw, f), quick in (("conv1_fb", (64, 1, 28, 32), True),
                                       ("conv2_fb", (64, 32, 14, 64), True)):
        io = 2 * n * c * hw * hw + 2 * n * f * hw * hw + 2 * f * c * 9 + 2 * f
        W.append(Workload(name, f"{n}x{c}x{hw}x{hw}, {c}->{f} 3x3 pad 1",
                          _p(conv_fastnn, n, c, hw, f, 3, 1), {"torch": _p(conv_torch, n, c, hw, f, 3, 1)},
                          flops=6.0 * n * hw * hw * c * 9 * f, bytes=f32 * io, quick=quick,
                          key=f"{c}to{f}"))
    shape = (64, 32, 28, 28)
    x_elems = int(np.prod(shape))
    W.append(Workload("maxpool_fb", "64x32x28x28, 2x2 stride 2", _p(maxpool_fastnn, shape),
                      {"torch": _p(maxpool_torch, shape)}, bytes=f32 * (2 * x_elems + x_elems),
                      quick=True, key="2x2"))  # x, dx; y, argmax written and read: 4 * x/4
    for n, c, quick in ((64, 10, True), (4096, 10, False), (4096, 1000, True)):
        W.append(Workload("softmax_ce_fb", f"{n}x{c}", _p(softmax_ce_fastnn, n, c),
                          {"torch": _p(softmax_ce_torch, n, c)}, bytes=f32 * 2 * n * c + 8 * n,
                          quick=quick, key=f"{n}x{c}"))
    n = 4_194_304
    W.append(Workload("sigmoid_fb", f"{n:,}", _p(sigmoid_fastnn, n), {"torch": _p(sigmoid_torch, n)},
                      bytes=f32 * 5 * n, quick=True, key="4M"))
    for n, label, quick in ((1_000_000, "1M", True), (10_000_000, "10M", False)):
        W.append(Workload("adam_step", f"{label} params", _p(adam_fastnn, n),
                          {"torch": _p(adam_torch, n), "torch_fused": _p(adam_torch, n, fused=True)},
                          bytes=f32 * 7 * n, quick=quick, tol=5e-3, key=label))
    for name, build, label, batches in (("mlp_step", mlp_model, "784-512-256-10", (64, 256)),
                                        ("cnn_step", cnn_model, "MNIST CNN", (64,)),
                                        ("textbook_cnn_step", textbook_cnn_model, "SimpleConvNet",
                                         (100,))):
        model = build()
        for n in batches:
            W.append(Workload(name, f"{label}, batch {n}", _p(step_fastnn, build, n),
                              {"torch": _p(step_torch, build, n)},
                              flops=model_gemm_flops(model, n),
                              bytes=f32 * 7 * model.parameters().size,  # the Adam pass
                              quick=n != 256, tol=2e-3, key=f"b{n}"))
    return W


NAMES = ("dense_fb", "conv1_fb", "conv2_fb", "maxpool_fb", "softmax_ce_fb", "sigmoid_fb",
         "adam_step", "mlp_step", "cnn_step", "textbook_cnn_step", "cold_start")


@functools.lru_cache(maxsize=1)
def all_workloads() -> tuple[Workload, ...]:
    """Every registered workload (built on first use: it builds the models to count FLOPs)."""
    return tuple(_registry())


def workloads(names=None, quick: bool = False) -> list[Workload]:
    """The registered workloads (not cold_start), filtered by name and by the --quick subset."""
    if names is not None:
        unknown = set(names) - set(NAMES)
        if unknown:
            raise ValueError(f"workloads: expected names from {', '.join(NAMES)}, got "
                             f"{', '.join(sorted(unknown))}")
    chosen = [w for w in all_workloads() if names is None or w.name in names]
    if quick:  # the quick shapes of each workload (every shape of one that has none)
        has_quick = {w.name for w in chosen if w.quick}
        chosen = [w for w in chosen if w.quick or w.name not in has_quick]
    return chosen


def unavailable_reason(impl: str) -> str | None:
    """None if `impl` can run here, else why not."""
    if impl in ("numpy", "numba", "cython"):
        if impl in backend.available():
            return None
        return f"backend {impl!r} not available: {backend.unavailable().get(impl, 'unknown')}"
    if impl == "auto":
        return None
    if impl in TORCH_IMPLS:
        return None if torch_module() is not None else _torch_error
    return f"unknown implementation {impl!r}"


def activate(impl: str):
    """The context to run a case of `impl` in: its fastnn backend selected (torch: nothing)."""
    return backend.using(impl) if impl in FASTNN_IMPLS else contextlib.nullcontext()


# --- checks against the reference ---------------------------------------------------------------

_ref_cache: dict[str, tuple] = {}


def reference(w: Workload) -> tuple:
    """The NumPy reference's result after one run (cached for the last workload only)."""
    if w.id not in _ref_cache:
        _ref_cache.clear()
        with activate("numpy"):
            case = w.fastnn()
            case.run()
            _ref_cache[w.id] = tuple(np.array(a, dtype=np.float64) for a in case.result())
    return _ref_cache[w.id]


def max_error(got: tuple, expected: tuple) -> float:
    """The largest error over the outputs, each relative to that output's largest magnitude."""
    if len(got) != len(expected):
        return float("inf")
    worst = 0.0
    for a, b in zip(got, expected):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        scale = max(float(np.abs(b).max(initial=0.0)), 1e-30)
        worst = max(worst, float(np.abs(a - b).max(initial=0.0)) / scale)
    return worst


def checked_case(w: Workload, impl: str, warmup: int = 2) -> tuple[Case, float]:
    """Set up `impl`, run it once and compare with the reference (AssertionError beyond the
    workload's tolerance), then warm it up (JIT compiles, caches, allocations)."""
    expected = reference(w)
    with activate(impl):
        case = w.setup(impl)
        case.run()
        err = max_error(case.result(), expected)
        if not err <= w.tol:
            raise AssertionError(f"{w.id} {impl}: result differs from the NumPy reference: max "
                                 f"relative error {err:.3g} > {w.tol:g}")
        for _ in range(warmup):
            case.run()
    return case, err


# --- threads and machine ---------------------------------------------------------------------

def set_threads(n: int, torch: bool = True) -> None:
    """Pin fastnn (Numba, OpenMP, BLAS) and, when it imports, torch to n threads."""
    backend.set_num_threads(n)
    if torch and torch_module() is not None:
        torch_module().set_num_threads(n)


def thread_info() -> dict:
    info = {"fastnn": backend.get_num_threads(),
            "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count()}
    for name in ("numba", "cython"):
        if name in backend.available():
            info[name] = importlib.import_module(f"fastnn._{name}").get_num_threads()
    if _torch_mod is not None:
        info["torch"] = _torch_mod.get_num_threads()
    return info


def blas_info() -> list[dict]:
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture")
    out = []
    for i in backend.blas_info():
        d = {k: i.get(k) for k in keep}
        d["library"] = os.path.basename(i.get("filepath", ""))
        out.append(d)
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_vars() -> dict:
    prefixes = ("OPENBLAS_", "OMP_", "MKL_", "NUMBA_", "FASTNN_", "GOMP_")
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(prefixes)}


def versions() -> dict:
    import numba

    import fastnn

    v = {"fastnn": fastnn.__version__, "python": platform.python_version(),
         "numpy": np.__version__, "numba": numba.__version__}
    if _torch_mod is not None:
        v["torch"] = _torch_mod.__version__
    return v


def header_lines() -> list[str]:
    """What ran: CPU, threads, BLAS, versions, environment (for reports and pytest headers)."""
    blas = "; ".join(f"{b['internal_api']} {b['version'] or ''} threads={b['num_threads']}"
                     f"{' arch=' + b['architecture'] if b.get('architecture') else ''}"
                     f" ({b['library']})" for b in blas_info())
    threads = ", ".join(f"{k} {v}" for k, v in thread_info().items())
    lines = [f"cpu: {cpu_model()}; threads: {threads}", f"blas/openmp: {blas}",
             "versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
             f"backends: {backend.available()}; load average {os.getloadavg()[0]:.2f}"]
    env = env_vars()
    lines.append("env: " + (" ".join(f"{k}={v}" for k, v in env.items()) or "(none)"))
    if any(k in env for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
        lines.append("note: the issue's targets are measured with OPENBLAS_CORETYPE and "
                     "OPENBLAS_L2_SIZE unset")
    return lines


def measure_sgemm(n: int = 2048, repeat: int = 3) -> float:
    """Peak float32 GEMM GFLOP/s (best of `repeat` after a warm-up)."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = min(_elapsed(lambda: np.matmul(a, b, out=c)) for _ in range(repeat))
    return 2.0 * n**3 / best / 1e9


prange = range  # numba.prange once _stream_kernel() has imported Numba


def _stream_add(a, b):
    """a += b: reads two arrays and writes one in place (so no write-allocate traffic), the
    access pattern of the optimizer and backward elementwise kernels."""
    for i in prange(a.size):
        a[i] += b[i]


_stream_jit = None


def _stream_kernel():
    """_stream_add compiled by Numba (parallel, cached), or None without Numba."""
    global _stream_jit, prange
    if _stream_jit is None:
        try:
            import numba
        except ImportError:
            return None
        prange = numba.prange
        _stream_jit = numba.njit(parallel=True, nogil=True, cache=True)(_stream_add)
    return _stream_jit


def measure_bandwidth(threads: int, nbytes: int = 256 << 20, repeat: int = 5) -> float:
    """DRAM bandwidth in GB/s, best of `repeat`: a += b on two arrays of `nbytes` each (far beyond
    the caches), 3 * nbytes moved, on Numba's threads (set to `threads` by set_threads; NumPy
    on one thread without Numba). np.copyto read 30-60% lower here than the kernels reach."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.ones_like(a)
    kernel = _stream_kernel()
    run = (lambda: np.add(a, b, out=a)) if kernel is None else (lambda: kernel(a, b))
    run()
    return 3.0 * nbytes / min(_elapsed(run) for _ in range(repeat)) / 1e9


# --- timing ---------------------------------------------------------------------------------

def _elapsed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_call(run: Callable[[], object], repeat: int = 15, min_time: float = 0.02,
              budget: float = 3.0) -> list[float]:
    """Seconds per call, one per sample: `repeat` samples of enough calls to last `min_time` each
    (fewer samples, at least 3, when they would take longer than `budget`). GC is off meanwhile."""
    once = _elapsed(run)
    number = max(1, int(min_time / max(once, 1e-9)))
    repeat = max(min(3, repeat), min(repeat, int(budget / max(once * number, 1e-9))))
    enabled = gc.isenabled()
    gc.disable()
    try:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                run()
            samples.append((time.perf_counter() - t0) / number)
    finally:
        if enabled:
            gc.enable()
    return samples


# --- cold start: a new process imports, builds the CNN, runs one step ---------------------------

_COLD_FASTNN = """
import numpy as np, fastnn
from fastnn import recipes
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import Adam
model = recipes.cnn(seed=0, batchnorm=False, dropout=0.0)
rng = np.random.default_rng(0)
x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
model.train_on_batch(x, y, loss=SoftmaxCrossEntropy(), optimizer=Adam(model.parameters()))
"""
_COLD_TORCH = """
import sys, torch
from torch import nn
torch.set_num_threads(int(sys.argv[1]))
net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                    nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
opt.zero_grad(); nn.functional.cross_entropy(net(x), y).backward(); opt.step()
"""


def cold_start_seconds(impl: str, cache_dir: str, threads: int) -> float:
    """Wall time of a new Python process that imports, builds the MNIST CNN and runs one training
    step on `impl`, with NUMBA_CACHE_DIR=cache_dir (empty: cold; filled by a previous run: warm)."""
    import fastnn

    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, FASTNN_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(fastnn.__file__)), env.get("PYTHONPATH")) if p)
    if impl in FASTNN_IMPLS:
        env["FASTNN_BACKEND"] = impl
    code = _COLD_TORCH if impl in TORCH_IMPLS else _COLD_FASTNN
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(threads)], env=env,
                          capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"cold_start {impl}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    return took


def cold_start_impls() -> list[str]:
    return [*FASTNN_IMPLS, "torch"]


def time_cold_start(impl: str, cache: str, threads: int, repeat: int = 3) -> float:
    """Median wall seconds; "warm cache" fills the cache once first, "cold cache" uses a fresh
    one for every run."""
    times = []
    with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as warm_dir:
        if cache == "warm cache":
            cold_start_seconds(impl, warm_dir, threads)
        for _ in range(repeat):
            if cache == "warm cache":
                times.append(cold_start_seconds(impl, warm_dir, threads))
            else:
                with tempfile.TemporaryDirectory(prefix="fastnn-numba-cache-") as d:
                    times.append(cold_start_seconds(impl, d, threads))
    return statistics.median(times)


# --- the command ----------------------------------------------------------------------------

def _summarise(row: dict, machine: dict, w: Workload | None) -> None:
    us = row["us"]
    fast = {k: us[k] for k in FASTNN_IMPLS if us.get(k)}
    compiled = {k: v for k, v in fast.items() if k in COMPILED_IMPLS} or fast
    torch_best = min((us[k] for k in TORCH_IMPLS if us.get(k)), default=None)
    best = min(compiled.values(), default=None)
    row["best"] = min(compiled, key=compiled.get) if compiled else None
    row["speedup"] = us["numpy"] / best if best and us.get("numpy") else None
    row["vs_torch"] = torch_best / best if best and torch_best else None
    row["limit_pct"] = row["bound"] = None
    if w is not None and fast and (w.flops or w.bytes):
        t, bound = w.roofline_seconds(machine["sgemm_gflops"], machine["bandwidth_gbs"])
        row["limit_pct"], row["bound"] = 100.0 * t / (min(fast.values()) * 1e-6), bound


def run_benchmarks(names=None, impls=None, quick=False, threads=2, repeat=None,
                   min_time=None, stat="median", log=None) -> dict:
    """Time every selected workload x implementation; returns {"machine", "settings", "rows"}.
    Each row's "us" holds the `stat` ("median" or "min") of the samples, in µs per call."""
    repeat = repeat or (5 if quick else 15)
    min_time = min_time if min_time is not None else (0.005 if quick else 0.02)
    ws = workloads(names, quick)
    with_cold = "cold_start" in (names or ()) or (names is None and not quick)
    wanted = [i for i in (*FASTNN_IMPLS, *TORCH_IMPLS) if impls is None or i in impls]
    set_threads(threads, torch=any(i in TORCH_IMPLS for i in wanted))
    log = log or (lambda msg: None)
    log("measuring the machine's sgemm and memory bandwidth ...")
    n = 1024 if quick else 2048
    machine = {"cpu": cpu_model(), "sgemm_n": n, "sgemm_gflops": measure_sgemm(n),
               "bandwidth_gbs": measure_bandwidth(threads), "threads": thread_info(),
               "bandwidth_method": "a += b, 2 x 256 MB, "
                                   + ("Numba parallel" if _stream_kernel() else "NumPy, 1 thread"),
               "blas": blas_info(), "env": env_vars(), "versions": versions(),
               "backends": backend.available(), "loadavg_start": os.getloadavg()[0]}
    rows, failures = [], []
    for w in ws:
        row = {"workload": w.name, "shape": w.shape, "us": {}, "median_us": {}, "min_us": {},
               "error": {}, "flops": w.flops, "bytes": w.bytes}
        for impl in (i for i in w.impls() if i in wanted):
            log(f"{w.id} {impl}")
            case = None
            try:
                case, _ = checked_case(w, impl)
                with activate(impl):
                    samples = time_call(case.run, repeat, min_time)
                row["median_us"][impl] = 1e6 * statistics.median(samples)
                row["min_us"][impl] = 1e6 * min(samples)
                row["us"][impl] = row[f"{stat}_us"][impl]
            except Unavailable as exc:
                row["error"][impl] = f"skipped: {exc}"
            except AssertionError as exc:
                row["error"][impl] = f"CHECK FAILED: {exc}"
                failures.append(str(exc))
            del case
        _summarise(row, machine, w)
        rows.append(row)
    if with_cold:
        for cache in COLD_START_CACHES:
            row = {"workload": "cold_start", "shape": cache, "us": {}, "error": {}}
            for impl in cold_start_impls():
                if impl not in wanted or (impl in TORCH_IMPLS and cache == "cold cache"):
                    continue
                if unavailable_reason(impl):
                    row["error"][impl] = f"skipped: {unavailable_reason(impl)}"
                    continue
                log(f"cold_start[{cache}] {impl}")
                reps = 1 if quick or cache == "cold cache" else 3  # a cold Numba compile: ~20 s
                row["us"][impl] = 1e6 * time_cold_start(impl, cache, threads, reps)
            _summarise(row, machine, None)
            rows.append(row)
    machine["loadavg_end"] = os.getloadavg()[0]
    settings = {"quick": quick, "threads": threads, "repeat": repeat, "min_time": min_time,
                "workloads": names, "impls": impls, "stat": stat, "timer": "time.perf_counter"}
    return {"fastnn_bench": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine, "settings": settings, "rows": rows, "failures": failures}


def _fmt_us(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r))
    return "\n".join([line(header), "  ".join("-" * x for x in w), *map(line, rows)])


def _impl_columns(rows: list[dict]) -> list[str]:
    seen = {k for r in rows for k in (*r["us"], *r.get("error", {}))}
    return [i for i in (*FASTNN_IMPLS, *TORCH_IMPLS) if i in seen]


def format_table(result: dict) -> str:
    rows, m = result["rows"], result["machine"]
    cols = _impl_columns(rows)
    body = []
    for r in rows:
        cells = [r["workload"], r["shape"]]
        for i in cols:
            err = r.get("error", {}).get(i, "")
            cells.append("FAIL" if err.startswith("CHECK") else _fmt_us(r["us"].get(i)))
        cells.append(f"{r['speedup']:.2f}x" if r.get("speedup") else "-")
        cells.append(f"{r['vs_torch']:.2f}x" if r.get("vs_torch") else "-")
        pct = r.get("limit_pct")
        cells.append(f"{pct:.0f}% {r['bound']}" if pct is not None else "-")
        body.append(cells)
    header = ["workload", "shape", *(f"{i} µs" for i in cols), "best/numpy", "vs torch",
              "of limit"]
    threads = m["threads"]
    notes = [
        f"fastnn bench: {m['cpu']}, {result['settings']['threads']} threads "
        f"({', '.join(f'{k} {v}' for k, v in threads.items())}), sgemm {m['sgemm_gflops']:.1f} "
        f"GFLOP/s ({m['sgemm_n']}²), memory {m['bandwidth_gbs']:.1f} GB/s (a += b), load average "
        f"{m['loadavg_start']:.2f} -> {m.get('loadavg_end', 0):.2f}",
        "blas: " + "; ".join(f"{b['internal_api']} {b['version'] or ''} threads="
                             f"{b['num_threads']} ({b['library']})" for b in m["blas"]),
        "env: " + (" ".join(f"{k}={v}" for k, v in m["env"].items()) or "(none)"),
        "",
        _grid(header, body),
        "",
        textwrap.fill(
            f"µs: {result['settings']['stat']} time per call. best/numpy: the NumPy reference's "
            "time over the best compiled backend's. vs torch: the best torch time over the best "
            "compiled backend's (>1: fastnn faster). of limit: the roofline time (GEMM FLOPs / "
            "sgemm peak, or bytes / bandwidth) over the best fastnn time (mem: DRAM "
            "bandwidth, so a working set that fits in the cache can pass 100%). cold_start: wall "
            "time of a new process.", 100),
    ]
    for r in rows:
        for impl, err in r.get("error", {}).items():
            notes.append(f"{r['workload']}[{r['shape']}] {impl}: {err}")
    return "\n".join(notes)


def format_compare(result: dict, old: dict, old_path: str) -> str:
    before = {(r["workload"], r["shape"]): r for r in old.get("rows", [])}
    cols = _impl_columns(result["rows"])
    body = []
    for r in result["rows"]:
        o = before.get((r["workload"], r["shape"]))
        if o is None:
            continue
        cells = [r["workload"], r["shape"]]
        for i in cols:
            a, b = o["us"].get(i), r["us"].get(i)
            cells.append(f"{_fmt_us(a)} -> {_fmt_us(b)} ({b / a - 1:+.0%})" if a and b else "-")
        body.append(cells)
    om, m = old.get("machine", {}), result["machine"]
    lines = [f"change against {old_path} ({old.get('created', '?')}): time per call, µs (negative: "
             "faster)"]
    if om.get("cpu") != m["cpu"] or old.get("settings", {}).get("threads") != \
            result["settings"]["threads"]:
        lines.append(f"note: different machine or threads: then {om.get('cpu')} "
                     f"{old.get('settings', {}).get('threads')} threads, now {m['cpu']} "
                     f"{result['settings']['threads']} threads")
    if not body:
        return "\n".join([*lines, "(no workload in common)"])
    return "\n".join([*lines, _grid(["workload", "shape", *cols], body)])


def save_json(result: dict, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a subset of the shapes, fewer repeats, no cold_start (under a minute)")
    p.add_argument("--threads", type=positive_int_arg, default=2,
                   help="threads for every implementation: Numba, OpenMP, BLAS, torch (default 2)")
    p.add_argument("--workloads", type=_csv, default=None, metavar="A,B",
                   help=f"only these workloads (all their shapes; with --quick, their quick "
                        f"shapes): {', '.join(NAMES)}")
    p.add_argument("--impls", type=_csv, default=None, metavar="A,B",
                   help=f"only these implementations: {', '.join((*FASTNN_IMPLS, *TORCH_IMPLS))}")
    p.add_argument("--repeat", type=positive_int_arg, default=None,
                   help="timed samples per implementation (default 15; 5 with --quick)")
    p.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                   help="minimum duration of one sample (default 0.02; 0.005 with --quick)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic of the samples shown and compared (default median; min is "
                        "steadier on a busy machine)")
    p.add_argument("--json", metavar="PATH", help="save the table and machine info as JSON")
    p.add_argument("--compare", metavar="PATH", help="show the change against a saved --json run")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `bench` on the `fastnn` command's subparsers; `args.func(args)` runs it."""
    p = subparsers.add_parser(
        "bench", help="time the workloads on every backend and torch; print one table",
        description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    prog = "fastnn bench"
    try:
        workloads(args.workloads)
    except ValueError as exc:
        print(f"{prog}: error: --{exc}", file=sys.stderr)
        return 2
    bad = set(args.impls or ()) - {*FASTNN_IMPLS, *TORCH_IMPLS}
    if bad:
        print(f"{prog}: error: --impls: expected names from "
              f"{', '.join((*FASTNN_IMPLS, *TORCH_IMPLS))}, got {', '.join(sorted(bad))}",
              file=sys.stderr)
        return 2
    old = None
    if args.compare:
        try:
            with open(args.compare) as f:
                old = json.load(f)
            if not isinstance(old, dict) or "rows" not in old:
                raise ValueError("not a fastnn bench --json file")
        except (OSError, ValueError) as exc:
            print(f"{prog}: error: --compare: cannot read {args.compare!r}: {exc}", file=sys.stderr)
            return 2
    result = run_benchmarks(args.workloads, args.impls, args.quick, args.threads, args.repeat,
                            args.min_time, args.stat, log=lambda msg: print(f"  {msg}", file=sys.stderr,
                                                                 flush=True))
    print(format_table(result))
    if old is not None:
        print()
        print(format_compare(result, old, args.compare))
    if args.json:
        save_json(result, args.json)
        print(f"saved {args.json}")
    return 1 if result["failures"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastnn bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return cmd_bench(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
