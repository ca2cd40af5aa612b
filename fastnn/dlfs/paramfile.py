"""Parameter files: the book's pickles (a dict of name -> ndarray), read through a restricted
unpickler, and fastnn's own .npz format beside them.

A pickle can name any importable callable and have it called while loading (`__reduce__`), so
the book's `pickle.load` runs whatever a downloaded params.pkl asks for. Here the unpickler admits
only the globals that NumPy arrays, dtypes and scalars pickle to (plus OrderedDict); anything else
is refused before it is imported, with an error naming it. Object arrays are refused too (their
elements would be arbitrary pickles). Dicts, lists, tuples, strings and numbers need no globals.

fastnn's format (`.npz`) is read with allow_pickle=False and checked against a SHA-256 digest.
Both are written to a temporary file in the same directory, fsync'ed, then renamed into place.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np

from ..io import atomic_write

FORMAT = "fastnn-dlfs-params"
VERSION = 1
HEADER = "__fastnn_dlfs__"
ALLOWED = "NumPy arrays, dtypes and scalars, dicts, lists, tuples, strings and numbers"


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle that asks for a global outside the allowed set (e.g. os.system)."""


def _safe_dtype(*args):
    d = np.dtype(*args)
    if d.hasobject:
        raise UnsafePickleError(f"refusing an array of dtype {d} (object arrays hold arbitrary "
                                f"pickled objects); a parameter file may hold only {ALLOWED}")
    return d


def _latin1_bytes(text, encoding="latin1"):
    """Protocols <= 2 write bytes (an array's data) as _codecs.encode(text, 'latin1')."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"refusing _codecs.encode({type(text).__name__}, {encoding!r}): "
                                f"only the latin1 form of pickled bytes is allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    reconstruct = np.array(0.0).__reduce__()[0]  # numpy's _reconstruct, wherever it lives
    scalar = np.float64(0.0).__reduce__()[0]
    try:
        from numpy._core.numeric import _frombuffer as frombuffer
    except ImportError:  # numpy < 2
        try:
            from numpy.core.numeric import _frombuffer as frombuffer
        except ImportError:
            frombuffer = None
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _safe_dtype,
             ("collections", "OrderedDict"): collections.OrderedDict,
             ("builtins", "complex"): complex, ("_codecs", "encode"): _latin1_bytes}
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{mod}.multiarray", "scalar")] = scalar
        if frombuffer is not None:  # pickle protocol 5
            table[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return table


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `_allowed_globals()`; never imports the module a file names."""

    _table = None

    def find_class(self, module, name):
        if RestrictedUnpickler._table is None:
            RestrictedUnpickler._table = _allowed_globals()
        try:
            return RestrictedUnpickler._table[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refusing to load the global {module}.{name}: a parameter "
                                    f"pickle may hold only {ALLOWED}") from None

    def persistent_load(self, pid):
        raise UnsafePickleError(f"refusing a persistent id {pid!r}: a parameter pickle may hold "
                                f"only {ALLOWED}")


def restricted_loads(data: bytes):
    """pickle.loads through RestrictedUnpickler."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode() + b"\0" + str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check_params(params, what: str) -> dict:
    if not isinstance(params, dict):
        raise TypeError(f"{what}: expected a dict of name -> array, got {type(params).__name__}")
    for key, val in params.items():
        if not isinstance(key, str):
            raise TypeError(f"{what}: expected string keys, got {key!r}")
        if not isinstance(val, np.ndarray):
            raise TypeError(f"{what}: expected a numpy array for key {key!r}, got "
                            f"{type(val).__name__}")
    return params


def save_params(params: dict, file_name="params.pkl", format: str | None = None) -> str:
    """Write a dict of name -> array. format "pickle" (the book's files; the default unless the
    name ends in .npz) or "npz" (fastnn's: no pickle, a digest). Returns the path written."""
    file_name = os.fspath(file_name)
    _check_params(params, "params")
    if format is None:
        format = "npz" if file_name.lower().endswith(".npz") else "pickle"
    if format == "pickle":
        data = {key: np.array(val) for key, val in params.items()}
        atomic_write(file_name, lambda f: pickle.dump(data, f, protocol=4), "file_name",
                     repr(file_name), prefix=".dlfs-")
    elif format == "npz":
        arrays = {key: np.ascontiguousarray(val) for key, val in params.items()}
        if HEADER in arrays:
            raise ValueError(f"params: the key {HEADER!r} is reserved for the file header")
        header = {"format": FORMAT, "version": VERSION, "sha256": _digest(arrays)}
        arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
        atomic_write(file_name, lambda f: np.savez(f, **arrays), "file_name", repr(file_name),
                     prefix=".dlfs-")
    else:
        raise ValueError(f"format: expected 'pickle', 'npz' or None (from the file name), got "
                         f"{format!r}")
    return file_name


def _load_npz(file_name: str) -> dict:
    try:
        with np.load(file_name, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ValueError(f"{file_name}: expected a fastnn.dlfs parameter file (.npz), but it "
                         f"cannot be read: {exc}") from exc
    raw = arrays.pop(HEADER, None)
    try:
        header = json.loads(bytes(raw).decode()) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{file_name}: expected a fastnn.dlfs parameter file (format {FORMAT!r}), "
                         f"got an .npz archive without that header")
    if header.get("version") != VERSION:
        raise ValueError(f"{file_name}: expected format version {VERSION}, got "
                         f"{header.get('version')!r}")
    if header.get("sha256") != _digest(arrays):
        raise ValueError(f"{file_name}: the arrays do not match the file's digest (tampered "
                         f"with or corrupted)")
    return arrays


def load_params(file_name="params.pkl") -> dict:
    """A dict of name -> array from the book's pickle (restricted: no code runs) or fastnn's .npz,
    told apart by their first bytes."""
    file_name = os.fspath(file_name)
    with open(file_name, "rb") as f:
        data = f.read()
    if data[:4] == b"PK\x03\x04":
        return _load_npz(file_name)
    try:
        params = restricted_loads(data)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{file_name}: {exc}") from None
    except Exception as exc:  # truncated, corrupt, or not a pickle at all
        raise ValueError(f"{file_name}: expected a pickle of a dict of arrays (the book's "
                         f"params.pkl) or a fastnn .npz, but it cannot be read: "
                         f"{type(exc).__name__}: {exc}") from None
    return _check_params(params, file_name)
