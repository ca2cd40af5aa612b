"""The book's layers (common/layers.py) on fastnn's kernels: same classes, constructor arguments
and attributes (`x`, `W`, `b`, `dW`, `db`, `mask`, `out`, `col`, `running_mean`, ...).

Computation is float32 (the book's is float64 whenever its weights come from `np.random.randn`):
inputs and weights of another float dtype are converted on the way into a kernel, and outputs and
gradients are float32. Every call returns new arrays, as the book's do; `backward` never modifies
its argument. Dropout keeps the book's scheme (no rescaling in training, x * (1 - ratio) at test
time) and draws its mask from NumPy's global generator, like the book, so a seeded script gets the
same masks.
"""

import sys
import weakref

import numpy as np

from fastnn import kernels as _k

from .functions import cross_entropy_error, softmax
from .util import col2im, im2col


def _f32(x):
    return np.ascontiguousarray(x, dtype=np.float32)


def _claim(ws, *names_shapes):
    """Give each named kernel output in a layer's workspace a buffer that nobody outside the
    workspace still holds: the previous one when the caller has let go of it (no reference, no
    view), else a new array. So every array a layer returns stays the caller's, as in the book,
    while a training loop reuses its buffers instead of faulting in fresh pages every step."""
    for name, shape, *dtype in names_shapes:
        dtype = dtype[0] if dtype else np.float32
        shape = tuple(shape)
        if name in ws:
            buf = ws[name]
            # 3 references: the workspace's, `buf` and getrefcount's argument
            if buf.shape == shape and buf.dtype == dtype and sys.getrefcount(buf) <= 3:
                continue
            del buf
        ws.bind(name, np.empty(shape, dtype=dtype))


class Relu:
    def __init__(self):
        self.out = None
        self._ws = _k.Workspace()

    @property
    def mask(self):
        """True where the input was <= 0 (the entries backward zeroes)."""
        return None if self.out is None else self.out <= 0

    def forward(self, x):
        self.out = None  # let go of the last output, so its buffer can be reused
        _claim(self._ws, ("y", x.shape))
        self.out = _k.relu(x, ws=self._ws)
        return self.out

    def backward(self, dout):
        _claim(self._ws, ("dx", self.out.shape))
        return _k.relu_backward(dout, self.out, ws=self._ws)


class Sigmoid:
    def __init__(self):
        self.out = None
        self._ws = _k.Workspace()

    def forward(self, x):
        self.out = None
        _claim(self._ws, ("y", x.shape))
        self.out = _k.sigmoid(x, ws=self._ws)
        return self.out

    def backward(self, dout):
        _claim(self._ws, ("dx", self.out.shape))
        return _k.sigmoid_backward(dout, self.out, ws=self._ws)


class Affine:
    """out = x @ W + b, x flattened to (N, -1); W is (in, out) as in fastnn.kernels."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None
        self._ws = _k.Workspace()

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = _f32(x.reshape(x.shape[0], -1))
        _claim(self._ws, ("y", (self.x.shape[0], self.W.shape[1])))
        return _k.dense_forward(self.x, self.W, self.b, ws=self._ws)

    def backward(self, dout, need_dx=True):
        """dx, and dW/db into the attributes. need_dx=False (a network's first layer) skips dx
        and returns None."""
        self.dW = self.db = None
        _claim(self._ws, ("dW", self.W.shape), ("db", self.b.shape))
        if need_dx:
            _claim(self._ws, ("dx", self.x.shape))
        dx, self.dW, self.db = _k.dense_backward(dout, self.x, self.W, ws=self._ws,
                                                 need_dx=need_dx)
        return None if dx is None else dx.reshape(self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax then the book's cross-entropy (with its 1e-7 inside the log); t holds class
    indices or one-hot rows. backward ignores `dout`, as the book's does (it is the last layer)."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:  # one-hot rows
            dx = np.subtract(self.y, self.t, dtype=np.float32)
        else:
            dx = self.y.copy()
            dx[np.arange(batch_size), self.t] -= 1
        dx /= np.float32(batch_size)
        return dx


class Dropout:
    """http://arxiv.org/abs/1207.0580: drops each unit with probability dropout_ratio in training
    and scales by (1 - dropout_ratio) at test time, as the book does (not inverted dropout)."""

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = dropout_ratio
        self.mask = None

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return np.multiply(x, self.mask, dtype=np.float32)
        return np.multiply(x, 1.0 - self.dropout_ratio, dtype=np.float32)

    def backward(self, dout):
        return np.multiply(dout, self.mask, dtype=np.float32)


class BatchNormalization:
    """http://arxiv.org/abs/1502.03167 with the book's conventions: a 4-D input is normalised per
    feature of its (N, C*H*W) view, eps is 1e-6, the running statistics start at zero and follow
    running = momentum * running + (1 - momentum) * batch (biased variance)."""

    EPS = 10e-7

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self._x = self._mean = self._invstd = None
        self.dgamma = None
        self.dbeta = None

    # The book keeps xc, xn and std for backward; here the kernel keeps the batch mean and 1/std,
    # and these are derived when someone looks.
    @property
    def xc(self):
        return None if self._x is None else self._x - self._mean

    @property
    def std(self):
        return None if self._x is None else 1.0 / self._invstd

    @property
    def xn(self):
        return None if self._x is None else (self._x - self._mean) * self._invstd

    def _running(self, name, D):
        a = getattr(self, name)
        if a is None:
            a = np.zeros(D, dtype=np.float32)
        elif not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous
                  and a.flags.writeable):
            a = np.array(a, dtype=np.float32)  # the kernel updates it in place: own a float32 copy
        setattr(self, name, a)
        return a

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        x2 = _f32(x.reshape(x.shape[0], -1))
        D = x2.shape[1]
        rm, rv = self._running("running_mean", D), self._running("running_var", D)
        out, mean, invstd = _k.batchnorm_forward(x2, self.gamma, self.beta, rm, rv,
                                                 momentum=self.momentum, eps=self.EPS,
                                                 train=train_flg)
        if train_flg:
            self.batch_size = x2.shape[0]
            self._x, self._mean, self._invstd = x2, mean, invstd
        return out.reshape(self.input_shape)

    def backward(self, dout):
        dout2 = dout.reshape(dout.shape[0], -1)
        dx, self.dgamma, self.dbeta = _k.batchnorm_backward(dout2, self._x, self.gamma,
                                                            self._mean, self._invstd)
        return dx.reshape(self.input_shape)


class Convolution:
    """Cross-correlation of NCHW x with W (FN, C, FH, FW) plus b (FN,), as im2col + GEMM. `col`
    (the im2col of the last input) is kept for backward, as in the book."""

    def __init__(self, W, b, stride=1, pad=0):
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.dW = None
        self.db = None
        self._ws = _k.Workspace()

    @property
    def col(self):
        """The book's im2col rows of the last input (the backend may keep its own layout of the
        same columns between forward and backward: then they are computed here on request)."""
        if self.x is None or "cols" not in self._ws:
            return None
        if self._ws.tagged("cols") in (None, "rows"):
            return self._ws["cols"]
        FN, C, FH, FW = self.W.shape
        return _k.im2col(self.x, FH, FW, self.stride, self.pad)

    @property
    def col_W(self):
        return np.asarray(self.W).reshape(self.W.shape[0], -1).T

    def forward(self, x):
        FN, C, FH, FW = self.W.shape
        N, _, H, W = x.shape
        out_h = 1 + (H + 2 * self.pad - FH) // self.stride
        out_w = 1 + (W + 2 * self.pad - FW) // self.stride
        self.x = x
        _claim(self._ws, ("y", (N, FN, out_h, out_w)), ("cols", (N * out_h * out_w, C * FH * FW)))
        return _k.conv2d_forward(x, self.W, self.b, self.stride, self.pad, ws=self._ws)

    def backward(self, dout, need_dx=True):
        """dx, and dW/db into the attributes. need_dx=False (a network's first layer) skips dx
        and returns None."""
        self.dW = self.db = None
        x = self.x
        _claim(self._ws, ("dW", self.W.shape), ("db", (self.W.shape[0],)))
        if need_dx:
            _claim(self._ws, ("dx", x.shape))
        dx, self.dW, self.db = _k.conv2d_backward(dout, x, self.W, self.stride, self.pad,
                                                  ws=self._ws, cols=self._ws["cols"],
                                                  need_dx=need_dx)
        return dx


class Pooling:
    """Max pooling over pool_h x pool_w windows. Square windows without padding run on the pooling
    kernel (`arg_max` then holds, per output, the flat index i*W + j of its maximum in the input
    plane); other windows go through im2col (`arg_max`: the position inside the window, as in the
    book). Ties go to the first maximum in row-major window order, as np.argmax does. `x` refers
    to the last input while someone else holds it (backward needs only its shape)."""

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self._x = None
        self.x_shape = None
        self.arg_max = None
        self._ws = _k.Workspace()

    @property
    def x(self):
        return None if self._x is None else self._x()

    def _square(self):
        return self.pool_h == self.pool_w and self.pad == 0

    def forward(self, x):
        self._x = weakref.ref(x) if isinstance(x, np.ndarray) else (lambda x=x: x)
        self.x_shape = N, C, H, W = x.shape
        out_h = (H + 2 * self.pad - self.pool_h) // self.stride + 1
        out_w = (W + 2 * self.pad - self.pool_w) // self.stride + 1
        if self._square():
            self.arg_max = None
            _claim(self._ws, ("y", (N, C, out_h, out_w)),
                   ("argmax", (N, C, out_h, out_w), np.int32))
            out, self.arg_max = _k.maxpool2d_forward(x, self.pool_h, self.stride, ws=self._ws)
            return out
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = col.reshape(-1, self.pool_h * self.pool_w)  # one row per (n, oh, ow, c) window
        self.arg_max = np.argmax(col, axis=1)
        out = col[np.arange(col.shape[0]), self.arg_max]
        return np.ascontiguousarray(out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2))

    def backward(self, dout):
        if self._square():
            _claim(self._ws, ("dx", self.x_shape))
            return _k.maxpool2d_backward(dout, self.arg_max, self.x_shape, self.pool_h,
                                         self.stride, ws=self._ws)
        pool_size = self.pool_h * self.pool_w
        dout = dout.transpose(0, 2, 3, 1)
        dmax = np.zeros((dout.size, pool_size), dtype=np.float32)
        dmax[np.arange(self.arg_max.size), self.arg_max.reshape(-1)] = dout.reshape(-1)
        dcol = dmax.reshape(dout.shape[0] * dout.shape[1] * dout.shape[2], -1)
        return col2im(dcol, self.x_shape, self.pool_h, self.pool_w, self.stride, self.pad)
