"""fastnn.optim (the optimizer classes over a model's flat parameter buffer) and fastnn.schedules:
several steps against float64 transcriptions of torch.optim's rules, one kernel call per step,
state_dict round trips, learning-rate schedules. The kernels' own update math is in
test_optim.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import randn

import fastnn
from fastnn import Sequential
from fastnn import kernels as K
from fastnn.kernels import optim as kernel_optim
from fastnn.layers import BatchNorm, Dense, ReLU
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD, AdaGrad, Adam, AdamW, RMSprop
from fastnn.schedules import CosineDecay, ExponentialDecay, StepDecay

STEPS = 6


def model(seed=0):
    # odd sizes so the flat buffer has alignment gaps between the views
    return Sequential([Dense(5, 7, seed=seed + 1), BatchNorm(7), ReLU(),
                       Dense(7, 3, seed=seed + 2)])


def fill_grads(m, rng):
    """Random gradients written through the layers' views (the gaps stay zero)."""
    for layer in m.layers:
        for g in layer.grads.values():
            g[...] = randn(rng, *g.shape)
    return m.parameters().grad.copy()


def gap_mask(m):
    P = m.parameters()
    mask = np.ones(P.data.size, bool)
    for _, _, off, shape in P.entries:
        mask[off : off + int(np.prod(shape))] = False
    return mask


# ---------------------------------------------------------------- float64 torch.optim rules

def ref_sgd(p, grads, lrs, momentum=0.0, nesterov=False, weight_decay=0.0):
    p, buf = p.astype(np.float64), None
    for g, lr in zip(grads, lrs):
        g = g.astype(np.float64) + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


def ref_adagrad(p, grads, lrs, eps=1e-10, weight_decay=0.0):
    p = p.astype(np.float64)
    s = np.zeros_like(p)
    for g, lr in zip(grads, lrs):
        g = g.astype(np.float64) + weight_decay * p
        s = s + g * g
        p = p - lr * g / (np.sqrt(s) + eps)
    return p


def ref_rmsprop(p, grads, lrs, alpha=0.99, eps=1e-8, weight_decay=0.0):
    p = p.astype(np.float64)
    sq = np.zeros_like(p)
    for g, lr in zip(grads, lrs):
        g = g.astype(np.float64) + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        p = p - lr * g / (np.sqrt(sq) + eps)
    return p


def ref_adam(p, grads, lrs, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    p = p.astype(np.float64)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g.astype(np.float64)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / math.sqrt(1 - b2**t) + eps
        p = p - lr / (1 - b1**t) * m / denom
    return p


CASES = {  # id: (optimizer factory(params, lr), float64 reference(p, grads, lrs))
    "sgd": (lambda P, lr: SGD(P, lr=lr), lambda p, g, lr: ref_sgd(p, g, lr)),
    "sgd_wd": (lambda P, lr: SGD(P, lr=lr, weight_decay=0.1),
               lambda p, g, lr: ref_sgd(p, g, lr, weight_decay=0.1)),
    "momentum": (lambda P, lr: SGD(P, lr=lr, momentum=0.9),
                 lambda p, g, lr: ref_sgd(p, g, lr, momentum=0.9)),
    "nesterov_wd": (lambda P, lr: SGD(P, lr=lr, momentum=0.8, nesterov=True, weight_decay=0.05),
                    lambda p, g, lr: ref_sgd(p, g, lr, 0.8, True, 0.05)),
    "adagrad": (lambda P, lr: AdaGrad(P, lr=lr), lambda p, g, lr: ref_adagrad(p, g, lr)),
    "adagrad_wd": (lambda P, lr: AdaGrad(P, lr=lr, eps=1e-6, weight_decay=0.1),
                   lambda p, g, lr: ref_adagrad(p, g, lr, 1e-6, 0.1)),
    "rmsprop": (lambda P, lr: RMSprop(P, lr=lr), lambda p, g, lr: ref_rmsprop(p, g, lr)),
    "rmsprop_alpha": (lambda P, lr: RMSprop(P, lr=lr, alpha=0.9, eps=1e-6, weight_decay=0.01),
                      lambda p, g, lr: ref_rmsprop(p, g, lr, 0.9, 1e-6, 0.01)),
    "adam": (lambda P, lr: Adam(P, lr=lr), lambda p, g, lr: ref_adam(p, g, lr)),
    "adam_l2": (lambda P, lr: Adam(P, lr=lr, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                lambda p, g, lr: ref_adam(p, g, lr, (0.8, 0.99), 1e-6, 0.1, False)),
    "adamw": (lambda P, lr: AdamW(P, lr=lr), lambda p, g, lr: ref_adam(p, g, lr, weight_decay=1e-2,
                                                                      decoupled=True)),
    "adamw_wd": (lambda P, lr: AdamW(P, lr=lr, weight_decay=0.2),
                 lambda p, g, lr: ref_adam(p, g, lr, weight_decay=0.2, decoupled=True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_match_torch_rules_in_float64(backend_name, case, rng):
    make, ref = CASES[case]
    m = model()
    P = m.parameters()
    p0 = P.data.copy()
    lr = 0.05
    opt = make(P, lr)
    grads = []
    for _ in range(STEPS):
        grads.append(fill_grads(m, rng))
        opt.step()
    expected = ref(p0, grads, [lr] * STEPS)
    np.testing.assert_allclose(P.data, expected, rtol=2e-5, atol=2e-6)
    assert opt.steps == STEPS
    np.testing.assert_array_equal(P.data[gap_mask(m)], 0)  # alignment gaps stay zero
    assert not np.allclose(P.data, p0)


@pytest.mark.parametrize("case", ["momentum", "adagrad", "rmsprop", "adam", "adamw"])
def test_steps_with_real_gradients_match_torch_rules(backend_name, case, rng):
    """Gradients from forward/backward of a real batch (recorded before each step)."""
    make, ref = CASES[case]
    m = model()
    P = m.parameters()
    p0 = P.data.copy()
    opt = make(P, 0.02)
    loss = SoftmaxCrossEntropy()
    x, y = randn(rng, 16, 5), rng.integers(0, 3, 16)
    grads = []
    for _ in range(STEPS):
        loss.forward(m.forward(x), y)
        m.backward(loss.backward())
        grads.append(P.grad.copy())
        opt.step()
    np.testing.assert_allclose(P.data, ref(p0, grads, [0.02] * STEPS), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_schedule_as_lr_is_used_per_step(backend_name, case, rng):
    make, ref = CASES[case]
    m = model()
    P = m.parameters()
    p0 = P.data.copy()
    sched = StepDecay(0.1, step_size=2, gamma=0.5, warmup_steps=2)
    opt = make(P, sched)
    grads, lrs = [], []
    for t in range(STEPS):
        assert opt.current_lr() == pytest.approx(sched(t))
        lrs.append(sched(t))
        grads.append(fill_grads(m, rng))
        opt.step()
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.05, 0.05])
    np.testing.assert_allclose(P.data, ref(p0, grads, lrs), rtol=2e-5, atol=2e-6)
    # and a constant lr would give something else
    assert not np.allclose(P.data, ref(p0, grads, [0.1] * STEPS), rtol=1e-4, atol=1e-5)


def test_sgd_schedule_step_sizes_exactly(backend_name):
    m = Sequential([Dense(3, 2, seed=0)])
    P = m.parameters()
    sched = ExponentialDecay(0.5, gamma=0.5)
    opt = SGD(P, lr=sched)
    for t in range(4):
        before = P.data.copy()
        for layer in m.layers:
            for g in layer.grads.values():
                g[...] = 1.0
        opt.step()
        delta = (before - P.data)[~gap_mask(m)]
        np.testing.assert_allclose(delta, 0.5 * 0.5**t, rtol=1e-6)


# ---------------------------------------------------------------- one kernel call per step

KERNEL_OF = {"sgd": "sgd_update", "momentum": "sgd_update", "nesterov_wd": "sgd_update",
             "adagrad": "adagrad_update", "rmsprop": "rmsprop_update", "adam": "adam_update",
             "adamw": "adam_update"}


@pytest.mark.parametrize("case", sorted(KERNEL_OF))
def test_step_is_one_kernel_call_over_the_flat_buffer(backend_name, case, rng, monkeypatch):
    make, _ = CASES[case]
    m = model()
    P = m.parameters()
    opt = make(P, 0.01)
    api_calls, backend_calls = [], []
    real_api = getattr(K, KERNEL_OF[case])
    real_impl = kernel_optim.impl

    def counting_api(param, grad, *args, **kwargs):
        api_calls.append((param, grad))
        return real_api(param, grad, *args, **kwargs)

    def counting_impl(name):
        fn = real_impl(name)

        def wrapper(*args):
            backend_calls.append((name, args[0].size))
            return fn(*args)
        return wrapper

    monkeypatch.setattr(K, KERNEL_OF[case], counting_api)
    monkeypatch.setattr(kernel_optim, "impl", counting_impl)
    for step in range(1, 4):
        fill_grads(m, rng)
        opt.step()
        assert len(api_calls) == step and len(backend_calls) == step
    for param, grad in api_calls:
        assert param is P.data and grad is P.grad
    assert {c for c in backend_calls} == {(KERNEL_OF[case], P.data.size)}


# ---------------------------------------------------------------- state_dict

@pytest.mark.parametrize("case", sorted(CASES))
def test_state_dict_round_trip_resumes_bitwise(backend_name, case, rng):
    make, _ = CASES[case]
    m = model()
    P = m.parameters()
    sched = CosineDecay(0.05, total_steps=8, warmup_steps=2)
    opt = make(P, sched)
    grads = [randn(rng, P.grad.size) for _ in range(6)]
    for g in grads[:3]:
        P.grad[...] = g
        opt.step()
    sd = opt.state_dict()
    data_at_3 = P.data.copy()
    for g in grads[3:]:
        P.grad[...] = g
        opt.step()
    uninterrupted = P.data.copy()

    m2 = model(seed=10)
    P2 = m2.parameters()
    P2.data[...] = data_at_3
    opt2 = make(P2, CosineDecay(0.05, total_steps=8, warmup_steps=2))
    opt2.load_state_dict(sd)
    assert opt2.steps == 3
    for g in grads[3:]:
        P2.grad[...] = g
        opt2.step()
    np.testing.assert_array_equal(P2.data, uninterrupted)

    # without the state, resuming differs (for the stateful optimizers and the schedule)
    m3 = model(seed=10)
    m3.parameters().data[...] = data_at_3
    opt3 = make(m3.parameters(), CosineDecay(0.05, total_steps=8, warmup_steps=2))
    for g in grads[3:]:
        m3.parameters().grad[...] = g
        opt3.step()
    assert not np.array_equal(m3.parameters().data, uninterrupted)


def test_state_dict_contents_are_copies():
    m = model()
    opt = Adam(m.parameters(), lr=0.01)
    m.parameters().grad[...] = 1.0
    opt.step()
    sd = opt.state_dict()
    assert sd["type"] == "Adam" and sd["steps"] == 1 and sd["size"] == m.parameters().data.size
    assert sd["hyperparameters"]["betas"] == [0.9, 0.999]
    assert set(k for k in sd if k.startswith("state.")) == {"state.m", "state.v"}
    m_before = sd["state.m"].copy()
    opt.step()
    np.testing.assert_array_equal(sd["state.m"], m_before)  # not a live view
    assert not np.array_equal(opt.state["m"], m_before)


def test_state_names_per_optimizer():
    P = model().parameters()
    assert {k for k in SGD(P).state_dict() if k.startswith("state.")} == set()
    assert {k for k in SGD(P, momentum=0.9).state_dict() if k.startswith("state.")} == {
        "state.velocity"}
    assert {k for k in AdaGrad(P).state_dict() if k.startswith("state.")} == {"state.sum_sq"}
    assert {k for k in RMSprop(P).state_dict() if k.startswith("state.")} == {"state.sq_avg"}
    assert AdamW(P).state_dict()["type"] == "AdamW"


def test_load_state_dict_rejects_wrong_type_and_size():
    a, b = model(), Sequential([Dense(3, 2)])
    adam = Adam(a.parameters())
    with pytest.raises(ValueError, match="Adam"):
        adam.load_state_dict(SGD(a.parameters(), momentum=0.9).state_dict())
    with pytest.raises(ValueError, match="Adam"):
        adam.load_state_dict(AdamW(a.parameters()).state_dict())
    with pytest.raises(ValueError, match="parameters"):
        adam.load_state_dict(Adam(b.parameters()).state_dict())
    sd = adam.state_dict()
    sd["state.v"] = sd["state.v"][:-1]
    with pytest.raises(ValueError, match="v"):
        adam.load_state_dict(sd)
    # a failed load leaves the optimizer usable and unchanged
    assert adam.steps == 0


def test_failed_load_state_dict_leaves_the_state_untouched():
    m = model()
    adam = Adam(m.parameters(), lr=0.01)
    m.parameters().grad[...] = 1.0
    adam.step()
    before = {k: a.copy() for k, a in adam.state.items()}
    other = Adam(m.parameters(), lr=0.01)
    sd = other.state_dict()
    sd["state.m"] = np.full_like(sd["state.m"], 5.0)
    sd["state.v"] = sd["state.v"][:-1]
    with pytest.raises(ValueError):
        adam.load_state_dict(sd)
    for k in before:
        np.testing.assert_array_equal(adam.state[k], before[k], err_msg=k)
    assert adam.steps == 1


@pytest.mark.parametrize("bad", [None, "state", [1, 2]])
def test_load_state_dict_of_a_non_dict_raises_type_error(bad):
    opt = Adam(model().parameters())
    with pytest.raises(TypeError, match="state_dict"):
        opt.load_state_dict(bad)


def test_load_state_dict_with_missing_state_raises_value_error():
    P = model().parameters()
    with pytest.raises(ValueError, match="velocity"):
        SGD(P, momentum=0.9).load_state_dict(SGD(P).state_dict())


def test_zero_grad():
    m = model()
    opt = SGD(m.parameters())
    fill_grads(m, np.random.default_rng(0))
    opt.zero_grad()
    np.testing.assert_array_equal(m.parameters().grad, 0)


# ---------------------------------------------------------------- constructor validation

@pytest.mark.parametrize("factory,exc,arg", [
    (lambda P: SGD(P, lr=-0.1), ValueError, "lr"),
    (lambda P: SGD(P, lr=float("nan")), ValueError, "lr"),
    (lambda P: SGD(P, lr="0.1"), TypeError, "lr"),
    (lambda P: SGD(P, momentum=-0.5), ValueError, "momentum"),
    (lambda P: SGD(P, nesterov=True), ValueError, "nesterov"),
    (lambda P: SGD(P, weight_decay=-1), ValueError, "weight_decay"),
    (lambda P: AdaGrad(P, eps=-1), ValueError, "eps"),
    (lambda P: RMSprop(P, alpha=1.5), ValueError, "alpha"),
    (lambda P: Adam(P, betas=(0.9,)), ValueError, "betas"),
    (lambda P: Adam(P, betas=(1.0, 0.999)), ValueError, "betas"),
    (lambda P: Adam(P, betas=0.9), ValueError, "betas"),
    (lambda P: Adam(P, eps=float("inf")), ValueError, "eps"),
    (lambda P: AdamW(P, weight_decay=-0.01), ValueError, "weight_decay"),
    (lambda P: Adam(P.data), TypeError, "params"),
    (lambda P: SGD([P.data]), TypeError, "params"),
])
def test_bad_optimizer_arguments(factory, exc, arg):
    with pytest.raises(exc, match=arg):
        factory(model().parameters())


def test_defaults_match_the_contract():
    P = model().parameters()
    assert SGD(P).lr == 0.01 and SGD(P).momentum == 0.0 and SGD(P).weight_decay == 0.0
    assert AdaGrad(P).lr == 0.01 and AdaGrad(P).eps == 1e-10
    r = RMSprop(P)
    assert (r.lr, r.alpha, r.eps) == (0.01, 0.99, 1e-8)
    a = Adam(P)
    assert (a.lr, a.betas, a.eps, a.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.0)
    w = AdamW(P)
    assert (w.lr, w.betas, w.eps, w.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)


# ---------------------------------------------------------------- schedules

def test_step_decay_values():
    s = StepDecay(0.1, step_size=3, gamma=0.5)
    assert [s(t) for t in range(8)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 2)


def test_exponential_decay_values():
    s = ExponentialDecay(0.2, gamma=0.9)
    assert [s(t) for t in range(5)] == pytest.approx([0.2 * 0.9**t for t in range(5)])


def test_cosine_decay_values():
    s = CosineDecay(1.0, total_steps=10, min_lr=0.1)
    assert s(0) == pytest.approx(1.0)
    assert s(5) == pytest.approx(0.55)
    assert s(10) == pytest.approx(0.1)
    assert s(25) == pytest.approx(0.1)  # flat after the end
    vals = [s(t) for t in range(11)]
    assert all(a > b for a, b in zip(vals, vals[1:]))
    ref = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t / 10)) for t in range(11)]
    assert vals == pytest.approx(ref)


@pytest.mark.parametrize("sched,after", [
    (StepDecay(0.4, step_size=2, gamma=0.5, warmup_steps=4), [0.4, 0.4, 0.2, 0.2, 0.1]),
    (ExponentialDecay(0.4, gamma=0.5, warmup_steps=4), [0.4, 0.2, 0.1, 0.05, 0.025]),
    (CosineDecay(0.4, total_steps=4, warmup_steps=4),
     [0.4, 0.2 + 0.2 * math.cos(math.pi / 4), 0.2, 0.2 - 0.2 * math.cos(math.pi / 4), 0.0]),
])
def test_linear_warmup_then_decay(sched, after):
    assert [sched(t) for t in range(4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert [sched(t) for t in range(4, 9)] == pytest.approx(after, abs=1e-12)


@pytest.mark.parametrize("factory,exc,arg", [
    (lambda: StepDecay(0.1, step_size=0), ValueError, "step_size"),
    (lambda: StepDecay(-0.1, step_size=2), ValueError, "lr"),
    (lambda: StepDecay(0.1, step_size=2, gamma=-1), ValueError, "gamma"),
    (lambda: StepDecay(0.1, step_size=1.5), TypeError, "step_size"),
    (lambda: ExponentialDecay(0.1, gamma=float("nan")), ValueError, "gamma"),
    (lambda: ExponentialDecay(0.1, gamma=0.9, warmup_steps=-1), ValueError, "warmup_steps"),
    (lambda: CosineDecay(0.1, total_steps=0), ValueError, "total_steps"),
    (lambda: CosineDecay(0.1, total_steps=5, min_lr=-1), ValueError, "min_lr"),
])
def test_bad_schedule_arguments(factory, exc, arg):
    with pytest.raises(exc, match=arg):
        factory()


@pytest.mark.parametrize("sched", [StepDecay(0.1, step_size=3, gamma=0.3, warmup_steps=2),
                                   ExponentialDecay(0.2, gamma=0.95, warmup_steps=1),
                                   CosineDecay(0.3, total_steps=7, min_lr=0.01, warmup_steps=3)])
def test_schedule_config_round_trip(sched):
    again = type(sched)(**sched.get_config())
    assert [again(t) for t in range(12)] == [sched(t) for t in range(12)]


def test_schedule_with_fit_advances_per_step(rng):
    m = Sequential([Dense(4, 3, seed=0)])
    x, y = randn(rng, 20, 4), rng.integers(0, 3, 20)
    opt = SGD(m.parameters(), lr=CosineDecay(0.1, total_steps=10))
    m.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=opt, epochs=2, batch_size=8, verbose=0)
    assert opt.steps == 6  # ceil(20 / 8) steps per epoch
    assert opt.current_lr() == pytest.approx(CosineDecay(0.1, total_steps=10)(6))


def test_fastnn_exports():
    assert fastnn.optim.OPTIMIZER_TYPES.keys() >= {"SGD", "AdaGrad", "RMSprop", "Adam", "AdamW"}
    assert fastnn.schedules.SCHEDULE_TYPES.keys() >= {"StepDecay", "ExponentialDecay",
                                                      "CosineDecay"}
