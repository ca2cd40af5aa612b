"""ch06 (6.5.3): random search of learning rate (1e-6..1e-2) and weight decay (1e-8..1e-4) on 500
images (20% held out for validation); the plot shows the validation curves of the best 20.

Run: python examples/dlfs/ch06_hyperparameter_search.py [--data ...] [--out DIR] [--quick]
"""

import _shared
import numpy as np

from fastnn.dlfs.multi_layer_net import MultiLayerNet
from fastnn.dlfs.trainer import Trainer
from fastnn.dlfs.util import shuffle_dataset


def main():
    args = _shared.parse_args(__doc__)
    (x_train, t_train), _ = _shared.data(args)
    x_train, t_train = shuffle_dataset(x_train[:500], t_train[:500])
    n_val = int(x_train.shape[0] * 0.2)
    x_val, t_val, x_train, t_train = x_train[:n_val], t_train[:n_val], x_train[n_val:], \
        t_train[n_val:]
    trials, epochs = (4, 3) if args.quick else (100, 50)
    results = {}
    for _ in range(trials):
        weight_decay = 10 ** np.random.uniform(-8, -4)
        lr = 10 ** np.random.uniform(-6, -2)
        net = MultiLayerNet(784, [100] * 6, 10, weight_decay_lambda=weight_decay)
        trainer = Trainer(net, x_train, t_train, x_val, t_val, epochs=epochs,
                          mini_batch_size=100, optimizer="sgd", optimizer_param={"lr": lr},
                          verbose=False)
        trainer.train()
        results[(lr, weight_decay)] = (trainer.test_acc_list, trainer.train_acc_list)
        print(f"val acc {trainer.test_acc_list[-1]:.3f} | lr {lr:.3e}, weight decay "
              f"{weight_decay:.3e}")
    best = sorted(results.items(), key=lambda kv: kv[1][0][-1], reverse=True)[:20]
    fig = _shared.figure(figsize=(12, 8))
    if fig is not None:
        axes = fig.subplots(4, 5).ravel()
        for i, (_, (val, train)) in enumerate(best):
            axes[i].plot(val)
            axes[i].plot(train, "--")
            axes[i].set(title=f"Best-{i + 1}", ylim=(0, 1), xticks=[])
        fig.tight_layout()
    _shared.save(fig, args, "ch06_hyperparameter_search")


if __name__ == "__main__":
    main()
