"""What the compat networks share: float32 weights drawn like the book's (NumPy's global
generator, so a seeded script gets the book's initial weights rounded to float32), the loss and
prediction loops, and parameter files."""

import numpy as np

from .layers import (
    Affine,
    Convolution,
    conv_relu_pool_backward,
    conv_relu_pool_fits,
    conv_relu_pool_forward,
    conv_relu_pool_ran,
)
from .paramfile import load_params, save_params


def randn32(scale, *shape):
    """scale * np.random.randn(*shape) as float32: the book's draw, then rounded."""
    return (scale * np.random.randn(*shape)).astype(np.float32)


def zeros32(n):
    return np.zeros(n, dtype=np.float32)


def accuracy_in_batches(predict, x, t, batch_size):
    """The book's batched accuracy: whole batches only, divided by all of x (its convention)."""
    if t.ndim != 1:
        t = np.argmax(t, axis=1)
    acc = 0.0
    for i in range(int(x.shape[0] / batch_size)):
        tx = x[i * batch_size:(i + 1) * batch_size]
        tt = t[i * batch_size:(i + 1) * batch_size]
        acc += np.sum(np.argmax(predict(tx), axis=1) == tt)
    return acc / x.shape[0]


def forward_all(layers, x, fuse=True):
    """x through the layers in order. With `fuse`, a network that opens with Convolution -> Relu ->
    Pooling(2x2, stride 2) runs those three as one kernel (layers.conv_relu_pool_forward: the same
    output and layer state, about 3x faster for SimpleConvNet's first block)."""
    layers = list(layers)
    if fuse and len(layers) >= 3 and conv_relu_pool_fits(*layers[:3], x):
        x = conv_relu_pool_forward(*layers[:3], x)
        layers = layers[3:]
    for layer in layers:
        x = layer.forward(x)
    return x


def backward_all(layers, last_layer):
    """Backward through last_layer and then layers in reverse. The first layer's dx (the
    gradient with respect to the data, which nobody uses) is skipped when it is an Affine or a
    Convolution: the book computes and discards it. A first block that forward_all ran as one
    kernel gets its gradients from one kernel too."""
    layers = list(layers)
    dout = last_layer.backward(1)
    if len(layers) >= 3 and conv_relu_pool_ran(*layers[:3]):
        for layer in reversed(layers[3:]):
            dout = layer.backward(dout)
        conv_relu_pool_backward(layers[0], dout)
        return
    for layer in reversed(layers[1:]):
        dout = layer.backward(dout)
    first = layers[0]
    if isinstance(first, (Affine, Convolution)):
        first.backward(dout, need_dx=False)
    else:
        first.backward(dout)


class ParamsFileMixin:
    """save_params / load_params of the book's ConvNets. A .npz name selects fastnn's format;
    any other is the book's pickle, read through a restricted unpickler (no code runs)."""

    def save_params(self, file_name="params.pkl"):
        save_params(dict(self.params), file_name)

    def load_params(self, file_name="params.pkl"):
        loaded = load_params(file_name)
        for key, val in loaded.items():
            old = self.params.get(key)
            if old is not None and np.shape(old) != val.shape:
                raise ValueError(f"{file_name}: expected {key} of shape {np.shape(old)} (this "
                                 f"network's), got {val.shape}")
            if val.dtype.kind not in "fiu":
                raise TypeError(f"{file_name}: expected numeric arrays, got {key} of dtype "
                                f"{val.dtype}")
            self.params[key] = np.ascontiguousarray(val, dtype=np.float32)
        self._bind_params()

    def _bind_params(self):  # point each layer at the (new) arrays in self.params
        for i, layer in enumerate(self._param_layers()):
            layer.W = self.params["W" + str(i + 1)]
            layer.b = self.params["b" + str(i + 1)]
