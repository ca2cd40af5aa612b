"""fastnn.backend: selection, the environment switch, fallback, threads."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import ALL_BACKENDS, CHILD_CWD, IN_CI, child_env

import fastnn
from fastnn import backend
from fastnn import kernels as K


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = child_env(**env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=300, cwd=CHILD_CWD)


def test_all_backends_built_in_ci():
    """In CI every backend must be there: a missing one fails, it is not skipped."""
    if not IN_CI:
        assert "numpy" in backend.available()
        return
    assert backend.available() == list(ALL_BACKENDS), backend.unavailable()


def test_use_current_and_using():
    start = backend.current()
    for name in backend.available():
        with backend.using(name):
            assert backend.current() == name
            assert backend.resolve("relu") == name
        assert backend.current() == start
    backend.use("numpy")
    try:
        assert backend.current() == "numpy"
        assert backend.impl("relu").__module__.startswith("fastnn.reference")
    finally:
        backend.use(start)


def test_auto_prefers_compiled_backends():
    with backend.using("auto"):
        chosen = backend.resolve("conv2d_forward")
    best = [n for n in ("cython", "numba", "numpy") if n in backend.available()][0]
    assert chosen == best


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match=r"backend: expected one of .*got 'torch'"):
        backend.use("torch")
    with pytest.raises(ValueError):
        backend.use(None)


def test_using_restores_after_an_error():
    start = backend.current()
    with pytest.raises(RuntimeError):
        with backend.using("numpy"):
            raise RuntimeError("boom")
    assert backend.current() == start


def test_env_variable_sets_startup_backend():
    res = run_python("import fastnn; print(fastnn.backend.current())", FASTNN_BACKEND="numpy")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "numpy"


def test_env_variable_with_unknown_backend_warns_and_falls_back():
    res = run_python("import fastnn; print(fastnn.backend.current())", FASTNN_BACKEND="cuda")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "auto"
    assert "FASTNN_BACKEND='cuda' ignored" in res.stderr


def test_missing_cython_extension_warns_once_and_falls_back():
    """Hide the compiled extensions: the import still works, warns once, and kernels run."""
    code = """
        import importlib.abc, sys, warnings
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith("fastnn._cython."):
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            import fastnn
            import numpy as np
            y = fastnn.kernels.relu(np.array([-1.0, 2.0], np.float32))
            fastnn.backend.available()
        msgs = [str(x.message) for x in w if "falling back" in str(x.message)]
        print(len(msgs), "cython" in fastnn.backend.available(), y.tolist())
    """
    res = run_python(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "False", "[0.0,", "2.0]"]


def test_set_num_threads_reaches_every_backend():
    before = backend.get_num_threads()
    try:
        backend.set_num_threads(1)
        assert backend.get_num_threads() == 1
        for name in backend.available():
            mod = backend._load(name)
            assert name == "numpy" or mod.get_num_threads() == 1
        blas = [i for i in backend.blas_info() if i["user_api"] == "blas"]
        assert all(i["num_threads"] == 1 for i in blas)
        x = np.random.default_rng(0).standard_normal((64, 32, 28, 28)).astype(np.float32)
        y1 = K.relu(x).copy()
        backend.set_num_threads(2)
        np.testing.assert_array_equal(K.relu(x), y1)
    finally:
        backend.set_num_threads(before)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises((ValueError, TypeError), match="n: expected a positive integer"):
            backend.set_num_threads(bad)


def test_version_and_public_names():
    assert isinstance(fastnn.__version__, str)
    for name in ("im2col", "col2im", "conv2d_forward", "conv2d_backward", "dense_forward",
                 "dense_backward", "maxpool2d_forward", "maxpool2d_backward", "relu",
                 "relu_backward", "sigmoid", "sigmoid_backward", "softmax",
                 "softmax_cross_entropy", "adam_update", "sgd_update"):
        assert callable(getattr(K, name))
    for name in ("available", "current", "use", "using", "set_num_threads", "get_num_threads"):
        assert callable(getattr(backend, name))
