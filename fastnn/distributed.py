"""Data-parallel training over MPI (mpi4py): every rank holds a replica of the model, trains on its
shard of each global batch and averages gradients with one Allreduce per step.

Run under a launcher, e.g. ``mpiexec -n 2 python train.py`` with ``fastnn.distributed.fit(...)``
in it (``pip install 'fastnn[mpi]'`` brings mpi4py and MPICH; see docs/distributed.md). mpi4py is
imported only inside these functions, and only when the process was started by an MPI launcher
or a communicator is passed: ``import fastnn`` never loads MPI, and outside MPI everything here
runs as a single process (rank 0 of 1).
"""

from __future__ import annotations

import contextlib
import numbers
import os
import sys
import time

import numpy as np

from . import backend
from .kernels._check import positive_int
from .training import (
    History,
    _check_fit,
    _check_xy,
    _FitLoop,
    _seeded_rng,
    _split_validation,
    forward_backward,
)

# Set by mpiexec/mpirun (MPICH's Hydra, Intel MPI, Open MPI/PMIx, MVAPICH, Slurm's srun) in every
# process they start: a process without any of these is not part of an MPI job.
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                  "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
_threads_chosen = False


def launched() -> bool:
    """True when an MPI launcher started this process (or mpi4py.MPI is already imported)."""
    return "mpi4py.MPI" in sys.modules or any(v in os.environ for v in _LAUNCHER_VARS)


def get_comm(comm=None):
    """`comm` itself, else MPI.COMM_WORLD under a launcher, else None (a single process)."""
    if comm is not None:
        return comm
    if not launched():
        return None
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastnn.distributed: this process was started by an MPI launcher but "
                          "mpi4py is not installed: pip install 'fastnn[mpi]'") from exc
    return MPI.COMM_WORLD


def rank(comm=None) -> int:
    """This process's rank (0 outside MPI)."""
    c = get_comm(comm)
    return 0 if c is None else c.Get_rank()


def world_size(comm=None) -> int:
    """The number of ranks (1 outside MPI)."""
    c = get_comm(comm)
    return 1 if c is None else c.Get_size()


def is_root(comm=None) -> bool:
    """True on rank 0: the rank that prints and writes files."""
    return rank(comm) == 0


def threads_per_rank(comm=None) -> int:
    """The cores this process may use, shared among the ranks on the same node. A launcher that
    pinned each rank to its own cores (a smaller affinity mask) has already divided them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    c = get_comm(comm)
    if c is None or cores < (os.cpu_count() or cores):
        return max(1, cores)
    from mpi4py import MPI

    node = c.Split_type(MPI.COMM_TYPE_SHARED)
    local = node.Get_size()
    node.Free()
    return max(1, cores // local)


def init(comm=None, threads: int | None = None) -> int:
    """Set the threads of every backend and BLAS to `threads`, or, unless the user already chose
    (fastnn.backend.set_num_threads or FASTNN_NUM_THREADS), to cores / ranks on this node, so
    that the ranks do not oversubscribe the cores. Returns the thread count. fit() calls it."""
    global _threads_chosen
    if threads is not None:
        backend.set_num_threads(positive_int("threads", threads))
    elif not _threads_chosen and getattr(backend, "_num_threads", None) is None:
        backend.set_num_threads(threads_per_rank(comm))
    _threads_chosen = True
    return backend.get_num_threads()


@contextlib.contextmanager
def root_first(comm=None):
    """Run the block on rank 0 first, then on the other ranks (e.g. a download, or filling the
    Numba cache, that the ranks must not race on)."""
    c = get_comm(comm)
    if c is not None and c.Get_rank() != 0:
        c.Barrier()
    try:
        yield
    finally:
        if c is not None and c.Get_rank() == 0:
            c.Barrier()


@contextlib.contextmanager
def abort_on_error(comm=None):
    """Turn an exception that escapes the block on any rank into MPI_Abort of the whole job (as
    `python -m mpi4py script.py` does), instead of leaving the other ranks waiting forever in
    their next collective. For entry points (fastnn train --distributed), not for libraries."""
    try:
        yield
    except BaseException as exc:
        c = get_comm(comm)
        if c is None or c.Get_size() == 1 or (isinstance(exc, SystemExit) and not exc.code):
            raise
        import traceback

        print(f"fastnn.distributed: rank {c.Get_rank()} failed; aborting all {c.Get_size()} ranks",
              file=sys.stderr)
        traceback.print_exc()
        sys.stderr.flush()
        c.Abort(1)


def broadcast_model(model, optimizer=None, comm=None) -> None:
    """Copy rank 0's parameters, layer state (batch-norm statistics) and optimizer state to every
    rank, in place (buffer Bcasts: no pickling)."""
    c = get_comm(comm)
    if c is None or c.Get_size() == 1:
        return
    c.Bcast(model.parameters().data, root=0)
    for layer in model.layers:
        for a in layer.state.values():
            c.Bcast(a, root=0)
    if optimizer is not None:
        for a in optimizer.state.values():
            c.Bcast(a, root=0)
        steps = np.array([optimizer.steps], np.int64)
        c.Bcast(steps, root=0)
        optimizer.steps = int(steps[0])


def average_layer_state(model, comm=None) -> None:
    """Average the non-trainable layer state (batch-norm running statistics, which each rank
    updates from its own shard) over the ranks, so that every replica predicts the same."""
    c = get_comm(comm)
    if c is None or c.Get_size() == 1:
        return
    from mpi4py import MPI

    for layer in model.layers:
        for a in layer.state.values():
            c.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
            a *= np.float32(1.0 / c.Get_size())


def _sum(c, values) -> np.ndarray:
    """Element-wise sum over the ranks of a few float64 numbers (metrics, counts)."""
    buf = np.asarray(values, np.float64).copy()
    if c is not None and c.Get_size() > 1:
        from mpi4py import MPI

        c.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
    return buf


def shard(n: int, r: int, p: int) -> slice:
    """Rank r's contiguous share of n items split over p ranks (sizes differ by at most one)."""
    return slice(n * r // p, n * (r + 1) // p)


def evaluate(model, x, y, *, loss, batch_size: int = 256, comm=None) -> dict:
    """Sequential.evaluate with the samples split over the ranks; every rank gets the totals."""
    c = get_comm(comm)
    x, y = _check_xy(x, y)
    r, p = (0, 1) if c is None else (c.Get_rank(), c.Get_size())
    part = shard(x.shape[0], r, p)
    total, correct, n = 0.0, 0.0, 0
    if part.stop > part.start:
        v = model.evaluate(x[part], y[part], loss=loss, batch_size=batch_size)
        n = part.stop - part.start
        total, correct = v["loss"] * n, v["accuracy"] * n
    total, correct, n = _sum(c, [total, correct, n])
    return {"loss": total / n, "accuracy": correct / n}


def _backward_step(model, xb, yb, loss, scale: float = 1.0):
    """Forward and backward on this rank's shard; the gradients (in the flat buffer) are those of
    `scale` * the shard's mean loss. Backpropagation is linear in dL/doutput, so scaling that
    small array scales every parameter gradient, without a pass over the flat buffer."""
    return forward_backward(model, xb, yb, loss, scale)


def _warm_up(model, optimizer, loss, x, y) -> None:
    """One step of a throw-away copy on two samples: compiles (and caches) every kernel that
    training uses, so that ranks started after it load Numba's cache instead of racing to write
    it. Only an optimisation: any error here is left for the real step to report."""
    import copy

    try:
        m, opt = copy.deepcopy((model, optimizer))
        _backward_step(m, x[:2], y[:2], copy.deepcopy(loss))
        opt.step()
    except Exception:  # noqa: BLE001 - the real training step raises it properly
        pass


def _decorrelate_dropout(model, r: int) -> None:
    """Replicas built from one seed would draw the same dropout masks on every rank: give each
    rank its own stream, derived from the layer's generator and the rank."""
    for layer in model.layers:
        g = getattr(layer, "rng", None)
        if isinstance(g, np.random.Generator):
            layer.rng = np.random.default_rng([int(g.integers(2**63)), r])


def _shared_seed(c, seed) -> int:
    """A seed every rank agrees on: an integer `seed` itself; for None or a Generator, entropy
    drawn on rank 0 and broadcast; anything else numpy accepts as a seed, a number drawn from it."""
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return int(seed)
    buf = np.array([np.random.default_rng(seed).integers(2**63)], np.int64)
    if c is not None and (seed is None or isinstance(seed, np.random.Generator)):
        c.Bcast(buf, root=0)
    return int(buf[0])


def _mpi():
    from mpi4py import MPI

    return MPI


def fit(model, x, y, *, loss, optimizer, epochs: int = 1, batch_size: int = 32,
        validation_data=None, validation_split: float = 0.0, shuffle: bool = True, seed=None,
        verbose: int = 1, callbacks=(), initial_epoch: int = 0, rng_state: dict | None = None,
        augment=None, comm=None, threads: int | None = None) -> History:
    """Sequential.fit, data parallel over the ranks of `comm` (default: MPI.COMM_WORLD under a
    launcher; outside MPI, one process). Every rank must pass the same x and y.

    `batch_size` is the global batch: each step every rank draws the same global batch from the
    same seeded permutation, trains on its contiguous share, and one Allreduce (in place, over the
    flat gradient buffer, weighted by share size) gives every rank the gradient of the whole
    batch, so the result equals single-process fit up to float summation order (batch norm
    excepted: it normalises each rank's shard). Parameters and optimizer state are broadcast from
    rank 0 first; the History's metrics are over all ranks. Only rank 0 prints, and callbacks that
    write files (ModelCheckpoint, or any with `root_only = True`) run on rank 0 only. Augmentation
    and dropout draw from per-rank generators. `history.timing` holds the mean seconds per step
    and the Allreduce's share."""
    from .callbacks import ModelCheckpoint

    c = get_comm(comm)
    r, p = (0, 1) if c is None else (c.Get_rank(), c.Get_size())
    x, y, epochs, initial_epoch, batch_size = _check_fit(
        model, x, y, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
        initial_epoch=initial_epoch, augment=augment)
    if p > 1 or threads is not None:
        init(c, threads)
    if batch_size < p:
        raise ValueError(f"batch_size: expected a global batch of at least one sample per rank "
                         f"(>= {p}), got {batch_size}")
    if p > 1:
        sizes = np.array([x.shape[0], -x.shape[0]], np.int64)
        c.Allreduce(_mpi().IN_PLACE, sizes, op=_mpi().MAX)
        if sizes[0] != -sizes[1]:
            raise ValueError(f"x: expected the same training set on every rank, got "
                             f"{x.shape[0]} samples on rank {r} and {sizes[0]} on another")
    x, y, validation_data = _split_validation(x, y, validation_data, validation_split)

    if p == 1:  # exactly Sequential.fit's generator
        rng = aug_rng = _seeded_rng(seed, rng_state)
    else:
        base_seed = _shared_seed(c, seed)
        rng, aug_rng = _seeded_rng(base_seed, rng_state), np.random.default_rng([base_seed, r + 1])
        _decorrelate_dropout(model, r)
    broadcast_model(model, optimizer, c)
    if p > 1:
        with root_first(c):
            _warm_up(model, optimizer, loss, x, y)

    cbs = [cb for cb in (callbacks or ()) if r == 0 or not
           (isinstance(cb, ModelCheckpoint) or getattr(cb, "root_only", False))]
    loop = _RanksLoop(model, loss, optimizer, rng, aug_rng, c)
    history = loop.run(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=batch_size,
                       shuffle=shuffle, verbose=verbose if r == 0 else 0, callbacks=cbs,
                       validation_data=validation_data, augment=augment)
    step_s, ar_s = (_sum(c, [loop.step_seconds, loop.allreduce_seconds])
                    / (p * max(loop.steps_done, 1))).tolist()
    history.timing = {"ranks": p, "threads": backend.get_num_threads(), "steps": loop.steps_done,
                      "step_seconds": step_s, "allreduce_seconds": ar_s,
                      "allreduce_share": ar_s / step_s if step_s else 0.0}
    return history


class _RanksLoop(_FitLoop):
    """fit's epoch loop with every rank training on its share of each global batch: one
    Allreduce of the flat gradient buffer per step, the epoch's metrics and the batch-norm
    statistics summed or averaged over the ranks, validation split over them."""

    def __init__(self, model, loss, optimizer, rng, augment_rng, comm) -> None:
        super().__init__(model, loss, optimizer, rng, augment_rng)
        self.comm, self.grad = comm, model.parameters().grad
        self.rank, self.ranks = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
        self.ranks_note = f" ({self.ranks} ranks)"
        self.allreduce_seconds = 0.0

    def share(self, batch):
        return batch[shard(len(batch), self.rank, self.ranks)]

    def largest_share(self, batch_size):
        return batch_size - batch_size * (self.ranks - 1) // self.ranks

    def combine(self, value):
        if self.ranks > 1:
            # A non-finite loss on any rank poisons grad[0], so every rank learns of it from the
            # one Allreduce and all stop together (none is left waiting in the next one).
            if not np.isfinite(value):
                self.grad[:1] = np.nan
            t = time.perf_counter()
            self.comm.Allreduce(_mpi().IN_PLACE, self.grad, op=_mpi().SUM)
            self.allreduce_seconds += time.perf_counter() - t
        if not np.isfinite(value):
            return f"{value}"
        return None if np.isfinite(self.grad[:1]).all() else "non-finite on another rank"

    def total(self, counts):
        return _sum(self.comm, counts)

    def end_epoch(self):
        average_layer_state(self.model, self.comm)

    def evaluate(self, x, y, batch_size):
        return evaluate(self.model, x, y, loss=self.loss, batch_size=batch_size, comm=self.comm)


def step_timing(model, x, y, *, loss, optimizer, batch_size: int = 64, steps: int = 30,
                warmup: int = 5, comm=None) -> dict:
    """Median milliseconds of each phase of a data-parallel step, with a Barrier before the
    Allreduce so that it is timed alone: compute (forward + backward of this rank's share), wait
    (for the slowest rank), allreduce, update, and the whole step; the slowest rank's median of
    each. Also the gradient bytes and the Allreduce's bus bandwidth, 2 (p-1)/p * bytes / time
    (0 for 1 rank). Trains the model: use a throw-away one."""
    c = get_comm(comm)
    r, p = (0, 1) if c is None else (c.Get_rank(), c.Get_size())
    if p > 1:
        init(c)
        broadcast_model(model, optimizer, c)
    grad, local = model.parameters().grad, batch_size // p
    rng = np.random.default_rng(0)
    phases = np.zeros((steps, 5))
    for k in range(warmup + steps):
        idx = rng.integers(0, len(x), batch_size)[r * local : (r + 1) * local]
        t0 = time.perf_counter()
        _backward_step(model, x[idx], y[idx], loss)
        t1 = time.perf_counter()
        if p > 1:
            c.Barrier()
        t2 = time.perf_counter()
        if p > 1:
            c.Allreduce(_mpi().IN_PLACE, grad, op=_mpi().SUM)
        t3 = time.perf_counter()
        optimizer.step()
        t4 = time.perf_counter()
        if k >= warmup:
            phases[k - warmup] = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)
    ms = np.median(phases, axis=0) * 1e3
    if p > 1:
        c.Allreduce(_mpi().IN_PLACE, ms, op=_mpi().MAX)
    nbytes = grad.nbytes
    names = ("compute_ms", "wait_ms", "allreduce_ms", "update_ms", "step_ms")
    out = {"ranks": p, "threads": backend.get_num_threads(), "batch_per_rank": local,
           "gradient_bytes": nbytes, **dict(zip(names, ms.tolist(), strict=True))}
    out["allreduce_share"] = float(ms[2] / ms[4])
    out["bus_GBps"] = 2 * (p - 1) / p * nbytes / (ms[2] * 1e6) if p > 1 and ms[2] else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    """`mpiexec -n N python -m fastnn.distributed [--model cnn] ...`: per-step time and the
    Allreduce's share on this machine (or cluster), printed by rank 0 as JSON."""
    import argparse
    import json

    from . import datasets, recipes
    from .losses import SoftmaxCrossEntropy
    from .optim import Adam

    ap = argparse.ArgumentParser(prog="python -m fastnn.distributed", description=main.__doc__)
    ap.add_argument("--model", choices=sorted(recipes.MODELS), default="cnn")
    ap.add_argument("--batch-size", type=int, default=64, help="global batch (default 64)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="per rank (default: cores/ranks)")
    args = ap.parse_args(argv)
    with abort_on_error():
        init(threads=args.threads)
        (x, y), _ = datasets.mnist_small()
        model = recipes.MODELS[args.model](seed=0)
        t = step_timing(model, x, y, loss=SoftmaxCrossEntropy(), batch_size=args.batch_size,
                        optimizer=Adam(model.parameters()), steps=args.steps)
    if is_root():
        print(json.dumps({"model": args.model, "backend": backend.current(), **t}))
    return 0


if __name__ == "__main__":
    from fastnn.distributed import main as _main  # the package's module, not a second copy

    sys.exit(_main())
