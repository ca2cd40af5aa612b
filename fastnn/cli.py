"""The `fastnn` command line (also `python -m fastnn`): `train`, `bench`, `info`."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import platform
import sys


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    import fastnn
    from fastnn import backend

    print(f"fastnn {fastnn.__version__} (Python {platform.python_version()}, numpy {np.__version__})")
    print(f"backends available: {', '.join(backend.available())}")
    for name, why in backend.unavailable().items():
        print(f"backend missing: {name}: {why}")
    print(f"backend selected: {backend.current()} (FASTNN_BACKEND={os.environ.get('FASTNN_BACKEND', '')!r})")
    print(f"threads: {backend.get_num_threads()} (cores usable: {len(os.sched_getaffinity(0))})")
    if "cython" in backend.available():
        from fastnn import _cython

        print(f"cython kernels: OpenMP {'on' if _cython.openmp_enabled() else 'off (serial build)'}")
    if "numba" in backend.available():
        import numba

        from fastnn import _numba

        cache = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
            os.path.dirname(_numba.__file__), "__pycache__")
        print(f"numba {numba.__version__}: threading layer {numba.config.THREADING_LAYER}, "
              f"threads {_numba.get_num_threads()}, cache {cache}")
    from fastnn import _blas

    sg = _blas.sgemm_info()
    how = (f"NumPy's BLAS ({sg['symbol']}) called from the kernels' own threads" if sg["pointer"]
           else f"np.matmul ({sg.get('reason', '')})")
    print(f"gemm: {how}; BLAS pool at {backend.blas_threads()} thread(s) for the selected backend")
    print(f"winograd: {'on' if backend.winograd() else 'off'} (3x3, stride-1 convolutions with >= 8 "
          "channels in the compiled backends; FASTNN_WINOGRAD=0 or backend.set_winograd(False))")
    for info in backend.blas_info():
        print(f"{info['user_api']}: {info.get('internal_api')} {info.get('version')} "
              f"threads={info.get('num_threads')} arch={info.get('architecture')} "
              f"({os.path.basename(info.get('filepath', ''))})")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                "FASTNN_DIRECT_BLAS", "FASTNN_AUTO_ORDER", "FASTNN_WINOGRAD", "GOMP_SPINCOUNT"):
        if var in os.environ:
            print(f"env {var}={os.environ[var]}")
    return 0


def _load_dataset(name: str):
    from fastnn import datasets

    if name == "mnist-small":
        return datasets.mnist_small()
    if name == "mnist":
        return datasets.mnist()
    return datasets.load_npz_dataset(name)


def _plot(history: dict, path: str) -> bool:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("note: matplotlib is not installed (pip install 'fastnn[plot]'); no curves.png written")
        return False
    fig = Figure(figsize=(10, 4))
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], "o-", label="train")
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_xticks(list(epochs))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def cmd_train(args: argparse.Namespace) -> int:
    import json
    import time

    import fastnn
    from fastnn import backend, recipes
    from fastnn.losses import SoftmaxCrossEntropy
    from fastnn.schedules import CosineDecay

    if args.backend:
        backend.use(args.backend)
    dist = None
    if args.distributed:  # one replica per rank of mpiexec; rank 0 prints and writes
        from fastnn import distributed as dist

        dist.init(threads=args.threads)  # default: the node's cores shared among its ranks
    elif args.threads:
        backend.set_num_threads(args.threads)
    root = dist is None or dist.is_root()
    say = print if root else (lambda *a, **k: None)
    try:
        os.makedirs(args.out, exist_ok=True)
        probe = os.path.join(args.out, f".write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.unlink(probe)
    except OSError as exc:
        print(f"fastnn train: error: --out: cannot write to {args.out!r}: {exc.strerror}",
              file=sys.stderr)
        return 2
    try:
        with dist.root_first() if dist else contextlib.nullcontext():  # one download, not N
            (x_train, y_train), (x_test, y_test) = _load_dataset(args.dataset)
    except (OSError, ValueError) as exc:
        print(f"fastnn train: error: --dataset: {exc}", file=sys.stderr)
        return 2
    model = recipes.MODELS[args.model](seed=args.seed)
    say(model.summary())
    steps = args.epochs * -(-int(len(x_train) * (1 - args.validation_split)) // args.batch_size)
    lr = args.lr if args.lr is not None else recipes.default_lr(args.model, args.optimizer)
    schedule = CosineDecay(lr, total_steps=max(1, steps), warmup_steps=min(100, steps // 10))
    optimizer = recipes.OPTIMIZERS[args.optimizer](model.parameters(), schedule, args.weight_decay)
    loss = SoftmaxCrossEntropy()
    augment = None
    if args.augment == "shift":
        from fastnn.datasets import random_shift

        def augment(xb, rng):
            return random_shift(xb, rng, max_shift=2)

    # Without a split, the validation curves are measured on the test set (monitoring only:
    # nothing is selected or stopped on it).
    validation = None if args.validation_split else (x_test, y_test)
    ranks = dist.world_size() if dist else 1
    say(f"training {args.model} on {args.dataset}: {len(x_train)} samples, {args.epochs} epochs, "
        f"batch {args.batch_size}, {args.optimizer} lr {lr} (cosine), augment {args.augment}, "
        f"backend {backend.current()}, {backend.get_num_threads()} threads"
        + (f" x {ranks} MPI ranks" if dist else ""))
    fit = model.fit if dist is None else functools.partial(dist.fit, model)
    t0 = time.perf_counter()
    history = fit(x_train, y_train, loss=loss, optimizer=optimizer, epochs=args.epochs,
                  batch_size=args.batch_size, validation_data=validation,
                  validation_split=args.validation_split, seed=args.seed,
                  verbose=args.verbose, augment=augment)
    train_time = time.perf_counter() - t0
    test = dist.evaluate(model, x_test, y_test, loss=loss) if dist else \
        model.evaluate(x_test, y_test, loss=loss)
    if not root:
        return 0
    print(f"test loss {test['loss']:.4f}, test accuracy {test['accuracy']:.4f} "
          f"({train_time:.1f} s training)")
    model_path = os.path.join(args.out, "model.npz")
    fastnn.save(model, model_path, optimizer=optimizer)
    with open(os.path.join(args.out, "history.json"), "w") as f:
        json.dump(history.history, f, indent=1)
    metrics = {"test_loss": test["loss"], "test_accuracy": test["accuracy"],
               "train_seconds": train_time, "model": args.model, "dataset": args.dataset,
               "epochs": args.epochs, "backend": backend.current(),
               "threads": backend.get_num_threads(), "ranks": ranks}
    if dist:
        metrics["timing"] = history.timing
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    wrote = ["model.npz", "history.json", "metrics.json"]
    if _plot(history.history, os.path.join(args.out, "curves.png")):
        wrote.append("curves.png")
    print(f"wrote {', '.join(wrote)} to {args.out}")
    return 0


def positive_int_arg(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return v


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return v


def _fraction(text: str) -> float:
    v = _non_negative_float(text)
    if v >= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description="Fast, readable neural networks on the CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="version, backends, threads, BLAS and the Numba cache")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model (default: a small CNN on the bundled MNIST subset)")
    p.add_argument("--model", choices=["mlp", "cnn"], default="cnn")
    p.add_argument("--dataset", default="mnist-small",
                   help="mnist-small (bundled, offline), mnist (full; see README for where it is "
                        "looked for) or PATH.npz in the same layout (default: mnist-small)")
    p.add_argument("--epochs", type=positive_int_arg, default=3)
    p.add_argument("--batch-size", type=positive_int_arg, default=64)
    p.add_argument("--optimizer", choices=["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"],
                   default="adam")
    p.add_argument("--lr", type=_non_negative_float, default=None,
                   help="peak learning rate of the cosine schedule (default per optimizer)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0)
    p.add_argument("--validation-split", type=_fraction, default=0.0,
                   help="hold out this fraction of the training set for validation (default 0: "
                        "the validation curves are measured on the test set)")
    p.add_argument("--augment", choices=["none", "shift"], default="none",
                   help="training-batch augmentation: shift = random translations of up to 2 "
                        "pixels (default: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["auto", "numpy", "numba", "cython"], default=None)
    p.add_argument("--threads", type=positive_int_arg, default=None)
    p.add_argument("--out", default=os.path.join("runs", "latest"),
                   help="directory for model.npz, history.json, metrics.json, curves.png")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1)
    p.add_argument("--distributed", action="store_true",
                   help="data parallel over the ranks of mpiexec (pip install 'fastnn[mpi]'; "
                        "mpiexec -n 4 fastnn train --distributed): --batch-size stays the global "
                        "batch, --threads is per rank (default: cores / ranks)")
    p.set_defaults(func=cmd_train)

    from fastnn import bench

    bench.add_parser(sub)
    from fastnn import hpsearch

    hpsearch.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "distributed", False):
        from fastnn import distributed

        with distributed.abort_on_error():  # an error on one rank must not hang the others
            return args.func(args)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
