"""`fastnn bench`: the workloads of the speed issue, timed for each implementation (the NumPy
reference, Numba, Cython, "auto", and PyTorch's eager CPU mode when torch imports), with the
machine's sgemm and memory-bandwidth limits measured in the same process.

This package is the one definition of the workloads: `bench/` (pytest-benchmark) and the command
both take shapes, inputs and the step of each implementation from `workloads()`. A workload's
`setup(impl)` returns a `Case`: `run()` is the timed call, `result()` the arrays that are checked
against the NumPy reference after one run. fastnn cases run on whichever backend is active: wrap
them in `activate(impl)`.

    impls      implementation names, which can run here, `activate`
    cases      the step of each workload on fastnn and on torch, as a `Case`
    workloads  the registry (`Workload`, `workloads()`) and the check against the reference
    machine    threads, BLAS, CPU, versions; measured sgemm and memory bandwidth
    timing     `time_call`, `time_interleaved` (implementations sampled in turn), and the
               cold start of a new process
    run        `run_benchmarks`: all of the above into one result
    report     the result as a table, a comparison, JSON
    cli        the `fastnn bench` command
"""

from .cases import Case
from .cli import add_arguments, add_parser, cmd_bench, main
from .impls import (
    COMPILED_IMPLS,
    FASTNN_IMPLS,
    TORCH_IMPLS,
    Unavailable,
    activate,
    torch_module,
    unavailable_reason,
)
from .machine import (
    blas_info,
    cpu_model,
    env_vars,
    header_lines,
    measure_bandwidth,
    measure_sgemm,
    set_threads,
    thread_info,
    versions,
)
from .report import format_compare, format_table, save_json
from .run import run_benchmarks
from .timing import (
    COLD_START_CACHES,
    cold_start_impls,
    cold_start_seconds,
    time_call,
    time_cold_start,
    time_interleaved,
)
from .workloads import (
    NAMES,
    Workload,
    all_workloads,
    checked_case,
    max_error,
    reference,
    workloads,
)

__all__ = [
    "COLD_START_CACHES", "COMPILED_IMPLS", "FASTNN_IMPLS", "NAMES", "TORCH_IMPLS", "Case",
    "Unavailable", "Workload", "activate", "add_arguments", "add_parser", "all_workloads",
    "blas_info", "checked_case", "cmd_bench", "cold_start_impls", "cold_start_seconds",
    "cpu_model", "env_vars", "format_compare", "format_table", "header_lines", "main",
    "max_error", "measure_bandwidth", "measure_sgemm", "reference", "run_benchmarks",
    "save_json", "set_threads", "thread_info", "time_call", "time_cold_start", "time_interleaved",
    "torch_module",
    "unavailable_reason", "versions", "workloads",
]
