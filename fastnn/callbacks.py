"""Callbacks for Sequential.fit: early stopping, per-epoch checkpoints, a user hook."""

from __future__ import annotations

import math
import os

from .kernels._check import finite_float, positive_int



class Callback:
    model = None
    optimizer = None

    def on_train_begin(self) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...

    def on_train_end(self) -> None: ...


class CallbackList:
    def __init__(self, callbacks, model, optimizer) -> None:
        self.callbacks = list(callbacks or ())
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks: expected fastnn.callbacks.Callback instances, got "
                                f"{type(cb).__name__}")
            cb.model, cb.optimizer = model, optimizer

    def on_train_begin(self):
        for cb in self.callbacks:
            cb.on_train_begin()

    def on_epoch_end(self, epoch, logs):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_end(self):
        for cb in self.callbacks:
            cb.on_train_end()


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs; by default
    restore the weights of the best epoch."""

    def __init__(self, monitor: str = "val_loss", patience: int = 2, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True) -> None:
        self.patience = positive_int("patience", patience, minimum=0)
        self.min_delta = abs(finite_float("min_delta", min_delta))
        self.monitor, self.mode = monitor, _mode(mode, monitor)
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self):
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights, self.best_state, self.wait = None, None, 0
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs):
        value = _monitored(self.monitor, logs)
        if _improves(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = self.model.parameters().data.copy()
                self.best_state = _copy_states(self.model)
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
                self.stopped_epoch = epoch

    def on_train_end(self):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.parameters().data[...] = self.best_weights
            for layer, state in zip(self.model.layers, self.best_state):
                for k, a in state.items():
                    layer.state[k][...] = a


def _mode(mode: str, monitor: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
    return mode if mode != "auto" else ("max" if "acc" in monitor else "min")


def _monitored(monitor: str, logs: dict) -> float:
    if monitor not in logs:
        raise ValueError(f"monitor: expected one of {sorted(logs)}, got {monitor!r}")
    return logs[monitor]


def _improves(value, best, mode, min_delta=0.0) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _copy_states(model):
    return [{k: a.copy() for k, a in layer.state.items()} for layer in model.layers]


class ModelCheckpoint(Callback):
    """Save the model (and the optimizer state and the shuffling RNG, for exact resumption) after
    every epoch. `path` may contain "{epoch}" (1-based) and any log key, e.g.
    "ckpt-{epoch:02d}-{val_loss:.3f}.npz"; save_best_only keeps only improvements of `monitor`."""

    def __init__(self, path: str, save_best_only: bool = False, monitor: str = "val_loss",
                 mode: str = "auto", save_optimizer: bool = True) -> None:
        self.path, self.save_best_only, self.monitor = str(path), save_best_only, monitor
        self.mode = _mode(mode, monitor)
        self.save_optimizer = save_optimizer
        self.best = math.inf if self.mode == "min" else -math.inf
        self.saved: list[str] = []

    def on_epoch_end(self, epoch, logs):
        if self.save_best_only:
            value = _monitored(self.monitor, logs)
            if not _improves(value, self.best, self.mode):
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        from .io import save

        extra = {"epoch": epoch + 1, "fit_rng_state": getattr(self.model, "fit_rng_state", None)}
        save(self.model, path, optimizer=self.optimizer if self.save_optimizer else None,
             extra=extra)
        self.saved.append(path)


class LambdaCallback(Callback):
    """Call `on_epoch_end(epoch, logs)` (a user function) after every epoch."""

    def __init__(self, on_epoch_end=None) -> None:
        if on_epoch_end is not None and not callable(on_epoch_end):
            raise TypeError(f"on_epoch_end: expected a callable, got {type(on_epoch_end).__name__}")
        self._fn = on_epoch_end

    def on_epoch_end(self, epoch, logs):
        if self._fn is not None:
            self._fn(epoch, dict(logs))


__all__ = ["Callback", "EarlyStopping", "LambdaCallback", "ModelCheckpoint"]
