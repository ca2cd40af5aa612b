"""Every kernel on every backend returns float32 (float64 input is converted once, never
propagated), and compiled kernels give bitwise the same result on 1 and 2 threads."""

import numpy as np
import pytest

from fastnn import backend
from fastnn import kernels as K


def all_kernel_outputs(dtype, seed=0):
    """Run every public kernel once on inputs of `dtype` (large enough for the parallel paths);
    return {name: output array(s)}."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x, W, b = r(16, 8, 28, 28), r(16, 8, 3, 3), r(16)
    out = {}
    out["im2col"] = K.im2col(x, 3, 3, 1, 1)
    out["col2im"] = K.col2im(out["im2col"], x.shape, 3, 3, 1, 1)
    y = out["conv2d_forward"] = K.conv2d_forward(x, W, b, 1, 1)
    out["conv2d_backward"] = K.conv2d_backward(r(*y.shape), x, W, 1, 1)
    xd, Wd, bd = r(256, 300), r(300, 200), r(200)
    for act in (None, "relu", "sigmoid"):
        out[f"dense_forward_{act}"] = K.dense_forward(xd, Wd, bd, act)
    out["dense_backward"] = K.dense_backward(r(256, 200), xd, Wd)
    yp, arg = K.maxpool2d_forward(x, 2)
    out["maxpool2d_forward"] = yp
    out["maxpool2d_backward"] = K.maxpool2d_backward(r(*yp.shape), arg, x.shape, 2)
    for name in ("relu", "sigmoid", "tanh"):
        yy = out[name] = getattr(K, name)(x)
        out[name + "_backward"] = getattr(K, name + "_backward")(r(*x.shape), yy)
    logits = r(4096, 100) * 10
    out["softmax"] = K.softmax(logits)
    out["softmax_cross_entropy"] = K.softmax_cross_entropy(logits, rng.integers(0, 100, 4096))
    out["sigmoid_binary_cross_entropy"] = K.sigmoid_binary_cross_entropy(
        logits, (rng.random(logits.shape) < 0.5).astype(dtype))
    out["mse"] = K.mse(logits, r(*logits.shape))
    ybn, mean, invstd = K.batchnorm_forward(x, r(8), r(8), np.zeros(8, np.float32),
                                            np.ones(8, np.float32))
    out["batchnorm_forward"] = (ybn, mean, invstd)
    out["batchnorm_backward"] = K.batchnorm_backward(r(*x.shape), x, r(8), mean, invstd)
    yd, mask = K.dropout_forward(x, 0.3, 5)
    out["dropout"] = (yd, K.dropout_backward(r(*x.shape), mask, 0.3))
    n = 200_000
    p = rng.standard_normal(n).astype(np.float32)
    st = [np.zeros(n, np.float32) for _ in range(2)]
    for step in (1, 2):
        K.adam_update(p, r(n), st[0], st[1], step, weight_decay=0.01)
    K.sgd_update(p, r(n), st[0], 0.01, 0.9, True, 0.001)
    K.adagrad_update(p, r(n), st[1])
    K.rmsprop_update(p, r(n), np.zeros(n, np.float32))
    out["optimizers"] = (p, *st)
    return out


def _arrays(v):
    if isinstance(v, tuple):
        return [a for a in v if isinstance(a, np.ndarray)]
    return [v]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kernel_returns_float32(backend_name, dtype):
    for name, v in all_kernel_outputs(dtype).items():
        for a in _arrays(v):
            if a.dtype in (np.uint8, np.int32):  # masks and argmax
                continue
            assert a.dtype == np.float32, f"{name} returned {a.dtype} on {backend_name}"
        if isinstance(v, tuple) and isinstance(v[0], float):
            assert isinstance(v[0], float)


def test_compiled_kernels_are_bitwise_deterministic_across_thread_counts(compiled_backend):
    before = backend.get_num_threads()
    try:
        backend.set_num_threads(1)
        one = all_kernel_outputs(np.float32, seed=3)
        backend.set_num_threads(2)
        two = all_kernel_outputs(np.float32, seed=3)
    finally:
        backend.set_num_threads(before)
    for name in one:
        if isinstance(one[name], tuple) and isinstance(one[name][0], float):
            assert one[name][0] == two[name][0], name
        for a, b in zip(_arrays(one[name]), _arrays(two[name])):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} differs between 1 and 2 threads")
