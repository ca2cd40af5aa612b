"""Sequential: layers in order, one flat parameter buffer, forward/backward/predict/summary.
Training (fit, evaluate, train_on_batch) lives in fastnn.training."""

from __future__ import annotations

import numpy as np

from . import training
from .kernels._check import as_float32
from .layers import BatchNorm, Conv2D, Dense, Dropout, Layer, MaxPool2D, ReLU, Sigmoid, Tanh
from .layers.conv import ConvReLUPool
from .params import Parameters


class Sequential(training.TrainingMixin):
    def __init__(self, layers, input_shape: tuple | None = None) -> None:
        layers = list(layers)
        if not layers:
            raise ValueError("layers: expected at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}]: expected a fastnn layer, got {type(layer).__name__}")
        self.layers = layers
        self.input_shape = None if input_shape is None else tuple(int(s) for s in input_shape)
        self._plan()
        self._params = Parameters(layers)
        self._train_plans: dict = {}  # train_on_batch / predict_on_batch steps per input shape
        self._predict_plans: dict = {}

    def __getstate__(self) -> dict:
        # A plan's kernel calls hold this model's arrays: a copy must build its own.
        state = self.__dict__.copy()
        state["_train_plans"], state["_predict_plans"] = {}, {}
        return state

    def _plan(self) -> None:
        """Initialise "auto" layers for the activation that follows them (He before ReLU); fuse
        Dense + ReLU/Sigmoid into the Dense epilogue, and ReLU + MaxPool2D into the pooling (the
        ReLU then runs on the pooled output)."""
        for layer in self.layers:  # a layer reused from another model starts unfused
            if isinstance(layer, Dense):
                layer.fused = None
            elif isinstance(layer, (ReLU, Sigmoid)):
                layer.fused = False
            elif isinstance(layer, MaxPool2D):
                layer.relu = False
        for i, layer in enumerate(self.layers):
            # Only a fresh layer is re-initialised: wrapping trained layers keeps their weights.
            if isinstance(layer, (Dense, Conv2D)) and layer.init == "auto" and not layer.planned:
                act = self._activation_after(i)
                if act is not None and getattr(layer, "activation", None) is None:
                    layer.reset_parameters(activation_hint=act)
            layer.planned = True
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(layer, Dense) and layer.activation is None and isinstance(nxt, (ReLU, Sigmoid)):
                layer.fused = "relu" if isinstance(nxt, ReLU) else "sigmoid"
                nxt.fused = True
            elif isinstance(layer, ReLU) and not layer.fused and isinstance(nxt, MaxPool2D):
                layer.fused = "pool"
                nxt.relu = True
        self._blocks()

    def _blocks(self) -> None:
        """`_run`: the layers as forward/backward run them, a first Conv2D -> ReLU -> MaxPool2D(2)
        block (before any layer with parameters) replaced by one ConvReLUPool step."""
        layers, run, i = self.layers, [], 0
        while i < len(layers):
            if (not any(step.params for step in run) and i + 2 < len(layers)
                    and ConvReLUPool.fits(*layers[i:i + 3])):
                run.append(ConvReLUPool(*layers[i:i + 3]))
                i += 3
            else:
                run.append(layers[i])
                i += 1
        self._run_key = tuple(map(id, layers))
        self._run_steps = run

    @property
    def _run(self) -> list:
        if self._run_key != tuple(map(id, self.layers)):  # the list was edited: plan again
            self._plan()
        return self._run_steps

    def _activation_after(self, i: int) -> str | None:
        for layer in self.layers[i + 1 :]:
            if isinstance(layer, ReLU):
                return "relu"
            if isinstance(layer, (Sigmoid, Tanh)):
                return "sigmoid"
            if not isinstance(layer, (BatchNorm, Dropout)):
                return None
        return None

    def parameters(self) -> Parameters:
        """Every parameter and gradient, as views into one flat buffer each."""
        return self._params

    def forward(self, x, train: bool = True) -> np.ndarray:
        """The network's output (a fresh array; layers keep what backward needs)."""
        x = as_float32("x", x)
        for layer in self._run:
            x = layer.forward(x, train)
        return x.copy()

    def backward(self, dy) -> np.ndarray:
        """Backpropagate dy = dL/doutput; overwrites every gradient; returns dL/dinput."""
        dy = as_float32("dy", dy)
        for layer in reversed(self._run):
            dy = layer.backward(dy)
        return dy

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Outputs in inference mode (dropout off, batch-norm running statistics), by batches."""
        return training.predict(self, x, batch_size)

    def summary(self) -> str:
        """A table of layers, output shapes and parameter counts."""
        shape = self.input_shape or self._guess_input_shape()
        rows = [("Layer", "Output shape", "Params")]
        for i, layer in enumerate(self.layers):
            if shape is not None:
                try:
                    shape = layer.output_shape(shape)
                except (ValueError, TypeError):
                    shape = None
            n = sum(p.size for p in layer.params.values())
            rows.append((f"{i}: {layer.describe()}", "?" if shape is None else str((None, *shape)),
                         f"{n:,}"))
        w = [max(len(r[k]) for r in rows) for k in range(3)]
        line = "-" * (w[0] + w[1] + w[2] + 4)
        out = [line, f"{rows[0][0]:<{w[0]}}  {rows[0][1]:<{w[1]}}  {rows[0][2]:>{w[2]}}", line]
        out += [f"{a:<{w[0]}}  {b:<{w[1]}}  {c:>{w[2]}}" for a, b, c in rows[1:]]
        total = self._params.size
        out += [line, f"Total parameters: {total:,} ({total * 4 / 1e6:.2f} MB float32)", line]
        return "\n".join(out)

    def save(self, path, optimizer=None) -> str:
        """Write architecture and weights (and the optimizer state, if given) to `path`."""
        from .io import save

        return save(self, path, optimizer=optimizer)

    def _guess_input_shape(self):
        first = self.layers[0]
        if isinstance(first, Dense):
            return (first.in_features,)
        return None

    def __repr__(self) -> str:
        return "Sequential([\n" + "".join(f"    {layer!r},\n" for layer in self.layers) + "])"
