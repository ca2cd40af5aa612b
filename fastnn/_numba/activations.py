"""Elementwise activations (flat 1-D) and the row softmax (2-D) for the Numba backend.

Also home of the small float32 math helpers that the other Numba topics reuse (losses, norm):

* ``_expf``: a branch-free float32 exp (Cephes range reduction + degree-6 polynomial evaluated
  with explicit FMAs, ~1 ulp on the normal range, inf on overflow, NaN passes through). Numba
  calls libm's scalar ``expf`` (no SVML here), which blocks loop vectorisation; this one
  vectorises (AVX-512 on this machine).
* ``_tanhf``: branch-free Cephes tanhf built on ``_expf`` (odd polynomial for |x| < 0.625).
* ``_maxf``: the maximum of a float32 range through an order-preserving int32 key (integer max
  reductions vectorise without fast-math; float max reductions do not). A NaN with a clear sign
  bit wins, as in ``ndarray.max``.
* ``_sum_f64`` / ``_dot_f64``: float64 sums of a float32 range with ``fastmath={'reassoc'}`` only
  (no nnan/ninf: inf/NaN semantics are kept). The flag lets LLVM vectorise the reduction; the
  grouping is fixed by the compiled code and the caller's fixed block boundaries, so results are
  bitwise identical on any thread count. These helpers hold nothing but loads, one product and the
  sum, so reassociation cannot touch any other arithmetic.

Every kernel uses ``error_model="numpy"``: with Numba's default (Python) error model each float
division carries a ZeroDivisionError check that stops the loop from vectorising (measured 10x).
Helpers are plain jitted functions; LLVM inlines them into the calling loops.

Serial kernels (``_*_ser``) run below PARALLEL_MIN_WORK and never enter a parallel region; the
parallel ones (``_*_par``) split the flat range into fixed CHUNK-sized pieces with prange. Both
call the same range helper, so they produce bitwise the same output.

Note on ``cache=True``: Numba's cache is keyed on the file of each jitted function; kernels in
losses.py / norm.py that call these helpers do not notice edits to this file (clear the cache
after editing the helpers during development).
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._common import PARALLEL_MIN_WORK

CHUNK = 4096  # elements per prange task of the flat elementwise kernels (fixed, not thread-derived)

_f32 = np.float32
_i32 = np.int32


# ---------------------------------------------------------------------------------------------
# bit casts and float32 math helpers
# ---------------------------------------------------------------------------------------------

@intrinsic
def _i32_as_f32(typingctx, v):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _f32_as_i32(typingctx, v):
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma.f32: vfmadd here); used in the polynomials only."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.fma.f32")
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True, nogil=True, error_model="numpy")
def _expf(x):
    """float32 exp: exact-ish on the normal range, 0 below -104, inf above 88.72, NaN -> NaN."""
    xc = x if x > _f32(-104.0) else _f32(-104.0)
    xc = xc if xc < _f32(89.0) else _f32(89.0)
    fn = np.floor(_fma(xc, _f32(1.44269504088896341), _f32(0.5)))
    r = _fma(fn, _f32(-0.693359375), xc)  # Cody-Waite: ln2 = 0.693359375 - 2.12194440e-4
    r = _fma(fn, _f32(2.12194440e-4), r)
    z = r * r
    p = _f32(1.9875691500e-4)
    p = _fma(p, r, _f32(1.3981999507e-3))
    p = _fma(p, r, _f32(8.3334519073e-3))
    p = _fma(p, r, _f32(4.1665795894e-2))
    p = _fma(p, r, _f32(1.6666665459e-1))
    p = _fma(p, r, _f32(5.0000001201e-1))
    y = _fma(p, z, r) + _f32(1.0)
    # y * 2**n in two steps so that n in [-150, 128] needs no special case (denormals, overflow)
    n = _i32(fn)
    n1 = n >> _i32(1)
    n2 = n - n1
    y = y * _i32_as_f32((n1 + _i32(127)) << _i32(23))
    y = y * _i32_as_f32((n2 + _i32(127)) << _i32(23))
    return y if x == x else x


@njit(cache=True, nogil=True, error_model="numpy")
def _exp_core(x):
    """float32 exp for x already known to lie in [-87, 88] (no clamps, no NaN test)."""
    fn = np.floor(_fma(x, _f32(1.44269504088896341), _f32(0.5)))
    r = _fma(fn, _f32(-0.693359375), x)
    r = _fma(fn, _f32(2.12194440e-4), r)
    z = r * r
    p = _f32(1.9875691500e-4)
    p = _fma(p, r, _f32(1.3981999507e-3))
    p = _fma(p, r, _f32(8.3334519073e-3))
    p = _fma(p, r, _f32(4.1665795894e-2))
    p = _fma(p, r, _f32(1.6666665459e-1))
    p = _fma(p, r, _f32(5.0000001201e-1))
    y = _fma(p, z, r) + _f32(1.0)
    return y * _i32_as_f32((_i32(fn) + _i32(127)) << _i32(23))


@njit(cache=True, nogil=True, error_model="numpy")
def _tanhf(x):
    """float32 tanh (Cephes tanhf), branch-free; NaN -> NaN, +-inf -> +-1."""
    a = abs(x)
    # large branch: 1 - 2/(exp(2a) + 1); a is clamped to 20 (the result is then exactly 1), a
    # NaN lands on 20 here and is returned by the small branch below
    ac = a if a < _f32(20.0) else _f32(20.0)
    s = _exp_core(ac + ac)
    big = _f32(1.0) - _f32(2.0) / (s + _f32(1.0))
    big = big if x >= _f32(0.0) else -big
    # small branch (|x| < 0.625): odd polynomial
    z = x * x
    p = _f32(-5.70498872745e-3)
    p = _fma(p, z, _f32(2.06390887954e-2))
    p = _fma(p, z, _f32(-5.37397155531e-2))
    p = _fma(p, z, _f32(1.33314422036e-1))
    p = _fma(p, z, _f32(-3.33332819422e-1))
    small = _fma(p * z, x, x)
    return big if a >= _f32(0.625) else small


@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoidf(x):
    """Stable float32 logistic: exp only of -|x| (never overflows)."""
    e = _expf(-abs(x))
    num = _f32(1.0) if x >= _f32(0.0) else e
    return num / (_f32(1.0) + e)


@njit(cache=True, nogil=True, error_model="numpy")
def _maxf(a):
    """max(a) (a non-empty) via order-preserving int32 keys; vectorises without fast-math."""
    m = _i32(-2147483648)
    for i in range(a.size):
        k = _f32_as_i32(a[i])
        k = k ^ ((k >> _i32(31)) & _i32(0x7FFFFFFF))
        m = k if k > m else m
    return _i32_as_f32(m ^ ((m >> _i32(31)) & _i32(0x7FFFFFFF)))


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _sum_f64(a):
    """sum(float64(a)); reassoc only, for vectorisation (fixed grouping, see module doc)."""
    acc = 0.0
    for i in range(a.size):
        acc += np.float64(a[i])
    return acc


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _dot_f64(a, b):
    """sum(float64(a[i]) * float64(b[i])) (the float64 product of two float32 is exact)."""
    acc = 0.0
    for i in range(a.size):
        acc += np.float64(a[i]) * np.float64(b[i])
    return acc


# ---------------------------------------------------------------------------------------------
# relu
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _relu_rng(x, y):
    for i in range(x.size):
        v = x[i]
        y[i] = _f32(0.0) if v < _f32(0.0) else v  # NaN passes through, as np.maximum


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_ser(x, y):
    _relu_rng(x, y)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _relu_par(x, y):
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _relu_rng(x[s:e], y[s:e])


def relu(x, y):
    if x.size >= PARALLEL_MIN_WORK:
        _relu_par(x, y)
    else:
        _relu_ser(x, y)


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_bwd_rng(dy, y, dx):
    for i in range(dy.size):
        # dy * (y > 0), as the reference (a NaN/inf dy at a dead unit gives NaN, like NumPy)
        dx[i] = dy[i] * (_f32(1.0) if y[i] > _f32(0.0) else _f32(0.0))


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_bwd_ser(dy, y, dx):
    _relu_bwd_rng(dy, y, dx)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _relu_bwd_par(dy, y, dx):
    n = dy.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _relu_bwd_rng(dy[s:e], y[s:e], dx[s:e])


def relu_backward(dy, y, dx):
    if dy.size >= PARALLEL_MIN_WORK:
        _relu_bwd_par(dy, y, dx)
    else:
        _relu_bwd_ser(dy, y, dx)


# ---------------------------------------------------------------------------------------------
# sigmoid
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid_rng(x, y):
    for i in range(x.size):
        y[i] = _sigmoidf(x[i])


@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid_ser(x, y):
    _sigmoid_rng(x, y)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sigmoid_par(x, y):
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _sigmoid_rng(x[s:e], y[s:e])


def sigmoid(x, y):
    if x.size >= PARALLEL_MIN_WORK:
        _sigmoid_par(x, y)
    else:
        _sigmoid_ser(x, y)


@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid_bwd_rng(dy, y, dx):
    for i in range(dy.size):
        v = y[i]
        dx[i] = dy[i] * v * (_f32(1.0) - v)


@njit(cache=True, nogil=True, error_model="numpy")
def _sigmoid_bwd_ser(dy, y, dx):
    _sigmoid_bwd_rng(dy, y, dx)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _sigmoid_bwd_par(dy, y, dx):
    n = dy.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _sigmoid_bwd_rng(dy[s:e], y[s:e], dx[s:e])


def sigmoid_backward(dy, y, dx):
    if dy.size >= PARALLEL_MIN_WORK:
        _sigmoid_bwd_par(dy, y, dx)
    else:
        _sigmoid_bwd_ser(dy, y, dx)


# ---------------------------------------------------------------------------------------------
# tanh
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _tanh_rng(x, y):
    for i in range(x.size):
        y[i] = _tanhf(x[i])


@njit(cache=True, nogil=True, error_model="numpy")
def _tanh_ser(x, y):
    _tanh_rng(x, y)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _tanh_par(x, y):
    n = x.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _tanh_rng(x[s:e], y[s:e])


def tanh(x, y):
    if x.size >= PARALLEL_MIN_WORK:
        _tanh_par(x, y)
    else:
        _tanh_ser(x, y)


@njit(cache=True, nogil=True, error_model="numpy")
def _tanh_bwd_rng(dy, y, dx):
    for i in range(dy.size):
        v = y[i]
        dx[i] = dy[i] * (_f32(1.0) - v * v)


@njit(cache=True, nogil=True, error_model="numpy")
def _tanh_bwd_ser(dy, y, dx):
    _tanh_bwd_rng(dy, y, dx)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _tanh_bwd_par(dy, y, dx):
    n = dy.size
    for c in prange((n + CHUNK - 1) // CHUNK):
        s = c * CHUNK
        e = min(s + CHUNK, n)
        _tanh_bwd_rng(dy[s:e], y[s:e], dx[s:e])


def tanh_backward(dy, y, dx):
    if dy.size >= PARALLEL_MIN_WORK:
        _tanh_bwd_par(dy, y, dx)
    else:
        _tanh_bwd_ser(dy, y, dx)


# ---------------------------------------------------------------------------------------------
# softmax over rows
# ---------------------------------------------------------------------------------------------

@njit(cache=True, nogil=True, error_model="numpy")
def _softmax_row(x, p, r):
    xr = x[r]
    pr = p[r]
    C = xr.shape[0]
    m = _maxf(xr)
    for j in range(C):
        pr[j] = _expf(xr[j] - m)
    ssum = _f32(_sum_f64(pr))
    for j in range(C):
        pr[j] = pr[j] / ssum


@njit(cache=True, nogil=True, error_model="numpy")
def _softmax_ser(x, p):
    for r in range(x.shape[0]):
        _softmax_row(x, p, r)


@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _softmax_par(x, p):
    for r in prange(x.shape[0]):
        _softmax_row(x, p, r)


def softmax(x, p):
    if x.size >= PARALLEL_MIN_WORK:
        _softmax_par(x, p)
    else:
        _softmax_ser(x, p)
