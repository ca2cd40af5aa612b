"""The Cython backend: extension modules built from kernels/<topic>.pyx by setup.py.

Same functions and signatures as fastnn.reference (see docs/backends.md). Importing this package
fails with ImportError when the extensions were not built; fastnn.backend then falls back.
"""

try:
    from . import conv as _conv
except ImportError as exc:  # a source tree without built extensions
    raise ImportError("fastnn's Cython kernels were not built in this tree (in a source "
                      "checkout: python setup.py build_ext --inplace)") from exc
from ._threads import _extensions, direct_blas, get_num_threads, openmp_enabled, set_num_threads
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
    conv_scratch_size,
    im2col,
)
from .convpool import conv2d_relu_pool_backward, conv2d_relu_pool_forward
from .dense import bias_add_act, dense_backward, dense_forward
from .dropout import dropout_backward, dropout_forward
from .losses import mse, sigmoid_binary_cross_entropy, softmax_cross_entropy
from .norm import batchnorm_backward, batchnorm_forward_infer, batchnorm_forward_train
from .optim import adagrad_update, adam_update, rmsprop_update, sgd_update
from .pool import maxpool2d_backward, maxpool2d_forward

_extensions()  # give the modules that multiply matrices NumPy's cblas_sgemm


def conv_cols_layout() -> str:
    """The layout of the columns conv2d_forward keeps for conv2d_backward: "planes" (per image
    (C*kh*kw, OH*OW), when the GEMMs run per image through the direct BLAS; with Winograd on,
    "planes+winograd": the Winograd tiles for the convolutions that run so), else "rows"."""
    layout = _conv.CONV_COLS_LAYOUT
    return layout + "+winograd" if layout == "planes" and _conv._get_winograd() else layout


def set_winograd(enabled: bool) -> None:
    """Run 3x3, stride-1 convolutions with >= 8 channels as Winograd F(2x2, 3x3) (True, the
    default) or as im2col + GEMM (see fastnn.backend.set_winograd)."""
    _conv._set_winograd(bool(enabled))


__all__ = [
    "adagrad_update", "adam_update", "batchnorm_backward", "batchnorm_forward_infer",
    "batchnorm_forward_train", "bias_add_act", "col2im", "conv2d_backward", "conv2d_forward",
    "conv2d_relu_pool_backward", "conv2d_relu_pool_forward", "conv_cols", "conv_cols_layout",
    "conv_scratch_size", "dense_backward", "dense_forward",
    "direct_blas", "dropout_backward", "dropout_forward", "get_num_threads", "im2col",
    "maxpool2d_backward", "maxpool2d_forward", "mse", "openmp_enabled", "relu", "relu_backward",
    "rmsprop_update", "set_num_threads", "set_winograd", "sgd_update", "sigmoid",
    "sigmoid_backward", "sigmoid_binary_cross_entropy", "softmax", "softmax_cross_entropy", "tanh",
    "tanh_backward",
]
