"""ch08: the book's DeepConvNet (six 3x3 convolutions, dropout) trained by fastnn.dlfs.Trainer
with Adam lr 0.001, batch 100, as ch08/train_deepnet.py does; --params scores the book's trained
deep_convnet_params.pkl instead (read without running any code from it).

Run: python examples/dlfs/ch08_deep_convnet.py [--epochs 20] [--params FILE] [--data ...]
"""

from pathlib import Path

import _shared
import numpy as np

from fastnn.dlfs.deep_convnet import DeepConvNet
from fastnn.dlfs.trainer import Trainer


def options(parser):
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--params", default=None, help="a parameter file to score, not train")


def main():
    args = _shared.parse_args(__doc__, options)
    (x_train, t_train), (x_test, t_test) = _shared.data(args, flatten=False)
    network = DeepConvNet()
    if args.params:
        network.load_params(args.params)
        print(f"test acc {network.accuracy(x_test, t_test):.4f} with {args.params}")
        return
    epochs = args.epochs
    if args.quick:
        x_train, t_train, x_test, t_test = x_train[:300], t_train[:300], x_test[:200], \
            t_test[:200]
        epochs = 1
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=epochs,
                      mini_batch_size=100, optimizer="Adam", optimizer_param={"lr": 0.001},
                      evaluate_sample_num_per_epoch=1000, verbose=False)
    acc = trainer.train()
    print(f"test acc {acc:.4f} after {epochs} epochs")
    network.save_params(str(Path(args.out) / "ch08_deep_convnet_params.npz"))
    fig = _shared.figure(figsize=(6, 4))
    if fig is not None:
        ax = fig.subplots()
        ax.plot(np.arange(len(trainer.train_loss_list)), trainer.train_loss_list)
        ax.set(xlabel="iterations", ylabel="training loss")
    _shared.save(fig, args, "ch08_deep_convnet")


if __name__ == "__main__":
    main()
