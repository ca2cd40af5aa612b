"""fastnn.dlfs: the `common/` package of "Deep Learning from Scratch" (Koki Saitoh, O'Reilly
Japan) with the book's names, signatures and numerics, running on fastnn's kernels.

Change one import and a script from the book trains on fastnn's kernels:

    from common.layers import *          ->  from fastnn.dlfs.layers import *
    from common.trainer import Trainer   ->  from fastnn.dlfs.trainer import Trainer
    from dataset.mnist import load_mnist ->  from fastnn.dlfs.dataset import load_mnist

or leave the script untouched and call `fastnn.dlfs.install()` first, which makes `common`,
`common.<module>`, `dataset` and `dataset.mnist` name these modules.

Differences from the book, all deliberate: computation is float32 (the book's is float64, so
results agree to float32 rounding, about 1e-6 relative per operation, not bit for bit); networks
hold float32 parameters; `save_params`/`load_params` read the book's pickles through a restricted
unpickler that runs no code, and write fastnn's .npz format when the name ends in .npz.
"""

import sys

from . import (
    dataset,
    deep_convnet,
    functions,
    gradient,
    layers,
    multi_layer_net,
    multi_layer_net_extend,
    optimizer,
    simple_convnet,
    trainer,
    util,
)
from .deep_convnet import DeepConvNet
from .multi_layer_net import MultiLayerNet
from .multi_layer_net_extend import MultiLayerNetExtend
from .paramfile import UnsafePickleError, load_params, save_params
from .simple_convnet import SimpleConvNet
from .trainer import Trainer

COMMON_MODULES = ("functions", "gradient", "layers", "multi_layer_net", "multi_layer_net_extend",
                  "optimizer", "trainer", "util")

__all__ = ["DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet", "Trainer",
           "UnsafePickleError", "dataset", "deep_convnet", "functions", "gradient", "install",
           "layers", "load_params", "module_aliases", "multi_layer_net", "multi_layer_net_extend",
           "optimizer", "save_params", "simple_convnet", "trainer", "util"]


def module_aliases() -> dict:
    """{module name the book's scripts import: the fastnn.dlfs module that serves it}."""
    this = sys.modules[__name__]
    aliases = {"common": this, "dataset": this, "dataset.mnist": dataset}
    for name in COMMON_MODULES:
        aliases["common." + name] = getattr(this, name)
    return aliases


def install() -> None:
    """Make `import common.layers`, `from dataset.mnist import load_mnist` etc. resolve to
    fastnn.dlfs, so the book's scripts run unchanged after one `fastnn.dlfs.install()`."""
    sys.modules.update(module_aliases())
