"""Weight initialisation: std 0.01 vs Xavier vs He ("Deep Learning from Scratch", 6.2.4).

The same 5-hidden-layer ReLU MLP (784-100-100-100-100-100-10) is trained with plain SGD
(lr 0.01, mini-batches of 128, the same batches for each run) from weights drawn with each of the
layers' `init=` choices: "normal" (std 0.01, the book's first try), "xavier" (sqrt(2 / (fan_in +
fan_out))) and "he" (sqrt(2 / fan_in)). With std 0.01 the activations shrink layer after layer, the
gradients vanish and the loss stays at ln(10) = 2.30; He, made for ReLU, learns fastest.

Run:    python examples/weight_init_comparison.py [--data mnist-small|mnist|PATH] [--out DIR]
                                                   [--quick] [--seed N]
Writes: weight_init_comparison.png in --out (default: examples/output).
"""

from __future__ import annotations

import time

import _common  # examples/_common.py: options, data, table, figure
import numpy as np

import fastnn
from fastnn.layers import Dense, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD

INITS = {"std 0.01": "normal", "Xavier": "xavier", "He": "he"}  # label -> Dense(init=...)


def mlp(n_in: int, hidden: list[int], n_out: int, init: str, seed: int) -> fastnn.Sequential:
    """Dense-ReLU blocks and a linear output layer, every Dense initialised with `init`."""
    sizes = [n_in, *hidden]
    layers = []
    for k in range(len(hidden)):
        layers += [Dense(sizes[k], sizes[k + 1], init=init, seed=seed * 100 + k), ReLU()]
    layers.append(Dense(sizes[-1], n_out, init=init, seed=seed * 100 + len(hidden)))
    return fastnn.Sequential(layers)


def main() -> None:
    args = _common.parse_args(__doc__)
    (x_train, y_train), (x_test, y_test) = _common.load_data(args.data)
    iterations, batch_size, hidden = 2000, 128, [100] * 5
    if args.quick:
        iterations, hidden = 40, [32] * 5
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    rng = np.random.default_rng(args.seed)
    batches = rng.integers(0, len(x_train), size=(iterations, batch_size))  # shared by all
    loss = SoftmaxCrossEntropy()

    losses, rows = {}, []
    for label, init in INITS.items():
        model = mlp(x_train.shape[1], hidden, n_classes, init, args.seed)
        optimizer = SGD(model.parameters(), lr=0.01)
        t0 = time.perf_counter()
        losses[label] = [model.train_on_batch(x_train[idx], y_train[idx], loss=loss,
                                              optimizer=optimizer) for idx in batches]
        seconds = time.perf_counter() - t0
        test = model.evaluate(x_test, y_test, loss=loss)
        last = float(np.mean(losses[label][-100:]))
        rows.append([f'{label} (init="{init}")', last, test["accuracy"], f"{seconds:.1f}"])

    print(f"SGD lr 0.01, {iterations} iterations of {batch_size} images from {args.data} "
          f"({len(x_train)} training images); network {x_train.shape[1]}-"
          f"{'-'.join(map(str, hidden))}-{n_classes}")
    _common.print_table(["initialisation", "loss (last 100 it.)", "test accuracy", "seconds"],
                        rows)

    fig = _common.new_figure(figsize=(8, 5))
    if fig is None:
        return
    ax = fig.subplots()
    window = max(1, iterations // 100)
    for label, values in losses.items():
        ax.plot(*_common.moving_average(values, window), label=label)
    ax.set_xlabel("iteration (mini-batch of 128)")
    ax.set_ylabel(f"training loss (moving average of {window})")
    ax.set_title(f"Weight initialisation, {len(hidden)}-hidden-layer ReLU MLP, SGD ({args.data})")
    ax.set_ylim(0, 2.5)
    ax.grid(alpha=0.3)
    ax.legend()
    _common.save_figure(fig, args.out, "weight_init_comparison.png")


if __name__ == "__main__":
    main()
