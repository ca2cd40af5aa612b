"""Bad input to fastnn.kernels: one row per case, each a clear exception naming the argument, the
expected and the given value, raised before any unchecked compiled code runs."""

import numpy as np
import pytest

from fastnn import kernels as K

f32 = np.float32
x4 = np.zeros((2, 3, 8, 8), f32)
W4 = np.zeros((4, 3, 3, 3), f32)
b4 = np.zeros(4, f32)
y4 = np.zeros((2, 4, 8, 8), f32)
x2 = np.zeros((5, 6), f32)
W2 = np.zeros((6, 3), f32)
b2 = np.zeros(3, f32)
p = np.zeros(10, f32)
pooled, argmax = np.zeros((2, 3, 4, 4), f32), np.zeros((2, 3, 4, 4), np.int32)

CASES = [
    # (id, call, exception, pattern that must appear in the message)
    ("conv x rank 3", lambda: K.conv2d_forward(x4[0], W4, b4), ValueError, r"x: expected a 4-D"),
    ("conv W rank 2", lambda: K.conv2d_forward(x4, W2, b4), ValueError, r"W: expected a 4-D"),
    ("conv channel mismatch", lambda: K.conv2d_forward(x4, np.zeros((4, 2, 3, 3), f32), b4),
     ValueError, r"W: expected 3 input channels.*got 2"),
    ("conv bias shape", lambda: K.conv2d_forward(x4, W4, np.zeros(5, f32)), ValueError,
     r"b: expected shape \(4,\).*got \(5,\)"),
    ("conv int input", lambda: K.conv2d_forward(x4.astype(np.int32), W4, b4), TypeError,
     r"x: expected a floating-point.*int32"),
    ("conv bool input", lambda: K.conv2d_forward(x4.astype(bool), W4, b4), TypeError, r"x: .*bool"),
    ("conv object input", lambda: K.conv2d_forward(x4.astype(object), W4, b4), TypeError,
     r"x: .*object"),
    ("conv stride 0", lambda: K.conv2d_forward(x4, W4, b4, stride=0), ValueError,
     r"stride: expected an integer >= 1, got 0"),
    ("conv stride float", lambda: K.conv2d_forward(x4, W4, b4, stride=1.5), TypeError,
     r"stride: expected an integer"),
    ("conv negative pad", lambda: K.conv2d_forward(x4, W4, b4, pad=-1), ValueError,
     r"pad: expected an integer >= 0, got -1"),
    ("conv kernel too large", lambda: K.conv2d_forward(x4, np.zeros((4, 3, 11, 3), f32), b4, pad=1),
     ValueError, r"kernel: expected height kernel size <= padded input size 10.*got 11"),
    ("conv empty batch", lambda: K.conv2d_forward(x4[:0], W4, b4), ValueError, r"x: expected a non-empty"),
    ("conv backward dy shape", lambda: K.conv2d_backward(y4[:, :3], x4, W4, 1, 1), ValueError,
     r"dy: expected shape \(2, 4, 8, 8\).*got \(2, 3, 8, 8\)"),
    ("im2col kh 0", lambda: K.im2col(x4, 0, 3), ValueError, r"kh: expected an integer >= 1"),
    ("col2im cols shape", lambda: K.col2im(np.zeros((10, 27), f32), x4.shape, 3, 3), ValueError,
     r"cols: expected shape \(72, 27\)"),
    ("col2im bad x_shape", lambda: K.col2im(np.zeros((10, 27), f32), (2, 3, 8), 3, 3), ValueError,
     r"x_shape: expected a shape \(N, C, H, W\)"),
    ("dense feature mismatch", lambda: K.dense_forward(x2, np.zeros((5, 3), f32), b2), ValueError,
     r"W: expected 6 rows.*got shape \(5, 3\)"),
    ("dense bias shape", lambda: K.dense_forward(x2, W2, np.zeros(4, f32)), ValueError,
     r"b: expected shape \(3,\)"),
    ("dense unknown activation", lambda: K.dense_forward(x2, W2, b2, "tanh"), ValueError,
     r"activation: expected None, 'relu' or 'sigmoid', got 'tanh'"),
    ("dense x rank 1", lambda: K.dense_forward(x2[0], W2, b2), ValueError, r"x: expected a 2-D"),
    ("dense backward dy shape", lambda: K.dense_backward(np.zeros((5, 4), f32), x2, W2), ValueError,
     r"dy: expected shape \(5, 3\)"),
    ("pool too large", lambda: K.maxpool2d_forward(x4, 9), ValueError, r"pool_size: expected <="),
    ("pool size 0", lambda: K.maxpool2d_forward(x4, 0), ValueError, r"pool_size: expected an integer >= 1"),
    ("pool stride 0", lambda: K.maxpool2d_forward(x4, 2, 0), ValueError, r"stride: expected an integer >= 1"),
    ("pool argmax out of range", lambda: K.maxpool2d_backward(pooled, argmax + 1000, x4.shape),
     ValueError, r"argmax: expected indices in \[0, 64\)"),
    ("pool negative argmax", lambda: K.maxpool2d_backward(pooled, argmax - 1, x4.shape),
     ValueError, r"argmax: expected indices in \[0, 64\)"),
    ("pool argmax float", lambda: K.maxpool2d_backward(pooled, pooled, x4.shape), TypeError,
     r"argmax: expected the integer array"),
    ("pool dy shape", lambda: K.maxpool2d_backward(pooled[:1], argmax, x4.shape), ValueError,
     r"dy: expected shape \(2, 3, 4, 4\)"),
    ("relu backward shape", lambda: K.relu_backward(p, p[:5]), ValueError,
     r"dy: expected shape \(5,\)"),
    ("softmax rank 1", lambda: K.softmax(p), ValueError, r"x: expected a 2-D"),
    ("ce label too large", lambda: K.softmax_cross_entropy(x2, [0, 1, 2, 3, 6]), ValueError,
     r"labels: expected labels in \[0, 6\), got 6"),
    ("ce negative label", lambda: K.softmax_cross_entropy(x2, [0, -1, 2, 3, 4]), ValueError,
     r"labels: expected labels in \[0, 6\), got -1"),
    ("ce float labels", lambda: K.softmax_cross_entropy(x2, np.zeros(5)), TypeError,
     r"labels: expected integer class labels, got dtype float64"),
    ("ce label count", lambda: K.softmax_cross_entropy(x2, [0, 1]), ValueError,
     r"labels: expected shape \(5,\).*got \(2,\)"),
    ("ce empty batch", lambda: K.softmax_cross_entropy(x2[:0], []), ValueError, r"logits: expected a non-empty"),
    ("adam step 0", lambda: K.adam_update(p, p, p.copy(), p.copy(), 0), ValueError,
     r"step: expected an integer >= 1, got 0"),
    ("adam negative step", lambda: K.adam_update(p, p, p.copy(), p.copy(), -3), ValueError,
     r"step: expected an integer >= 1, got -3"),
    ("adam float64 param", lambda: K.adam_update(p.astype(np.float64), p, p.copy(), p.copy(), 1),
     TypeError, r"param: expected dtype float32.*got float64"),
    ("adam non-contiguous param", lambda: K.adam_update(np.zeros(20, f32)[::2], p, p.copy(), p.copy(), 1),
     ValueError, r"param: expected a C-contiguous array"),
    ("adam read-only param", lambda: _readonly_adam(), ValueError,
     r"param: expected a writeable array"),
    ("adam state shape", lambda: K.adam_update(p.copy(), p, np.zeros(9, f32), p.copy(), 1), ValueError,
     r"m: expected shape \(10,\), got \(9,\)"),
    ("adam grad shape", lambda: K.adam_update(p.copy(), p[:4], p.copy(), p.copy(), 1), ValueError,
     r"grad: expected shape \(10,\)"),
    ("adam beta1 = 1", lambda: K.adam_update(p.copy(), p, p.copy(), p.copy(), 1, beta1=1.0), ValueError,
     r"beta1: expected a finite number >= 0.0 and < 1.0, got 1.0"),
    ("adam nan lr", lambda: K.adam_update(p.copy(), p, p.copy(), p.copy(), 1, lr=float("nan")),
     ValueError, r"lr: expected a finite number"),
    ("sgd momentum without velocity", lambda: K.sgd_update(p.copy(), p, None, momentum=0.9), ValueError,
     r"velocity: expected a float32 array"),
    ("sgd nesterov without momentum", lambda: K.sgd_update(p.copy(), p, nesterov=True), ValueError,
     r"nesterov: expected momentum > 0"),
    ("batchnorm gamma shape", lambda: K.batchnorm_forward(x4, np.ones(2, f32), np.zeros(3, f32),
                                                          np.zeros(3, f32), np.ones(3, f32)),
     ValueError, r"gamma: expected shape \(3,\)"),
    ("batchnorm rank 3", lambda: K.batchnorm_forward(x4[0], np.ones(3, f32), np.zeros(3, f32),
                                                     np.zeros(3, f32), np.ones(3, f32)),
     ValueError, r"x: expected a 2 or 4-D"),
    ("dropout rate 1", lambda: K.dropout_forward(p, 1.0), ValueError,
     r"rate: expected a finite number >= 0.0 and < 1.0, got 1.0"),
    ("dropout bad rng", lambda: K.dropout_forward(p, 0.5, rng="seed"), TypeError,
     r"rng: expected a numpy.random.Generator"),
    ("dropout mask dtype", lambda: K.dropout_backward(p, p, 0.5), TypeError, r"mask: expected the uint8"),
]


def _readonly_adam():
    ro = np.zeros(10, f32)
    ro.flags.writeable = False
    K.adam_update(ro, p, p.copy(), p.copy(), 1)


@pytest.mark.parametrize("call,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(backend_name, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_non_contiguous_and_float64_inputs_are_converted_once(backend_name, rng):
    """Documented conversion: inputs of another float dtype or layout are copied to C-contiguous
    float32; the result equals the one for the converted array."""
    x = rng.standard_normal((2, 3, 10, 16))
    W = rng.standard_normal((4, 3, 3, 3)).astype(f32)
    xs = x[:, :, :, ::2]  # non-contiguous float64
    want = K.conv2d_forward(np.ascontiguousarray(xs, dtype=f32), W, b4, 1, 1)
    np.testing.assert_array_equal(K.conv2d_forward(xs, W, b4, 1, 1), want)
    a = rng.standard_normal((6, 5)).T  # Fortran-ordered
    np.testing.assert_array_equal(K.relu(a), np.maximum(a, 0).astype(f32))


def test_read_only_inputs_are_accepted(backend_name, rng):
    x = rng.standard_normal((4, 6)).astype(f32)
    W = rng.standard_normal((6, 3)).astype(f32)
    b = np.zeros(3, f32)
    for a in (x, W, b):
        a.flags.writeable = False
    y = K.dense_forward(x, W, b, "relu")
    np.testing.assert_allclose(y, np.maximum(x @ W, 0), rtol=1e-6, atol=1e-6)
    assert K.softmax_cross_entropy(x, np.array([0, 1, 2, 5]))[1].flags.writeable
