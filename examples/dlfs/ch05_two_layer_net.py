"""ch05: a two-layer net (784-50-10) trained by backpropagation with plain SGD, lr 0.1, batch 100,
written with fastnn.dlfs layers exactly as the book's ch05/two_layer_net.py builds it.

Run: python examples/dlfs/ch05_two_layer_net.py [--data ...] [--out DIR] [--quick] [--seed N]
"""

from collections import OrderedDict

import _shared
import numpy as np

from fastnn.dlfs.layers import Affine, Relu, SoftmaxWithLoss


class TwoLayerNet:
    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01):
        self.params = {
            "W1": (weight_init_std * np.random.randn(input_size, hidden_size)).astype(np.float32),
            "b1": np.zeros(hidden_size, np.float32),
            "W2": (weight_init_std * np.random.randn(hidden_size, output_size)).astype(np.float32),
            "b2": np.zeros(output_size, np.float32)}
        self.layers = OrderedDict(Affine1=Affine(self.params["W1"], self.params["b1"]),
                                  Relu1=Relu(),
                                  Affine2=Affine(self.params["W2"], self.params["b2"]))
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}


def main():
    args = _shared.parse_args(__doc__)
    (x_train, t_train), (x_test, t_test) = _shared.data(args, one_hot_label=True)
    iters = 300 if args.quick else 10000
    network = TwoLayerNet(784, 50, 10)
    train_size, batch_size, lr = x_train.shape[0], 100, 0.1
    iter_per_epoch = max(train_size / batch_size, 1)
    losses, train_acc, test_acc = [], [], []
    for i in range(iters):
        mask = np.random.choice(train_size, batch_size)
        grad = network.gradient(x_train[mask], t_train[mask])
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= lr * grad[key]
        losses.append(network.loss(x_train[mask], t_train[mask]))
        if i % iter_per_epoch == 0 or i == iters - 1:
            train_acc.append(network.accuracy(x_train, t_train))
            test_acc.append(network.accuracy(x_test, t_test))
            print(f"iter {i:5d}  train acc {train_acc[-1]:.4f}  test acc {test_acc[-1]:.4f}")
    fig = _shared.figure(figsize=(9, 3.5))
    if fig is not None:
        ax1, ax2 = fig.subplots(1, 2)
        ax1.plot(losses)
        ax1.set(xlabel="iterations", ylabel="loss", title="training loss")
        ax2.plot(train_acc, marker="o", label="train")
        ax2.plot(test_acc, marker="s", label="test")
        ax2.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1))
        ax2.legend(loc="lower right")
    _shared.save(fig, args, "ch05_two_layer_net")


if __name__ == "__main__":
    main()
