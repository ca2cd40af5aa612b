"""Optimizers with torch.optim semantics over a model's flat parameter buffer: one `step()` is
one kernel call over every parameter. `lr` is a number or a schedule (fastnn.schedules)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from . import kernels as K
from .kernels._check import finite_float
from .params import Parameters


class Optimizer(ABC):
    state_names: tuple[str, ...] = ()
    _non_negative = ("v", "sum_sq", "sq_avg")  # running sums of squares

    def __init__(self, params: Parameters, lr) -> None:
        if not isinstance(params, Parameters):
            raise TypeError(f"params: expected model.parameters() (fastnn Parameters), got "
                            f"{type(params).__name__}")
        if not callable(lr):
            finite_float("lr", lr, minimum=0.0)
        self.params = params
        self.lr = lr
        self.steps = 0  # optimizer steps taken
        self.state = {n: np.zeros_like(params.data) for n in self.state_names}

    def current_lr(self) -> float:
        return float(self.lr(self.steps)) if callable(self.lr) else float(self.lr)

    def zero_grad(self) -> None:
        self.params.zero_grad()

    def step(self) -> None:
        self._update(self.current_lr())
        self.steps += 1

    @abstractmethod
    def _update(self, lr: float) -> None:
        """Apply one update with learning rate `lr` (one kernel call over the flat buffer)."""

    def hyperparameters(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        """Arrays and numbers only (saved with np.savez, loaded without pickle)."""
        d = {"type": type(self).__name__, "steps": self.steps, "size": int(self.params.data.size),
             "hyperparameters": self.hyperparameters()}
        d.update({f"state.{n}": a.copy() for n, a in self.state.items()})
        return d

    def load_state_dict(self, d: dict) -> None:
        if not isinstance(d, dict):
            raise TypeError(f"state_dict: expected a dict from state_dict(), got {type(d).__name__}")
        if d.get("type") != type(self).__name__:
            raise ValueError(f"state_dict: expected a {type(self).__name__} state, got {d.get('type')!r}")
        size = d.get("size")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
                or size != self.params.data.size:
            raise ValueError(f"state_dict: expected state for {self.params.data.size} parameters "
                             f"(this model), got {size!r}")
        # steps feeds Adam's bias correction (step counts from 1): a whole number >= 0
        steps = d.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
            raise ValueError(f"state_dict: steps: expected an integer >= 0, got {steps!r}")
        arrays = {}
        for n in self.state_names:  # check everything before changing anything
            if f"state.{n}" not in d:
                raise ValueError(f"state_dict: expected an array 'state.{n}', got keys {sorted(d)}")
            a = np.asarray(d[f"state.{n}"])
            if a.dtype.kind not in "fiu":
                raise TypeError(f"state_dict: state.{n}: expected a float array, got dtype "
                                f"{a.dtype}")
            if a.shape != self.state[n].shape:
                raise ValueError(f"state_dict: {n} expected shape {self.state[n].shape}, got {a.shape}")
            if not np.isfinite(a).all() or (n in self._non_negative and (a < 0).any()):
                want = "finite values >= 0" if n in self._non_negative else "finite values"
                raise ValueError(f"state_dict: state.{n}: expected {want}, got NaN, infinity"
                                 f"{' or negative values' if n in self._non_negative else ''}")
            arrays[n] = a.astype(np.float32)
        steps = int(steps)
        for n, a in arrays.items():
            self.state[n][...] = a
        self.steps = steps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr!r}, {self.hyperparameters()})"


class SGD(Optimizer):
    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0) -> None:
        self.momentum = finite_float("momentum", momentum, minimum=0.0)
        self.state_names = ("velocity",) if self.momentum else ()
        super().__init__(params, lr)
        self.nesterov, self.weight_decay = bool(nesterov), finite_float("weight_decay", weight_decay, 0.0)
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov: expected momentum > 0 with nesterov=True, got momentum 0")

    def _update(self, lr):
        K.sgd_update(self.params.data, self.params.grad, self.state.get("velocity"), lr,
                     self.momentum, self.nesterov, self.weight_decay)

    def hyperparameters(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class AdaGrad(Optimizer):
    state_names = ("sum_sq",)

    def __init__(self, params, lr=0.01, eps=1e-10, weight_decay=0.0) -> None:
        super().__init__(params, lr)
        self.eps = finite_float("eps", eps, minimum=0.0)
        self.weight_decay = finite_float("weight_decay", weight_decay, minimum=0.0)

    def _update(self, lr):
        K.adagrad_update(self.params.data, self.params.grad, self.state["sum_sq"], lr, self.eps,
                         self.weight_decay)

    def hyperparameters(self):
        return {"eps": self.eps, "weight_decay": self.weight_decay}


class RMSprop(Optimizer):
    state_names = ("sq_avg",)

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0) -> None:
        super().__init__(params, lr)
        self.alpha = finite_float("alpha", alpha, minimum=0.0, maximum=1.0)
        self.eps = finite_float("eps", eps, minimum=0.0)
        self.weight_decay = finite_float("weight_decay", weight_decay, minimum=0.0)

    def _update(self, lr):
        K.rmsprop_update(self.params.data, self.params.grad, self.state["sq_avg"], lr, self.alpha,
                         self.eps, self.weight_decay)

    def hyperparameters(self):
        return {"alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay}


class Adam(Optimizer):
    state_names = ("m", "v")
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        self.betas = tuple(finite_float("betas", b, 0.0, 1.0, max_open=True) for b in betas)
        self.eps = finite_float("eps", eps, minimum=0.0)
        self.weight_decay = finite_float("weight_decay", weight_decay, minimum=0.0)

    def _update(self, lr):
        K.adam_update(self.params.data, self.params.grad, self.state["m"], self.state["v"],
                      self.steps + 1, lr, self.betas[0], self.betas[1], self.eps,
                      self.weight_decay, self.decoupled)

    def hyperparameters(self):
        return {"betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as torch.optim.AdamW."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


OPTIMIZER_TYPES = {c.__name__: c for c in (SGD, AdaGrad, RMSprop, Adam, AdamW)}
