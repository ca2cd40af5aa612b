"""The Numba backend: @njit(cache=True, nogil=True) kernels, parallel where it pays.

Same functions and signatures as fastnn.reference (see docs/backends.md). GEMMs call NumPy's own
cblas_sgemm from jitted code on Numba's threads (_gemm.py), or np.matmul with out= from Python
when there is no usable symbol; the jitted code owns layouts, epilogues, reductions and
elementwise passes.
"""

from ._threads import direct_blas, get_num_threads, set_num_threads
from .activations import (
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    tanh,
    tanh_backward,
)
from .conv import (
    col2im,
    conv2d_backward,
    conv2d_forward,
    conv_cols,
    conv_cols_layout,
    conv_scratch_size,
    im2col,
    set_winograd,
)
from .convpool import conv2d_relu_pool_backward, conv2d_relu_pool_forward
from .dense import bias_add_act, dense_backward, dense_forward
from .dropout import dropout_backward, dropout_forward
from .losses import mse, sigmoid_binary_cross_entropy, softmax_cross_entropy
from .norm import batchnorm_backward, batchnorm_forward_infer, batchnorm_forward_train
from .optim import adagrad_update, adam_update, rmsprop_update, sgd_update
from .pool import maxpool2d_backward, maxpool2d_forward

__all__ = [
    "adagrad_update", "adam_update", "batchnorm_backward", "batchnorm_forward_infer",
    "batchnorm_forward_train", "bias_add_act", "col2im", "conv2d_backward", "conv2d_forward",
    "conv2d_relu_pool_backward", "conv2d_relu_pool_forward", "conv_cols", "conv_cols_layout",
    "conv_scratch_size", "dense_backward", "dense_forward",
    "direct_blas", "dropout_backward", "dropout_forward",
    "get_num_threads", "im2col", "maxpool2d_backward", "maxpool2d_forward", "mse", "relu",
    "relu_backward", "rmsprop_update", "set_num_threads", "set_winograd", "sgd_update", "sigmoid",
    "sigmoid_backward", "sigmoid_binary_cross_entropy", "softmax", "softmax_cross_entropy", "tanh",
    "tanh_backward",
]
