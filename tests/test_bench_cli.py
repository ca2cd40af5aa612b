"""`fastnn bench`, functionally (no timing assertions): the table prints, --json and --compare
round-trip, bad arguments exit 2, and `add_parser` plugs into argparse subparsers."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest

from fastnn import backend, bench

# numpy + auto only: fast, and the same with or without torch installed
TINY = ["--quick", "--workloads", "dense_fb,softmax_ce_fb", "--impls", "numpy,auto",
        "--repeat", "1", "--min-time", "0", "--threads", "1"]


def run_bench(argv):
    """(exit code, stdout, stderr) of bench.main(argv), restoring the thread count after."""
    threads = backend.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = bench.main(argv)
    finally:
        backend.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "run.json"
    code, out, err = run_bench([*TINY, "--json", str(path)])
    return code, out, err, path


def test_table_prints_every_quick_shape(saved):
    code, out, err, _ = saved
    assert code == 0, err
    assert "sgemm" in out and "GFLOP/s" in out and "GB/s" in out
    for row in ("dense_fb", "64x784->256", "softmax_ce_fb", "64x10", "4096x1000"):
        assert row in out
    assert "256x784->256" not in out  # not a --quick shape
    assert "numpy µs" in out and "auto µs" in out and "best/numpy" in out and "of limit" in out
    assert "conv2_fb" not in out


def test_json_holds_table_and_machine(saved):
    *_, path = saved
    data = json.loads(path.read_text())
    assert data["settings"]["threads"] == 1 and data["settings"]["quick"] is True
    m = data["machine"]
    assert m["cpu"] and m["sgemm_gflops"] > 0 and m["bandwidth_gbs"] > 0
    assert m["threads"]["fastnn"] == 1
    assert isinstance(m["blas"], list) and isinstance(m["env"], dict)
    rows = {(r["workload"], r["shape"]): r for r in data["rows"]}
    assert set(rows) == {("dense_fb", "64x784->256"), ("softmax_ce_fb", "64x10"),
                         ("softmax_ce_fb", "4096x1000")}
    for r in rows.values():
        assert set(r["us"]) == {"numpy", "auto"} and all(v > 0 for v in r["us"].values())
        assert r["speedup"] > 0 and r["limit_pct"] > 0
    assert data["failures"] == []


def test_compare_round_trip(saved, tmp_path):
    *_, old = saved
    new = tmp_path / "new.json"
    code, out, err = run_bench([*TINY, "--workloads", "softmax_ce_fb", "--compare", str(old),
                                "--json", str(new)])
    assert code == 0, err
    assert f"change against {old}" in out
    compare = out.split("change against", 1)[1]
    assert "softmax_ce_fb" in compare and "dense_fb" not in compare and "%" in compare
    assert {r["workload"] for r in json.loads(new.read_text())["rows"]} == {"softmax_ce_fb"}


@pytest.mark.parametrize("argv, message", [
    (["--workloads", "nope"], "workloads"),
    (["--impls", "jax"], "--impls"),
    (["--compare", "/nonexistent/run.json"], "--compare"),
])
def test_bad_arguments_exit_2(argv, message):
    code, out, err = run_bench(argv)
    assert code == 2 and message in err and out == ""


def test_add_parser_plugs_into_subparsers():
    parser = argparse.ArgumentParser(prog="fastnn")
    sub = parser.add_subparsers(dest="command")
    bench.add_parser(sub)
    args = parser.parse_args(["bench", "--quick", "--threads", "3", "--workloads", "dense_fb,cnn_step",
                              "--json", "out.json"])
    assert args.func is bench.cmd_bench
    assert args.quick and args.threads == 3 and args.workloads == ["dense_fb", "cnn_step"]
    assert args.json == "out.json" and args.compare is None
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser.parse_args(["bench", "--threads", "0"])


def test_the_header_shows_the_sgemm_rate_at_the_end_and_warns_of_a_slowdown(saved):
    from fastnn.bench import report

    code, out, _, path = saved
    assert code == 0 and "at the end)" in out
    result = json.loads(path.read_text())
    assert result["machine"]["sgemm_gflops_end"] > 0
    result["machine"]["sgemm_gflops_end"] = 0.5 * result["machine"]["sgemm_gflops"]
    assert "the machine slowed during the run" in report.format_table(result)
