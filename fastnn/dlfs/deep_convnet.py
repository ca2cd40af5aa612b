"""DeepConvNet (the book's ch08/deep_convnet.py): six 3x3 convolutions with ReLU and three 2x2
poolings, then affine - relu - dropout - affine - dropout - softmax, on fastnn's kernels in
float32. He-scaled weights drawn from NumPy's global generator exactly as the book draws them;
load_params reads the book's deep_convnet_params.pkl without running code."""

import numpy as np

from ._net import ParamsFileMixin, accuracy_in_batches, backward_all, randn32, zeros32
from .layers import Affine, Convolution, Dropout, Pooling, Relu, SoftmaxWithLoss

PARAM_LAYERS = (0, 2, 5, 7, 10, 12, 15, 18)  # positions of the layers holding W1..W8 in `layers`


class DeepConvNet(ParamsFileMixin):
    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},  # noqa: B006
                 conv_param_2={"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},  # noqa: B006
                 conv_param_3={"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},  # noqa: B006
                 conv_param_4={"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},  # noqa: B006
                 conv_param_5={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},  # noqa: B006
                 conv_param_6={"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},  # noqa: B006
                 hidden_size=50, output_size=10):
        conv_params = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                       conv_param_6]
        # connections of one unit to the previous layer (fixed for 28x28 input, as in the book)
        pre_node_nums = np.array([1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3,
                                  64 * 3 * 3, 64 * 4 * 4, hidden_size])
        scales = np.sqrt(2.0 / pre_node_nums)  # He initialisation

        self.params = {}
        pre_channels = input_dim[0]
        for idx, cp in enumerate(conv_params):
            self.params["W" + str(idx + 1)] = randn32(scales[idx], cp["filter_num"], pre_channels,
                                                      cp["filter_size"], cp["filter_size"])
            self.params["b" + str(idx + 1)] = zeros32(cp["filter_num"])
            pre_channels = cp["filter_num"]
        self.params["W7"] = randn32(scales[6], 64 * 4 * 4, hidden_size)
        self.params["b7"] = zeros32(hidden_size)
        self.params["W8"] = randn32(scales[7], hidden_size, output_size)
        self.params["b8"] = zeros32(output_size)

        def conv(i):
            cp = conv_params[i - 1]
            return Convolution(self.params["W" + str(i)], self.params["b" + str(i)],
                               cp["stride"], cp["pad"])

        def pool():
            return Pooling(pool_h=2, pool_w=2, stride=2)

        self.layers = [conv(1), Relu(), conv(2), Relu(), pool(),
                       conv(3), Relu(), conv(4), Relu(), pool(),
                       conv(5), Relu(), conv(6), Relu(), pool(),
                       Affine(self.params["W7"], self.params["b7"]), Relu(), Dropout(0.5),
                       Affine(self.params["W8"], self.params["b8"]), Dropout(0.5)]
        self.last_layer = SoftmaxWithLoss()

    def _param_layers(self):
        return [self.layers[i] for i in PARAM_LAYERS]

    def predict(self, x, train_flg=False):
        for layer in self.layers:
            if isinstance(layer, Dropout):
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.last_layer.forward(self.predict(x, train_flg=True), t)

    def accuracy(self, x, t, batch_size=100):
        return accuracy_in_batches(lambda tx: self.predict(tx, train_flg=False), x, t, batch_size)

    def gradient(self, x, t):
        self.loss(x, t)
        backward_all(self.layers, self.last_layer)
        grads = {}
        for i, layer in enumerate(self._param_layers()):
            grads["W" + str(i + 1)], grads["b" + str(i + 1)] = layer.dW, layer.db
        return grads
