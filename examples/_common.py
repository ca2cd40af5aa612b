"""What the example scripts share: their command-line options, loading the data set, a moving
average for noisy curves, a results table, and a matplotlib Figure (without pyplot)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from fastnn import datasets

DEFAULT_OUT = Path(__file__).resolve().parent / "output"


def parse_args(doc: str) -> argparse.Namespace:
    """--data, --out (created here), --quick and --seed; `doc` is the script's docstring."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist-small", metavar="mnist-small|mnist|PATH",
                        help="mnist-small: the 6000/1000 subset bundled with fastnn (offline); "
                             "mnist: the full set (found locally or downloaded once); or a .npz "
                             "file in the mnist.npz layout (default: %(default)s)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                        help="directory for the plot, created if needed (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings that finish in seconds (a smoke test, not a result)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batches and dropout")
    args = parser.parse_args()
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out: cannot create directory {args.out!r}: {exc}")
    return args


def load_data(name: str):
    """((x_train, y_train), (x_test, y_test)), images flattened to rows of pixels in [0, 1]."""
    try:
        if name == "mnist-small":
            return datasets.mnist_small(flatten=True)
        if name == "mnist":
            return datasets.mnist(flatten=True)
        return datasets.load_npz_dataset(name, flatten=True)
    except (OSError, ValueError) as exc:
        sys.exit(f"error: --data {name}: {exc}")


def moving_average(values, window: int):
    """(iterations, averages): the mean of each run of `window` consecutive values, plotted at
    the run's last iteration (so the curve never looks ahead)."""
    values = np.asarray(values, dtype=np.float64)
    window = max(1, min(window, len(values)))
    smoothed = np.convolve(values, np.ones(window) / window, mode="valid")
    return np.arange(window, len(values) + 1), smoothed


def print_table(header: list[str], rows: list[list]) -> None:
    """A plain text table: the first column left-aligned, numbers right-aligned."""
    cells = [header] + [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) if k == 0 else c.rjust(w)
                        for k, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def new_figure(**kwargs):
    """A matplotlib Figure (no pyplot, no global backend), or None with a one-line notice."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("note: matplotlib is not installed (pip install matplotlib); no plot written")
        return None
    return Figure(**kwargs)


def save_figure(fig, out_dir: str, name: str) -> None:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
