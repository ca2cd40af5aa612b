"""softmax_cross_entropy, sigmoid binary cross-entropy and MSE on every backend."""

import numpy as np
import pytest
from conftest import assert_grad_close, numerical_grad, randn

from fastnn import backend
from fastnn import kernels as K
from fastnn import reference as R


def ce64(logits, labels):
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    n = len(labels)
    loss = (lse - z[np.arange(n), labels]).mean()
    p = np.exp(z - lse[:, None])
    p[np.arange(n), labels] -= 1
    return loss, p / n


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (3, 5), (64, 10), (4096, 10), (257, 1000)])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_softmax_cross_entropy(backend_name, shape, scale, rng):
    n, c = shape
    logits = randn(rng, n, c, scale=scale)
    labels = rng.integers(0, c, n)
    labels[0], labels[-1] = 0, c - 1  # both ends of the label range
    loss, d = K.softmax_cross_entropy(logits, labels)
    want_loss, want_d = ce64(logits, labels)
    assert isinstance(loss, float) and d.dtype == np.float32 and d.shape == shape
    assert np.isfinite(loss)
    assert abs(loss - want_loss) <= 1e-5 * max(1.0, abs(want_loss))
    np.testing.assert_allclose(d, want_d, rtol=1e-5, atol=1e-7)


def test_softmax_cross_entropy_accepts_any_integer_label_dtype(backend_name, rng):
    logits = randn(rng, 6, 4)
    ref = K.softmax_cross_entropy(logits, np.array([0, 1, 2, 3, 0, 1]))[0]
    for dt in (np.uint8, np.int16, np.int32, np.uint64):
        assert K.softmax_cross_entropy(logits, np.array([0, 1, 2, 3, 0, 1], dt))[0] == ref


def test_softmax_cross_entropy_gradient_by_central_differences(rng):
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 2, 3])

    def loss():
        return R.softmax_cross_entropy(logits, labels, np.empty((5, 4)))

    d = np.empty((5, 4))
    R.softmax_cross_entropy(logits, labels, d)
    assert_grad_close(d, *numerical_grad(loss, logits))


@pytest.mark.parametrize("shape", [(1,), (9,), (16, 3), (50000,)])
def test_sigmoid_binary_cross_entropy(backend_name, shape, rng):
    z = randn(rng, *shape, scale=20)
    t = rng.integers(0, 2, shape).astype(np.float32)
    loss, d = K.sigmoid_binary_cross_entropy(z, t)
    z64 = z.astype(np.float64)
    want = np.mean(np.logaddexp(0, z64) - z64 * t)
    assert abs(loss - want) <= 1e-5 * max(1, abs(want))
    # p - t cancels when p rounds near t in float32: an absolute tolerance of float32 eps / n
    np.testing.assert_allclose(d, (1 / (1 + np.exp(-z64)) - t) / z.size, rtol=1e-5,
                               atol=2e-7 / z.size)
    assert d.dtype == np.float32


def test_bce_and_mse_gradients_by_central_differences(rng):
    z, t = rng.standard_normal(12) * 4, rng.integers(0, 2, 12).astype(np.float64)
    d = np.empty(12)
    R.sigmoid_binary_cross_entropy(z, t, d)
    assert_grad_close(d, *numerical_grad(lambda: R.sigmoid_binary_cross_entropy(z, t, np.empty(12)), z))
    R.mse(z, t, d)
    assert_grad_close(d, *numerical_grad(lambda: R.mse(z, t, np.empty(12)), z))


@pytest.mark.parametrize("shape", [(1,), (5, 3), (40000,)])
def test_mse(backend_name, shape, rng):
    p, t = randn(rng, *shape), randn(rng, *shape)
    loss, d = K.mse(p, t)
    diff = p.astype(np.float64) - t
    assert abs(loss - np.mean(diff**2)) <= 1e-5 * max(1.0, np.mean(diff**2))
    np.testing.assert_allclose(d, 2 * diff / p.size, rtol=1e-5, atol=1e-9)


def test_losses_match_torch_when_installed(rng):
    torch = pytest.importorskip("torch")
    logits, labels = randn(rng, 64, 10, scale=3), rng.integers(0, 10, 64)
    t = torch.tensor(logits, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    lt.backward()
    for name in backend.available():
        with backend.using(name):
            loss, d = K.softmax_cross_entropy(logits, labels)
        assert abs(loss - lt.item()) < 1e-5
        np.testing.assert_allclose(d, t.grad.numpy(), rtol=1e-4, atol=1e-7)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

finite32 = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.integers(1, 40), c=st.integers(1, 30))
def test_softmax_cross_entropy_random_all_backends_agree(data, n, c):
    logits = data.draw(hnp.arrays(np.float32, (n, c), elements=finite32))
    labels = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    want_loss, want_d = ce64(logits, labels)
    for name in backend.available():
        with backend.using(name):
            loss, d = K.softmax_cross_entropy(logits, labels)
            p = K.softmax(logits)
        assert np.isfinite(loss)
        assert abs(loss - want_loss) <= 1e-5 * max(1.0, abs(want_loss)), name
        np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5, err_msg=name)
