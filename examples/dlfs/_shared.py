"""What the fastnn.dlfs examples share: options, data in the book's forms, and a matplotlib
Figure saved without pyplot (no global backend is touched)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from fastnn.dlfs.dataset import load_mnist

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "output"


def parse_args(doc: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist", metavar="mnist|mnist-small|PATH",
                        help="mnist: the full set (found via $FASTNN_DATA_DIR or fastnn's cache); "
                             "mnist-small: the 6000/1000 subset shipped with fastnn; or a .npz "
                             "in the mnist.npz layout (default: %(default)s)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), metavar="DIR",
                        help="directory for the plot (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a few steps on a data subset (a smoke test, not a result)")
    parser.add_argument("--seed", type=int, default=0, help="seed of NumPy's global generator, "
                        "which draws weights, batches and dropout masks as in the book")
    if extra:
        extra(parser)
    args = parser.parse_args()
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out: cannot create directory {args.out!r}: {exc}")
    np.random.seed(args.seed)
    return args


def data(args, **kwargs):
    """load_mnist(**kwargs) from --data; --quick uses the bundled subset."""
    try:
        if args.quick or args.data == "mnist-small":
            return load_mnist(small=True, **kwargs)
        if args.data == "mnist":
            return load_mnist(**kwargs)
        return load_mnist(path=args.data, **kwargs)
    except (OSError, ValueError) as exc:
        sys.exit(f"error: --data {args.data}: {exc}")


def figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("note: matplotlib is not installed (pip install matplotlib); no plot written")
        return None
    return Figure(**kwargs)


def save(fig, args, name: str) -> None:
    if fig is None:
        return
    path = Path(args.out) / f"{name}.png"
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
