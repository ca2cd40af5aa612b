"""Backend "auto" by measurement: the per-kernel order that `fastnn bench --write-auto-order`
derives from a run, written to the file fastnn reads at import."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import CHILD_CWD, child_env

from fastnn import backend
from fastnn.bench import autoorder


def _result(times: dict[str, dict[str, float]]) -> dict:
    rows = [{"workload": w, "shape": "s", "us": us} for w, us in times.items()]
    return {"rows": rows, "machine": {"cpu": "test"}, "settings": {"threads": 2}}


def test_derive_keeps_the_default_unless_another_backend_is_clearly_faster():
    order = autoorder.derive(_result({
        "softmax_ce_fb": {"cython": 100.0, "numba": 80.0, "numpy": 900.0},   # 20% faster
        "sigmoid_fb": {"cython": 100.0, "numba": 95.0, "numpy": 900.0},      # within noise
        "adam_step": {"cython": 100.0, "numpy": 900.0},                      # numba not measured
    }))
    assert order["softmax_cross_entropy"] == ["numba", "cython", "numpy"]
    assert order["softmax"] == ["numba", "cython", "numpy"]
    assert order["sigmoid"] == ["cython", "numba", "numpy"]
    assert "adam_update" not in order


def test_conv_shapes_are_summed_into_one_choice():
    order = autoorder.derive(_result({
        "conv1_fb": {"cython": 10.0, "numba": 50.0},
        "conv2_fb": {"cython": 200.0, "numba": 100.0},  # total: cython 210, numba 150
    }))
    assert order["conv2d_forward"] == order["conv2d_backward"] == ["numba", "cython", "numpy"]


def test_the_written_file_is_what_auto_follows(tmp_path):
    path = autoorder.write(_result({"maxpool_fb": {"cython": 100.0, "numba": 10.0}}),
                           str(tmp_path / "auto_order.json"))
    doc = json.loads(open(path).read())
    assert doc["order"]["maxpool2d_forward"][0] == "numba"
    assert backend.load_auto_order(path)["maxpool2d_forward"] == ("numba", "cython", "numpy")
    code = ("from fastnn import backend; print(backend.resolve('maxpool2d_forward'), "
            "backend.resolve('relu'))")
    env = child_env(FASTNN_AUTO_ORDER=path)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, cwd=CHILD_CWD)
    assert res.returncode == 0, res.stderr
    first = [b for b in ("cython", "numba", "numpy") if b in backend.available()][0]
    assert res.stdout.split() == ["numba" if "numba" in backend.available() else first, first]


def test_a_missing_or_broken_file_means_the_default_order(tmp_path):
    assert backend.load_auto_order(str(tmp_path / "none.json")) == {}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert backend.load_auto_order(str(bad)) == {}
