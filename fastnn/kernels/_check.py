"""Input validation for fastnn.kernels: everything a compiled kernel without bounds checks relies on
is checked here, and every error names the argument, what was expected and what was given.

Conversions (documented in README "Errors and conversions"): a float array of another dtype, or a
non-contiguous float32 array, given as an *input* is copied once to C-contiguous float32. Arrays
updated in place (optimizer state, `out` buffers) are never copied: they must already be
C-contiguous, writeable float32, or the call raises.
"""

from __future__ import annotations

import numbers

import numpy as np


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"array of dtype {a.dtype} and shape {a.shape}"
    return f"{type(a).__name__}"


def as_float32(name: str, a, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """An input array as C-contiguous float32 (copied once if needed)."""
    if not isinstance(a, np.ndarray):
        if isinstance(a, (list, tuple)) or np.isscalar(a):
            a = np.asarray(a)
        else:
            raise TypeError(f"{name}: expected a float32 numpy array, got {_describe(a)}")
    if a.dtype != np.float32:
        if a.dtype.kind != "f":
            raise TypeError(f"{name}: expected a floating-point array (float32), got dtype {a.dtype}")
        a = a.astype(np.float32)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name}: expected a {want}-D array, got {a.ndim}-D with shape {a.shape}")
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)
    return a


def inplace_float32(name: str, a, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An array the kernel writes into: must be C-contiguous, writeable float32 already."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a float32 numpy array (updated in place), got {_describe(a)}")
    if a.dtype != np.float32:
        raise TypeError(f"{name}: expected dtype float32 (updated in place, so it cannot be "
                        f"converted), got {a.dtype}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (updated in place), got strides "
                         f"{a.strides} for shape {a.shape}")
    if not a.flags.writeable:
        raise ValueError(f"{name}: expected a writeable array (updated in place), got a read-only one")
    if shape is not None and a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")
    return a


def same_shape(name: str, a: np.ndarray, shape: tuple[int, ...], other: str) -> None:
    if a.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (the shape of {other}), got {a.shape}")


# Sizes, strides and counts reach the compiled kernels as C ints: larger values are refused here
# (a clear ValueError) instead of overflowing there.
INT_MAX = 2**31 - 1


def positive_int(name: str, v, minimum: int = 1, maximum: int = INT_MAX) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {v!r}")
    v = int(v)
    if v < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {v}")
    if v > maximum:
        raise ValueError(f"{name}: expected an integer >= {minimum} and <= {maximum}, got {v}")
    return v


def finite_float(name: str, v, minimum: float | None = None, maximum: float | None = None,
                 min_open: bool = False, max_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {v!r}")
    v = float(v)
    lo_bad = minimum is not None and (v <= minimum if min_open else v < minimum)
    hi_bad = maximum is not None and (v >= maximum if max_open else v > maximum)
    if not np.isfinite(v) or lo_bad or hi_bad:
        lo = "" if minimum is None else (f"> {minimum}" if min_open else f">= {minimum}")
        hi = "" if maximum is None else (f"< {maximum}" if max_open else f"<= {maximum}")
        rng = " and ".join(s for s in (lo, hi) if s) or "finite"
        raise ValueError(f"{name}: expected a finite number {rng}, got {v}")
    return v


def labels_int64(name: str, labels, n: int, num_classes: int,
                 check_range: bool = True) -> np.ndarray:
    """Integer class labels (N,) in [0, num_classes), as C-contiguous int64. check_range=False
    leaves the range to a kernel that checks it itself before any indexing (softmax-CE)."""
    if not isinstance(labels, np.ndarray):
        labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer class labels, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) (one label per row of logits), got "
                         f"{labels.shape}")
    if n and (check_range or labels.dtype == np.uint64):  # uint64 may not survive int64
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: expected labels in [0, {num_classes}), got {bad}")
    return np.ascontiguousarray(labels, dtype=np.int64)


def nonempty(name: str, a: np.ndarray) -> None:
    if a.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {a.shape}")


def conv_out_size(size: int, k: int, stride: int, pad: int, what: str) -> int:
    if size + 2 * pad > INT_MAX:
        raise ValueError(f"pad: expected a padded {what} (input {size} + 2*pad) <= {INT_MAX}, got "
                         f"pad {pad}")
    if k > size + 2 * pad:
        raise ValueError(f"kernel: expected {what} kernel size <= padded input size {size + 2 * pad} "
                         f"(input {size} + 2*pad {pad}), got {k}")
    return (size + 2 * pad - k) // stride + 1


class Workspace:
    """Named buffers reused across calls: `get(name, shape)` returns the same array while the shape
    stays the same, so a training loop allocates once per shape. Kernels given a workspace return
    its buffers: the next call with the same workspace overwrites them."""

    __slots__ = ("_bufs", "_children", "_tags")

    def __init__(self) -> None:
        self._bufs: dict[str, np.ndarray] = {}
        self._children: dict[str, Workspace] = {}
        self._tags: dict[str, object] = {}

    def child(self, name: str) -> Workspace:
        """A separate named workspace, for a second kernel whose buffer names would collide."""
        ws = self._children.get(name)
        if ws is None:
            ws = self._children[name] = Workspace()
        return ws

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        buf = self._bufs.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            self._bufs[name] = buf
        return buf

    def tag(self, name: str, value) -> None:
        """Note what the buffer `name` holds now (e.g. the layout a kernel wrote it in)."""
        self._tags[name] = value

    def tagged(self, name: str):
        """The note of `tag`, or None."""
        return self._tags.get(name)

    def bind(self, name: str, array: np.ndarray) -> None:
        """Make `name` an existing array (e.g. a gradient view into a flat buffer), so a kernel
        writes its output there directly. It stays bound while callers ask for its shape."""
        self._bufs[name] = array

    def __contains__(self, name: str) -> bool:
        return name in self._bufs

    def __getitem__(self, name: str) -> np.ndarray:
        return self._bufs[name]

    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._bufs.values()) + sum(
            c.nbytes() for c in self._children.values())

    def clear(self) -> None:
        self._bufs.clear()
        self._children.clear()
        self._tags.clear()


def buffer(ws: Workspace | None, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A workspace buffer, or a fresh array when there is no workspace."""
    if ws is None:
        return np.empty(shape, dtype=dtype)
    return ws.get(name, shape, dtype)
