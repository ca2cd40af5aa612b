"""The per-kernel order of "auto", derived from a `fastnn bench` run: for each group of kernels
that a workload measures, the compiled backends by their total time over its shapes, fastest
first, written as fastnn/data/auto_order.json (what `fastnn.backend` reads at import).

A backend replaces the default first choice (cython) only when it is faster by more than the
noise margin: choosing Numba for a kernel also costs Numba's import (and JIT or cache load) the
first time that kernel runs.
"""

from __future__ import annotations

import json
import os
import time

from .. import backend

# workload -> the kernels whose speed it stands for
GROUPS = {
    "dense_fb": ("dense_forward", "dense_backward", "bias_add_act"),
    "conv1_fb": ("conv2d_forward", "conv2d_backward", "im2col", "col2im"),
    "conv2_fb": ("conv2d_forward", "conv2d_backward", "im2col", "col2im"),
    "convpool_fb": ("conv2d_relu_pool_forward", "conv2d_relu_pool_backward"),
    "maxpool_fb": ("maxpool2d_forward", "maxpool2d_backward"),
    "softmax_ce_fb": ("softmax_cross_entropy", "softmax"),
    "sigmoid_fb": ("sigmoid", "sigmoid_backward", "relu", "relu_backward", "tanh",
                   "tanh_backward"),
    "adam_step": ("adam_update", "sgd_update", "adagrad_update", "rmsprop_update"),
}
COMPILED = ("cython", "numba")
NOISE = 0.10  # another backend must be this much faster to displace the default first choice


def derive(result: dict, noise: float = NOISE) -> dict[str, list[str]]:
    """{kernel: [backends, fastest first]} from a run_benchmarks result. Times are summed over
    every shape of the workloads that stand for a group; a group not measured on every compiled
    backend is left out (its kernels keep the default order)."""
    sums: dict[tuple[str, ...], dict[str, float]] = {}
    missing: set[tuple[str, ...]] = set()
    for row in result["rows"]:
        kernels = GROUPS.get(row["workload"])
        if kernels is None:
            continue
        total = sums.setdefault(kernels, dict.fromkeys(COMPILED, 0.0))
        for impl in COMPILED:
            us = row.get("us", {}).get(impl)
            if us is None:
                missing.add(kernels)
            else:
                total[impl] += us
    order: dict[str, list[str]] = {}
    for kernels, total in sums.items():
        if kernels in missing:
            continue
        fastest = min(COMPILED, key=lambda i: total[i])
        first = COMPILED[0]
        if fastest != first and total[fastest] < (1 - noise) * total[first]:
            first = fastest
        for k in kernels:
            order[k] = [first, *(i for i in COMPILED if i != first), "numpy"]
    return order


def write(result: dict, path: str | None = None) -> str:
    path = path or backend.AUTO_ORDER_FILE
    m = result["machine"]
    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu": m.get("cpu"),
           "threads": result["settings"]["threads"], "noise_margin": NOISE,
           "command": "fastnn bench --write-auto-order", "order": derive(result)}
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path
