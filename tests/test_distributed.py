"""fastnn.distributed and fastnn.hpsearch: data-parallel training and random search over MPI.

The MPI tests start `mpiexec -n N python -m mpi4py SCRIPT` subprocesses on localhost (`-m mpi4py`
makes an exception on one rank abort them all instead of leaving the others waiting). They skip
when mpi4py is not installed, except under CI=true, where the [mpi] extra is installed and a
missing mpi4py or mpiexec fails. The tests without MPI run everywhere.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import CHILD_CWD, IN_CI, REPORT

import fastnn
from fastnn import distributed, hpsearch
from fastnn.layers import Dense, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import Adam

ROOT = Path(__file__).resolve().parents[1]


def _mpiexec() -> str:
    """The mpiexec beside this Python (where the mpich wheel puts it), else on PATH."""
    if importlib.util.find_spec("mpi4py") is None:
        why = "mpi4py is not installed (pip install 'fastnn[mpi]')"
    else:
        beside = Path(sys.executable).parent / "mpiexec"
        found = str(beside) if beside.is_file() else shutil.which("mpiexec")
        if found:
            return found
        why = "mpi4py is installed but no mpiexec was found beside Python or on PATH"
    if IN_CI:
        pytest.fail(f"CI installs the [mpi] extra, but {why}")
    pytest.skip(why)


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env.pop("FASTNN_NUM_THREADS", None)  # fastnn.distributed divides the cores among the ranks
    env.update(extra)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")  # in case the MPI is Open MPI and we are root
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    if Path(fastnn.__file__).resolve().parents[1] == ROOT:  # testing the source tree
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def mpirun(n: int, script: Path, *args: str, timeout: float = 120,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `script` on n ranks; on a timeout kill the whole launcher session (no stray ranks)."""
    cmd = [_mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py", str(script), *args]
    proc = subprocess.Popen(cmd, cwd=script.parent, env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s:\n{out}\n{err}")
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{out}\n{err}"
    return result


def write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


# 20 Adam steps of a small MLP on fixed random data: one epoch of 1280 samples in global batches
# of 64. Each rank saves its parameters; rank 0 also saves the history.
EQUIVALENCE = """
    import json, sys
    import numpy as np
    import fastnn
    from fastnn import distributed
    from fastnn.layers import Dense, ReLU
    from fastnn.losses import SoftmaxCrossEntropy
    from fastnn.optim import Adam

    mode = sys.argv[1]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64 * 20, 100)).astype(np.float32)
    y = (x[:, :10].argmax(1) + rng.integers(0, 2, len(x))) % 10
    model = fastnn.Sequential([Dense(100, 128, seed=1), ReLU(), Dense(128, 64, seed=2), ReLU(),
                               Dense(64, 10, seed=3)])
    opt = Adam(model.parameters(), lr=1e-3)
    kw = dict(loss=SoftmaxCrossEntropy(), optimizer=opt, epochs=1, batch_size=64, seed=3, verbose=0)
    fit = model.fit if mode == "single" else lambda *a, **k: distributed.fit(model, *a, **k)
    history = fit(x, y, **kw)
    assert opt.steps == 20, opt.steps
    np.save(f"{mode}.rank{distributed.rank()}.npy", model.parameters().data)
    if distributed.is_root():
        json.dump({"history": history.history, "timing": getattr(history, "timing", None)},
                  open(f"{mode}.json", "w"))
"""


def test_two_ranks_equal_one_process_after_20_adam_steps(tmp_path):
    """2 ranks x per-rank batch 32 == 1 process x batch 64, to float32 summation order.

    Not bitwise: each rank's GEMM sums its 32 samples' contributions to dW (blocked differently
    from one GEMM over 64), and the Allreduce adds the two halves, so each gradient element is
    the same sum in a different order (relative error ~ n * 2^-24 at most, observed ~1e-7).
    Adam divides by sqrt(v), so a relative gradient error becomes a relative error of each
    step (~lr * 1e-6); after 20 steps at lr 1e-3 the weights (|w| <= ~0.6) differed by at most
    1.1e-7 here. atol 1e-5 leaves two orders of magnitude for other BLAS builds and CPUs; a
    wrong averaging (sum instead of mean, a missing or double-counted shard) is off by ~1e-3."""
    script = write(tmp_path, "equivalence.py", EQUIVALENCE)
    mpirun(2, script, "distributed")
    single = subprocess.run([sys.executable, str(script), "single"], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert single.returncode == 0, single.stderr
    ref = np.load(tmp_path / "single.rank0.npy")
    rank0 = np.load(tmp_path / "distributed.rank0.npy")
    rank1 = np.load(tmp_path / "distributed.rank1.npy")
    np.testing.assert_array_equal(rank0, rank1, err_msg="the replicas drifted apart")
    np.testing.assert_allclose(rank0, ref, rtol=0, atol=1e-5)
    REPORT.append(f"distributed: 2 ranks vs 1 process after 20 Adam steps: max |dw| = "
                  f"{np.abs(rank0 - ref).max():.2e}")
    h_ref = json.loads((tmp_path / "single.json").read_text())["history"]
    h_two = json.loads((tmp_path / "distributed.json").read_text())
    # The epoch's metrics are reduced over the ranks: the same mean loss as one process.
    assert h_two["history"]["loss"] == pytest.approx(h_ref["loss"], rel=1e-5)
    assert h_two["history"]["accuracy"] == pytest.approx(h_ref["accuracy"], abs=1 / 1280)
    assert h_two["timing"]["ranks"] == 2 and h_two["timing"]["steps"] == 20
    cores = len(os.sched_getaffinity(0))
    if cores == os.cpu_count():  # no launcher binding: the ranks share the cores
        assert h_two["timing"]["threads"] == max(1, cores // 2)


MNIST_MLP = """
    import json, sys, time
    from fastnn import datasets, distributed, recipes
    from fastnn.losses import SoftmaxCrossEntropy
    from fastnn.optim import Adam

    (x, y), (x_test, y_test) = datasets.mnist_small()
    model = recipes.mlp(seed=0)  # 784-512-256-10 with dropout 0.2
    optimizer, loss = Adam(model.parameters(), lr=1e-3), SoftmaxCrossEntropy()
    t0 = time.perf_counter()
    history = distributed.fit(model, x, y, loss=loss, optimizer=optimizer, epochs=3,
                              batch_size=64, seed=0, verbose=0)
    seconds = time.perf_counter() - t0
    test = distributed.evaluate(model, x_test, y_test, loss=loss)
    if distributed.is_root():
        json.dump({"test": test, "history": history.history, "seconds": seconds,
                   "timing": history.timing}, open(sys.argv[1], "w"))
"""


def test_mnist_mlp_two_ranks_reach_the_accuracy_of_one(tmp_path):
    """The bundled MNIST subset (6000/1000), the recipe MLP, 3 epochs of global batch 64."""
    script = write(tmp_path, "mnist_mlp.py", MNIST_MLP)
    # One thread per rank: 1 core against 2 (and robust to a busy machine, where one process
    # with 2 threads can be slowed many times over by a neighbour on one of the cores).
    mpirun(1, script, "one.json", env=_env(FASTNN_NUM_THREADS="1"))
    mpirun(2, script, "two.json", env=_env(FASTNN_NUM_THREADS="1"))
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    for run in (one, two):
        t = run["timing"]
        REPORT.append(f"distributed: MNIST-small MLP, {t['ranks']} rank(s) x {t['threads']} "
                      f"thread(s): test acc {run['test']['accuracy']:.3f}, {run['seconds']:.1f} s, "
                      f"{t['step_seconds'] * 1e3:.2f} ms/step, Allreduce "
                      f"{t['allreduce_share']:.0%} (including waiting for the slower rank)")
    assert one["test"]["accuracy"] >= 0.92, one
    # Dropout masks differ (each rank has its own stream), so the runs are not identical.
    assert abs(two["test"]["accuracy"] - one["test"]["accuracy"]) <= 0.02, (one, two)
    assert abs(two["history"]["loss"][-1] - one["history"]["loss"][-1]) <= 0.03


NONFINITE = """
    import numpy as np
    from fastnn import distributed, recipes
    from fastnn.losses import SoftmaxCrossEntropy
    from fastnn.optim import SGD

    x = np.ones((8, 1, 28, 28), np.float32)
    x[5] = np.inf  # in rank 1's half of the first global batch (order: no shuffle)
    y = np.zeros(8, np.int64)
    model = recipes.mlp(seed=0, dropout=0)
    try:
        distributed.fit(model, x, y, loss=SoftmaxCrossEntropy(), batch_size=8, shuffle=False,
                        optimizer=SGD(model.parameters()), verbose=0)
    except FloatingPointError as exc:
        print(f"rank {distributed.rank()} stopped: {exc}", flush=True)
"""


def test_a_nonfinite_loss_on_one_rank_stops_every_rank(tmp_path):
    r = mpirun(2, write(tmp_path, "nonfinite.py", NONFINITE), timeout=60)
    assert "rank 0 stopped: loss became non-finite on another rank at epoch 1, step 1" in r.stdout
    assert "rank 1 stopped: loss became nan at epoch 1, step 1" in r.stdout


HPSEARCH = """
    import sys
    from fastnn import hpsearch
    sys.exit(hpsearch.main(sys.argv[1:]))
"""


def test_hpsearch_spreads_trials_over_two_ranks(tmp_path):
    args = ["--trials", "4", "--epochs", "2", "--train-size", "200", "--seed", "1"]
    mpirun(2, write(tmp_path, "hp.py", HPSEARCH), *args, "--out", str(tmp_path / "mpi"))
    local = subprocess.run([sys.executable, "-m", "fastnn.hpsearch", *args, "--workers", "1",
                            "--out", str(tmp_path / "local")], cwd=tmp_path, env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert local.returncode == 0, local.stderr
    mpi = json.loads((tmp_path / "mpi" / "hpsearch.json").read_text())["trials"]
    ref = json.loads((tmp_path / "local" / "hpsearch.json").read_text())["trials"]
    assert sorted(t["worker"] for t in mpi) == [0, 0, 1, 1]  # trial i ran on rank i % 2
    for a, b in zip(mpi, ref, strict=True):  # the same trials and results, wherever they ran
        assert (a["trial"], a["lr"], a["weight_decay"]) == (b["trial"], b["lr"], b["weight_decay"])
        assert a["val_accuracy_curve"] == b["val_accuracy_curve"]
    assert all(1e-6 <= t["lr"] <= 1e-2 and 1e-8 <= t["weight_decay"] <= 1e-4 for t in mpi)
    header = (tmp_path / "mpi" / "hpsearch.csv").read_text().splitlines()[0]
    assert header.startswith("trial,lr,weight_decay,val_accuracy")
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "mpi" / "hpsearch.png").read_bytes()[:4] == b"\x89PNG"


def _cli_has_distributed() -> bool:
    from fastnn.cli import build_parser

    try:
        build_parser().parse_args(["train", "--distributed"])
    except SystemExit:
        return False
    return True


def test_cli_train_distributed(tmp_path):
    if not _cli_has_distributed():
        pytest.skip("fastnn train has no --distributed option in this version of fastnn/cli.py")
    script = write(tmp_path, "cli.py", "import sys\nfrom fastnn.cli import main\n"
                                       "sys.exit(main())\n")
    out = tmp_path / "run"
    r = mpirun(2, script, "train", "--distributed", "--model", "mlp", "--epochs", "1",
               "--out", str(out), "--verbose", "0")
    assert r.stdout.count("test accuracy") == 1, r.stdout  # only rank 0 prints
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["test_accuracy"] > 0.85, metrics


# --- without MPI: these run everywhere ------------------------------------------------------


def test_import_fastnn_never_imports_mpi4py():
    code = ("import sys, fastnn, fastnn.distributed, fastnn.hpsearch, fastnn.cli; "
            "from fastnn import distributed as d; "
            "assert (d.rank(), d.world_size(), d.is_root()) == (0, 1, True); "
            "assert 'mpi4py' not in sys.modules, 'mpi4py was imported'")
    env = {k: v for k, v in _env().items() if k not in distributed._LAUNCHER_VARS}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60, cwd=CHILD_CWD)
    assert r.returncode == 0, r.stderr


def _small_model():
    return fastnn.Sequential([Dense(20, 32, seed=1), ReLU(), Dense(32, 5, seed=2)])


def test_fit_outside_mpi_is_sequential_fit_bitwise(monkeypatch):
    for var in distributed._LAUNCHER_VARS:
        monkeypatch.delenv(var, raising=False)
    if "mpi4py.MPI" in sys.modules:
        pytest.skip("mpi4py.MPI is imported in this process, so fit would use COMM_WORLD")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 20)).astype(np.float32), rng.integers(0, 5, 100)
    runs = ["sequential", "distributed.fit"]
    if "distributed" in inspect.signature(fastnn.Sequential.fit).parameters:
        runs.append("fit(distributed=True)")
    results = []
    for run in runs:
        model = _small_model()
        opt, loss = Adam(model.parameters(), lr=1e-2), SoftmaxCrossEntropy()
        kw = dict(loss=loss, optimizer=opt, epochs=2, batch_size=16, seed=4, verbose=0,
                  validation_split=0.2)
        if run == "sequential":
            h = model.fit(x, y, **kw)
        elif run == "distributed.fit":
            h = distributed.fit(model, x, y, **kw)
        else:
            h = model.fit(x, y, distributed=True, **kw)
            assert h.timing["ranks"] == 1  # it went through fastnn.distributed
        results.append((model.parameters().data.copy(), h.history))
    for data, history in results[1:]:
        np.testing.assert_array_equal(results[0][0], data)
        assert results[0][1] == history


def test_fit_validates_like_sequential_fit():
    model = _small_model()
    opt = Adam(model.parameters())
    x, y = np.zeros((4, 20), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="batch_size"):
        distributed.fit(model, x, y, loss=SoftmaxCrossEntropy(), optimizer=opt, batch_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        distributed.fit(model, x, y, loss=SoftmaxCrossEntropy(),
                        optimizer=Adam(_small_model().parameters()))


def test_shards_cover_every_sample_once():
    for n in range(0, 20):
        for p in range(1, 6):
            parts = [distributed.shard(n, r, p) for r in range(p)]
            sizes = [s.stop - s.start for s in parts]
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
            assert all(a.stop == b.start for a, b in zip(parts[:-1], parts[1:], strict=True))


def test_hpsearch_samples_log_uniform_in_range():
    lr, wd = hpsearch.sample(2000, seed=3)
    assert lr.min() >= 1e-6 and lr.max() <= 1e-2 and wd.min() >= 1e-8 and wd.max() <= 1e-4
    # log-uniform: each decade of lr gets about a quarter of the draws
    counts = np.histogram(np.log10(lr), bins=[-6, -5, -4, -3, -2])[0]
    assert counts.min() > 400
