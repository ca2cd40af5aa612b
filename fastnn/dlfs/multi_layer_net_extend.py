"""MultiLayerNetExtend (common/multi_layer_net_extend.py): MultiLayerNet with optional Batch
Normalization after each hidden Affine, Dropout after each activation, and L2 weight decay.
float32 weights drawn from NumPy's global generator exactly as the book draws them."""

from collections import OrderedDict

import numpy as np

from ._net import ParamsFileMixin, backward_all, zeros32
from .gradient import numerical_gradient
from .layers import Affine, BatchNormalization, Dropout, SoftmaxWithLoss
from .multi_layer_net import activation_class, affine_params, l2_penalty


class MultiLayerNetExtend(ParamsFileMixin):
    def __init__(self, input_size, hidden_size_list, output_size, activation="relu",
                 weight_init_std="relu", weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False):
        self.input_size = input_size
        self.output_size = output_size
        self.hidden_size_list = hidden_size_list
        self.hidden_layer_num = len(hidden_size_list)
        self.use_dropout = use_dropout
        self.weight_decay_lambda = weight_decay_lambda
        self.use_batchnorm = use_batchnorm
        act = activation_class(activation)
        self.params = affine_params([input_size, *hidden_size_list, output_size],
                                    weight_init_std)

        self.layers = OrderedDict()
        for idx in range(1, self.hidden_layer_num + 1):
            self.layers["Affine" + str(idx)] = Affine(self.params["W" + str(idx)],
                                                      self.params["b" + str(idx)])
            if use_batchnorm:
                n = hidden_size_list[idx - 1]
                self.params["gamma" + str(idx)] = np.ones(n, dtype=np.float32)
                self.params["beta" + str(idx)] = zeros32(n)
                self.layers["BatchNorm" + str(idx)] = BatchNormalization(
                    self.params["gamma" + str(idx)], self.params["beta" + str(idx)])
            self.layers["Activation_function" + str(idx)] = act()
            if use_dropout:
                self.layers["Dropout" + str(idx)] = Dropout(dropout_ration)
        idx = self.hidden_layer_num + 1
        self.layers["Affine" + str(idx)] = Affine(self.params["W" + str(idx)],
                                                  self.params["b" + str(idx)])
        self.last_layer = SoftmaxWithLoss()

    def _param_layers(self):
        return [self.layers["Affine" + str(i)] for i in range(1, self.hidden_layer_num + 2)]

    def _bind_params(self):
        super()._bind_params()
        if self.use_batchnorm:
            for idx in range(1, self.hidden_layer_num + 1):
                bn = self.layers["BatchNorm" + str(idx)]
                bn.gamma = self.params["gamma" + str(idx)]
                bn.beta = self.params["beta" + str(idx)]

    def predict(self, x, train_flg=False):
        for key, layer in self.layers.items():
            if "Dropout" in key or "BatchNorm" in key:
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        y = self.predict(x, train_flg)
        penalty = l2_penalty(self.params, self.hidden_layer_num + 1, self.weight_decay_lambda)
        return self.last_layer.forward(y, t) + penalty

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x, train_flg=False), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        def loss_W(W):
            return self.loss(x, t, train_flg=True)

        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            names = ["W", "b"]
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                names += ["gamma", "beta"]
            for name in names:
                grads[name + str(idx)] = numerical_gradient(loss_W, self.params[name + str(idx)])
        return grads

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        backward_all(self.layers.values(), self.last_layer)
        lam = self.weight_decay_lambda
        grads = {}
        for idx in range(1, self.hidden_layer_num + 2):
            affine = self.layers["Affine" + str(idx)]
            W = self.params["W" + str(idx)]
            grads["W" + str(idx)] = affine.dW + np.float32(lam) * W if lam else affine.dW
            grads["b" + str(idx)] = affine.db
            if self.use_batchnorm and idx != self.hidden_layer_num + 1:
                bn = self.layers["BatchNorm" + str(idx)]
                grads["gamma" + str(idx)] = bn.dgamma
                grads["beta" + str(idx)] = bn.dbeta
        return grads
