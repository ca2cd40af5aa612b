"""ch07: the book's SimpleConvNet (conv 30 5x5 - relu - pool - affine 100 - relu - affine 10)
trained by fastnn.dlfs.Trainer with Adam lr 0.001, batch 100, as ch07/train_convnet.py does.
After every epoch the whole test set is scored; the run stops at --epochs or, with --target, as
soon as the test accuracy reaches it. Prints epochs and wall time; saves the parameters (fastnn's
.npz, loadable with SimpleConvNet().load_params) and the accuracy curves.

Run: python examples/dlfs/ch07_train_convnet.py [--epochs 20] [--target 0.989] [--data ...]
"""

import time
from pathlib import Path

import _shared

from fastnn.dlfs.simple_convnet import SimpleConvNet
from fastnn.dlfs.trainer import Trainer


def options(parser):
    parser.add_argument("--epochs", type=int, default=20, help="at most this many epochs")
    parser.add_argument("--target", type=float, default=None,
                        help="stop once the full test accuracy reaches this (e.g. 0.989)")


def main():
    args = _shared.parse_args(__doc__, options)
    (x_train, t_train), (x_test, t_test) = _shared.data(args, flatten=False)
    epochs = args.epochs
    if args.quick:
        x_train, t_train, x_test, t_test = x_train[:1000], t_train[:1000], x_test[:500], \
            t_test[:500]
        epochs = min(epochs, 2)
    network = SimpleConvNet(input_dim=(1, 28, 28),
                            conv_param={"filter_num": 30, "filter_size": 5, "pad": 0,
                                        "stride": 1},
                            hidden_size=100, output_size=10, weight_init_std=0.01)
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=epochs,
                      mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.001},
                      evaluate_sample_num_per_epoch=1000, verbose=False)
    steps_per_epoch = int(trainer.iter_per_epoch)
    test_acc, train_time, start = [], 0.0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        for _ in range(steps_per_epoch):
            trainer.train_step()
        train_time += time.perf_counter() - t0
        test_acc.append(network.accuracy(x_test, t_test))
        print(f"epoch {epoch:2d}  loss {trainer.train_loss_list[-1]:.4f}  test acc "
              f"{test_acc[-1]:.4f}  wall {time.perf_counter() - start:7.1f} s "
              f"(training {train_time:7.1f} s)", flush=True)
        if args.target is not None and test_acc[-1] >= args.target:
            print(f"reached test accuracy {test_acc[-1]:.4f} >= {args.target} after {epoch} "
                  f"epochs, {time.perf_counter() - start:.1f} s wall")
            break
    network.save_params(str(Path(args.out) / "ch07_simple_convnet_params.npz"))
    fig = _shared.figure(figsize=(6, 4))
    if fig is not None:
        ax = fig.subplots()
        ax.plot(range(1, len(test_acc) + 1), test_acc, marker="s", label="test (all)")
        ax.plot(range(1, len(trainer.train_acc_list) + 1), trainer.train_acc_list, marker="o",
                label="train (first 1000, start of epoch)")
        ax.set(xlabel="epochs", ylabel="accuracy", ylim=(0.9 if not args.quick else 0, 1))
        ax.legend(loc="lower right")
    _shared.save(fig, args, "ch07_train_convnet")


if __name__ == "__main__":
    main()
