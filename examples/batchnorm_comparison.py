"""Batch normalisation: the same deep MLP with and without BatchNorm ("Deep Learning from
Scratch", 6.3.2).

A 5-hidden-layer ReLU MLP (784-100-100-100-100-100-10) is trained with plain SGD (lr 0.01,
mini-batches of 100) on the first 1000 training images for 20 epochs, with and without a
BatchNorm layer between each Dense and its ReLU, once for each standard deviation of the initial
weights (Dense(init=<std>)), as in the book. Expect the plain network to learn only near the
right scale (He would be 0.14 here): below it the signal vanishes and accuracy stays at ~10%; at
std 1 the activations overflow and the loss becomes NaN. With BatchNorm every scale learns, fastest
from small weights (a BatchNorm'd layer's gradient shrinks as its weights grow, so large starts are
slow at this learning rate). Accuracies are measured in inference mode after each epoch (0: at
the start).

Run:    python examples/batchnorm_comparison.py [--data mnist-small|mnist|PATH] [--out DIR]
                                                 [--quick] [--seed N]
Writes: batchnorm_comparison.png in --out (default: examples/output).
"""

from __future__ import annotations

import time

import _common  # examples/_common.py: options, data, table, figure
import numpy as np

import fastnn
from fastnn.layers import BatchNorm, Dense, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD


def mlp(n_in, hidden, n_out, std, batchnorm, seed) -> fastnn.Sequential:
    """Dense-[BatchNorm]-ReLU blocks and a linear output; weights ~ N(0, std^2)."""
    sizes = [n_in, *hidden]
    layers = []
    for k in range(len(hidden)):
        layers.append(Dense(sizes[k], sizes[k + 1], init=std, seed=seed * 100 + k))
        layers += [BatchNorm(sizes[k + 1]), ReLU()] if batchnorm else [ReLU()]
    layers.append(Dense(sizes[-1], n_out, init=std, seed=seed * 100 + len(hidden)))
    return fastnn.Sequential(layers)


def train(model, x, y, x_test, y_test, epochs, seed):
    """Per-epoch training and test accuracy (inference mode), starting before the first epoch;
    the lists stop early if the loss overflows (fit raises FloatingPointError)."""
    loss = SoftmaxCrossEntropy()
    optimizer = SGD(model.parameters(), lr=0.01)
    train_acc, test_acc = [], []
    for epoch in range(epochs + 1):
        if epoch > 0:
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # a diverging run overflows
                    model.fit(x, y, loss=loss, optimizer=optimizer, epochs=1, batch_size=100,
                              seed=seed * 1000 + epoch, verbose=0)
            except FloatingPointError:
                break
        train_acc.append(model.evaluate(x, y, loss=loss)["accuracy"])
        test_acc.append(model.evaluate(x_test, y_test, loss=loss)["accuracy"])
    return train_acc, test_acc


def main() -> None:
    args = _common.parse_args(__doc__)
    (x_train, y_train), (x_test, y_test) = _common.load_data(args.data)
    n_train, epochs, hidden, stds = 1000, 20, [100] * 5, [1.0, 0.3, 0.1, 0.03, 0.01, 0.003]
    if args.quick:
        n_train, epochs, hidden, stds = 200, 2, [32] * 5, [0.1, 0.01]
    x, y = x_train[:n_train], y_train[:n_train]
    n_classes = int(max(y_train.max(), y_test.max())) + 1

    curves, rows = {}, []
    t0 = time.perf_counter()
    for std in stds:
        for batchnorm in (True, False):
            model = mlp(x.shape[1], hidden, n_classes, std, batchnorm, args.seed)
            curves[std, batchnorm] = train(model, x, y, x_test, y_test, epochs, args.seed)
        row = [f"{std:g}"]
        for batchnorm in (True, False):
            train_acc, test_acc = curves[std, batchnorm]
            if len(train_acc) <= epochs:  # stopped early: the loss became NaN
                row += [f"NaN in epoch {len(train_acc)}", "-"]
            else:
                row += [train_acc[-1], test_acc[-1]]
        rows.append(row)
    seconds = time.perf_counter() - t0

    print(f"SGD lr 0.01, {epochs} epochs on {len(x)} training images from {args.data}; "
          f"network {x.shape[1]}-{'-'.join(map(str, hidden))}-{n_classes}; {seconds:.1f} s")
    _common.print_table(["init std", "BN: train acc", "BN: test acc", "plain: train acc",
                         "plain: test acc"], rows)

    fig = _common.new_figure(figsize=(11, 6.5))
    if fig is None:
        return
    axes = fig.subplots(2, -(-len(stds) // 2), sharex=True, sharey=True, squeeze=False)
    for ax, std in zip(axes.flat, stds):
        for batchnorm, style, label in ((True, "-", "with BatchNorm"), (False, "--", "without")):
            acc = curves[std, batchnorm][0]
            (line,) = ax.plot(acc, style, label=label)
            if len(acc) <= epochs:  # the loss became NaN in the next epoch
                ax.plot(len(acc) - 1, acc[-1], "x", color=line.get_color(), markersize=10)
                ax.annotate(f"{label}: loss became NaN in epoch {len(acc)}",
                            (len(acc) - 1, acc[-1]), xytext=(10, -16), textcoords="offset points",
                            color=line.get_color())
        ax.set_title(f"initial weights: std {std:g}")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("training accuracy")
    axes.flat[0].legend(loc="upper left")
    fig.suptitle(f"BatchNorm, {len(hidden)}-hidden-layer ReLU MLP, SGD, {len(x)} images "
                 f"({args.data})")
    _common.save_figure(fig, args.out, "batchnorm_comparison.png")


if __name__ == "__main__":
    main()
