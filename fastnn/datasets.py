"""Data sets and data helpers: MNIST (found locally, or downloaded once and verified), a small MNIST
subset shipped inside the package for offline use, any .npz in the same layout, and helpers to
batch, split and one-hot encode arrays. Files are read with ``allow_pickle=False``: never runs code.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

import numpy as np

__all__ = ["DatasetNotFoundError", "mnist", "mnist_small", "load_npz_dataset",
           "batches", "split", "one_hot", "random_shift", "cache_dir"]

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
PathArg = str | os.PathLike[str]

KEYS = ("x_train", "y_train", "x_test", "y_test")
# SHA-256 of each array's raw bytes (hashlib.sha256(a.tobytes())), from ../shared/data/README.md.
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
# The subset made by tools/make_mnist_small.py (re-run it and paste its output here).
MNIST_SMALL_SHA256 = {
    "x_train": "559d170608a7fe52be5ed96c1d4dfc5658aabd94b50f9ea8b593669dc141196c",
    "y_train": "d7eb7f3106f4f717ec476ffc72ac3c885c5901ac70721dc5ef1a805ba97ef0e9",
    "x_test": "ada810020b2353c3b7e84a8ca20a5f93e2a3b8832f181bfe9cafce5660192d3c",
    "y_test": "9b789476378fda4f8bd0d871c7eb86148b68be07040b38b5d1d9842095a4f22d",
}
MNIST_URLS = ("https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz",)
DOWNLOAD_TIMEOUT = 15.0  # seconds per socket operation
_MAX_DOWNLOAD = 64 << 20  # the real file is 11.5 MB; refuse anything far larger
_FULL_ROWS = {"train": 60000, "test": 10000}
_verified: set[tuple] = set()  # (path, mtime_ns, size, expected hashes) already checked


class DatasetNotFoundError(FileNotFoundError):
    """No data file was found in any of the places looked at, and none could be downloaded."""


def cache_dir() -> Path:
    """Where downloads are kept: ``$XDG_CACHE_HOME/fastnn``, else ``~/.cache/fastnn``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fastnn"


def mnist(path: PathArg | None = None, normalize: bool = True, flatten: bool = False) -> Arrays:
    """MNIST as ``((x_train, y_train), (x_test, y_test))``: x float32 (N, 1, 28, 28), in [0, 1]
    when ``normalize`` (else 0..255), (N, 784) when ``flatten``; y int64.

    Looks in order at: ``path`` (a file, or a directory holding mnist.npz);
    ``$FASTNN_DATA_DIR/mnist.npz``; ``cache_dir()/mnist.npz``; then downloads from the URLs in
    ``$FASTNN_MNIST_URL`` (whitespace-separated; empty = never download; default ``MNIST_URLS``)
    into the cache, verified by checksum. A file with the full 60000/10000 rows must match the
    official checksums; a smaller file in the same layout (your own subset) is accepted as is.
    """
    if path is not None:
        file = Path(path)
        if file.is_dir():
            file = file / "mnist.npz"
        if not file.is_file():
            raise DatasetNotFoundError(
                f"mnist: path={str(path)!r}: expected an existing mnist.npz file or a directory "
                f"containing one; {str(file)!r} does not exist")
        return _as_output(_load_mnist_file(file), normalize, flatten)

    looked: list[str] = []
    data_dir = os.environ.get("FASTNN_DATA_DIR")
    candidates = [Path(data_dir) / "mnist.npz"] if data_dir else []
    if not data_dir:
        looked.append("$FASTNN_DATA_DIR (not set)")
    cached = cache_dir() / "mnist.npz"
    for file in [*candidates, cached]:
        if file.is_file():
            return _as_output(_load_mnist_file(file), normalize, flatten)
        looked.append(f"{file} (no such file)")

    env_urls = os.environ.get("FASTNN_MNIST_URL")
    urls = MNIST_URLS if env_urls is None else tuple(env_urls.split())
    if not urls:
        looked.append("download (disabled: $FASTNN_MNIST_URL is empty)")
    for url in urls:
        try:
            return _as_output(_download(url, cached), normalize, flatten)
        except (OSError, ValueError, http.client.HTTPException) as e:  # offline, cut, refused
            looked.append(f"download from {url} ({type(e).__name__}: {e})")
    places = "\n  - ".join(looked)
    raise DatasetNotFoundError(
        f"mnist: could not find MNIST. Looked at:\n  - {places}\n"
        f"Supply it in one of these ways: mnist(path='/path/to/mnist.npz'); "
        f"export FASTNN_DATA_DIR=/dir/with/mnist.npz; copy it to {cached}; or download "
        f"{MNIST_URLS[0]} by hand into one of those places. For offline use without the file, "
        f"fastnn.datasets.mnist_small() ships a 6000/1000 subset.")


def mnist_small(normalize: bool = True, flatten: bool = False) -> Arrays:
    """A stratified MNIST subset shipped with fastnn (600 training and 100 test images per class,
    in the original order), in the same form as :func:`mnist`. Works offline."""
    resource = resources.files("fastnn") / "data" / "mnist_small.npz"
    with resources.as_file(resource) as file:
        if not file.is_file():
            raise DatasetNotFoundError(
                f"mnist_small: the packaged file {file} is missing; reinstall fastnn or "
                f"regenerate it with tools/make_mnist_small.py")
        arrays = _read_npz(file)
        _check_layout(file, arrays, mnist_layout=True)
        _verify_sha256(file, arrays, MNIST_SMALL_SHA256)
    return _as_output(arrays, normalize, flatten)


def load_npz_dataset(path: PathArg, normalize: bool = True, flatten: bool = False) -> Arrays:
    """Any data set stored like mnist.npz (keys x_train, y_train, x_test, y_test), images of shape
    (N, H, W) or (N, C, H, W), uint8 or float, labels non-negative integers. Returns the form of
    :func:`mnist`: x float32 NCHW (uint8 divided by 255 when ``normalize``; floats as they are)."""
    file = Path(path)
    if not file.is_file():
        raise DatasetNotFoundError(f"load_npz_dataset: path={str(path)!r}: expected an existing "
                                   f".npz file, but there is no file there")
    arrays = _read_npz(file)
    _check_layout(file, arrays, mnist_layout=False)
    return _as_output(arrays, normalize, flatten)


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
            seed: int | np.random.Generator | None = None,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Mini-batches ``(xb, yb)`` over the first axis: a fresh order from ``seed`` when ``shuffle``
    (copies), else in order (views). The last, shorter batch is dropped when ``drop_last``."""
    n = _check_pair("batches", x, y)
    _check_positive_int("batches", "batch_size", batch_size)
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n

    def generate() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, stop, batch_size):
            if order is None:
                yield x[start:start + batch_size], y[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                yield x[idx], y[idx]

    return generate()  # a nested generator so that bad arguments fail now, not at first next()


def split(x: np.ndarray, y: np.ndarray, ratios: Sequence[float] = (0.8, 0.2),
          seed: int | np.random.Generator | None = None,
          stratify: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Shuffle and cut ``(x, y)`` into 2 or 3 parts with the given ratios (e.g. 0.8/0.2 or
    0.6/0.2/0.2), returned as a tuple of ``(x, y)`` pairs. With ``stratify`` every class of ``y`` is
    cut in the same ratios, so class proportions are kept in each part."""
    n = _check_pair("split", x, y)
    try:
        r = np.asarray(ratios, dtype=np.float64)
    except (TypeError, ValueError):
        r = np.zeros(0)
    if r.ndim != 1 or len(r) not in (2, 3) or not np.all(np.isfinite(r)) or np.any(r <= 0) \
            or abs(r.sum() - 1.0) > 1e-6:
        raise ValueError(f"split: ratios: expected 2 or 3 positive numbers summing to 1 "
                         f"(e.g. (0.8, 0.2) or (0.6, 0.2, 0.2)), got {ratios!r}")
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(r)[:-1]
    if stratify:
        y_arr = np.asarray(y)
        if y_arr.ndim != 1:
            raise ValueError(f"split: y: expected 1-D labels for stratify=True, "
                             f"got shape {y_arr.shape}")
        groups = [rng.permutation(np.flatnonzero(y_arr == c)) for c in np.unique(y_arr)]
    else:
        groups = [rng.permutation(n)]
    parts = [[] for _ in r]
    for g in groups:
        for k, piece in enumerate(np.split(g, np.round(cuts * len(g)).astype(np.intp))):
            parts[k].append(piece)
    indices = [rng.permutation(np.concatenate(p)) for p in parts]
    sizes = [len(i) for i in indices]
    if min(sizes) == 0:
        raise ValueError(f"split: ratios: expected every part to get samples, but {n} samples "
                         f"cut in ratios {tuple(r.tolist())} give sizes {sizes}")
    return tuple((x[i], y[i]) for i in indices)


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    """Light augmentation for a batch of images (N, C, H, W): each image translated by a random
    whole number of pixels in [-max_shift, max_shift] along each axis, zero filled."""
    if x.ndim != 4:
        raise ValueError(f"x: expected a batch of images (N, C, H, W), got shape {x.shape}")
    n, _, h, w = x.shape
    s = int(max_shift)
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))
    dy = rng.integers(0, 2 * s + 1, n)
    dx = rng.integers(0, 2 * s + 1, n)
    rows = dy[:, None] + np.arange(h)  # (n, h)
    cols = dx[:, None] + np.arange(w)  # (n, w)
    return padded[np.arange(n)[:, None, None, None], np.arange(x.shape[1])[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def one_hot(labels: np.ndarray | Sequence[int], num_classes: int | None = None) -> np.ndarray:
    """float32 (N, C) with a 1 in each label's column; C is ``num_classes`` or max label + 1."""
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise TypeError(f"one_hot: labels: expected integers, got dtype {lab.dtype}")
    if lab.ndim != 1:
        raise ValueError(f"one_hot: labels: expected a 1-D array, got shape {lab.shape}")
    if num_classes is None:
        if lab.size == 0:
            raise ValueError("one_hot: num_classes: expected a number when labels is empty, "
                             "got None")
        num_classes = max(int(lab.max()) + 1, 1)  # all-negative labels fail the range check
    _check_positive_int("one_hot", "num_classes", num_classes)
    if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
        raise ValueError(f"one_hot: labels: expected values in 0..{num_classes - 1}, got values "
                         f"from {lab.min()} to {lab.max()}")
    out = np.zeros((lab.size, int(num_classes)), dtype=np.float32)
    out[np.arange(lab.size), lab] = 1.0
    return out


# --- reading, checking and downloading files ------------------------------------------------

def _load_mnist_file(file: Path) -> dict[str, np.ndarray]:
    """The raw uint8 arrays of an MNIST-layout file; checksummed when it has the full row counts."""
    arrays = _read_npz(file)
    _check_layout(file, arrays, mnist_layout=True)
    if all(len(arrays[f"x_{s}"]) == rows for s, rows in _FULL_ROWS.items()):
        _verify_sha256(file, arrays, MNIST_SHA256)
    return arrays


def _read_npz(file: Path) -> dict[str, np.ndarray]:
    """The four arrays of a .npz archive; any failure to decode it is a ValueError naming it."""
    broken = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        npz = np.load(file, allow_pickle=False)
    except broken as e:
        raise ValueError(f"{file}: expected a .npz archive, but it cannot be read as one "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{file}: expected a .npz archive with keys {list(KEYS)}, "
                         f"got a single .npy array of shape {npz.shape}")
    with npz:
        missing = [k for k in KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"{file}: missing key(s) {missing}; expected keys {list(KEYS)}, "
                             f"found {npz.files}")
        arrays = {}
        for key in KEYS:
            try:
                arrays[key] = npz[key]
            except broken as e:  # truncated, corrupt, or an object array (never unpickled)
                raise ValueError(f"{file}: key {key!r}: cannot read the array "
                                 f"({type(e).__name__}: {e})") from e
    return arrays


def _check_layout(file: Path, arrays: dict[str, np.ndarray], mnist_layout: bool) -> None:
    """Shapes, dtypes and label ranges; each error names the file, the key, expected and actual."""
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if mnist_layout and (x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8):
            raise ValueError(f"{file}: key 'x_{part}': expected uint8 of shape (N, 28, 28), got "
                             f"{x.dtype} of shape {x.shape}")
        if x.ndim not in (3, 4) or len(x) == 0:
            raise ValueError(f"{file}: key 'x_{part}': expected shape (N, H, W) or (N, C, H, W) "
                             f"with N >= 1, got shape {x.shape}")
        if x.dtype != np.uint8 and x.dtype.kind != "f":
            raise ValueError(f"{file}: key 'x_{part}': expected dtype uint8 or float, "
                             f"got {x.dtype}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError(f"{file}: key 'x_{part}': expected finite values, found NaN or inf")
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(x):
            raise ValueError(f"{file}: key 'y_{part}': expected integer labels of shape "
                             f"({len(x)},) to match x_{part}, got {y.dtype} of shape {y.shape}")
        top = 9 if mnist_layout else np.iinfo(np.int64).max
        if y.size and (y.min() < 0 or y.max() > top):
            expected = "0..9" if mnist_layout else ">= 0"
            raise ValueError(f"{file}: key 'y_{part}': expected labels {expected}, got values "
                             f"from {y.min()} to {y.max()}")
    train_shape, test_shape = arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]
    if train_shape != test_shape:
        raise ValueError(f"{file}: key 'x_test': expected images of shape {train_shape} like "
                         f"x_train, got {test_shape}")


def _verify_sha256(file: Path, arrays: dict[str, np.ndarray], expected: dict[str, str]) -> None:
    """Compare each array's SHA-256 with ``expected``; a file is hashed once per (mtime, size)."""
    st = file.stat()
    key = (str(file.resolve()), st.st_mtime_ns, st.st_size, tuple(expected.values()))
    if key in _verified:
        return
    for name, want in expected.items():
        got = hashlib.sha256(np.ascontiguousarray(arrays[name]).data).hexdigest()
        if got != want:
            raise ValueError(f"{file}: array {name!r} fails its checksum: expected SHA-256 {want}, "
                             f"got {got}. The file is corrupt or not the expected data set; "
                             f"replace it (or delete it to download it again).")
    _verified.add(key)


def _download(url: str, dest: Path) -> dict[str, np.ndarray]:
    """Fetch ``url`` into ``dest`` atomically (temp file in the same directory, fsync, replace),
    keeping it only if it is the full MNIST with the official checksums."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, \
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
                if size > _MAX_DOWNLOAD:
                    raise ValueError(f"response is larger than {_MAX_DOWNLOAD >> 20} MB; "
                                     f"expected the 11.5 MB mnist.npz")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache file is normally world-readable
        arrays = _read_npz(tmp)
        _check_layout(tmp, arrays, mnist_layout=True)
        rows = {s: len(arrays[f"x_{s}"]) for s in _FULL_ROWS}
        if rows != _FULL_ROWS:
            raise ValueError(f"expected the full MNIST with {_FULL_ROWS} rows, got {rows}")
        _verify_sha256(tmp, arrays, MNIST_SHA256)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    st = dest.stat()  # remember the verification for the file's new name
    _verified.add((str(dest.resolve()), st.st_mtime_ns, st.st_size, tuple(MNIST_SHA256.values())))
    return arrays


def _check_positive_int(fn: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{fn}: {name}: expected a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{fn}: {name}: expected a positive integer, got {value!r}")


def _check_pair(fn: str, x: np.ndarray, y: np.ndarray) -> int:
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, np.ndarray) or a.ndim < 1:
            raise TypeError(f"{fn}: {name}: expected a numpy array with a sample axis, got "
                            f"{type(a).__name__} {getattr(a, 'shape', '')}")
    if len(x) != len(y):
        raise ValueError(f"{fn}: y: expected as many samples as x ({len(x)}), got {len(y)}")
    return len(x)


def _as_output(arrays: dict[str, np.ndarray], normalize: bool, flatten: bool) -> Arrays:
    """x to float32 NCHW (uint8 / 255 when normalize), or (N, features) when flatten; y to int64."""
    result = []
    for part in ("train", "test"):
        x = arrays[f"x_{part}"]
        out = np.empty(x.shape, dtype=np.float32)
        if normalize and x.dtype == np.uint8:
            np.divide(x, np.float32(255), out=out, dtype=np.float32)
        else:
            out[...] = x
        if out.ndim == 3:
            out = out.reshape(len(out), 1, *out.shape[1:])
        if flatten:
            out = out.reshape(len(out), -1)
        result.append((out, arrays[f"y_{part}"].astype(np.int64)))
    return result[0], result[1]
