"""fastnn.datasets: MNIST lookup, download and verification, the shipped subset, bad files, and the
batch/split/one-hot helpers. No network: downloads come from a local http.server."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import importlib.util
import os
import pickle
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from fastnn import datasets as D

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT.parent / "shared/data/mnist.npz"
SMALL = ROOT / "fastnn/data/mnist_small.npz"
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture
def full_path() -> Path:
    if not FULL.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs the real MNIST at {FULL} (see ../shared/data/README.md)")
        pytest.skip(f"real MNIST not found at {FULL} (../shared/data/mnist.npz beside the repo)")
    return FULL


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No user data dir, a private cache, downloads off unless a test turns them on."""
    monkeypatch.delenv("FASTNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FASTNN_MNIST_URL", "")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """A local HTTP server for ``directory`` in a thread; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write_npz(path: Path, n_train=50, n_test=20, **override) -> Path:
    """A small file in the MNIST layout; keyword arguments replace (or, when None, drop) arrays."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": (np.arange(n_train) % 10).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": (np.arange(n_test) % 10).astype(np.uint8)}
    arrays.update(override)
    with open(path, "wb") as f:  # a file object, so no ".npz" is appended
        np.savez(f, **{k: v for k, v in arrays.items() if v is not None})
    return path


def full_arrays(full_path: Path) -> dict[str, np.ndarray]:
    with np.load(full_path) as npz:
        return {k: npz[k] for k in D.KEYS}


# --- full MNIST -----------------------------------------------------------------------------------

def test_full_mnist_shapes_labels_and_counts(full_path):
    (x, y), (xt, yt) = D.mnist(full_path)
    assert x.shape == (60000, 1, 28, 28) and xt.shape == (10000, 1, 28, 28)
    assert x.dtype == xt.dtype == np.float32 and y.dtype == yt.dtype == np.int64
    assert x.flags.c_contiguous
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert yt[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(y).tolist() == TRAIN_COUNTS and np.bincount(yt).sum() == 10000
    assert x.min() == 0.0 and x.max() == 1.0 and xt.min() >= 0.0 and xt.max() <= 1.0


def test_full_mnist_raw_flat_and_directory_path(full_path):
    (x, y), (xt, _) = D.mnist(full_path.parent, normalize=False, flatten=True)  # a directory
    raw = full_arrays(full_path)
    assert x.shape == (60000, 784) and xt.shape == (10000, 784) and x.dtype == np.float32
    np.testing.assert_array_equal(x, raw["x_train"].reshape(60000, 784))
    np.testing.assert_array_equal(y, raw["y_train"])


def test_checksum_computed_once_per_file_version(full_path, monkeypatch):
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(D.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(D, "_verified", set())
    D.mnist(full_path)
    assert len(calls) == 4
    D.mnist(full_path)
    assert len(calls) == 4, "the second load of an unchanged file must not hash again"


def test_tampered_full_size_file_fails_checksum(full_path, tmp_path):
    raw = full_arrays(full_path)
    raw["x_train"][0, 0, 0] ^= 1
    bad = write_npz(tmp_path / "mnist.npz", **raw)
    got = hashlib.sha256(raw["x_train"].tobytes()).hexdigest()
    with pytest.raises(ValueError) as err:
        D.mnist(bad)
    msg = str(err.value)
    assert str(bad) in msg and "'x_train'" in msg
    assert D.MNIST_SHA256["x_train"] in msg and got in msg


# --- where mnist() looks --------------------------------------------------------------------------

def test_user_subset_accepted_without_checksum(tmp_path):
    (x, y), (xt, yt) = D.mnist(write_npz(tmp_path / "mine.npz", 50, 20))
    assert x.shape == (50, 1, 28, 28) and xt.shape == (20, 1, 28, 28) and y.dtype == np.int64


def test_resolution_order(tmp_path, monkeypatch):
    data_dir, cache = tmp_path / "data", D.cache_dir()
    data_dir.mkdir()
    cache.mkdir(parents=True)
    write_npz(data_dir / "mnist.npz", 30, 10)
    write_npz(cache / "mnist.npz", 40, 10)
    explicit = write_npz(tmp_path / "explicit.npz", 20, 10)
    monkeypatch.setenv("FASTNN_DATA_DIR", str(data_dir))
    assert len(D.mnist(explicit)[0][0]) == 20
    assert len(D.mnist()[0][0]) == 30
    monkeypatch.delenv("FASTNN_DATA_DIR")
    assert len(D.mnist()[0][0]) == 40
    assert cache == tmp_path / "xdg" / "fastnn"


def test_missing_explicit_path(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match=re.escape(str(tmp_path / "nope.npz"))):
        D.mnist(tmp_path / "nope.npz")
    assert issubclass(D.DatasetNotFoundError, FileNotFoundError)


def test_offline_and_nothing_found_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTNN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("FASTNN_MNIST_URL", "http://127.0.0.1:9/mnist.npz")
    with pytest.raises(OSError) as err:
        D.mnist()
    assert isinstance(err.value, D.DatasetNotFoundError)
    msg = str(err.value)
    for place in (tmp_path / "empty" / "mnist.npz", D.cache_dir() / "mnist.npz",
                  "http://127.0.0.1:9/mnist.npz", "mnist(path=", "FASTNN_DATA_DIR",
                  D.MNIST_URLS[0], "mnist_small()"):
        assert str(place) in msg
    assert not any(D.cache_dir().glob("*")), "a failed download must leave nothing behind"


def test_download_verified_and_cached_atomically(full_path, tmp_path, monkeypatch):
    with serve(full_path.parent) as base:  # the first URL is dead: the second must be used
        monkeypatch.setenv("FASTNN_MNIST_URL", f"http://127.0.0.1:9/x {base}/mnist.npz")
        (x, y), _ = D.mnist()
    cached = D.cache_dir() / "mnist.npz"
    assert sorted(p.name for p in D.cache_dir().iterdir()) == ["mnist.npz"]  # no *.part left
    assert cached.read_bytes() == full_path.read_bytes()
    assert x.shape == (60000, 1, 28, 28) and y[:3].tolist() == [5, 0, 4]
    monkeypatch.setenv("FASTNN_MNIST_URL", "http://127.0.0.1:9/")  # server gone: cache is used
    assert D.mnist()[1][1][:3].tolist() == [7, 2, 1]


@pytest.mark.parametrize("kind", ["checksum", "subset", "garbage"])
def test_bad_download_refused_and_leaves_no_file(tmp_path, monkeypatch, kind):
    served = tmp_path / "srv"
    served.mkdir()
    if kind == "checksum":  # full MNIST shapes, wrong contents
        zeros = {k: np.zeros(s, np.uint8) for k, s in [("x_train", (60000, 28, 28)),
                 ("y_train", (60000,)), ("x_test", (10000, 28, 28)), ("y_test", (10000,))]}
        with open(served / "mnist.npz", "wb") as f:
            np.savez_compressed(f, **zeros)
    elif kind == "subset":
        write_npz(served / "mnist.npz")
    else:
        (served / "mnist.npz").write_text("<html>captive portal</html>")
    with serve(served) as base:
        monkeypatch.setenv("FASTNN_MNIST_URL", f"{base}/mnist.npz")
        with pytest.raises(D.DatasetNotFoundError) as err:
            D.mnist()
    msg = str(err.value)
    assert f"{base}/mnist.npz" in msg
    if kind == "checksum":
        assert "'x_train'" in msg and D.MNIST_SHA256["x_train"] in msg
        assert hashlib.sha256(zeros["x_train"].tobytes()).hexdigest() in msg
    assert list(D.cache_dir().iterdir()) == []


# --- bad files ------------------------------------------------------------------------------------

def _mark(path):  # what a malicious pickle would run; must never be called
    Path(path).write_text("unpickled!")
    return 0


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_mark, (self.path,))


def _bad_file(kind: str, path: Path) -> Path:
    data = SMALL.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        flipped = bytearray(data)
        for i in range(len(data) // 3, len(data) // 3 + 64):
            flipped[i] ^= 0xFF
        path.write_bytes(bytes(flipped))
    elif kind == "text":
        path.write_text("x_train,y_train\n1,2\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros((3, 28, 28), np.uint8))
    elif kind == "pickle-array":
        evil = np.array([_Evil(str(path) + ".pwned")], dtype=object)
        with open(path, "wb") as f:
            np.savez(f, x_train=evil, y_train=np.zeros(1, np.uint8), x_test=evil,
                     y_test=np.zeros(1, np.uint8))
    elif kind == "pickle-file":
        path.write_bytes(pickle.dumps(_Evil(str(path) + ".pwned")))
    return path


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "text", "empty", "npy", "pickle-array",
                                  "pickle-file"])
@pytest.mark.parametrize("loader", [D.mnist, D.load_npz_dataset])
def test_unreadable_files_raise_naming_the_file(tmp_path, kind, loader):
    bad = _bad_file(kind, tmp_path / f"{kind}.npz")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        loader(bad)
    assert not Path(str(bad) + ".pwned").exists(), "a pickle was executed"


BAD_LAYOUTS = [
    # (id, override, pattern that must appear in the message)
    ("missing key", {"y_test": None}, r"missing key\(s\) \['y_test'\]"),
    ("wrong image shape", {"x_train": np.zeros((5, 28, 27), np.uint8)},
     r"'x_train': expected uint8 of shape \(N, 28, 28\), got uint8 of shape \(5, 28, 27\)"),
    ("float images", {"x_test": np.zeros((20, 28, 28), np.float32)},
     r"'x_test': expected uint8 .*got float32"),
    ("label too large", {"y_train": np.full(50, 10, np.uint8)},
     r"'y_train': expected labels 0..9, got values from 10 to 10"),
    ("negative label", {"y_test": np.full(20, -1, np.int64)}, r"'y_test': expected labels 0..9"),
    ("label count", {"y_train": np.zeros(49, np.uint8)},
     r"'y_train': expected integer labels of shape \(50,\).*got uint8 of shape \(49,\)"),
    ("float labels", {"y_train": np.zeros(50, np.float32)}, r"'y_train': .*got float32"),
]


@pytest.mark.parametrize("override,pattern", [c[1:] for c in BAD_LAYOUTS],
                         ids=[c[0] for c in BAD_LAYOUTS])
def test_bad_layout_names_file_key_expected_and_actual(tmp_path, override, pattern):
    bad = write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*" + pattern):
        D.mnist(bad)


# --- the shipped subset ---------------------------------------------------------------------------

@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("flatten", [False, True])
def test_mnist_small_forms(normalize, flatten):
    (x, y), (xt, yt) = D.mnist_small(normalize=normalize, flatten=flatten)
    shape = (784,) if flatten else (1, 28, 28)
    assert x.shape == (6000, *shape) and xt.shape == (1000, *shape)
    assert x.dtype == xt.dtype == np.float32 and y.dtype == yt.dtype == np.int64
    assert x.min() == 0.0 and x.max() == (1.0 if normalize else 255.0)
    assert np.bincount(y, minlength=10).tolist() == [600] * 10
    assert np.bincount(yt, minlength=10).tolist() == [100] * 10


def test_shipped_file_small_and_matches_checksums():
    assert SMALL.stat().st_size <= 2_000_000
    with np.load(SMALL) as npz:
        for key, digest in D.MNIST_SMALL_SHA256.items():
            assert hashlib.sha256(npz[key].tobytes()).hexdigest() == digest


def test_mnist_small_is_a_sorted_stratified_subset_of_mnist(full_path):
    raw = full_arrays(full_path)
    with np.load(SMALL) as small:
        for part, per_class in (("train", 600), ("test", 100)):
            rows = small[f"{part}_index"]
            assert np.all(np.diff(rows) > 0), "rows must be unique and in the original order"
            np.testing.assert_array_equal(small[f"x_{part}"], raw[f"x_{part}"][rows])
            np.testing.assert_array_equal(small[f"y_{part}"], raw[f"y_{part}"][rows])
            assert np.bincount(small[f"y_{part}"]).tolist() == [per_class] * 10


def test_make_mnist_small_reproduces_the_shipped_file(full_path, tmp_path):
    spec = importlib.util.spec_from_file_location("make_mnist_small",
                                                  ROOT / "tools/make_mnist_small.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "made.npz"
    assert tool.main(["--source", str(full_path), "--out", str(out)]) == 0
    with np.load(out) as made, np.load(SMALL) as shipped:
        assert sorted(made.files) == sorted(shipped.files)
        for key in made.files:
            np.testing.assert_array_equal(made[key], shipped[key], err_msg=key)


def test_tampered_package_file_is_refused(tmp_path, monkeypatch):
    with np.load(SMALL) as npz:
        arrays = {k: npz[k] for k in D.KEYS}
    arrays["y_test"] = arrays["y_test"].copy()
    arrays["y_test"][0] = (arrays["y_test"][0] + 1) % 10
    (tmp_path / "data").mkdir()
    bad = write_npz(tmp_path / "data" / "mnist_small.npz", **arrays)
    monkeypatch.setattr(D.resources, "files", lambda package: tmp_path)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*'y_test'.*"
                       + D.MNIST_SMALL_SHA256["y_test"]):
        D.mnist_small()


# --- load_npz_dataset -----------------------------------------------------------------------------

def test_load_npz_dataset_shapes_and_scaling(tmp_path):
    rng = np.random.default_rng(1)
    gray = write_npz(tmp_path / "g.npz", x_train=rng.integers(0, 256, (7, 12, 10), dtype=np.uint8),
                     y_train=np.arange(7), x_test=np.full((3, 12, 10), 255, np.uint8),
                     y_test=np.array([14, 0, 2], np.int32))
    (x, y), (xt, yt) = D.load_npz_dataset(gray)
    assert x.shape == (7, 1, 12, 10) and x.dtype == np.float32 and y.dtype == np.int64
    assert xt.max() == 1.0 and yt.tolist() == [14, 0, 2]
    assert D.load_npz_dataset(gray, normalize=False)[1][0].max() == 255.0
    color = rng.standard_normal((6, 3, 8, 8))
    rgb = write_npz(tmp_path / "c.npz", x_train=color, y_train=np.arange(6),
                    x_test=color[:2], y_test=np.arange(2))
    (x, _), _ = D.load_npz_dataset(rgb)
    np.testing.assert_array_equal(x, color.astype(np.float32))  # floats are kept as they are
    assert D.load_npz_dataset(rgb, flatten=True)[0][0].shape == (6, 192)


@pytest.mark.parametrize("override,pattern", [
    ({"x_train": np.zeros((5, 784), np.uint8), "y_train": np.zeros(5, np.uint8)},
     r"'x_train': expected shape \(N, H, W\) or \(N, C, H, W\).*got shape \(5, 784\)"),
    ({"x_test": np.zeros((20, 28, 27), np.uint8)},
     r"'x_test': expected images of shape \(28, 28\)"),
    ({"x_train": np.full((50, 28, 28), np.nan)}, r"'x_train': expected finite values"),
    ({"x_train": np.zeros((50, 28, 28), np.int16)}, r"'x_train': expected dtype uint8 or float"),
    ({"y_train": np.full(50, -3)}, r"'y_train': expected labels >= 0, got values from -3"),
])
def test_load_npz_dataset_bad_layout(tmp_path, override, pattern):
    bad = write_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*" + pattern):
        D.load_npz_dataset(bad)


def test_load_npz_dataset_missing_file(tmp_path):
    with pytest.raises(D.DatasetNotFoundError, match="no file"):
        D.load_npz_dataset(tmp_path / "absent.npz")


# --- helpers --------------------------------------------------------------------------------------

def test_split_ratios_sizes_and_coverage():
    x, y = np.arange(100) * 10, np.arange(100)
    (a, ya), (b, yb) = D.split(x, y, seed=0)
    assert (len(a), len(b)) == (80, 20) and np.array_equal(a, ya * 10)
    assert sorted(np.concatenate([ya, yb]).tolist()) == list(range(100))
    parts = D.split(x, y, (0.6, 0.2, 0.2), seed=3)
    assert [len(p[1]) for p in parts] == [60, 20, 20]
    assert sorted(np.concatenate([p[1] for p in parts]).tolist()) == list(range(100))
    again = D.split(x, y, (0.6, 0.2, 0.2), seed=3)
    assert all(np.array_equal(p[1], q[1]) for p, q in zip(parts, again))


def test_split_stratified_keeps_class_proportions():
    y = np.repeat([0, 1, 2], [70, 20, 10])
    x = np.arange(100, dtype=np.float32).reshape(100, 1)
    parts = D.split(x, y, (0.6, 0.2, 0.2), seed=0, stratify=True)
    assert [np.bincount(p[1], minlength=3).tolist() for p in parts] == \
        [[42, 12, 6], [14, 4, 2], [14, 4, 2]]
    assert all(np.array_equal(y[px[:, 0].astype(int)], py) for px, py in parts)  # pairs kept
    assert sorted(np.concatenate([px[:, 0] for px, _ in parts]).tolist()) == list(range(100))


@pytest.mark.parametrize("ratios", [(0.5, 0.4), (1.0,), (0.25,) * 4, (0.7, -0.1, 0.4),
                                    (float("nan"), 0.5), (0.8, 0.2000011), ("a", "b"), 0.8])
def test_split_bad_ratios(ratios):
    with pytest.raises(ValueError, match=r"split: ratios: expected 2 or 3 positive numbers"):
        D.split(np.zeros(10), np.zeros(10), ratios)


def test_split_bad_input():
    with pytest.raises(ValueError, match=r"split: y: expected as many samples as x \(10\), got 9"):
        D.split(np.zeros(10), np.zeros(9))
    with pytest.raises(ValueError, match=r"empty|sizes"):
        D.split(np.zeros(3), np.zeros(3), (0.6, 0.2, 0.2))
    with pytest.raises(TypeError, match=r"split: x: expected a numpy array"):
        D.split([1, 2, 3], np.zeros(3))


def test_batches_seeded_and_cover_every_sample():
    x, y = np.arange(103).reshape(103, 1), np.arange(103)
    first = list(D.batches(x, y, 10, seed=7))
    assert [len(b) for _, b in first] == [10] * 10 + [3]
    assert sorted(np.concatenate([b for _, b in first]).tolist()) == list(range(103))
    assert all(np.array_equal(xb[:, 0], yb) for xb, yb in first)
    again = [b for _, b in D.batches(x, y, 10, seed=7)]
    other = [b for _, b in D.batches(x, y, 10, seed=8)]
    assert all(np.array_equal(a, b) for (_, a), b in zip(first, again))
    assert not all(np.array_equal(a, b) for (_, a), b in zip(first, other))
    assert [len(b) for _, b in D.batches(x, y, 10, seed=7, drop_last=True)] == [10] * 10


def test_batches_in_order_are_views():
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    got = list(D.batches(x, y, 4, shuffle=False))
    assert [b.tolist() for _, b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert all(np.shares_memory(xb, x) for xb, _ in got)


@pytest.mark.parametrize("batch_size,exc", [(0, ValueError), (-2, ValueError), (2.5, TypeError),
                                            (True, TypeError)])
def test_batches_bad_batch_size_fails_at_call(batch_size, exc):
    with pytest.raises(exc, match=r"batches: batch_size: expected a positive integer"):
        D.batches(np.zeros(4), np.zeros(4), batch_size)  # no next(): errors come at once


def test_one_hot():
    out = D.one_hot(np.array([2, 0, 1, 2]))
    assert out.dtype == np.float32 and out.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    assert D.one_hot([1], num_classes=4).tolist() == [[0, 1, 0, 0]]
    assert D.one_hot(np.array([], np.int64), num_classes=3).shape == (0, 3)


@pytest.mark.parametrize("labels,num_classes,exc,pattern", [
    (np.array([0.0, 1.0]), None, TypeError, r"labels: expected integers, got dtype float64"),
    (np.zeros((2, 2), int), None, ValueError, r"labels: expected a 1-D array, got shape \(2, 2\)"),
    (np.array([0, -1]), 3, ValueError, r"labels: expected values in 0..2, got values from -1"),
    (np.array([0, 3]), 3, ValueError, r"labels: expected values in 0..2, got values from 0 to 3"),
    (np.array([], int), None, ValueError, r"num_classes: expected a number when labels is empty"),
    (np.array([0]), 0, ValueError, r"num_classes: expected a positive integer, got 0"),
    (np.array([0]), 2.0, TypeError, r"num_classes: expected a positive integer, got 2.0"),
])
def test_one_hot_bad_input(labels, num_classes, exc, pattern):
    with pytest.raises(exc, match="one_hot: " + pattern):
        D.one_hot(labels, num_classes)
