"""Make fastnn/data/mnist_small.npz: a stratified MNIST subset (600 training and 100 test images per
class, chosen with a fixed seed, kept in the original order) from the verified full mnist.npz.

    python tools/make_mnist_small.py [--source ../shared/data/mnist.npz] [--out fastnn/data/...]

It prints the per-array SHA-256 to paste into MNIST_SMALL_SHA256 in fastnn/datasets.py. Besides the
four arrays of the MNIST layout the file holds train_index/test_index, the rows taken from the full
set, so that tests can check the subset against the source.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from fastnn.datasets import _load_mnist_file  # noqa: E402  (checks layout and checksums)

SEED = 20240601
PER_CLASS = {"train": 600, "test": 100}


def stratified_rows(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random rows of each class 0..9, sorted back into the original order."""
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)]
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def make_subset(full: dict[str, np.ndarray], seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    subset = {}
    for part, per_class in PER_CLASS.items():
        rows = stratified_rows(full[f"y_{part}"], per_class, rng)
        subset[f"x_{part}"] = full[f"x_{part}"][rows]
        subset[f"y_{part}"] = full[f"y_{part}"][rows]
        subset[f"{part}_index"] = rows
    return subset


def save_atomic(arrays: dict[str, np.ndarray], out: Path) -> None:
    """np.savez_compressed into a temp file beside ``out`` (a file object: no '.npz' appended)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600: an installed wheel must be readable by all
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/mnist.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "fastnn/data/mnist_small.npz")
    args = parser.parse_args(argv)
    subset = make_subset(_load_mnist_file(args.source))
    save_atomic(subset, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    print("MNIST_SMALL_SHA256 = {")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        print(f'    "{key}": "{hashlib.sha256(subset[key].tobytes()).hexdigest()}",')
    print("}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
