"""Model files: fastnn.save / fastnn.load / fastnn.load_checkpoint round trips (bitwise), exact
resumption of training, the same path with any extension, atomic writes, and clear errors for
truncated, empty, random, foreign, tampered and pickle-bearing files (never unpickled)."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import randn

import fastnn
from fastnn import Sequential
from fastnn.io import ModelFileError
from fastnn.layers import (BatchNorm, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Sigmoid,
                           Tanh)
from fastnn.losses import SoftmaxCrossEntropy
from fastnn.optim import SGD, AdaGrad, Adam, AdamW, RMSprop
from fastnn.schedules import CosineDecay, ExponentialDecay, StepDecay

BAD_FILE = (ValueError, OSError)


def cnn(seed=0):
    return Sequential([
        Conv2D(1, 3, 3, padding=1, seed=seed + 1), BatchNorm(3), ReLU(), MaxPool2D(2), Flatten(),
        Dropout(0.3, seed=seed + 2), Dense(3 * 3 * 3, 8, seed=seed + 3), Sigmoid(),
        Dense(8, 6, seed=seed + 4), Tanh(), BatchNorm(6), Dense(6, 4, seed=seed + 5),
    ], input_shape=(1, 6, 6))


def data(rng, n=24):
    return randn(rng, n, 1, 6, 6), rng.integers(0, 4, n)


def trained_cnn(rng, steps=3):
    m = cnn()
    x, y = data(rng)
    opt = Adam(m.parameters(), lr=1e-2)
    for i in range(steps):
        m.train_on_batch(x[i * 8 : (i + 1) * 8], y[i * 8 : (i + 1) * 8],
                         loss=SoftmaxCrossEntropy(), optimizer=opt)
    return m, opt


def read_npz(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(arrays.pop("__fastnn__").tobytes().decode())
    return header, arrays


def write_npz(path, header, arrays, fix_digest=False):
    """Re-zip a model file, optionally with a recomputed checksum (to reach the later checks)."""
    arrays = dict(arrays)
    if fix_digest:
        header = dict(header, sha256=fastnn.io._digest(arrays, header))
    arrays["__fastnn__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# ---------------------------------------------------------------- round trips

def test_save_load_round_trip_is_bitwise(backend_name, tmp_path, rng):
    m, _ = trained_cnn(rng)
    path = tmp_path / "model.npz"
    assert fastnn.save(m, path) == str(path)
    m2 = fastnn.load(path)
    assert isinstance(m2, Sequential)
    assert [type(a) for a in m.layers] == [type(b) for b in m2.layers]
    assert [a.get_config() for a in m.layers] == [b.get_config() for b in m2.layers]
    assert m2.input_shape == (1, 6, 6)
    np.testing.assert_array_equal(m2.parameters().data, m.parameters().data)
    for a, b in zip(m.layers, m2.layers):
        assert set(a.state) == set(b.state)
        for k in a.state:  # batch-norm running statistics
            np.testing.assert_array_equal(a.state[k], b.state[k])
    assert np.any(m.layers[1].state["running_mean"] != 0)
    x = randn(rng, 10, 1, 6, 6)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    assert m2.summary() == m.summary()
    # Dropout config and generator state: the next training-mode masks are the same
    assert m2.layers[5].rate == 0.3
    np.testing.assert_array_equal(m2.forward(x, train=True), m.forward(x, train=True))
    # the fusion plan is rebuilt (Dense followed by Sigmoid)
    assert m2.layers[6].fused == "sigmoid"


def test_loaded_model_is_trainable_and_independent(tmp_path, rng):
    m, _ = trained_cnn(rng)
    fastnn.save(m, tmp_path / "m.npz")
    m2 = fastnn.load(tmp_path / "m.npz")
    before = m.parameters().data.copy()
    x, y = data(rng)
    m2.fit(x, y, loss=SoftmaxCrossEntropy(), optimizer=SGD(m2.parameters(), 0.1), verbose=0)
    assert not np.array_equal(m2.parameters().data, before)
    np.testing.assert_array_equal(m.parameters().data, before)  # no shared memory
    for layer in m2.layers:
        for p in layer.params.values():
            assert np.shares_memory(p, m2.parameters().data)


def test_model_save_method_and_str_path(tmp_path, rng):
    m = Sequential([Dense(3, 2, seed=0)])
    p = str(tmp_path / "x.npz")
    assert m.save(p) == p
    np.testing.assert_array_equal(fastnn.load(p).parameters().data, m.parameters().data)


@pytest.mark.parametrize("name", ["model.bin", "model", "weights.v1.fastnn", "m.npz"])
def test_the_same_path_is_written_and_read(tmp_path, name, rng):
    m = Sequential([Dense(4, 3, seed=0), ReLU(), Dense(3, 2, seed=1)])
    path = tmp_path / name
    fastnn.save(m, path)
    assert sorted(os.listdir(tmp_path)) == [name]  # no extension appended, no temp file left
    x = randn(rng, 5, 4)
    np.testing.assert_array_equal(fastnn.load(path).predict(x), m.predict(x))
    np.testing.assert_array_equal(fastnn.load(str(path)).predict(x), m.predict(x))


def test_save_overwrites_an_existing_file(tmp_path):
    a, b = Sequential([Dense(3, 2, seed=0)]), Sequential([Dense(3, 2, seed=1)])
    p = tmp_path / "m.npz"
    fastnn.save(a, p)
    fastnn.save(b, p)
    np.testing.assert_array_equal(fastnn.load(p).parameters().data, b.parameters().data)
    assert os.listdir(tmp_path) == ["m.npz"]


def test_file_is_an_npz_readable_without_pickle(tmp_path):
    p = tmp_path / "m.npz"
    fastnn.save(Sequential([Dense(3, 2)]), p)
    assert zipfile.is_zipfile(p)
    header, arrays = read_npz(p)
    assert header["format"] == "fastnn-model"
    assert all(a.dtype != object for a in arrays.values())


def test_saved_file_has_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    p = tmp_path / "m.npz"
    fastnn.save(Sequential([Dense(3, 2)]), p)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~umask


# ---------------------------------------------------------------- checkpoints

@pytest.mark.parametrize("make", [
    lambda P: Adam(P, lr=CosineDecay(0.02, total_steps=6, warmup_steps=1)),
    lambda P: AdamW(P, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
    lambda P: SGD(P, lr=StepDecay(0.1, step_size=2, gamma=0.5), momentum=0.9, nesterov=True,
                  weight_decay=1e-3),
    lambda P: AdaGrad(P, lr=0.05, eps=1e-8, weight_decay=0.01),
    lambda P: RMSprop(P, lr=ExponentialDecay(0.01, gamma=0.9), alpha=0.9),
], ids=["adam_cosine", "adamw", "nesterov_step", "adagrad", "rmsprop_exp"])
def test_load_checkpoint_resumes_bitwise(backend_name, tmp_path, rng, make):
    x, y = data(rng, n=48)
    loss = SoftmaxCrossEntropy()
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 48, 8)]

    ref = cnn()
    ref_opt = make(ref.parameters())
    for xb, yb in batches:
        ref.train_on_batch(xb, yb, loss=loss, optimizer=ref_opt)

    m = cnn()
    opt = make(m.parameters())
    for xb, yb in batches[:3]:
        m.train_on_batch(xb, yb, loss=loss, optimizer=opt)
    path = tmp_path / "ckpt"
    fastnn.save(m, path, optimizer=opt, extra={"note": "half way", "step": 3})
    m2, opt2, extra = fastnn.load_checkpoint(path)
    assert extra == {"note": "half way", "step": 3}
    assert type(opt2) is type(opt) and opt2.steps == 3
    assert opt2.params is m2.parameters()
    assert opt2.hyperparameters() == opt.hyperparameters()
    assert opt2.current_lr() == opt.current_lr()
    for xb, yb in batches[3:]:
        m2.train_on_batch(xb, yb, loss=loss, optimizer=opt2)
    np.testing.assert_array_equal(m2.parameters().data, ref.parameters().data)
    for a, b in zip(m2.layers, ref.layers):
        for k in a.state:
            np.testing.assert_array_equal(a.state[k], b.state[k])


def test_load_checkpoint_without_optimizer(tmp_path):
    m = Sequential([Dense(3, 2)])
    fastnn.save(m, tmp_path / "m.npz")
    m2, opt, extra = fastnn.load_checkpoint(tmp_path / "m.npz")
    assert opt is None and extra == {}
    np.testing.assert_array_equal(m2.parameters().data, m.parameters().data)


def test_load_accepts_a_checkpoint_with_optimizer(tmp_path):
    m = Sequential([Dense(3, 2)])
    fastnn.save(m, tmp_path / "m.npz", optimizer=Adam(m.parameters()))
    np.testing.assert_array_equal(fastnn.load(tmp_path / "m.npz").parameters().data,
                                  m.parameters().data)


# ---------------------------------------------------------------- bad files

@pytest.fixture
def saved(tmp_path, rng):
    m, opt = trained_cnn(rng)
    path = tmp_path / "model.npz"
    fastnn.save(m, path, optimizer=opt)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        fastnn.load(tmp_path / "nope.npz")


@pytest.mark.parametrize("cut", [0.5, 0.9, -10, 100])
def test_truncated_file(saved, cut):
    raw = saved.read_bytes()
    n = int(len(raw) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(raw) + cut)
    saved.write_bytes(raw[:n])
    with pytest.raises(BAD_FILE, match=str(saved.name)):
        fastnn.load(saved)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.npz"
    p.write_bytes(b"")
    with pytest.raises(BAD_FILE, match="empty.npz"):
        fastnn.load(p)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(tmp_path, seed):
    p = tmp_path / "random.bin"
    p.write_bytes(np.random.default_rng(seed).bytes(4096))
    with pytest.raises(BAD_FILE, match="random.bin"):
        fastnn.load(p)


def test_random_bytes_after_zip_magic(tmp_path):
    p = tmp_path / "fake.npz"
    p.write_bytes(b"PK\x03\x04" + np.random.default_rng(0).bytes(2000))
    with pytest.raises(BAD_FILE):
        fastnn.load(p)


def test_foreign_npz_without_header(tmp_path):
    p = tmp_path / "foreign.npz"
    np.savez(p, W=np.ones((3, 3), np.float32), b=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not a fastnn model"):
        fastnn.load(p)


def test_foreign_mnist_like_npz(tmp_path):
    p = tmp_path / "data.npz"
    np.savez_compressed(p, x_train=np.zeros((2, 28, 28), np.uint8), y_train=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="not a fastnn model"):
        fastnn.load(p)


def test_foreign_npy_file(tmp_path):
    p = tmp_path / "array.npy"
    np.save(p, np.arange(10, dtype=np.float32))
    with pytest.raises(ValueError, match="array.npy"):
        fastnn.load(p)


def test_a_text_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("just some text\n" * 20)
    with pytest.raises(BAD_FILE):
        fastnn.load(p)


def test_tampered_weight_is_detected(saved):
    header, arrays = read_npz(saved)
    key = "param.6.W"
    arrays[key] = arrays[key].copy()
    arrays[key][0, 0] += np.float32(1e-3)
    write_npz(saved, header, arrays)
    with pytest.raises(ValueError, match="checksum"):
        fastnn.load(saved)


def test_tampered_running_statistics_are_detected(saved):
    header, arrays = read_npz(saved)
    arrays["state.1.running_var"] = arrays["state.1.running_var"] * np.float32(2)
    write_npz(saved, header, arrays)
    with pytest.raises(ValueError, match="checksum"):
        fastnn.load(saved)


def test_tampered_optimizer_state_is_detected(saved):
    header, arrays = read_npz(saved)
    arrays["optim.state.m"] = arrays["optim.state.m"] + np.float32(1)
    write_npz(saved, header, arrays)
    with pytest.raises(ValueError, match="checksum"):
        fastnn.load_checkpoint(saved)


def test_removed_array_is_detected(saved):
    header, arrays = read_npz(saved)
    del arrays["param.0.b"]
    write_npz(saved, header, arrays)
    with pytest.raises(ValueError):
        fastnn.load(saved)
    write_npz(saved, header, arrays, fix_digest=True)
    with pytest.raises(ValueError, match="param.0.b"):
        fastnn.load(saved)


def test_wrong_shape_or_dtype_is_detected(saved):
    header, arrays = read_npz(saved)
    arrays["param.6.W"] = arrays["param.6.W"][:, :-1].copy()
    write_npz(saved, header, arrays, fix_digest=True)
    with pytest.raises(ValueError, match="param.6.W"):
        fastnn.load(saved)
    header, arrays = read_npz(saved)
    arrays["param.6.W"] = np.zeros((27, 8), np.float64)
    write_npz(saved, header, arrays, fix_digest=True)
    with pytest.raises(ValueError, match="float32"):
        fastnn.load(saved)


def test_unknown_layer_type_in_header(saved):
    header, arrays = read_npz(saved)
    header["layers"][2]["type"] = "EvilLayer"
    write_npz(saved, header, arrays, fix_digest=True)
    with pytest.raises(ValueError, match="EvilLayer"):
        fastnn.load(saved)


def test_bad_layer_config_in_header(saved):
    header, arrays = read_npz(saved)
    header["layers"][0]["config"]["kernel_size"] = [0, 3]
    write_npz(saved, header, arrays, fix_digest=True)
    with pytest.raises(ValueError, match="kernel_size"):
        fastnn.load(saved)
    header["layers"][0]["config"] = {"in_channels": 1, "__import__": "os"}
    write_npz(saved, header, arrays, fix_digest=True)
    with pytest.raises(ValueError, match="layer 0"):
        fastnn.load(saved)


@pytest.mark.parametrize("mutate,match", [
    (lambda h: h.update(format="something-else"), "format"),
    (lambda h: h.update(version=99), "version"),
    (lambda h: h.update(layers=[]), "no layers"),
    (lambda h: h.update(layers=["Dense"]), "layer 0"),
    (lambda h: h.__setitem__("sha256", "0" * 64), "checksum"),
])
def test_bad_header_fields(saved, mutate, match):
    """A crafted file can carry a matching checksum: the structural checks must still hold."""
    header, arrays = read_npz(saved)
    mutate(header)
    write_npz(saved, header, arrays, fix_digest=match != "checksum")
    with pytest.raises(ValueError, match=match):
        fastnn.load(saved)


def test_header_that_is_not_json(saved):
    _, arrays = read_npz(saved)
    arrays["__fastnn__"] = np.frombuffer(b"\xff\xfe{not json", np.uint8)
    with open(saved, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="header"):
        fastnn.load(saved)


def _header_mutations():
    return {
        "layers_not_a_list": lambda h: h.update(layers=5),
        "input_shape_not_a_list": lambda h: h.update(input_shape=5),
        "unknown_schedule": lambda h: h["optimizer"].update(
            lr={"schedule": "EvilSchedule", "config": {}}),
        "unknown_hyperparameter": lambda h: h["optimizer"]["hyperparameters"].update(evil=1),
        "bad_rng_state": lambda h: h["layers"][5].update(rng_state="evil"),
    }


@pytest.mark.parametrize("name", sorted(_header_mutations()))
def test_malformed_header_structure_raises_model_file_error(saved, name):
    header, arrays = read_npz(saved)
    _header_mutations()[name](header)
    write_npz(saved, header, arrays, fix_digest=True)  # past the checksum, to the structure checks
    with pytest.raises(ModelFileError):
        fastnn.load_checkpoint(saved)


def test_tampered_architecture_is_detected(saved):
    header, arrays = read_npz(saved)
    assert header["layers"][11]["config"]["activation"] is None
    header["layers"][11]["config"]["activation"] = "relu"
    write_npz(saved, header, arrays)
    with pytest.raises(ValueError):
        fastnn.load(saved)


class _Marker:
    """Unpickling this object creates a file: proof that code from the file ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("where", ["param.6.W", "extra_entry", "__fastnn__"])
def test_pickle_bearing_npz_is_rejected_and_never_unpickled(saved, tmp_path, where):
    marker = tmp_path / "PWNED"
    header, arrays = read_npz(saved)
    evil = np.empty(1, dtype=object)
    evil[0] = _Marker(marker)
    arrays[where] = evil
    if where == "__fastnn__":
        with open(saved, "wb") as f:
            np.savez(f, **arrays)
    else:
        write_npz(saved, header, arrays)
    with zipfile.ZipFile(saved) as z:  # the archive really carries a pickle
        assert any(b"PWNED" in z.read(n) for n in z.namelist())
    with pytest.raises(ValueError):
        fastnn.load(saved)
    with pytest.raises(ValueError):
        fastnn.load_checkpoint(saved)
    assert not marker.exists()


# ---------------------------------------------------------------- writing errors, atomicity

def test_save_into_a_missing_directory_names_the_path(tmp_path):
    target = tmp_path / "does" / "not" / "exist" / "m.npz"
    with pytest.raises(OSError, match=str(target.parent)):
        fastnn.save(Sequential([Dense(2, 2)]), target)
    assert not (tmp_path / "does").exists()


def test_save_under_a_regular_file_names_the_path(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(OSError, match="afile"):
        fastnn.save(Sequential([Dense(2, 2)]), blocker / "m.npz")
    assert os.listdir(tmp_path) == ["afile"]


def test_save_onto_a_directory_leaves_no_temp_file(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(OSError, match="adir"):
        fastnn.save(Sequential([Dense(2, 2)]), tmp_path / "adir")
    assert os.listdir(tmp_path) == ["adir"] and os.listdir(tmp_path / "adir") == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root can write into read-only directories")
def test_save_into_a_read_only_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OSError, match="ro"):
            fastnn.save(Sequential([Dense(2, 2)]), ro / "m.npz")
    finally:
        ro.chmod(0o755)


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    p = tmp_path / "m.npz"
    good = Sequential([Dense(3, 2, seed=0)])
    fastnn.save(good, p)
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        fastnn.save(Sequential([Dense(3, 2, seed=1)]), p)
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # the temporary file is gone
    np.testing.assert_array_equal(fastnn.load(p).parameters().data, good.parameters().data)


def test_many_saves_leave_only_the_target(tmp_path, rng):
    m = Sequential([Dense(3, 2)])
    for i in range(5):
        m.parameters().data[...] = i
        fastnn.save(m, tmp_path / "m.npz")
    assert os.listdir(tmp_path) == ["m.npz"]
    assert fastnn.load(Path(tmp_path / "m.npz")).layers[0].params["b"][0] == 4
