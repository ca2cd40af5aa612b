"""Random search over the learning rate and weight decay ("Deep Learning from Scratch" section
6.5): log-uniform samples, one short training per trial on a small training set, judged on a
held-out validation split. Trials are independent, so they run spread over MPI ranks (under
``mpiexec``) or over local processes; rank 0 writes one results table (CSV and JSON) and a plot.

    fastnn hpsearch --trials 100 --epochs 50 --workers 2            # local processes
    mpiexec -n 8 python -m fastnn.hpsearch --trials 64 --out runs/hp  # MPI ranks
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

from . import backend, distributed
from .layers import Dense, ReLU
from .losses import SoftmaxCrossEntropy
from .model import Sequential
from .optim import SGD

COLUMNS = ("trial", "lr", "weight_decay", "val_accuracy", "best_val_accuracy", "train_accuracy",
           "val_loss", "seconds", "worker")


def textbook_mlp(seed: int, hidden: int = 100, depth: int = 6) -> Sequential:
    """The book's MultiLayerNet for this experiment: 784 -> 6 x 100 ReLU -> 10, He init."""
    layers, fan_in = [], 784
    for k in range(depth):
        layers += [Dense(fan_in, hidden, seed=seed * 100 + k), ReLU()]
        fan_in = hidden
    return Sequential([*layers, Dense(fan_in, 10, seed=seed * 100 + depth)])


def sample(trials: int, seed: int = 0, lr_range=(1e-6, 1e-2), wd_range=(1e-8, 1e-4)):
    """(lrs, weight decays): `trials` log-uniform draws from each range, the same on every rank."""
    rng = np.random.default_rng(seed)
    lr = 10 ** rng.uniform(np.log10(lr_range[0]), np.log10(lr_range[1]), trials)
    wd = 10 ** rng.uniform(np.log10(wd_range[0]), np.log10(wd_range[1]), trials)
    return lr, wd


def run_trial(trial: int, lr: float, wd: float, data, epochs: int, batch_size: int,
              seed: int) -> tuple[list[float], list[float], float, float]:
    """Train one model with SGD(lr, weight_decay=wd); (val accuracy per epoch, train accuracy
    per epoch, final val loss, seconds)."""
    (x, y), (xv, yv) = data
    model = textbook_mlp(seed * 1000 + trial)
    t0 = time.perf_counter()
    h = model.fit(x, y, loss=SoftmaxCrossEntropy(), epochs=epochs, batch_size=batch_size,
                  optimizer=SGD(model.parameters(), lr=lr, weight_decay=wd),
                  validation_data=(xv, yv), seed=seed * 1000 + trial, verbose=0)
    return (h.history["val_accuracy"], h.history["accuracy"], h.history["val_loss"][-1],
            time.perf_counter() - t0)


def _worker_init(threads: int) -> None:
    backend.set_num_threads(threads)


def _run_rows(trials, lr, wd, data, epochs, batch_size, seed, worker):
    """Rows of the results arrays (zeros for trials not in `trials`)."""
    n = len(lr)
    summary = np.zeros((n, len(COLUMNS)))
    val_curves, train_curves = np.zeros((n, epochs)), np.zeros((n, epochs))
    for t in trials:
        try:
            val, train, val_loss, secs = run_trial(t, lr[t], wd[t], data, epochs, batch_size, seed)
        except FloatingPointError:  # a diverging learning rate is a result, not a failure
            val, train, val_loss, secs = [np.nan] * epochs, [np.nan] * epochs, np.nan, np.nan
        summary[t] = (t, lr[t], wd[t], val[-1], np.nanmax(val + [-1.0]), train[-1], val_loss, secs,
                      worker)
        val_curves[t, : len(val)], train_curves[t, : len(train)] = val, train
    return summary, val_curves, train_curves


def random_search(x, y, *, trials: int = 100, epochs: int = 50, batch_size: int = 100,
                  validation_split: float = 0.2, lr_range=(1e-6, 1e-2), wd_range=(1e-8, 1e-4),
                  seed: int = 0, workers: int | None = None, comm=None) -> list[dict]:
    """Run the search; every rank (or the calling process) gets every trial's results, best
    validation accuracy first. Under MPI (a launcher, or `comm`), trial i runs on rank
    i % size; otherwise on `workers` local processes (default: one per core, at most one per
    trial), each with cores / workers threads."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    n_val = max(1, int(round(len(x) * validation_split)))
    x, y = np.asarray(x, np.float32)[order], np.asarray(y)[order]
    data = ((x[n_val:], y[n_val:]), (x[:n_val], y[:n_val]))
    lr, wd = sample(trials, seed, lr_range, wd_range)
    c = distributed.get_comm(comm)
    if c is not None:
        distributed.init(c)
        r, p = c.Get_rank(), c.Get_size()
        arrays = _run_rows(range(r, trials, p), lr, wd, data, epochs, batch_size, seed, r)
        for a in arrays:  # every row is non-zero on exactly one rank: a sum gathers them
            c.Allreduce(distributed._mpi().IN_PLACE, a, op=distributed._mpi().SUM)
    else:
        arrays = _local(trials, lr, wd, data, epochs, batch_size, seed, workers)
    return _as_records(*arrays)


def _local(trials, lr, wd, data, epochs, batch_size, seed, workers):
    cores = backend.get_num_threads()
    workers = max(1, min(trials, workers or cores))
    if workers == 1:
        return _run_rows(range(trials), lr, wd, data, epochs, batch_size, seed, 0)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the OpenMP runtime of the kernels is not fork-safe.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(max(1, cores // workers),)) as ex:
        parts = [ex.submit(_run_rows, range(w, trials, workers), lr, wd, data, epochs,
                           batch_size, seed, w) for w in range(workers)]
        parts = [f.result() for f in parts]
    return tuple(sum(part[k] for part in parts) for k in range(3))


def _as_records(summary, val_curves, train_curves) -> list[dict]:
    records = []
    for row, val, train in zip(summary, val_curves, train_curves, strict=True):
        rec = {k: float(v) for k, v in zip(COLUMNS, row, strict=True)}
        rec["trial"], rec["worker"] = int(rec["trial"]), int(rec["worker"])
        rec["val_accuracy_curve"], rec["train_accuracy_curve"] = val.tolist(), train.tolist()
        records.append(rec)
    return sorted(records, key=lambda r: -np.nan_to_num(r["val_accuracy"], nan=-1.0))


def _replace(path: str, write) -> None:
    """Write through a temporary file in the same directory, then rename over `path`."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(records: list[dict], out: str, settings: dict | None = None) -> list[str]:
    """hpsearch.csv (one row per trial, best first) and hpsearch.json (with the curves)."""
    os.makedirs(out, exist_ok=True)
    csv_path, json_path = os.path.join(out, "hpsearch.csv"), os.path.join(out, "hpsearch.json")

    def write_csv(f):
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows([[r[k] for k in COLUMNS] for r in records])

    _replace(csv_path, write_csv)
    _replace(json_path, lambda f: json.dump({"settings": settings or {}, "trials": records}, f,
                                            indent=1))
    return [csv_path, json_path]


def plot(records: list[dict], path: str, best: int = 5) -> bool:
    """Validation accuracy over (lr, weight decay), and the curves of the `best` trials (solid:
    validation, dashed: training, as in the book's figure). False without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(11, 4.5))
    ax, ax2 = fig.subplots(1, 2)
    lr = np.array([r["lr"] for r in records])
    wd = np.array([r["weight_decay"] for r in records])
    acc = np.nan_to_num(np.array([r["val_accuracy"] for r in records]), nan=0.0)
    sc = ax.scatter(lr, wd, c=acc, cmap="viridis", vmin=0, vmax=max(acc.max(), 1e-3), s=40)
    ax.scatter(lr[:1], wd[:1], s=160, facecolors="none", edgecolors="red", label="best")
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="weight decay",
           title=f"random search: {len(records)} trials")
    ax.legend(loc="lower left")
    fig.colorbar(sc, ax=ax, label="validation accuracy")
    for k, r in enumerate(records[:best]):
        epochs = np.arange(1, len(r["val_accuracy_curve"]) + 1)
        line, = ax2.plot(epochs, r["val_accuracy_curve"],
                         label=f"#{k + 1} lr {r['lr']:.1e}, wd {r['weight_decay']:.1e}")
        ax2.plot(epochs, r["train_accuracy_curve"], "--", color=line.get_color(), alpha=0.6)
    ax2.set(xlabel="epoch", ylabel="accuracy", title=f"best {min(best, len(records))} trials",
            ylim=(0, 1))
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import positive_int_arg as count

    p.add_argument("--dataset", default="mnist-small",
                   help="mnist-small (bundled), mnist, or PATH.npz in the same layout")
    p.add_argument("--train-size", type=count, default=500,
                   help="training samples used, split 80/20 into train/validation (book: 500)")
    p.add_argument("--trials", type=count, default=100, help="(book: 100)")
    p.add_argument("--epochs", type=count, default=50, help="(book: 50)")
    p.add_argument("--batch-size", type=count, default=100)
    p.add_argument("--lr-range", type=float, nargs=2, default=(1e-6, 1e-2), metavar=("LO", "HI"))
    p.add_argument("--wd-range", type=float, nargs=2, default=(1e-8, 1e-4), metavar=("LO", "HI"))
    p.add_argument("--workers", type=count, default=None,
                   help="local processes when not under mpiexec (default: one per core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("runs", "hpsearch"),
                   help="directory for hpsearch.csv, hpsearch.json, hpsearch.png")


def add_parser(sub) -> None:
    """`fastnn hpsearch` (for fastnn.cli)."""
    p = sub.add_parser("hpsearch", help="random search over learning rate and weight decay "
                                        "(trials over MPI ranks or local processes)")
    add_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from .datasets import load_npz_dataset, mnist, mnist_small

    for name in ("lr_range", "wd_range"):
        lo, hi = getattr(args, name)
        if not 0 < lo <= hi < float("inf"):
            print(f"fastnn hpsearch: error: --{name.replace('_', '-')}: expected 0 < LO <= HI, "
                  f"got {lo} {hi}", file=sys.stderr)
            return 2
    load = {"mnist-small": mnist_small, "mnist": mnist}.get(args.dataset)
    try:
        with distributed.root_first():
            (x, y), _ = (load or (lambda **kw: load_npz_dataset(args.dataset, **kw)))(flatten=True)
    except (OSError, ValueError) as exc:
        print(f"fastnn hpsearch: error: --dataset: {exc}", file=sys.stderr)
        return 2
    x, y = x[: args.train_size], y[: args.train_size]
    root = distributed.is_root()
    where = (f"{distributed.world_size()} MPI ranks" if distributed.launched()
             else f"{args.workers or backend.get_num_threads()} local process(es)")
    if root:
        print(f"random search: {args.trials} trials x {args.epochs} epochs on {len(x)} samples "
              f"of {args.dataset}, lr {args.lr_range}, weight decay {args.wd_range}, on {where}",
              flush=True)
    t0 = time.perf_counter()
    with distributed.abort_on_error():  # a failing rank must not leave the others waiting
        records = random_search(x, y, trials=args.trials, epochs=args.epochs,
                                batch_size=args.batch_size, lr_range=tuple(args.lr_range),
                                wd_range=tuple(args.wd_range), seed=args.seed,
                                workers=args.workers)
    if not root:
        return 0
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    settings.update(seconds=time.perf_counter() - t0, where=where)
    try:
        wrote = save(records, args.out, settings)
        if plot(records, os.path.join(args.out, "hpsearch.png")):
            wrote.append(os.path.join(args.out, "hpsearch.png"))
    except OSError as exc:
        print(f"fastnn hpsearch: error: --out: cannot write to {args.out!r}: {exc}",
              file=sys.stderr)
        return 2
    for k, r in enumerate(records[:10]):
        print(f"Best-{k + 1:<2} (val acc {r['val_accuracy']:.3f}) | lr {r['lr']:.3e}, "
              f"weight decay {r['weight_decay']:.3e}")
    print(f"{len(records)} trials in {settings['seconds']:.1f} s; wrote {', '.join(wrote)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastnn.hpsearch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    # Run the package's module, not this __main__ copy, so that worker processes unpickle
    # fastnn.hpsearch's functions.
    from fastnn.hpsearch import main as _main

    sys.exit(_main())
