"""Hyperparameter search: random search over the learning rate and weight decay ("Deep Learning
from Scratch", 6.5).

The book's recipe: 500 training images, 20% of them held out for validation; 100 trials, each
drawing lr = 10^U(-6, -2) and weight decay = 10^U(-8, -4) and training the 6 x 100 ReLU MLP with SGD
for 50 epochs (mini-batches of 100); rank the trials by final validation accuracy. The test set is
looked at once, at the end: the best pair is retrained on all 500 images and tested.
The trials are independent, so they run in parallel: on local processes (one per core), or on MPI
ranks when started under mpiexec (`pip install 'fastnn[mpi]'`; only rank 0 prints and writes):

Run:    python examples/hyperparameter_search.py [--data ...] [--out DIR] [--quick] [--seed N]
        mpiexec -n 4 python examples/hyperparameter_search.py
Writes: hyperparameter_search.png, hyperparameter_search.csv and .json in --out
        (default: examples/output).
"""

from __future__ import annotations

import os
import time

import _common  # examples/_common.py: options, data, table, figure

from fastnn import distributed, hpsearch
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD


def main() -> None:
    args = _common.parse_args(__doc__)
    trials, epochs = (6, 5) if args.quick else (100, 50)
    with distributed.root_first():  # a download of the full MNIST happens once, on rank 0
        (x_train, y_train), (x_test, y_test) = _common.load_data(args.data)
    x, y = x_train[:500], y_train[:500]
    t0 = time.perf_counter()
    records = hpsearch.random_search(x, y, trials=trials, epochs=epochs, batch_size=100,
                                     seed=args.seed)
    if not distributed.is_root():
        return
    seconds = time.perf_counter() - t0
    rows = [[f"Best-{k + 1}", f"{r['lr']:.2e}", f"{r['weight_decay']:.2e}", r["val_accuracy"],
             r["train_accuracy"]] for k, r in enumerate(records[:10])]
    _common.print_table(["trial", "lr", "weight decay", "val acc", "train acc"], rows)
    workers = (f"{distributed.world_size()} MPI ranks" if distributed.launched() else
               f"{len({r['worker'] for r in records})} processes")
    print(f"{trials} trials x {epochs} epochs in {seconds:.1f} s on {workers}")

    best = records[0]
    model = hpsearch.textbook_mlp(seed=args.seed)
    loss = SoftmaxCrossEntropy()
    model.fit(x, y, loss=loss, epochs=epochs, batch_size=100, seed=args.seed, verbose=0,
              optimizer=SGD(model.parameters(), lr=best["lr"], weight_decay=best["weight_decay"]))
    test = model.evaluate(x_test, y_test, loss=loss)
    print(f"best lr {best['lr']:.3e}, weight decay {best['weight_decay']:.3e}: retrained on all "
          f"{len(x)} images, test acc {test['accuracy']:.4f}")

    for path in hpsearch.save(records, args.out, {"trials": trials, "epochs": epochs,
                                                  "seed": args.seed, "data": args.data}):
        final = path.replace("hpsearch.", "hyperparameter_search.")
        os.replace(path, final)
        print(f"wrote {final}")
    if _common.new_figure() is not None:
        png = os.path.join(args.out, "hyperparameter_search.png")
        hpsearch.plot(records, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
