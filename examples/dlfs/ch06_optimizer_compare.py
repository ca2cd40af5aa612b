"""ch06 (6.1.8): SGD, Momentum, AdaGrad and Adam on a 784-100x4-10 ReLU MultiLayerNet, batch 128,
the book's default learning rates; the plot is the smoothed training loss per iteration.

Run: python examples/dlfs/ch06_optimizer_compare.py [--data ...] [--out DIR] [--quick] [--seed N]
"""

import _shared
import numpy as np

from fastnn.dlfs.multi_layer_net import MultiLayerNet
from fastnn.dlfs.optimizer import SGD, AdaGrad, Adam, Momentum
from fastnn.dlfs.util import smooth_curve


def main():
    args = _shared.parse_args(__doc__)
    (x_train, t_train), _ = _shared.data(args)
    iters = 60 if args.quick else 2000
    optimizers = {"SGD": SGD(), "Momentum": Momentum(), "AdaGrad": AdaGrad(), "Adam": Adam()}
    networks = {k: MultiLayerNet(784, [100, 100, 100, 100], 10) for k in optimizers}
    train_loss = {k: [] for k in optimizers}
    for i in range(iters):
        mask = np.random.choice(x_train.shape[0], 128)
        x, t = x_train[mask], t_train[mask]
        for key, opt in optimizers.items():
            opt.update(networks[key].params, networks[key].gradient(x, t))
            train_loss[key].append(networks[key].loss(x, t))
        if i % 100 == 0 or i == iters - 1:
            print(f"iteration {i}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in
                                                  train_loss.items()))
    fig = _shared.figure(figsize=(6, 4))
    if fig is not None:
        ax = fig.subplots()
        markers = {"SGD": "o", "Momentum": "x", "AdaGrad": "s", "Adam": "D"}
        for key in optimizers:
            ax.plot(smooth_curve(train_loss[key]), marker=markers[key],
                    markevery=max(iters // 20, 1), label=key)
        ax.set(xlabel="iterations", ylabel="loss", ylim=(0, 1))
        ax.legend()
    _shared.save(fig, args, "ch06_optimizer_compare")


if __name__ == "__main__":
    main()
