"""`run_benchmarks`: the machine measured, then every selected workload x implementation checked
and timed, into the result that `report` prints and `--json` saves."""

from __future__ import annotations

import os
import statistics
import time

from .. import backend
from .impls import (
    COMPILED_IMPLS,
    FASTNN_IMPLS,
    TORCH_IMPLS,
    Unavailable,
    activate,
    unavailable_reason,
)
from .machine import (
    blas_info,
    cpu_model,
    env_vars,
    measure_bandwidth,
    measure_sgemm,
    set_threads,
    stream_kernel,
    thread_info,
    versions,
)
from .timing import (
    COLD_START_CACHES,
    cold_start_impls,
    peak_rss_mb,
    time_cold_start,
    time_interleaved,
)
from .workloads import Workload, checked_case, workloads


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
                                   + ("Numba parallel" if stream_kernel() else "NumPy, 1 thread"),
               "blas": blas_info(), "env": env_vars(), "versions": versions(),
               "backends": backend.available(), "loadavg_start": os.getloadavg()[0]}
    rows, failures = [], []
    for w in ws:
        row = {"workload": w.name, "shape": w.shape, "us": {}, "median_us": {}, "min_us": {},
               "error": {}, "flops": w.flops, "bytes": w.bytes}
        cases = {}
        for impl in (i for i in w.impls() if i in wanted):
            log(f"{w.id} {impl}")
            try:
                cases[impl] = checked_case(w, impl)[0].run
            except Unavailable as exc:
                row["error"][impl] = f"skipped: {exc}"
            except AssertionError as exc:
                row["error"][impl] = f"CHECK FAILED: {exc}"
                failures.append(str(exc))
        # every implementation's samples in turn: a drifting machine slows them all alike
        for impl, samples in time_interleaved(cases, activate, repeat, min_time).items():
            row["median_us"][impl] = 1e6 * statistics.median(samples)
            row["min_us"][impl] = 1e6 * min(samples)
            row["us"][impl] = row[f"{stat}_us"][impl]
        del cases
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
    if with_cold:  # the memory target: 50 cnn_step iterations in a new process
        machine["peak_rss_mb"] = {}
        for impl in cold_start_impls():
            if impl in wanted and not unavailable_reason(impl):
                log(f"peak RSS, 50 cnn_step iterations: {impl}")
                machine["peak_rss_mb"][impl] = peak_rss_mb(impl, threads)
    # the same measurement again: a machine that drifted during the run shows here
    machine["sgemm_gflops_end"] = measure_sgemm(n)
    machine["loadavg_end"] = os.getloadavg()[0]
    settings = {"quick": quick, "threads": threads, "repeat": repeat, "min_time": min_time,
                "workloads": names, "impls": impls, "stat": stat, "timer": "time.perf_counter"}
    return {"fastnn_bench": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine, "settings": settings, "rows": rows, "failures": failures}
