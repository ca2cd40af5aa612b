"""Learning-rate schedules: callables step -> lr (step counts optimizer steps from 0), usable as
the `lr` of every optimizer. Each takes an optional linear warm-up over `warmup_steps`."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

from .kernels._check import finite_float, positive_int


class Schedule(ABC):
    def __init__(self, lr: float, warmup_steps: int = 0) -> None:
        self.base_lr = finite_float("lr", lr, minimum=0.0)
        self.warmup_steps = positive_int("warmup_steps", warmup_steps, minimum=0)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        return self.decayed(step - self.warmup_steps)

    def get_config(self) -> dict:
        cfg = {k: v for k, v in vars(self).items() if k != "base_lr"}
        return {"lr": self.base_lr, **cfg}

    @abstractmethod
    def decayed(self, step: int) -> float:
        """The learning rate `step` steps after the warm-up."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


class StepDecay(Schedule):
    """lr * gamma ** (step // step_size)."""

    def __init__(self, lr, step_size: int, gamma: float = 0.1, warmup_steps: int = 0) -> None:
        super().__init__(lr, warmup_steps)
        self.step_size = positive_int("step_size", step_size)
        self.gamma = finite_float("gamma", gamma, minimum=0.0)

    def decayed(self, step):
        return self.base_lr * self.gamma ** (step // self.step_size)


class ExponentialDecay(Schedule):
    """lr * gamma ** step."""

    def __init__(self, lr, gamma: float, warmup_steps: int = 0) -> None:
        super().__init__(lr, warmup_steps)
        self.gamma = finite_float("gamma", gamma, minimum=0.0)

    def decayed(self, step):
        return self.base_lr * self.gamma**step


class CosineDecay(Schedule):
    """Cosine from lr down to min_lr over total_steps (after warm-up), then min_lr."""

    def __init__(self, lr, total_steps: int, min_lr: float = 0.0, warmup_steps: int = 0) -> None:
        super().__init__(lr, warmup_steps)
        self.total_steps = positive_int("total_steps", total_steps)
        self.min_lr = finite_float("min_lr", min_lr, minimum=0.0)

    def decayed(self, step):
        t = min(step, self.total_steps) / self.total_steps
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * t))


SCHEDULE_TYPES = {c.__name__: c for c in (StepDecay, ExponentialDecay, CosineDecay)}
