"""ch06 (6.2.4): weight initialisation (std 0.01, Xavier, He) on a 784-100x4-10 ReLU MultiLayerNet
trained by SGD lr 0.01, batch 128; the plot is the smoothed training loss per iteration.

Run: python examples/dlfs/ch06_weight_init_compare.py [--data ...] [--out DIR] [--quick]
"""

import _shared
import numpy as np

from fastnn.dlfs.multi_layer_net import MultiLayerNet
from fastnn.dlfs.optimizer import SGD
from fastnn.dlfs.util import smooth_curve


def main():
    args = _shared.parse_args(__doc__)
    (x_train, t_train), _ = _shared.data(args)
    iters = 60 if args.quick else 2000
    kinds = {"std=0.01": 0.01, "Xavier": "sigmoid", "He": "relu"}
    optimizer = SGD(lr=0.01)
    networks = {k: MultiLayerNet(784, [100, 100, 100, 100], 10, weight_init_std=w)
                for k, w in kinds.items()}
    train_loss = {k: [] for k in kinds}
    for i in range(iters):
        mask = np.random.choice(x_train.shape[0], 128)
        x, t = x_train[mask], t_train[mask]
        for key, net in networks.items():
            optimizer.update(net.params, net.gradient(x, t))
            train_loss[key].append(net.loss(x, t))
        if i % 100 == 0 or i == iters - 1:
            print(f"iteration {i}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in
                                                  train_loss.items()))
    fig = _shared.figure(figsize=(6, 4))
    if fig is not None:
        ax = fig.subplots()
        for key, marker in zip(kinds, "osD", strict=True):
            ax.plot(smooth_curve(train_loss[key]), marker=marker,
                    markevery=max(iters // 20, 1), label=key)
        ax.set(xlabel="iterations", ylabel="loss", ylim=(0, 2.5))
        ax.legend()
    _shared.save(fig, args, "ch06_weight_init_compare")


if __name__ == "__main__":
    main()
