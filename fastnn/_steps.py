"""Step plans behind Sequential.train_on_batch and predict_on_batch, for embedding a network in a
loop that calls it thousands of times a second.

The first call for an input shape runs the validated layers. After it, a plan built for that shape
(and loss, optimizer, backend) does the same arithmetic on buffers it owns: a chain of Dense,
activation and Flatten layers calls the backend kernels directly, any other layer runs its own
(validated) forward/backward on a workspace kept for the plan, so alternating shapes (predict one
observation, train on a batch) never reallocate. Per call, a plan checks only what protects memory:
the shape and dtype of the inputs (the cache key) and the range of integer labels.
"""

from __future__ import annotations

import numpy as np

from . import backend
from .kernels import Workspace
from .kernels._check import as_float32
from .layers import Dense, Dropout, Flatten, ReLU, Sigmoid, Tanh
from .layers.base import backward_to_parameters
from .losses import MeanSquaredError, SigmoidBinaryCrossEntropy, SoftmaxCrossEntropy
from .optim import SGD, AdaGrad, Adam, AdamW, RMSprop

F32 = np.dtype(np.float32)
MAX_PLANS = 16  # per model and kind; more input shapes than this start the cache afresh
_ACT = {None: 0, "relu": 1, "sigmoid": 2}
_ACTIVATIONS = {ReLU: "relu", Sigmoid: "sigmoid", Tanh: "tanh"}
_INPUT = object()  # the step's input, in a chain under construction
_EMPTY = np.empty(0, F32)


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


class _Input:
    """The step's input as the first kernel reads it: the caller's array itself when it is float32
    and C-contiguous, else a copy into a buffer owned by the plan."""

    def __init__(self, x_shape: tuple, shape: tuple, direct: bool) -> None:
        self.shape, self.direct = shape, direct
        self.reshape = shape != x_shape
        self.buf = np.empty(shape, F32)
        self.buf_nd = self.buf.reshape(x_shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.direct and x.flags.c_contiguous:
            return x.reshape(self.shape) if self.reshape else x
        np.copyto(self.buf_nd, x, casting="same_kind")
        return self.buf


class _KernelChain:
    """Dense, ReLU/Sigmoid/Tanh, Flatten (and Dropout in inference) as kernel calls on buffers
    allocated for one input shape: the output is `self.out`, the gradients land in the layers'
    `grads` (views into the flat buffer)."""

    LAYERS = (Dense, Flatten, Dropout, *_ACTIVATIONS)

    @classmethod
    def fits(cls, layers, train: bool) -> bool:
        kinds = [type(layer) for layer in layers]
        if not all(k in cls.LAYERS for k in kinds) or Dense not in kinds:
            return False
        return not train or all(k is not Dropout or layer.rate == 0.0
                                for k, layer in zip(kinds, layers, strict=True))

    def __init__(self, layers, x_shape: tuple, f32: bool, train: bool) -> None:
        impl, n = backend.impl, x_shape[0]
        compute = [layer for layer in layers if type(layer) not in (Flatten, Dropout)]
        lead = layers[: layers.index(compute[0])]  # Flatten/Dropout before the first kernel
        flat = any(type(la) is Flatten for la in lead)
        shape = (n, int(np.prod(x_shape[1:]))) if flat else x_shape
        direct = type(compute[0]) is Dense  # else the input is always copied
        self.input = _Input(x_shape, shape, f32 and direct)
        value = _INPUT if direct else self.input.buf
        self.fwd, saved = [], []  # saved: (input, output) of each layer, for backward
        for layer in layers:
            kind, inp = type(layer), value
            if kind is Dense:
                value = np.empty((n, layer.out_features), F32)
                self.fwd.append(self._dense_forward(impl("dense_forward"), inp, layer, value))
            elif kind is Flatten and inp is not _INPUT:
                value = inp.reshape(n, -1)
            elif kind in _ACTIVATIONS and not layer.fused:
                value = np.empty(inp.shape, F32)
                self.fwd.append(self._call(impl(_ACTIVATIONS[kind]), _flat(inp), _flat(value)))
            saved.append((inp, value))
        self.out = value
        self.dout = np.empty(value.shape, F32) if train else None
        self.bwd = self._backward_ops(layers, saved) if train else []

    def _backward_ops(self, layers, saved) -> list:
        impl, ops, g = backend.impl, [], self.dout
        first = min(i for i, layer in enumerate(layers) if layer.params)  # nothing below needs dx
        for i in range(len(layers) - 1, first - 1, -1):
            layer, kind, (inp, out) = layers[i], type(layers[i]), saved[i]
            act = _ACTIVATIONS.get(kind) or (layer.activation if kind is Dense else None)
            if act:  # the activation's own layer, or one Dense applies itself
                dx = np.empty(out.shape, F32)
                ops.append(self._call(impl(act + "_backward"), _flat(g), _flat(out), _flat(dx)))
                g = dx
            if kind is Dense:
                dx = np.empty(inp.shape, F32) if i > first else None
                ops.append(self._dense_backward(impl("dense_backward"), g, inp, layer, dx))
                g = dx
            elif kind is Flatten and i > first:
                g = g.reshape(inp.shape)
        return ops

    @staticmethod
    def _call(f, *args):
        return lambda x: f(*args)

    @staticmethod
    def _dense_forward(f, inp, layer, y):
        W, b, act = layer.params["W"], layer.params["b"], _ACT[layer.activation or layer.fused]
        if inp is _INPUT:
            return lambda x: f(x, W, b, act, y)
        return lambda x: f(inp, W, b, act, y)

    @staticmethod
    def _dense_backward(f, dy, inp, layer, dx):
        W, dW, db = layer.params["W"], layer.grads["W"], layer.grads["b"]
        if inp is _INPUT:
            return lambda x: f(dy, x, W, dx, dW, db)
        return lambda x: f(dy, inp, W, dx, dW, db)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = self.input(x)
        for op in self.fwd:
            op(x)
        return self.out

    def train(self, x: np.ndarray, y: np.ndarray) -> float:
        x = self.input(x)
        for op in self.fwd:
            op(x)
        value, dout = self.loss_op(self.out, y)
        if dout is not self.dout:  # a loss that keeps its own gradient buffer
            np.copyto(self.dout, dout)
        for op in self.bwd:
            op(x)
        self.step()
        return value


class _LayerChain:
    """Any layers, each running its own forward/backward on a workspace kept for this plan
    (swapped in for the step, then the layer's own put back). The plan adopts the workspaces the
    validated call for its shape has just filled, and gives each layer a fresh one, so a plan
    costs no second set of buffers (the MNIST CNN's are 75 MB at batch 64)."""

    def __init__(self, layers, x_shape: tuple, f32: bool, train: bool) -> None:
        self.layers, self.train_mode = layers, train
        self.input = _Input(x_shape, x_shape, f32)
        self.ws, self.own_ws = [], []
        for layer in layers:
            self.ws.append(layer.ws)  # gradients already bound in it
            layer.ws = Workspace()
            layer.bind_grads()
        self.out = self.dout = None

    def _forward(self, x: np.ndarray) -> np.ndarray:
        self.own_ws = [layer.ws for layer in self.layers]
        for layer, ws in zip(self.layers, self.ws, strict=True):
            layer.ws = ws
        for layer in self.layers:
            x = layer.forward(x, self.train_mode)
        self.out = x
        return x

    def _restore(self) -> None:
        for layer, ws in zip(self.layers, self.own_ws, strict=False):  # none if never swapped
            layer.ws = ws
        self.own_ws = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        try:
            return self._forward(self.input(x))
        finally:
            self._restore()

    def train(self, x: np.ndarray, y: np.ndarray) -> float:
        layers = self.layers
        try:
            value, dout = self.loss_op(self._forward(self.input(x)), y)
            backward_to_parameters(layers, dout)
        finally:
            self._restore()
        self.step()
        return value


def _loss_op(loss, out: np.ndarray, y: np.ndarray, d: np.ndarray | None):
    """f(outputs, targets) -> the batch loss, leaving the gradient in `loss.grad`: a kernel call
    on buffers owned by the plan for integer labels or float targets of the first call's shape;
    the validated `loss.forward` otherwise (one-hot targets, other losses)."""
    kind = type(loss)
    if kind is SoftmaxCrossEntropy and y.ndim == 1 and out.ndim == 2:
        return _LabelsLoss(loss, out, y, d)
    if (kind is MeanSquaredError or kind is SigmoidBinaryCrossEntropy) and y.shape == out.shape:
        return _TargetsLoss(loss, out, y, d)

    def validated(o, t):
        value = loss.forward(o, t)
        return value, loss.backward()

    return validated


class _LossOp:
    def __init__(self, loss, kernel: str, out: np.ndarray, d: np.ndarray | None) -> None:
        self.loss, self.f = loss, backend.impl(kernel)
        self.ref, self.shape = out, out.shape
        self.d = np.empty(out.shape, F32) if d is None else d
        self.ref_flat, self.d_flat = _flat(out), _flat(self.d)

    def _outputs(self, o: np.ndarray) -> np.ndarray:
        """The last layer's output: the same buffer every call, unless a layer changed it."""
        if o is not self.ref:
            o = as_float32("outputs", o)
            if o.shape != self.shape:
                raise ValueError(f"outputs: expected shape {self.shape}, got {o.shape}")
            self.ref, self.ref_flat = o, _flat(o)
        return o


class _LabelsLoss(_LossOp):
    """Softmax cross-entropy on integer labels. The kernel checks their range before it indexes
    with them (a label outside [0, C) returns -1.0 with nothing written)."""

    def __init__(self, loss, out, y, d) -> None:
        super().__init__(loss, "softmax_cross_entropy", out, d)
        self.labels = np.empty(y.shape, np.int64)
        self.classes = out.shape[1]

    def __call__(self, o, y):
        o = self._outputs(o)
        np.copyto(self.labels, y, casting="unsafe")
        value = self.f(o, self.labels, self.d)
        if value < 0:
            bad = int(self.labels.min()) if self.labels.min() < 0 else int(self.labels.max())
            raise ValueError(f"targets: expected labels in [0, {self.classes}), got {bad}")
        self.loss.grad = self.d
        return value, self.d


class _TargetsLoss(_LossOp):
    """Mean squared error or binary cross-entropy on targets shaped like the outputs."""

    def __init__(self, loss, out, y, d) -> None:
        kernel = "mse" if type(loss) is MeanSquaredError else "sigmoid_binary_cross_entropy"
        super().__init__(loss, kernel, out, d)
        self.t = np.empty(out.shape, F32)
        self.t_flat = _flat(self.t)

    def __call__(self, o, y):
        self._outputs(o)
        np.copyto(self.t, y, casting="same_kind")
        self.loss.grad = self.d
        return self.f(self.ref_flat, self.t_flat, self.d_flat), self.d


def _optimizer_op(opt):
    """A call doing `opt.step()` as one kernel call over the flat buffer, with the arguments the
    optimizer's own `_update` passes, read at each step (so changed hyperparameters apply)."""
    impl, P, S, kind = backend.impl, opt.params, opt.state, type(opt)
    data, grad = P.data, P.grad
    if kind is Adam or kind is AdamW:
        f, m, v = impl("adam_update"), S["m"], S["v"]

        def step():
            lr = opt.current_lr()
            b1, b2 = opt.betas
            f(data, grad, m, v, opt.steps + 1, lr, b1, b2, opt.eps, opt.weight_decay,
              opt.decoupled)
            opt.steps += 1
    elif kind is SGD:
        f, vel = impl("sgd_update"), S.get("velocity", _EMPTY)

        def step():
            if opt.momentum and vel is _EMPTY:  # momentum set after construction: no state
                return opt.step()  # (which says so)
            f(data, grad, vel, opt.current_lr(), opt.momentum, opt.nesterov, opt.weight_decay)
            opt.steps += 1
    elif kind is AdaGrad:
        f, s = impl("adagrad_update"), S["sum_sq"]

        def step():
            f(data, grad, s, opt.current_lr(), opt.eps, opt.weight_decay)
            opt.steps += 1
    elif kind is RMSprop:
        f, s = impl("rmsprop_update"), S["sq_avg"]

        def step():
            f(data, grad, s, opt.current_lr(), opt.alpha, opt.eps, opt.weight_decay)
            opt.steps += 1
    else:
        step = opt.step
    return step


class StepPlan:
    """One input shape's step: `predict(x) -> outputs` or `train(x, y) -> loss` (the chain's own
    methods, to save a call). Built after a validated call with the same shapes succeeded
    (`out_shape`: the shape of the outputs it gave)."""

    def __init__(self, model, x: np.ndarray, out_shape: tuple, y=None, loss=None,
                 optimizer=None) -> None:
        train = loss is not None
        layers = model._run
        kind = _KernelChain if _KernelChain.fits(layers, train) else _LayerChain
        chain = kind(layers, x.shape, x.dtype == F32, train)
        self.backend = backend.current()
        self.loss, self.optimizer = loss, optimizer
        if train:
            out = chain.out if chain.out is not None else np.empty(out_shape, F32)
            chain.loss_op = _loss_op(loss, out, y, chain.dout)
            chain.step = _optimizer_op(optimizer)
        self.predict, self.train = chain.predict, chain.train
        self.chain = chain
