"""The implementations a workload runs on: fastnn's backends and torch's eager CPU mode, whether
each can run here, and the context a case of each runs in."""

from __future__ import annotations

import contextlib

from .. import backend

FASTNN_IMPLS = ("numpy", "numba", "cython", "auto")
COMPILED_IMPLS = ("numba", "cython", "auto")
TORCH_IMPLS = ("torch", "torch_fused")


class Unavailable(Exception):
    """An implementation that cannot run here (backend not built, torch not installed...)."""


_torch_mod: object = None
_torch_error = ""


def torch_module():
    """torch, or None when it does not import (the reason is in `unavailable_reason`)."""
    global _torch_mod, _torch_error
    if _torch_mod is None and not _torch_error:
        try:
            import torch
        except Exception as exc:  # ImportError, or a broken install
            _torch_error = f"torch does not import: {type(exc).__name__}: {exc}"
        else:
            _torch_mod = torch
    return _torch_mod


def imported_torch():
    """torch if `torch_module()` has imported it, else None (never imports it)."""
    return _torch_mod


def unavailable_reason(impl: str) -> str | None:
    """None if `impl` can run here, else why not."""
    if impl in ("numpy", "numba", "cython"):
        if impl in backend.available():
            return None
        return f"backend {impl!r} not available: {backend.unavailable().get(impl, 'unknown')}"
    if impl == "auto":
        return None
    if impl in TORCH_IMPLS:
        return None if torch_module() is not None else _torch_error
    return f"unknown implementation {impl!r}"


def activate(impl: str):
    """The context to run a case of `impl` in: its fastnn backend selected (torch: nothing)."""
    return backend.using(impl) if impl in FASTNN_IMPLS else contextlib.nullcontext()
