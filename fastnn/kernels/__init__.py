"""fastnn.kernels: the stateless kernels, validated, each running on the current backend.

Every function checks its arguments (shapes, dtypes, contiguity, label and index ranges, stride and
padding) before any compiled code without bounds checks runs, allocates its outputs (or takes them
from a `Workspace` passed as `ws=`, for allocation-free loops), and calls the backend function of
the same name chosen by `fastnn.backend`.
"""

from ._check import Workspace
from .activations import relu, relu_backward, sigmoid, sigmoid_backward, softmax, tanh, tanh_backward
from .conv import col2im, conv2d_backward, conv2d_forward, im2col
from .convpool import conv2d_relu_pool_backward, conv2d_relu_pool_forward
from .dense import dense_backward, dense_forward
from .dropout import dropout_backward, dropout_forward
from .losses import mse, sigmoid_binary_cross_entropy, softmax_cross_entropy
from .norm import batchnorm_backward, batchnorm_forward
from .optim import adagrad_update, adam_update, rmsprop_update, sgd_update
from .pool import maxpool2d_backward, maxpool2d_forward

__all__ = [
    "Workspace", "adagrad_update", "adam_update", "batchnorm_backward", "batchnorm_forward",
    "col2im", "conv2d_backward", "conv2d_forward", "conv2d_relu_pool_backward",
    "conv2d_relu_pool_forward", "dense_backward", "dense_forward",
    "dropout_backward", "dropout_forward", "im2col", "maxpool2d_backward", "maxpool2d_forward",
    "mse", "relu", "relu_backward", "rmsprop_update", "sgd_update", "sigmoid", "sigmoid_backward",
    "sigmoid_binary_cross_entropy", "softmax", "softmax_cross_entropy", "tanh", "tanh_backward",
]
