"""train_on_batch and predict_on_batch allocate nothing once warm (issue 5): after 3 warm-up calls,
1,000 more grow tracemalloc's traced memory by < 16 KB and create no NumPy array above 1 KB.

"No new array" is counted, not inferred: during the calls NumPy's data allocator is swapped for one
that counts every allocation above 1 KB and then calls NumPy's own (the PyDataMem_Handler API of
NumPy >= 1.22, reached through ctypes). So an array that lives only for a moment inside a step
counts too, which a tracemalloc snapshot (live blocks only) would miss. Arrays that Numba allocates
inside jitted code bypass NumPy's allocator: Numba's own allocation statistics count those. The
tracemalloc part: NumPy reports its data allocations to tracemalloc (`np.lib.tracemalloc_domain`),
so the growth includes arrays kept alive; it is read after `gc.collect()`, which also empties the
interpreter's free lists (freed tuples parked there are not memory a step keeps).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import tracemalloc
from ctypes import CFUNCTYPE, POINTER, PYFUNCTYPE, c_char, c_size_t, c_uint8, c_void_p, py_object

import numpy as np
import pytest

from fastnn import Sequential, backend, recipes
from fastnn.layers import Dense, ReLU
from fastnn.losses import MeanSquaredError, SoftmaxCrossEntropy
from fastnn.optim import SGD, Adam

WARMUP, CALLS = 3, 1000
GROWTH_LIMIT = 16 * 1024
ARRAY_LIMIT = 1024


def tiny():
    """The issue's 4-64-64-2 ReLU network."""
    return Sequential([Dense(4, 64, seed=1), ReLU(), Dense(64, 64, seed=2), ReLU(),
                       Dense(64, 2, seed=3)])


MODELS = {
    "tiny": (tiny, (32, 4), 2),
    "mlp": (lambda: recipes.mlp(seed=0, dropout=0.0), (16, 1, 28, 28), 10),
    "cnn": (lambda: recipes.cnn(seed=0, batchnorm=False, dropout=0.0), (4, 1, 28, 28), 10),
}


# --- counting NumPy's data allocations -------------------------------------------------------

class _Allocator(ctypes.Structure):  # PyDataMemAllocator
    _fields_ = [("ctx", c_void_p), ("malloc", c_void_p), ("calloc", c_void_p),
                ("realloc", c_void_p), ("free", c_void_p)]


class _Handler(ctypes.Structure):  # PyDataMem_Handler
    _fields_ = [("name", c_char * 127), ("version", c_uint8), ("allocator", _Allocator)]


_SET_HANDLER, _GET_HANDLER = 304, 305  # indices in NumPy's C-API table (numpy_api.py)


def _counting_handler():
    """(capsule of a handler counting allocations > ARRAY_LIMIT bytes, [count], set_handler).
    Only malloc and calloc count; realloc and free stay NumPy's own C functions, so an array
    allocated while counting is freed later without calling back into Python."""
    api = ctypes.pythonapi
    api.PyCapsule_GetPointer.restype, api.PyCapsule_GetPointer.argtypes = \
        c_void_p, [py_object, ctypes.c_char_p]
    api.PyCapsule_New.restype, api.PyCapsule_New.argtypes = py_object, [c_void_p, ctypes.c_char_p,
                                                                        c_void_p]
    table = ctypes.cast(api.PyCapsule_GetPointer(np._core._multiarray_umath._ARRAY_API, None),
                        POINTER(c_void_p))
    set_handler = PYFUNCTYPE(py_object, py_object)(table[_SET_HANDLER])
    default = _Handler.from_address(api.PyCapsule_GetPointer(
        PYFUNCTYPE(py_object)(table[_GET_HANDLER])(), b"mem_handler"))
    a, count = default.allocator, [0]
    malloc = PYFUNCTYPE(c_void_p, c_void_p, c_size_t)(a.malloc)
    calloc = PYFUNCTYPE(c_void_p, c_void_p, c_size_t, c_size_t)(a.calloc)

    @CFUNCTYPE(c_void_p, c_void_p, c_size_t)
    def counting_malloc(ctx, size, malloc=malloc, count=count):
        count[0] += size > ARRAY_LIMIT
        return malloc(ctx, size)

    @CFUNCTYPE(c_void_p, c_void_p, c_size_t, c_size_t)
    def counting_calloc(ctx, n, size, calloc=calloc, count=count):
        count[0] += n * size > ARRAY_LIMIT
        return calloc(ctx, n, size)

    handler = _Handler(b"fastnn_test_counting", default.version, _Allocator(
        a.ctx, ctypes.cast(counting_malloc, c_void_p), ctypes.cast(counting_calloc, c_void_p),
        a.realloc, a.free))
    capsule = api.PyCapsule_New(ctypes.addressof(handler), b"mem_handler", None)
    _keep_alive.extend((handler, counting_malloc, counting_calloc, malloc, calloc, capsule))
    return capsule, count, set_handler


_keep_alive: list = []  # the handler's struct and callbacks outlive every array they allocate
_handler = None


def _get_handler():
    global _handler
    if _handler is None:
        _handler = _counting_handler()
    return _handler


@contextlib.contextmanager
def count_numpy_arrays():
    """Yields [n]: the NumPy data allocations above ARRAY_LIMIT bytes made inside the block."""
    capsule, count, set_handler = _get_handler()
    count[0] = 0
    previous = set_handler(capsule)
    try:
        yield count
    finally:
        set_handler(previous)


@contextlib.contextmanager
def count_numba_allocations():
    """Yields a function returning (allocations, allocations not freed) by Numba's runtime inside
    the block so far. Numba wraps every array argument of a jitted call in a small MemInfo (one
    allocation, freed on return), so only the second number says whether anything was kept."""
    try:
        from numba.core.runtime import _nrt_python as nrt
        from numba.core.runtime import rtsys
    except ImportError:
        yield lambda: (0, 0)
        return
    was_on = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    first = rtsys.get_allocation_stats()

    def so_far():
        now = rtsys.get_allocation_stats()
        alloc, free = now.alloc - first.alloc, now.free - first.free
        return alloc, alloc - free

    try:
        yield so_far
    finally:
        if not was_on:
            nrt.memsys_disable_stats()


def measure(call, n: int = CALLS) -> dict:
    """Run `call` WARMUP times, then n times under tracemalloc and the allocation counters."""
    for _ in range(WARMUP):
        call()
    _get_handler()  # built before tracing: it stays alive
    gc.collect()
    tracemalloc.start(8)
    try:
        before = tracemalloc.take_snapshot()  # alive (and unchanged) until the end: not growth
        start = tracemalloc.get_traced_memory()[0]
        with count_numpy_arrays() as arrays, count_numba_allocations() as numba:
            for _ in range(n):
                call()
            numba_allocs, numba_kept = numba()
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - start
        top = [f"{d.size_diff:+} B, {d.count_diff:+} blocks, at\n" + "\n".join(d.traceback.format())
               for d in tracemalloc.take_snapshot().compare_to(before, "traceback")[:3]
               ] if growth >= GROWTH_LIMIT else []
    finally:
        tracemalloc.stop()
    return {"growth": growth, "numpy_arrays": arrays[0], "numba_allocs": numba_allocs,
            "numba_kept": numba_kept, "top": top}


def assert_allocation_free(r: dict) -> None:
    assert r["growth"] < GROWTH_LIMIT, \
        f"traced memory grew by {r['growth']} bytes; the largest growth:\n" + "\n".join(r["top"])
    assert r["numpy_arrays"] == 0, f"{r['numpy_arrays']} NumPy arrays above 1 KB allocated"
    assert r["numba_kept"] == 0, f"{r['numba_kept']} allocations by Numba kernels kept"


@pytest.fixture(autouse=True)
def one_thread():
    """Small steps on one thread: on a loaded machine a thread pool makes them 10x slower (the
    small-work policy of issue 5 is tested elsewhere); allocation does not depend on it."""
    before = backend.get_num_threads()
    backend.set_num_threads(1)
    yield
    backend.set_num_threads(before)


def batch(shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype=np.float32), rng.integers(0, classes, shape[0])


@pytest.mark.parametrize("name", list(MODELS))
def test_train_on_batch_allocates_nothing_once_warm(compiled_backend, name):
    build, shape, classes = MODELS[name]
    model = build()
    x, y = batch(shape, classes)
    loss, opt = SoftmaxCrossEntropy(), Adam(model.parameters(), lr=1e-3)
    r = measure(lambda: model.train_on_batch(x, y, loss=loss, optimizer=opt))
    assert_allocation_free(r)
    assert opt.steps == WARMUP + CALLS


@pytest.mark.parametrize("name", list(MODELS))
def test_predict_on_batch_allocates_nothing_once_warm(compiled_backend, name):
    build, shape, _ = MODELS[name]
    model = build()
    x = batch((1, *shape[1:]), 2)[0]  # one observation, as an agent acting in a loop
    assert_allocation_free(measure(lambda: model.predict_on_batch(x)))


def test_alternating_shapes_and_other_losses_stay_allocation_free(compiled_backend):
    """An agent's loop: act on one observation, learn from a batch; float64 and non-contiguous
    inputs (copied into the step's own buffer), int32 labels, SGD with momentum, MSE."""
    model = tiny()
    x, y = batch((32, 4), 2)
    x64, x_strided = x.astype(np.float64), np.asfortranarray(x)
    obs = x[:1].copy()
    ce, mse, opt = SoftmaxCrossEntropy(), MeanSquaredError(), SGD(model.parameters(), 0.01, 0.9)
    y32, targets = y.astype(np.int32), np.eye(2)[y]  # float64 one-hot targets for MSE

    def loop():
        model.predict_on_batch(obs)
        model.train_on_batch(x64, y32, loss=ce, optimizer=opt)
        model.predict_on_batch(x_strided)
        model.train_on_batch(x_strided, targets, loss=mse, optimizer=opt)

    assert_allocation_free(measure(loop, 300))


def test_the_counters_see_temporary_and_kept_arrays():
    kept = []

    def step():
        np.empty(300, np.float32)  # 1.2 KB, freed at once
        np.ones(100, np.float32)  # 400 B: below the limit
        kept.append(np.zeros(512, np.float32))  # 2 KB, kept

    r = measure(step, 10)
    assert r["numpy_arrays"] == 20
    assert r["growth"] >= 10 * 2048


def test_the_numba_counter_sees_jitted_allocations():
    numba = pytest.importorskip("numba")

    @numba.njit
    def make(n):
        return np.empty(n, np.float32)

    make(4)
    kept = []
    with count_numba_allocations() as count:
        make(1000)
        kept.append(make(10))
        assert count() == (2, 1)


# --- the warm step computes what the validated layers compute ---------------------------------

def _nets():
    from fastnn.layers import Dropout, Flatten, Sigmoid, Tanh

    return {
        "relu_fused": lambda: tiny(),
        "own_activation": lambda: Sequential([
            Dense(4, 16, "relu", seed=1), Dense(16, 8, "sigmoid", seed=2), Dense(8, 3, seed=3)]),
        "sigmoid_tanh_flatten": lambda: Sequential([Flatten(), Dense(4, 16, seed=1), Sigmoid(),
                                                    Dropout(0.0), Dense(16, 8, seed=2), Tanh(),
                                                    Dense(8, 3, seed=3)]),
        "activation_first": lambda: Sequential([Tanh(), Dense(4, 8, seed=1), ReLU(),
                                                Dense(8, 3, seed=2)]),
    }


def _optimizers():
    from fastnn.optim import AdaGrad, AdamW, RMSprop
    from fastnn.schedules import ExponentialDecay

    return {
        "adam": lambda P: Adam(P, lr=1e-2, weight_decay=1e-3),
        "adamw": lambda P: AdamW(P, lr=ExponentialDecay(1e-2, gamma=0.9)),
        "nesterov": lambda P: SGD(P, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        "adagrad": lambda P: AdaGrad(P, lr=0.05),
        "rmsprop": lambda P: RMSprop(P, lr=1e-2),
    }


def _validated_step(model, x, y, loss, opt):
    value = loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    opt.step()
    return value


@pytest.mark.parametrize("net", list(_nets()))
@pytest.mark.parametrize("optimizer", list(_optimizers()))
def test_warm_steps_equal_validated_steps_bitwise(compiled_backend, net, optimizer):
    from fastnn.losses import SigmoidBinaryCrossEntropy

    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 1, 4) if net == "sigmoid_tanh_flatten" else (6, 4))
    c = _nets()[net]().layers[-1].out_features
    cases = [(SoftmaxCrossEntropy(), rng.integers(0, c, 6).astype(np.int32)),
             (MeanSquaredError(), rng.standard_normal((6, c))),
             (SigmoidBinaryCrossEntropy(), rng.integers(0, 2, (6, c)))]
    for loss, y in cases:
        a, b = _nets()[net](), _nets()[net]()
        make = _optimizers()[optimizer]
        opt_a, opt_b = make(a.parameters()), make(b.parameters())
        for step in range(4):
            xs = x[::-1].copy() if step % 2 else x  # new input values, same shape
            va = a.train_on_batch(xs, y, loss=loss, optimizer=opt_a)
            vb = _validated_step(b, xs.astype(np.float32), y, loss, opt_b)
            # the loss is a float64 sum that Numba may vectorise differently for differently
            # aligned buffers (the last bit); parameters and outputs must match exactly
            assert isinstance(va, float) and va == pytest.approx(vb, rel=1e-14, abs=0)
            np.testing.assert_array_equal(a.parameters().data, b.parameters().data)
            np.testing.assert_array_equal(a.predict_on_batch(xs[:1]), b.predict(xs[:1]))
        assert opt_a.steps == opt_b.steps == 4


def test_warm_step_still_refuses_labels_out_of_range(compiled_backend):
    model, loss = tiny(), SoftmaxCrossEntropy()
    opt = Adam(model.parameters())
    x, y = batch((8, 4), 2)
    for _ in range(2):
        model.train_on_batch(x, y, loss=loss, optimizer=opt)
    before = model.parameters().data.copy()
    for bad in (2, -1):
        y_bad = y.copy()
        y_bad[3] = bad
        with pytest.raises(ValueError, match=f"labels in \\[0, 2\\), got {bad}"):
            model.train_on_batch(x, y_bad, loss=loss, optimizer=opt)
    np.testing.assert_array_equal(model.parameters().data, before)  # no step was taken
    assert opt.steps == 2
    model.train_on_batch(x, y, loss=loss, optimizer=opt)
    assert opt.steps == 3


def test_a_new_loss_optimizer_or_backend_builds_a_new_step(rng):
    from fastnn.backend import available

    model = tiny()
    x, y = batch((8, 4), 2)
    loss, opt = SoftmaxCrossEntropy(), Adam(model.parameters())
    for _ in range(2):
        model.train_on_batch(x, y, loss=loss, optimizer=opt)
    opt2 = SGD(model.parameters(), lr=0.1)
    model.train_on_batch(x, y, loss=loss, optimizer=opt2)
    assert (opt.steps, opt2.steps) == (2, 1)
    for name in available():
        with backend.using(name):
            out = model.predict_on_batch(x[:2], copy=True)
            np.testing.assert_allclose(out, model.predict(x[:2]), rtol=1e-5, atol=1e-6)
            model.train_on_batch(x, y, loss=loss, optimizer=opt2)
            model.train_on_batch(x, y, loss=loss, optimizer=opt2)
    with pytest.raises(ValueError, match="optimizer"):  # the first call of a new pair validates
        tiny().train_on_batch(x, y, loss=loss, optimizer=opt)


def test_momentum_switched_on_later_is_refused_not_read_out_of_bounds(compiled_backend):
    model, loss = tiny(), SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.1)  # no momentum: no velocity buffer
    x, y = batch((8, 4), 2)
    for _ in range(2):
        model.train_on_batch(x, y, loss=loss, optimizer=opt)
    opt.momentum = 0.9
    with pytest.raises(ValueError, match="velocity"):
        model.train_on_batch(x, y, loss=loss, optimizer=opt)


def test_a_step_plan_keeps_one_set_of_workspaces(compiled_backend):
    # The plan adopts the buffers the validated first call filled: a CNN's train_on_batch must
    # not hold its (large) workspaces twice.
    model = recipes.cnn(seed=0, batchnorm=False, dropout=0.0)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8)
    opt, loss = Adam(model.parameters()), SoftmaxCrossEntropy()
    for _ in range(4):
        model.train_on_batch(x, y, loss=loss, optimizer=opt)
    (plan,) = model._train_plans.values()
    held = sum(ws.nbytes() for ws in plan.chain.ws)  # the plan's buffers (and bound gradients)
    grads = model.parameters().grad.nbytes
    left = sum(layer.ws.nbytes() for layer in model.layers)  # the layers' own now
    assert held > 3 * grads  # the second conv's im2col columns and the like are there
    assert left <= grads + 4096, (left, grads)  # nothing but the bound gradient views
