"""MultiLayerNet (common/multi_layer_net.py): Affine-activation blocks, an Affine output and
SoftmaxWithLoss, with optional L2 weight decay. float32 weights, drawn from NumPy's global
generator exactly as the book draws them (then rounded to float32)."""

from collections import OrderedDict

import numpy as np

from ._net import ParamsFileMixin, backward_all, randn32, zeros32
from .gradient import numerical_gradient
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

ACTIVATIONS = {"sigmoid": Sigmoid, "relu": Relu}


def weight_scale(weight_init_std, fan_in):
    """'relu'/'he': sqrt(2 / fan_in); 'sigmoid'/'xavier': sqrt(1 / fan_in); else the number."""
    kind = str(weight_init_std).lower()
    if kind in ("relu", "he"):
        return np.sqrt(2.0 / fan_in)
    if kind in ("sigmoid", "xavier"):
        return np.sqrt(1.0 / fan_in)
    return weight_init_std


def activation_class(activation):
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"activation: expected 'relu' or 'sigmoid', got {activation!r}") from None


def l2_penalty(params, n_affine, lam):
    """0.5 * lambda * sum of W^2 over W1..Wn (0 when lambda is 0)."""
    if not lam:
        return 0
    total = 0.0
    for idx in range(1, n_affine + 1):
        W = params["W" + str(idx)].reshape(-1)
        total += float(np.dot(W, W))
    return 0.5 * lam * total


def affine_params(sizes, weight_init_std) -> dict:
    """W1, b1, W2, ... for Affine layers between consecutive `sizes`, drawn in the book's order
    (float32; the scale from weight_init_std and the fan-in)."""
    params = {}
    for idx in range(1, len(sizes)):
        scale = weight_scale(weight_init_std, sizes[idx - 1])
        params["W" + str(idx)] = randn32(scale, sizes[idx - 1], sizes[idx])
        params["b" + str(idx)] = zeros32(sizes[idx])
    return params


class MultiLayerNet(ParamsFileMixin):
    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0):
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = hidden_size_list
        self.hidden_layer_num = len(hidden_size_list)
        self.weight_decay_lambda = weight_decay_lambda
        act = activation_class(activation)
        self.params = affine_params([input_size, *hidden_size_list, output_size],
                                    weight_init_std)

        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers["Affine" + str(idx)] = Affine(self.params["W" + str(idx)],
                                                      self.params["b" + str(idx)])
            self.layers["Activation_function" + str(idx)] = act()
        idx = self.hidden_layer_num + 1
        self.layers["Affine" + str(idx)] = Affine(self.params["W" + str(idx)],
                                                  self.params["b" + str(idx)])
        self.last_layer = SoftmaxWithLoss()

    def _param_layers(self):
        return [self.layers["Affine" + str(i)] for i in range(1, self.hidden_layer_num + 2)]

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        penalty = l2_penalty(self.params, self.hidden_layer_num + 1, self.weight_decay_lambda)
        return self.last_layer.forward(y, t) + penalty

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        def loss_W(W):
            return self.loss(x, t)

        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            for name in ("W", "b"):
                grads[name + str(idx)] = numerical_gradient(loss_W, self.params[name + str(idx)])
        return grads

    def gradient(self, x, t):
        self.loss(x, t)
        backward_all(self.layers.values(), self.last_layer)
        lam = self.weight_decay_lambda
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers["Affine" + str(idx)]
            grads["W" + str(idx)] = affine.dW + np.float32(lam) * affine.W if lam else affine.dW
            grads["b" + str(idx)] = affine.db
        return grads
