"""ch06 (6.3.2): Batch Normalization against none, for 16 initial weight scales from 1 to 1e-4, on
a 784-100x5-10 MultiLayerNetExtend trained by SGD lr 0.01 on 1000 images; one panel per scale.

Run: python examples/dlfs/ch06_batch_norm.py [--data ...] [--out DIR] [--quick] [--seed N]
"""

import _shared
import numpy as np

from fastnn.dlfs.multi_layer_net_extend import MultiLayerNetExtend
from fastnn.dlfs.optimizer import SGD


def train(x_train, t_train, weight_init_std, max_epochs):
    bn_net = MultiLayerNetExtend(784, [100] * 5, 10, weight_init_std=weight_init_std,
                                 use_batchnorm=True)
    net = MultiLayerNetExtend(784, [100] * 5, 10, weight_init_std=weight_init_std)
    optimizer = SGD(lr=0.01)
    acc, bn_acc = [], []
    iter_per_epoch = max(x_train.shape[0] / 100, 1)
    for i in range(10 ** 9):
        mask = np.random.choice(x_train.shape[0], 100)
        for n in (bn_net, net):
            optimizer.update(n.params, n.gradient(x_train[mask], t_train[mask]))
        if i % iter_per_epoch == 0:
            acc.append(net.accuracy(x_train, t_train))
            bn_acc.append(bn_net.accuracy(x_train, t_train))
            if len(acc) >= max_epochs:
                return acc, bn_acc


def main():
    args = _shared.parse_args(__doc__)
    (x_train, t_train), _ = _shared.data(args)
    x_train, t_train = x_train[:1000], t_train[:1000]
    scales = np.logspace(0, -4, num=4 if args.quick else 16)
    max_epochs = 3 if args.quick else 20
    fig = _shared.figure(figsize=(10, 8))
    axes = fig.subplots(4, 4).ravel() if fig is not None else [None] * 16
    for i, w in enumerate(scales):
        acc, bn_acc = train(x_train, t_train, w, max_epochs)
        print(f"W scale {w:.2e}: final train acc without BN {acc[-1]:.3f}, with BN "
              f"{bn_acc[-1]:.3f}")
        ax = axes[i]
        if ax is not None:
            ax.plot(bn_acc, label="Batch Normalization")
            ax.plot(acc, linestyle="--", label="without BatchNorm")
            ax.set(title=f"W:{w:.2e}", ylim=(0, 1))
    if fig is not None:
        axes[0].legend(loc="lower right", fontsize="small")
        fig.tight_layout()
    _shared.save(fig, args, "ch06_batch_norm")


if __name__ == "__main__":
    main()
