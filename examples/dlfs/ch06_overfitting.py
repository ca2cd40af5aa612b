"""ch06 (6.4): overfitting on 300 images with a 784-100x6-10 net, and two remedies: weight decay
(lambda 0.1, the book's overfit_weight_decay) and Dropout (ratio 0.2, its overfit_dropout, through
the Trainer); train and test accuracy per epoch for each.

Run: python examples/dlfs/ch06_overfitting.py [--data ...] [--out DIR] [--quick] [--seed N]
"""

import _shared

from fastnn.dlfs.multi_layer_net_extend import MultiLayerNetExtend
from fastnn.dlfs.trainer import Trainer

SETTINGS = {"plain": {}, "weight decay 0.1": {"weight_decay_lambda": 0.1},
            "dropout 0.2": {"use_dropout": True, "dropout_ration": 0.2}}


def main():
    args = _shared.parse_args(__doc__)
    (x_train, t_train), (x_test, t_test) = _shared.data(args)
    x_train, t_train = x_train[:300], t_train[:300]
    epochs = 5 if args.quick else 201
    results = {}
    for name, kw in SETTINGS.items():
        net = MultiLayerNetExtend(784, [100] * 6, 10, **kw)
        trainer = Trainer(net, x_train, t_train, x_test, t_test, epochs=epochs,
                          mini_batch_size=100, optimizer="sgd", optimizer_param={"lr": 0.01},
                          verbose=False)
        trainer.train()
        results[name] = (trainer.train_acc_list, trainer.test_acc_list)
        print(f"{name:18s} train acc {trainer.train_acc_list[-1]:.3f}  test acc "
              f"{trainer.test_acc_list[-1]:.3f}")
    fig = _shared.figure(figsize=(12, 3.5))
    if fig is not None:
        for ax, (name, (train, test)) in zip(fig.subplots(1, 3), results.items(), strict=True):
            ax.plot(train, label="train")
            ax.plot(test, label="test")
            ax.set(title=name, xlabel="epochs", ylabel="accuracy", ylim=(0, 1))
            ax.legend(loc="lower right")
    _shared.save(fig, args, "ch06_overfitting")


if __name__ == "__main__":
    main()
