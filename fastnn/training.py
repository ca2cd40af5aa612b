"""Training loops for Sequential: fit, evaluate, predict, train_on_batch, predict_on_batch."""

from __future__ import annotations

import sys
import time

import numpy as np

from . import backend
from ._steps import MAX_PLANS, StepPlan
from .kernels._check import as_float32, finite_float, positive_int
from .layers.base import backward_to_parameters


class History:
    """`history` maps "loss", "accuracy" (and "val_loss", "val_accuracy") to per-epoch lists."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))

    def __repr__(self) -> str:
        return f"History({self.history})"


def _check_xy(x, y, name_x="x", name_y="y"):
    x = as_float32(name_x, x)
    y = np.asarray(y)
    if x.ndim < 2:
        raise ValueError(f"{name_x}: expected a batch of samples (N, ...), got shape {x.shape}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{name_y}: expected {x.shape[0]} targets (one per sample of {name_x}), "
                         f"got shape {y.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name_x}: expected at least one sample, got an empty batch")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError(f"{name_y}: expected finite targets, got NaN or infinity")
    if y.dtype.kind not in "iufb":
        raise TypeError(f"{name_y}: expected integer labels or float targets, got dtype {y.dtype}")
    return x, y


def predict(model, x, batch_size: int = 256) -> np.ndarray:
    x = as_float32("x", x)
    batch_size = positive_int("batch_size", batch_size)
    out = None
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        for layer in model._run:
            xb = layer.forward(xb, False)
        if out is None:
            out = np.empty((x.shape[0], *xb.shape[1:]), np.float32)
        out[start : start + len(xb)] = xb
    if out is None:
        raise ValueError("x: expected at least one sample, got an empty batch")
    return out


def _check_loss(loss):
    if isinstance(loss, type) or not all(
            callable(getattr(loss, m, None)) for m in ("forward", "backward", "accuracy")):
        raise TypeError(f"loss: expected a loss object such as "
                        f"fastnn.losses.SoftmaxCrossEntropy(), got {loss!r}")


def forward_backward(model, xb, yb, loss, scale: float = 1.0) -> tuple[float, np.ndarray]:
    """Forward in training mode, the loss, and backward into every gradient (dL/doutput times
    `scale`, never dL/dinput: see `backward_to_parameters`); returns (loss value, outputs)."""
    out = xb
    for layer in model._run:
        out = layer.forward(out, True)
    value = loss.forward(out, yb)
    dy = loss.backward()
    if scale != 1.0:
        dy = dy * np.float32(scale)
    backward_to_parameters(model._run, dy)
    return value, out


class TrainingMixin:
    """fit / evaluate / train_on_batch / predict_on_batch for Sequential."""

    def _check_optimizer(self, optimizer):
        if getattr(optimizer, "params", None) is not self.parameters():
            raise ValueError("optimizer: expected an optimizer built on this model's parameters() "
                             "(e.g. Adam(model.parameters())), got one built for other parameters")

    def _step(self, xb, yb, loss, optimizer) -> tuple[float, np.ndarray]:
        value, out = forward_backward(self, xb, yb, loss)
        optimizer.step()
        return value, out

    def train_on_batch(self, x, y, *, loss, optimizer) -> float:
        """One training step on one batch; returns the batch loss.

        For embedding in a loop: the first call for an input shape (and loss, optimizer,
        backend) is validated and allocates; later calls with NumPy arrays of the same shapes and
        dtypes reuse that call's buffers and skip all checks but those that protect memory (the
        shapes, and the range of integer labels), so a warm step allocates no arrays."""
        if type(x) is np.ndarray and type(y) is np.ndarray:
            key = (x.shape, x.dtype, y.shape, y.dtype)
            plan = self._train_plans.get(key)
            if (plan is not None and plan.loss is loss and plan.optimizer is optimizer
                    and plan.backend == backend.current()):
                return plan.train(x, y)
        else:
            key = None
        self._check_optimizer(optimizer)
        _check_loss(loss)
        xv, yv = _check_xy(x, y)
        value, out = self._step(xv, yv, loss, optimizer)
        if key is not None:
            _remember(self._train_plans, key, StepPlan(self, x, out.shape, y, loss, optimizer))
        return value

    def predict_on_batch(self, x, copy: bool = False) -> np.ndarray:
        """Inference-mode outputs for one batch. Without copy=True the result is a buffer that
        the next call with the same input shape overwrites (so a warm call allocates nothing);
        copy=True returns a fresh array. The first call for an input shape is validated; later
        calls with a NumPy array of that shape and dtype skip the checks (as train_on_batch)."""
        if type(x) is np.ndarray:
            key = (x.shape, x.dtype)
            plan = self._predict_plans.get(key)
            if plan is not None and plan.backend == backend.current():
                out = plan.predict(x)
                return out.copy() if copy else out
        else:
            key = None
        out = as_float32("x", x)
        for layer in self._run:
            out = layer.forward(out, False)
        if key is not None:
            _remember(self._predict_plans, key, StepPlan(self, x, out.shape))
        return out.copy() if copy else out

    def evaluate(self, x, y, *, loss, batch_size: int = 256) -> dict:
        """{"loss": mean loss, "accuracy": fraction correct} over (x, y), in inference mode."""
        _check_loss(loss)
        x, y = _check_xy(x, y)
        batch_size = positive_int("batch_size", batch_size)
        total, correct = 0.0, 0.0
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out = xb
            for layer in self._run:
                out = layer.forward(out, False)
            n = len(xb)
            total += loss.forward(out, yb) * n
            correct += loss.accuracy(out, yb) * n
        n = x.shape[0]
        return {"loss": total / n, "accuracy": correct / n}

    def fit(self, x, y, *, loss, optimizer, epochs: int = 1, batch_size: int = 32,
            validation_data=None, validation_split: float = 0.0, shuffle: bool = True,
            seed=None, verbose: int = 1, callbacks=(), initial_epoch: int = 0,
            rng_state: dict | None = None, augment=None, distributed: bool = False) -> History:
        """Train for `epochs` epochs of mini-batches; returns a History. A loss that becomes NaN
        or infinite raises FloatingPointError naming the epoch and step.

        distributed: data parallel over the ranks of `mpiexec -n N` (fastnn.distributed.fit;
        batch_size stays the global batch; needs `pip install 'fastnn[mpi]'`); outside MPI it
        trains as one process.

        augment: optional `f(x_batch, rng) -> x_batch` applied to every training batch (e.g.
        `fastnn.datasets.random_shift`), drawing from the same seeded generator as the shuffling.
        initial_epoch / rng_state: resume a run from a checkpoint (see ModelCheckpoint)."""
        if distributed:
            from . import distributed as dist

            return dist.fit(self, x, y, loss=loss, optimizer=optimizer, epochs=epochs,
                            batch_size=batch_size, validation_data=validation_data,
                            validation_split=validation_split, shuffle=shuffle, seed=seed,
                            verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch,
                            rng_state=rng_state, augment=augment)
        x, y, epochs, initial_epoch, batch_size = _check_fit(
            self, x, y, loss=loss, optimizer=optimizer, epochs=epochs, batch_size=batch_size,
            initial_epoch=initial_epoch, augment=augment)
        x, y, validation_data = _split_validation(x, y, validation_data, validation_split)
        loop = _FitLoop(self, loss, optimizer, _seeded_rng(seed, rng_state))
        return loop.run(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=batch_size,
                        shuffle=shuffle, verbose=verbose, callbacks=callbacks,
                        validation_data=validation_data, augment=augment)


# --- fit, shared with fastnn.distributed.fit ------------------------------------------------


def _check_fit(model, x, y, *, loss, optimizer, epochs, batch_size, initial_epoch, augment):
    """fit's argument checks; returns (x, y, epochs, initial_epoch, batch_size) validated."""
    model._check_optimizer(optimizer)
    _check_loss(loss)
    if augment is not None and not callable(augment):
        raise TypeError(f"augment: expected a callable f(x_batch, rng), got "
                        f"{type(augment).__name__}")
    x, y = _check_xy(x, y)
    epochs = positive_int("epochs", epochs, minimum=0)
    initial_epoch = positive_int("initial_epoch", initial_epoch, minimum=0)
    batch_size = positive_int("batch_size", batch_size)
    return x, y, epochs, initial_epoch, batch_size


def _split_validation(x, y, validation_data, validation_split):
    """(x, y, validation_data): the last `validation_split` of (x, y) held out unless
    validation_data is given, which is checked."""
    validation_split = finite_float("validation_split", validation_split, 0.0, 1.0, max_open=True)
    if validation_data is None and validation_split > 0:
        n_val = int(round(x.shape[0] * validation_split))
        if n_val < 1 or n_val >= x.shape[0]:
            raise ValueError(f"validation_split: expected a fraction leaving at least one "
                             f"sample on each side of {x.shape[0]}, got {validation_split}")
        validation_data = (x[-n_val:], y[-n_val:])
        x, y = x[:-n_val], y[:-n_val]
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data: expected a pair (x_val, y_val)")
        validation_data = _check_xy(*validation_data, "validation_data[0]", "validation_data[1]")
    return x, y, validation_data


def _seeded_rng(seed, rng_state=None) -> np.random.Generator:
    """fit's generator (shuffling, augmentation): from `seed`, or resumed at `rng_state`."""
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"seed: expected None, an int or a numpy.random.Generator, got "
                        f"{seed!r}") from exc
    if rng_state is not None:
        try:
            rng.bit_generator.state = rng_state
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"rng_state: expected the generator state saved by "
                             f"ModelCheckpoint (extra['fit_rng_state']), got {exc}") from exc
    return rng


class _FitLoop:
    """The epoch loop of fit: batches, augmentation, the loss check, running metrics, progress
    bar, validation, epoch line, callbacks and History. As is, one process trains on whole
    batches; fastnn.distributed's subclass overrides the hooks that involve the other ranks."""

    ranks = 1  # processes sharing each batch (the progress bar's samples/s counts them all)
    ranks_note = ""  # after "samples/s" in the epoch line

    def __init__(self, model, loss, optimizer, rng, augment_rng=None) -> None:
        self.model, self.loss, self.optimizer, self.rng = model, loss, optimizer, rng
        self.augment_rng = rng if augment_rng is None else augment_rng
        self.step_seconds, self.steps_done = 0.0, 0

    # -- hooks ---------------------------------------------------------------------------------
    def share(self, batch: np.ndarray) -> np.ndarray:
        """The indices of a global batch that this process trains on."""
        return batch

    def largest_share(self, batch_size: int) -> int:
        return batch_size

    def combine(self, value: float) -> str | None:
        """Combine the processes' gradients; returns what became non-finite, or None."""
        return None if np.isfinite(value) else f"{value}"

    def total(self, counts: list) -> list:
        """The epoch's [samples, loss sum, correct] over all processes."""
        return counts

    def end_epoch(self) -> None:
        """Before validation: bring the layer state of the processes together."""

    def evaluate(self, x, y, batch_size: int) -> dict:
        return self.model.evaluate(x, y, loss=self.loss, batch_size=batch_size)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, x, y, *, epochs, initial_epoch, batch_size, shuffle, verbose, callbacks,
            validation_data, augment) -> History:
        from .callbacks import CallbackList

        model, loss, optimizer = self.model, self.loss, self.optimizer
        cbs = CallbackList(callbacks, model=model, optimizer=optimizer)
        history = History()
        model.stop_training = False
        grad = model.parameters().grad
        n = x.shape[0]
        steps = -(-n // batch_size)
        rows = self.largest_share(batch_size)
        xb_buf = np.empty((rows, *x.shape[1:]), np.float32)
        yb_buf = np.empty((rows, *y.shape[1:]), y.dtype)
        cbs.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            order = self.rng.permutation(n) if shuffle else np.arange(n)
            bar = _progress(verbose, steps, epoch, epochs)
            seen, loss_sum, correct, t0 = 0, 0.0, 0.0, time.perf_counter()
            for step in range(steps):
                t_step = time.perf_counter()
                batch = order[step * batch_size : (step + 1) * batch_size]
                idx = self.share(batch)
                value = 0.0
                if len(idx):
                    xb = np.take(x, idx, axis=0, out=xb_buf[: len(idx)])
                    yb = np.take(y, idx, axis=0, out=yb_buf[: len(idx)])
                    if augment is not None:
                        xb = as_float32("augment(x_batch)", augment(xb, self.augment_rng))
                    # The share's part of the batch's mean loss (exactly 1 for one process):
                    # combining the processes' gradients sums the parts.
                    value, out = forward_backward(model, xb, yb, loss, len(idx) / len(batch))
                    seen += len(idx)
                    loss_sum += value * len(idx)
                    correct += loss.accuracy(out, yb) * len(idx)
                else:
                    grad[...] = 0  # fewer samples than ranks in the last batch: contribute nothing
                bad = self.combine(value)
                if bad is not None:
                    if bar is not None:
                        bar.close()
                    raise FloatingPointError(f"loss became {bad} at epoch {epoch + 1}, step "
                                             f"{step + 1} (of {steps}); lower the learning rate or "
                                             f"check the data for NaN/inf")
                optimizer.step()
                self.step_seconds += time.perf_counter() - t_step
                self.steps_done += 1
                if bar is not None:
                    rate = seen * self.ranks / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.4f}",
                                    acc=f"{correct / max(seen, 1):.4f}", samples_s=f"{rate:,.0f}",
                                    refresh=False)
                    bar.update(1)
            if bar is not None:
                bar.close()
            train_time = time.perf_counter() - t0
            seen, loss_sum, correct = self.total([seen, loss_sum, correct])
            logs = {"loss": loss_sum / seen, "accuracy": correct / seen}
            self.end_epoch()
            if validation_data is not None:
                v = self.evaluate(*validation_data, batch_size=max(batch_size, 256))
                logs.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
            history.append(epoch, logs)
            if verbose:
                took = time.perf_counter() - t0
                line = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
                print(f"Epoch {epoch + 1}/{epochs} - {took:.1f}s - {seen / train_time:,.0f} "
                      f"samples/s{self.ranks_note} - {line}", file=sys.stdout, flush=True)
            model.fit_rng_state = self.rng.bit_generator.state
            cbs.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        cbs.on_train_end()
        return history


def _remember(plans: dict, key, plan) -> None:
    if len(plans) >= MAX_PLANS:  # many input shapes: start afresh rather than grow
        plans.clear()
    plans[key] = plan


def _progress(verbose, steps, epoch, epochs):
    if not verbose or verbose > 1:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="step", leave=False,
                disable=None, dynamic_ncols=True)
