"""SGD, Momentum, AdaGrad and Adam on an MNIST MLP ("Deep Learning from Scratch", 6.1.8).

Each optimizer trains the same 784-100-100-100-100-10 ReLU network from the same He-initialised
weights, on the same sequence of random mini-batches of 128 images, with the book's learning rates
(0.01, and 0.001 for Adam). The plot shows the training loss per iteration (moving average) on a
linear scale, as in the book, and on a log scale; the table the final loss and the test accuracy.
Expect Momentum, AdaGrad and Adam to drop much faster than plain SGD, and Adam to go lowest.

Run:    python examples/optimizer_comparison.py [--data mnist-small|mnist|PATH] [--out DIR]
                                                 [--quick] [--seed N]
Writes: optimizer_comparison.png in --out (default: examples/output).
"""

from __future__ import annotations

import time

import _common  # examples/_common.py: options, data, table, figure
import numpy as np

import fastnn
from fastnn.layers import Dense, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD, AdaGrad, Adam

OPTIMIZERS = {  # name -> a function of model.parameters(); the book's settings
    "SGD": lambda params: SGD(params, lr=0.01),
    "Momentum": lambda params: SGD(params, lr=0.01, momentum=0.9),
    "AdaGrad": lambda params: AdaGrad(params, lr=0.01),
    "Adam": lambda params: Adam(params, lr=0.001),
}


def mlp(n_in: int, hidden: list[int], n_out: int, seed: int) -> fastnn.Sequential:
    """Dense-ReLU blocks and a linear output layer, He-initialised; `seed` fixes the weights."""
    sizes = [n_in, *hidden]
    layers = []
    for k in range(len(hidden)):
        layers += [Dense(sizes[k], sizes[k + 1], init="he", seed=seed * 100 + k), ReLU()]
    layers.append(Dense(sizes[-1], n_out, init="he", seed=seed * 100 + len(hidden)))
    return fastnn.Sequential(layers)


def main() -> None:
    args = _common.parse_args(__doc__)
    (x_train, y_train), (x_test, y_test) = _common.load_data(args.data)
    iterations, batch_size, hidden = 2000, 128, [100, 100, 100, 100]
    if args.quick:
        iterations, hidden = 40, [32, 32]
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    rng = np.random.default_rng(args.seed)
    batches = rng.integers(0, len(x_train), size=(iterations, batch_size))  # shared by all
    loss = SoftmaxCrossEntropy()

    losses, rows = {}, []
    for name, make_optimizer in OPTIMIZERS.items():
        model = mlp(x_train.shape[1], hidden, n_classes, args.seed)  # same start for each
        optimizer = make_optimizer(model.parameters())
        t0 = time.perf_counter()
        losses[name] = [model.train_on_batch(x_train[idx], y_train[idx], loss=loss,
                                             optimizer=optimizer) for idx in batches]
        seconds = time.perf_counter() - t0
        test = model.evaluate(x_test, y_test, loss=loss)
        last = float(np.mean(losses[name][-100:]))
        rows.append([name, last, test["accuracy"], f"{seconds:.1f}"])

    print(f"{iterations} iterations of {batch_size} images from {args.data} "
          f"({len(x_train)} training images); network {x_train.shape[1]}-"
          f"{'-'.join(map(str, hidden))}-{n_classes}")
    _common.print_table(["optimizer", "loss (last 100 it.)", "test accuracy", "seconds"], rows)

    fig = _common.new_figure(figsize=(12, 4.5))
    if fig is None:
        return
    window = max(1, iterations // 100)
    for ax, scale in zip(fig.subplots(1, 2), ("linear", "log")):
        for name, values in losses.items():
            ax.plot(*_common.moving_average(values, window), label=name)
        ax.set_yscale(scale)
        if scale == "linear":
            ax.set_ylim(0, 2.5)
        ax.set_title(f"{scale} scale")
        ax.set_xlabel("iteration (mini-batch of 128)")
        ax.set_ylabel(f"training loss (moving average of {window})")
        ax.grid(alpha=0.3, which="both" if scale == "log" else "major")
        ax.legend()
    fig.suptitle(f"Optimizers on a {len(hidden)}-hidden-layer ReLU MLP ({args.data})")
    _common.save_figure(fig, args.out, "optimizer_comparison.png")


if __name__ == "__main__":
    main()
