"""The Layer interface and weight initialisation.

A layer owns `params` and `grads` (dicts of name -> live float32 array, same keys), a `Workspace`
of buffers reused across steps, and implements `forward(x, train=True)` and `backward(dy)`.
Arrays a layer returns are its workspace buffers: the next call overwrites them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..kernels import Workspace

INITS = ("auto", "he", "xavier", "normal")


def check_init(init) -> None:
    if isinstance(init, str) and init in INITS:
        return
    if isinstance(init, (int, float)) and not isinstance(init, bool) and init > 0:
        return
    raise ValueError(f"init: expected one of {INITS} or a positive standard deviation, got {init!r}")


def init_std(init, fan_in: int, fan_out: int, activation: str | None) -> float:
    """He (Kaiming) for ReLU, Xavier (Glorot) for sigmoid/tanh/linear; "normal" is the textbook's
    0.01; a number is used as the standard deviation itself."""
    if init == "auto":
        init = "he" if activation == "relu" else "xavier"
    if init == "he":
        return float(np.sqrt(2.0 / fan_in))
    if init == "xavier":
        return float(np.sqrt(2.0 / (fan_in + fan_out)))
    if init == "normal":
        return 0.01
    return float(init)


class ForwardFirstError(RuntimeError, AttributeError):
    """backward() before forward(): what backward needs was never kept. An AttributeError too,
    so hasattr() on a fresh layer stays False."""


class Layer(ABC):
    """Base class: parameter-free layers only override forward/backward."""

    _KEPT_BY_FORWARD = ("x", "y", "x_shape", "argmax", "mean", "invstd")

    def __getattr__(self, name):  # only called when normal lookup fails
        if name in Layer._KEPT_BY_FORWARD:
            raise ForwardFirstError(f"{type(self).__name__}.backward() called before forward() "
                                    f"(nothing kept in {name!r} yet)")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}  # non-trainable buffers saved with the model
        self.ws = Workspace()
        self.planned = False  # set once a Sequential has initialised it for its activation

    @abstractmethod
    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """The layer's output; keeps what backward needs."""

    @abstractmethod
    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dL/dx for dy = dL/dy; overwrites `grads`."""

    def output_shape(self, input_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample input shape (no batch axis)."""
        return input_shape

    def get_config(self) -> dict:
        """Constructor arguments, for saving the architecture as JSON."""
        return {}

    def bind_grads(self, ws: Workspace | None = None) -> None:
        """Let kernels write gradients straight into `grads` (buffer "d<name>" of `ws`, by
        default the layer's own workspace)."""
        ws = self.ws if ws is None else ws
        for name, g in self.grads.items():
            ws.bind("d" + name, g)

    def _new_params(self, **arrays: np.ndarray) -> None:
        for name, a in arrays.items():
            self.params[name] = np.ascontiguousarray(a, dtype=np.float32)
            self.grads[name] = np.zeros_like(self.params[name])
        self.bind_grads()

    def describe(self) -> str:
        """A short one-line description for model summaries."""
        skip = ("init", "seed")
        args = ", ".join(f"{v}" for k, v in self.get_config().items() if k not in skip and v is not None)
        return f"{type(self).__name__}({args})"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def backward_to_parameters(layers, dy) -> None:
    """Backpropagate dy through `layers` (in order of the forward pass) into every gradient,
    without dL/dinput, which nobody needs during training: backward stops at the first layer with
    parameters, which skips its dx (need_dx=False); the parameter-free layers before it (Flatten,
    ...) do not run backward at all."""
    first = next((i for i, layer in enumerate(layers) if layer.params), len(layers))
    for layer in reversed(layers[first + 1:]):
        dy = layer.backward(dy)
    if first < len(layers):
        layer = layers[first]
        layer.need_dx = False
        try:
            layer.backward(dy)
        finally:
            layer.need_dx = True
