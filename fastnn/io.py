"""Model files: architecture as JSON and weights as arrays in one .npz archive, read with
allow_pickle=False (loading never executes code from the file), written to a temporary file in
the same directory and renamed into place (a crash mid-save leaves the previous file intact).
The path given to save is the path written; no extension is added."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "fastnn-model"
VERSION = 1
HEADER = "__fastnn__"


class ModelFileError(ValueError):
    """A model file that is unreadable, truncated, tampered with or not a fastnn model."""


def _digest(arrays: dict[str, np.ndarray], header: dict) -> str:
    """SHA-256 over the architecture header (without the digest itself) and every array."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in header.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _lr_config(lr):
    if callable(lr):
        return {"schedule": type(lr).__name__, "config": lr.get_config()}
    return float(lr)


def save(model, path, optimizer=None, extra: dict | None = None) -> str:
    """Write `model` (and optionally `optimizer`'s state) to `path` atomically; returns the path."""
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for i, layer in enumerate(model.layers):
        entry = {"type": type(layer).__name__, "config": layer.get_config()}
        rng = getattr(layer, "rng", None)
        if isinstance(rng, np.random.Generator):
            entry["rng_state"] = rng.bit_generator.state
        layers.append(entry)
        for name, a in layer.params.items():
            arrays[f"param.{i}.{name}"] = a
        for name, a in layer.state.items():
            arrays[f"state.{i}.{name}"] = a
    header = {"format": FORMAT, "version": VERSION, "layers": layers,
              "input_shape": list(model.input_shape) if model.input_shape else None,
              "optimizer": None, "extra": extra or {}}
    if optimizer is not None:
        sd = optimizer.state_dict()
        header["optimizer"] = {"type": sd["type"], "steps": sd["steps"], "size": sd["size"],
                               "lr": _lr_config(optimizer.lr),
                               "hyperparameters": sd["hyperparameters"]}
        for k, a in sd.items():
            if k.startswith("state."):
                arrays[f"optim.{k}"] = a
    header["sha256"] = _digest(arrays, header)
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays), "path", "a model file")
    return path


def atomic_write(path, write, arg: str = "path", what: str = "a file",
                 prefix: str = ".fastnn-") -> None:
    """write(f) into a temporary file beside `path` (the usual file mode), fsync, then rename it
    over `path` and fsync the directory: a crash at any point leaves the old file or the new one,
    never a mix. `arg` and `what` name the argument and the file in the error when the directory
    is not writable."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    except OSError as exc:
        raise OSError(f"{arg}: cannot write {what} in {directory!r}: {exc.strerror}") from exc
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _read(path):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no model file at {path!r}")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ModelFileError(f"{path}: not a fastnn model file (a single .npy array, not an "
                                 f".npz archive)")
        with z:
            if HEADER not in z.files:
                raise ModelFileError(f"{path}: not a fastnn model file (no {HEADER} entry; "
                                     f"entries: {z.files[:5]})")
            arrays = {k: z[k] for k in z.files}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: not a readable fastnn model file (truncated or not an npz "
                             f"archive: {type(exc).__name__}: {exc})") from exc
    except MemoryError as exc:  # an array header declaring an absurd shape
        raise ModelFileError(f"{path}: not a readable fastnn model file (an array is too large "
                             f"to load: {exc})") from exc
    raw = arrays.pop(HEADER)
    try:
        header = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        # RecursionError: JSON nested deeper than the parser's stack (a crafted header)
        raise ModelFileError(f"{path}: the architecture header is not valid JSON "
                             f"({type(exc).__name__}: {exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: expected format {FORMAT!r}, got {header.get('format')!r}"
                             if isinstance(header, dict) else f"{path}: malformed header")
    if header.get("version") != VERSION:
        raise ModelFileError(f"{path}: expected format version {VERSION}, got {header.get('version')!r}")
    digest = _digest(arrays, header)
    if digest != header.get("sha256"):
        raise ModelFileError(f"{path}: checksum mismatch: the architecture or weights were changed "
                             f"or damaged after saving (expected sha256 {header.get('sha256')}, "
                             f"got {digest})")
    layers, shape = header.get("layers"), header.get("input_shape")
    if not isinstance(layers, list):
        raise ModelFileError(f"{path}: 'layers' must be a list, got {type(layers).__name__}")
    if shape is not None and not (isinstance(shape, list) and all(isinstance(s, int) for s in shape)):
        raise ModelFileError(f"{path}: 'input_shape' must be a list of ints or null, got {shape!r}")
    return path, header, arrays


# A lower bound on the float32 values each layer type allocates for a config, checked against the
# values the file holds for that layer *before* the layer is built: a crafted header declaring
# Dense(10**5, 10**5) must not make load allocate and fill 40 GB.
def _dense_size(c):
    return c["in_features"] * c["out_features"]


def _conv_size(c):
    ks = c["kernel_size"]
    kh, kw = (ks, ks) if isinstance(ks, int) else ks
    return c["out_channels"] * c["in_channels"] * kh * kw


_MIN_VALUES = {"Dense": _dense_size, "Conv2D": _conv_size, "BatchNorm": lambda c: c["num_features"]}


def _check_declared_size(path, i, kind, config, arrays):
    try:
        declared = int(_MIN_VALUES[kind](config))
    except (KeyError, TypeError, ValueError):  # no table entry, or a config the layer will refuse
        return
    mine = {k: a for k, a in arrays.items() if k.startswith((f"param.{i}.", f"state.{i}."))}
    stored = sum(a.size for a in mine.values())
    if declared > stored:
        shapes = ", ".join(f"{k} {a.shape}" for k, a in mine.items()) or "no arrays"
        raise ModelFileError(f"{path}: layer {i} ({kind}): config {config} declares at least "
                             f"{declared} parameters, but the file holds {stored} values for it "
                             f"({shapes})")


def _build(path, header, arrays):
    from .layers import LAYER_TYPES
    from .model import Sequential

    layers = []
    for i, entry in enumerate(header.get("layers") or []):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if not isinstance(kind, str) or kind not in LAYER_TYPES:
            raise ModelFileError(f"{path}: layer {i}: unknown layer type {kind!r}; expected one "
                                 f"of {sorted(LAYER_TYPES)}")
        config = entry.get("config") or {}
        if not isinstance(config, dict):
            raise ModelFileError(f"{path}: layer {i} ({kind}): config must be an object")
        _check_declared_size(path, i, kind, config, arrays)
        try:
            layer = LAYER_TYPES[kind](**config)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: layer {i} ({kind}): bad config {config}: {exc}") from exc
        if "rng_state" in entry and hasattr(layer, "rng"):
            try:
                layer.rng.bit_generator.state = entry["rng_state"]
            except (TypeError, ValueError, KeyError) as exc:
                raise ModelFileError(f"{path}: layer {i} ({kind}): bad rng_state: {exc}") from exc
        layers.append(layer)
    if not layers:
        raise ModelFileError(f"{path}: the file describes no layers")
    model = Sequential(layers, input_shape=header.get("input_shape"))
    for i, layer in enumerate(model.layers):
        for kind, store in (("param", layer.params), ("state", layer.state)):
            for name, target in store.items():
                key = f"{kind}.{i}.{name}"
                if key not in arrays:
                    raise ModelFileError(f"{path}: missing array {key!r}")
                a = arrays[key]
                if a.shape != target.shape or a.dtype != np.float32:
                    raise ModelFileError(f"{path}: {key}: expected float32 {target.shape}, got "
                                         f"{a.dtype} {a.shape}")
                target[...] = a
    return model


def load(path):
    """Rebuild the Sequential saved at `path`. Raises ModelFileError (a ValueError) for a
    truncated, tampered or foreign file, FileNotFoundError when there is none."""
    return _build(*_read(path))


def load_checkpoint(path):
    """(model, optimizer or None, extra) from a file saved with an optimizer, to resume exactly."""
    path, header, arrays = _read(path)
    model = _build(path, header, arrays)
    opt_header = header.get("optimizer")
    extra = header.get("extra") or {}
    if not isinstance(extra, dict):
        raise ModelFileError(f"{path}: 'extra' must be an object, got {type(extra).__name__}")
    optimizer = None
    if opt_header:
        from .optim import OPTIMIZER_TYPES
        from .schedules import SCHEDULE_TYPES

        if not isinstance(opt_header, dict):
            raise ModelFileError(f"{path}: 'optimizer' must be an object, got "
                                 f"{type(opt_header).__name__}")
        kind = opt_header.get("type")
        cls = OPTIMIZER_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ModelFileError(f"{path}: unknown optimizer type {kind!r}; expected one of "
                                 f"{sorted(OPTIMIZER_TYPES)}")
        try:
            lr = opt_header["lr"]
            if isinstance(lr, dict):
                lr = SCHEDULE_TYPES[lr["schedule"]](**lr["config"])
            optimizer = cls(model.parameters(), lr=lr, **opt_header["hyperparameters"])
            sd = {"type": opt_header["type"], "steps": opt_header["steps"],
                  "size": opt_header["size"]}
            sd.update({k[len("optim."):]: a for k, a in arrays.items() if k.startswith("optim.")})
            optimizer.load_state_dict(sd)
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{path}: bad optimizer state: {type(exc).__name__}: {exc}") from exc
    return model, optimizer, extra
