"""SimpleConvNet (the book's ch07/simple_convnet.py): conv - relu - pool - affine - relu - affine -
softmax, on fastnn's kernels in float32; weights drawn from NumPy's global generator exactly as
the book draws them. save_params/load_params read the book's params.pkl without running code."""

from collections import OrderedDict

from ._net import (
    ParamsFileMixin,
    accuracy_in_batches,
    backward_all,
    forward_all,
    randn32,
    zeros32,
)
from .gradient import numerical_gradient
from .layers import Affine, Convolution, Pooling, Relu, SoftmaxWithLoss


class SimpleConvNet(ParamsFileMixin):
    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},  # noqa: B006
                 hidden_size=100, output_size=10, weight_init_std=0.01):
        filter_num = conv_param["filter_num"]
        filter_size = conv_param["filter_size"]
        filter_pad = conv_param["pad"]
        filter_stride = conv_param["stride"]
        input_size = input_dim[1]
        conv_output_size = (input_size - filter_size + 2 * filter_pad) / filter_stride + 1
        pool_output_size = int(filter_num * (conv_output_size / 2) * (conv_output_size / 2))

        self.params = {}
        self.params["W1"] = randn32(weight_init_std, filter_num, input_dim[0], filter_size,
                                    filter_size)
        self.params["b1"] = zeros32(filter_num)
        self.params["W2"] = randn32(weight_init_std, pool_output_size, hidden_size)
        self.params["b2"] = zeros32(hidden_size)
        self.params["W3"] = randn32(weight_init_std, hidden_size, output_size)
        self.params["b3"] = zeros32(output_size)

        self.layers = OrderedDict()
        self.layers["Conv1"] = Convolution(self.params["W1"], self.params["b1"],
                                           conv_param["stride"], conv_param["pad"])
        self.layers["Relu1"] = Relu()
        self.layers["Pool1"] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers["Affine1"] = Affine(self.params["W2"], self.params["b2"])
        self.layers["Relu2"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W3"], self.params["b3"])
        self.last_layer = SoftmaxWithLoss()
        # Conv1 -> Relu1 -> Pool1 run as one kernel (same results, layer attributes computed when
        # looked at); False runs them one by one, as the book does
        self.fuse = True

    def _param_layers(self):
        return [self.layers[k] for k in ("Conv1", "Affine1", "Affine2")]

    def predict(self, x):
        return forward_all(self.layers.values(), x, self.fuse)

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x), t)

    def accuracy(self, x, t, batch_size=100):
        return accuracy_in_batches(self.predict, x, t, batch_size)

    def numerical_gradient(self, x, t):
        def loss_w(w):
            return self.loss(x, t)

        grads = {}
        for idx in (1, 2, 3):
            for name in ("W", "b"):
                grads[name + str(idx)] = numerical_gradient(loss_w, self.params[name + str(idx)])
        return grads

    def gradient(self, x, t):
        self.loss(x, t)
        backward_all(self.layers.values(), self.last_layer)
        grads = {}
        for i, layer in enumerate(self._param_layers()):
            grads["W" + str(i + 1)], grads["b" + str(i + 1)] = layer.dW, layer.db
        return grads
