"""The registry: every workload at every shape (`workloads()`), and the check of a case against
the NumPy reference before it is timed (`checked_case()`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .cases import (
    Case,
    adam_fastnn,
    adam_torch,
    cnn_model,
    conv_fastnn,
    conv_torch,
    convpool_fastnn,
    convpool_torch,
    dense_fastnn,
    dense_torch,
    maxpool_fastnn,
    maxpool_torch,
    mlp_model,
    model_gemm_flops,
    sigmoid_fastnn,
    sigmoid_torch,
    softmax_ce_fastnn,
    softmax_ce_torch,
    step_fastnn,
    step_torch,
    textbook_cnn_model,
)
from .impls import FASTNN_IMPLS, Unavailable, activate, unavailable_reason


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
                          _p(conv_fastnn, n, c, hw, f, 3, 1),
                          {"torch": _p(conv_torch, n, c, hw, f, 3, 1)},
                          flops=6.0 * n * hw * hw * c * 9 * f, bytes=f32 * io, quick=quick,
                          key=f"{c}to{f}"))
    n, c, hw, f, k = 100, 1, 28, 30, 5  # the textbook SimpleConvNet's first block
    ohw, phw = (hw - k + 1) ** 2, ((hw - k + 1) // 2) ** 2
    W.append(Workload("convpool_fb", f"{n}x{c}x{hw}x{hw}, {c}->{f} {k}x{k}, relu, pool 2",
                      _p(convpool_fastnn, n, c, hw, f, k),
                      {"torch": _p(convpool_torch, n, c, hw, f, k)},
                      flops=4.0 * n * ohw * c * k * k * f,  # forward and dW; no dx
                      bytes=f32 * (n * c * hw * hw + 3 * n * f * phw + 2 * f * c * k * k),
                      quick=True, key="textbook"))
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
    W.append(Workload("sigmoid_fb", f"{n:,}", _p(sigmoid_fastnn, n),
                      {"torch": _p(sigmoid_torch, n)}, bytes=f32 * 5 * n, quick=True, key="4M"))
    for n, label, quick in ((1_000_000, "1M", True), (10_000_000, "10M", False)):
        W.append(Workload("adam_step", f"{label} params", _p(adam_fastnn, n),
                          {"torch": _p(adam_torch, n),
                           "torch_fused": _p(adam_torch, n, fused=True)},
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


NAMES = ("dense_fb", "conv1_fb", "conv2_fb", "convpool_fb", "maxpool_fb", "softmax_ce_fb",
         "sigmoid_fb", "adam_step", "mlp_step", "cnn_step", "textbook_cnn_step", "cold_start")


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
    for a, b in zip(got, expected, strict=True):
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
