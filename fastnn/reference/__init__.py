"""The NumPy reference backend: readable, textbook-style float32 kernels.

It is the oracle for the compiled backends and the baseline of the benchmarks. Every backend
(`fastnn.reference`, `fastnn._numba`, `fastnn._cython`) exports the same functions with the same
destination-passing signatures, documented in docs/backends.md: inputs first, then scalars, then the
output arrays and workspaces the caller allocated. Inputs are already validated by `fastnn.kernels`
(shapes, float32, C-contiguous, label ranges), so backends check nothing.

The reference functions follow the dtype of their arguments, so the tests also run them in float64
for gradient checks against central differences.
"""

from .activations import relu, relu_backward, sigmoid, sigmoid_backward, softmax, tanh, tanh_backward
from .conv import col2im, conv2d_backward, conv2d_forward, im2col
from .dense import bias_add_act, dense_backward, dense_forward
from .dropout import dropout_backward, dropout_forward
from .losses import mse, sigmoid_binary_cross_entropy, softmax_cross_entropy
from .norm import batchnorm_backward, batchnorm_forward_infer, batchnorm_forward_train
from .optim import adagrad_update, adam_update, rmsprop_update, sgd_update
from .convpool import conv2d_relu_pool_backward, conv2d_relu_pool_forward
from .pool import maxpool2d_backward, maxpool2d_forward


def set_num_threads(n: int) -> None:
    """NumPy's own loops are single-threaded; BLAS threads are set by fastnn.backend."""


def get_num_threads() -> int:
    return 1


__all__ = [
    "adagrad_update", "adam_update", "batchnorm_backward", "batchnorm_forward_infer",
    "batchnorm_forward_train", "bias_add_act", "col2im", "conv2d_backward", "conv2d_forward",
    "conv2d_relu_pool_backward", "conv2d_relu_pool_forward", "dense_backward", "dense_forward",
    "dropout_backward", "dropout_forward", "im2col",
    "maxpool2d_backward", "maxpool2d_forward", "mse", "relu", "relu_backward", "rmsprop_update",
    "sgd_update", "sigmoid", "sigmoid_backward", "sigmoid_binary_cross_entropy", "softmax",
    "softmax_cross_entropy", "tanh", "tanh_backward",
]
