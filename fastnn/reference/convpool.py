"""A network's first convolution block as one kernel: Conv2D (stride 1) -> ReLU -> MaxPool2D(2).

    p, argmax = maxpool2d(conv2d(x, W, b, stride=1, pad)), 2x2 windows, stride 2
    p = relu(p)                       (max and ReLU commute: the ReLU runs on the pooled values)

argmax is the flat index oh * OW + ow of each window's maximum in its (OH, OW) convolution plane
(ties: the first maximum in row-major window order; a NaN wins), as maxpool2d_forward gives it.
The backward pass gives dW and db only (the block is a network's first layer: nobody needs dx):

    g  = dp * (p > 0)                 ReLU's gradient, on the pooled outputs
    dy = g added at each argmax       (zero elsewhere), the gradient of the convolution's output
    dW, db = the convolution's weight and bias gradients for dy

Written here as the composition of the reference kernels it replaces; the compiled forms compute
the convolution directly and pool in its epilogue, never storing the (N, F, OH, OW) output.
"""

import numpy as np

from .activations import relu, relu_backward
from .conv import conv2d_backward, conv2d_forward, im2col
from .pool import maxpool2d_backward, maxpool2d_forward


def _conv_shape(x, W, pad):
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    return N, F, H + 2 * pad - kh + 1, Wd + 2 * pad - kw + 1


def conv2d_relu_pool_forward(x, W, b, pad, p, argmax):
    N, F, OH, OW = _conv_shape(x, W, pad)
    K = W[0].size
    y = np.empty((N, F, OH, OW), x.dtype)
    conv2d_forward(x, W, b, 1, pad, y, np.empty((N * OH * OW, K), x.dtype),
                   np.empty((N * OH * OW, F), x.dtype))
    maxpool2d_forward(y, 2, 2, 2, p, argmax)
    relu(p, p)


def conv2d_relu_pool_backward(dp, p, argmax, x, pad, dW, db):
    """dW, db; False (nothing meaningful written) when an argmax is outside [0, OH*OW)."""
    N, F, OH, OW = _conv_shape(x, dW, pad)
    g = np.empty_like(dp)
    relu_backward(dp, p, g)
    dy = np.empty((N, F, OH, OW), dp.dtype)
    if not maxpool2d_backward(g, argmax, dy):
        return False
    K = dW[0].size
    cols = np.empty((N * OH * OW, K), x.dtype)
    im2col(x, dW.shape[2], dW.shape[3], 1, pad, cols)
    # W is read only for dx, which is not computed: dW stands in for its shape
    conv2d_backward(dy, cols, dW, 1, pad, None, dW, db, np.empty((N * OH * OW, F), dp.dtype), None)
    return True
