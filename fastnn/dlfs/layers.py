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
from fastnn.kernels.conv import _conv_args

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


class _Lazy:
    """A layer attribute that a fused forward (conv_relu_pool_forward) may leave uncomputed: it
    sets `_make_<name>`, a function, and the value is computed on first access. Assigning the
    attribute stores the value and drops any pending function."""

    def __set_name__(self, owner, name):
        self.slot, self.maker = "_" + name, "_make_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        make = getattr(obj, self.maker)
        if make is not None:
            setattr(obj, self.slot, make())
            setattr(obj, self.maker, None)
        return getattr(obj, self.slot)

    def __set__(self, obj, value):
        setattr(obj, self.slot, value)
        setattr(obj, self.maker, None)


class Relu:
    def __init__(self):
        self._out = self._make_out = None
        self._ws = _k.Workspace()

    # the last output; after a fused Convolution -> Relu -> Pooling forward it was never stored
    out = _Lazy()

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
        self._fused = None  # (x, p, argmax) of a fused forward (conv_relu_pool_forward)

    @property
    def col(self):
        """The book's im2col rows of the last input (the backend may keep its own layout of the
        same columns between forward and backward, and a fused forward keeps none: then they are
        computed here on request)."""
        if self.x is None:
            return None
        if self._fused is None and "cols" in self._ws and self._ws.tagged("cols") in (None, "rows"):
            return self._ws["cols"]
        FN, C, FH, FW = self.W.shape
        return _k.im2col(self.x, FH, FW, self.stride, self.pad)

    @property
    def col_W(self):
        return np.asarray(self.W).reshape(self.W.shape[0], -1).T

    def forward(self, x):
        # shapes checked (clear messages) before any buffer is sized from them
        *_, out_h, out_w = _conv_args(x, self.W, self.stride, self.pad)
        FN, C, FH, FW = self.W.shape
        N = np.shape(x)[0]
        self.x, self._fused = x, None
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
        cols = self._ws["cols"] if self._fused is None else None  # None: computed again
        dx, self.dW, self.db = _k.conv2d_backward(dout, x, self.W, self.stride, self.pad,
                                                  ws=self._ws, cols=cols, need_dx=need_dx)
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
        self._arg_max = self._make_arg_max = None
        self._fused = None  # the Convolution's fused state when conv_relu_pool_forward ran
        self._ws = _k.Workspace()

    @property
    def x(self):
        return None if self._x is None else self._x()

    arg_max = _Lazy()  # computed on request after a fused forward

    def _square(self):
        return self.pool_h == self.pool_w and self.pad == 0

    def forward(self, x):
        self._x = weakref.ref(x) if isinstance(x, np.ndarray) else (lambda x=x: x)
        self.x_shape = N, C, H, W = x.shape
        self._fused = None
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


# --- Convolution -> Relu -> Pooling(2x2, stride 2) as one kernel ---------------------------------

def conv_relu_pool_fits(conv, relu, pool, x) -> bool:
    """Whether conv_relu_pool_forward runs these layers on x: the book's first block of
    SimpleConvNet and its like (a stride-1 convolution with C*FH*FW <= 75, where one direct
    convolution beats im2col + GEMM, then 2x2 max pooling with stride 2)."""
    if not (type(conv) is Convolution and type(relu) is Relu and type(pool) is Pooling):
        return False
    shape = np.shape(x)
    if np.ndim(conv.W) != 4 or len(shape) != 4 or conv.stride != 1:
        return False
    FN, C, FH, FW = np.shape(conv.W)
    out_h = shape[2] + 2 * conv.pad - FH + 1
    out_w = shape[3] + 2 * conv.pad - FW + 1
    return (shape[1] == C and C * FH * FW <= 75 and out_h >= 2 and out_w >= 2
            and pool.pool_h == pool.pool_w == 2 and pool.stride == 2 and pool.pad == 0)


def conv_relu_pool_forward(conv, relu, pool, x):
    """pool.forward(relu.forward(conv.forward(x))) as one kernel
    (fastnn.kernels.conv2d_relu_pool_forward: the convolution's output never reaches memory).
    Each layer is left as its own forward would leave it: `conv.x` and `pool.x_shape` are set;
    `relu.out`, `relu.mask`, `pool.x`, `pool.arg_max` and `conv.col` are computed when someone
    looks. Backward: the network runs conv_relu_pool_backward; the layers' own backward methods
    work too (the unfused gradient)."""
    FN, C, FH, FW = np.shape(conv.W)
    N, _, H, W = np.shape(x)
    out_h, out_w = H + 2 * conv.pad - FH + 1, W + 2 * conv.pad - FW + 1
    shape = (N, FN, out_h // 2, out_w // 2)
    conv.x = x
    _claim(conv._ws, ("p", shape), ("argmax", shape, np.int32))
    p, argmax = _k.conv2d_relu_pool_forward(x, conv.W, conv.b, conv.pad, ws=conv._ws)
    conv._fused = (x, p, argmax)
    W0, b0, pad = np.array(conv.W, np.float32), np.array(conv.b, np.float32), conv.pad
    relu._out = None
    relu._make_out = lambda: _k.relu(_k.conv2d_forward(x, W0, b0, 1, pad))
    pool._x = lambda: relu.out
    pool.x_shape, pool._fused = (N, FN, out_h, out_w), conv._fused
    pool._arg_max = None
    pool._make_arg_max = lambda: _pool_arg_max(p, argmax, out_w)
    return p


def _pool_arg_max(p, argmax, conv_w):
    """Pooling's arg_max from the fused kernel's: the kernel pools before the ReLU (max and ReLU
    commute), so where a window's maximum is <= 0 it points at that maximum, while pooling the
    ReLU's output (all zeros there) picks the window's first element, as the book's does."""
    PH, PW = p.shape[2:]
    first = (np.arange(PH)[:, None] * (2 * conv_w) + np.arange(PW)[None, :] * 2).astype(np.int32)
    return np.where(p == 0, first, argmax)


def conv_relu_pool_ran(conv, relu, pool) -> bool:
    """Whether the last forward of these layers was conv_relu_pool_forward's."""
    return (type(conv) is Convolution and conv._fused is not None and type(pool) is Pooling
            and pool._fused is conv._fused)


def conv_relu_pool_backward(conv, dp):
    """conv.dW and conv.db from dp = dL/dp after conv_relu_pool_forward (no dx: the block opens
    the network)."""
    x, p, argmax = conv._fused
    conv.dW = conv.db = None
    _claim(conv._ws, ("dW", conv.W.shape), ("db", (conv.W.shape[0],)))
    conv.dW, conv.db = _k.conv2d_relu_pool_backward(dp, p, argmax, x, conv.W, conv.pad,
                                                    ws=conv._ws)
