"""Overfitting, and two cures: Dropout and weight decay ("Deep Learning from Scratch", 6.4).

A deep ReLU MLP (784-100-100-100-100-100-100-10, He init) trained with SGD (lr 0.01, mini-batches
of 100) on only 300 training images for 200 epochs learns them by heart: training accuracy reaches
100% while test accuracy stops far below. Three runs from the same initial weights:
  plain         no regularisation;
  dropout       Dropout(0.2) after every hidden ReLU;
  weight decay  SGD(weight_decay=0.1), the book's L2 penalty 0.5 * 0.1 * ||W||^2 (here on every
                parameter, biases included).
Expect both cures to keep training accuracy near 90% and to narrow the train-test gap a little
(seeds 0-2 on mnist-small: 0.20-0.21 plain, 0.16-0.17 regularised, but 0.21 for dropout with seed
0); as in the book's figures, neither raises test accuracy at these settings (dropout is still
learning after 200 epochs; the book ran it for 300).
Accuracies are measured in inference mode (dropout off) after each epoch.

Run:    python examples/overfitting.py [--data mnist-small|mnist|PATH] [--out DIR] [--quick]
                                       [--seed N]
Writes: overfitting.png in --out (default: examples/output).
"""

from __future__ import annotations

import time

import _common  # examples/_common.py: options, data, table, figure

import fastnn
from fastnn.layers import Dense, Dropout, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD

RUNS = {  # name -> (dropout rate, SGD weight decay)
    "plain": (0.0, 0.0),
    "dropout 0.2": (0.2, 0.0),
    "weight decay 0.1": (0.0, 0.1),
}


def mlp(n_in, hidden, n_out, dropout, seed) -> fastnn.Sequential:
    """Dense-ReLU-[Dropout] blocks and a linear output layer, He-initialised."""
    sizes = [n_in, *hidden]
    layers = []
    for k in range(len(hidden)):
        layers += [Dense(sizes[k], sizes[k + 1], init="he", seed=seed * 100 + k), ReLU()]
        layers += [Dropout(dropout, seed=seed * 100 + 50 + k)] if dropout else []
    layers.append(Dense(sizes[-1], n_out, init="he", seed=seed * 100 + len(hidden)))
    return fastnn.Sequential(layers)


def main() -> None:
    args = _common.parse_args(__doc__)
    (x_train, y_train), (x_test, y_test) = _common.load_data(args.data)
    n_train, epochs, hidden = 300, 200, [100] * 6
    if args.quick:
        n_train, epochs, hidden = 100, 3, [32] * 6
    x, y = x_train[:n_train], y_train[:n_train]
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    loss = SoftmaxCrossEntropy()

    curves, rows = {}, []
    for name, (dropout, weight_decay) in RUNS.items():
        model = mlp(x.shape[1], hidden, n_classes, dropout, args.seed)
        optimizer = SGD(model.parameters(), lr=0.01, weight_decay=weight_decay)
        train_acc, test_acc = [], []
        t0 = time.perf_counter()
        for epoch in range(epochs):
            model.fit(x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=100,
                      seed=args.seed * 1000 + epoch, verbose=0)
            train_acc.append(model.evaluate(x, y, loss=loss)["accuracy"])
            test_acc.append(model.evaluate(x_test, y_test, loss=loss)["accuracy"])
        seconds = time.perf_counter() - t0
        curves[name] = train_acc, test_acc
        rows.append([name, train_acc[-1], test_acc[-1], train_acc[-1] - test_acc[-1],
                     max(test_acc), f"{seconds:.1f}"])

    print(f"SGD lr 0.01, {epochs} epochs on {len(x)} training images from {args.data} "
          f"(test: {len(x_test)}); network {x.shape[1]}-{'-'.join(map(str, hidden))}-{n_classes}")
    _common.print_table(["run", "train acc", "test acc", "gap", "best test acc", "seconds"], rows)

    fig = _common.new_figure(figsize=(12, 4.2))
    if fig is None:
        return
    axes = fig.subplots(1, len(RUNS), sharey=True)
    epoch_numbers = range(1, epochs + 1)
    for ax, (name, (train_acc, test_acc)) in zip(axes, curves.items()):
        ax.plot(epoch_numbers, train_acc, label="train")
        ax.plot(epoch_numbers, test_acc, "--", label="test")
        ax.set_title(f"{name}: gap {train_acc[-1] - test_acc[-1]:.2f} at the end")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_ylabel("accuracy")
    fig.suptitle(f"Overfitting {len(x)} images: {len(hidden)}-hidden-layer ReLU MLP, SGD "
                 f"({args.data})")
    _common.save_figure(fig, args.out, "overfitting.png")


if __name__ == "__main__":
    main()
