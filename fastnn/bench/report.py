"""The result of `run_benchmarks` as text: the table with its machine notes, the change against
a saved run; and the saved run itself (JSON)."""

from __future__ import annotations

import json
import os
import textwrap

from .impls import FASTNN_IMPLS, TORCH_IMPLS


def _end_sgemm(m) -> str:
    end = m.get("sgemm_gflops_end")
    return "" if end is None else f"; {end:.1f} at the end"


def _drift_note(m) -> list[str]:
    """A warning when the machine's sgemm rate fell by more than 10% during the run."""
    end, start = m.get("sgemm_gflops_end"), m["sgemm_gflops"]
    if end is None or end >= 0.9 * start:
        return []
    return [f"the machine slowed during the run (sgemm {start:.0f} -> {end:.0f} GFLOP/s): rows "
            "measured late may be slow too; rerun them alone (--workloads NAME)"]


def _fmt_us(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r))

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
        f"GFLOP/s ({m['sgemm_n']}²{_end_sgemm(m)}), memory {m['bandwidth_gbs']:.1f} GB/s "
        f"(a += b), load average {m['loadavg_start']:.2f} -> {m.get('loadavg_end', 0):.2f}",
        *_drift_note(m),
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
    if m.get("peak_rss_mb"):
        notes.append("peak RSS of a new process running 50 cnn_step iterations: " + ", ".join(
            f"{impl} {mb:.0f} MB" for impl, mb in m["peak_rss_mb"].items()))
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
