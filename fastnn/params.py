"""One flat float32 buffer for every parameter of a model and one for every gradient.

Each layer's `params[name]` and `grads[name]` become views into these buffers, so an optimizer
step is one kernel call over `data` and `grad`. Views start on 64-byte boundaries; the gaps stay
zero (zero parameter, zero gradient: every optimizer leaves them at zero).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

_ALIGN = 16  # float32 elements = 64 bytes


class Parameters:
    def __init__(self, layers: Sequence) -> None:
        self.entries: list[tuple[int, str, int, tuple[int, ...]]] = []
        offset = 0
        for i, layer in enumerate(layers):
            for name, p in layer.params.items():
                self.entries.append((i, name, offset, p.shape))
                offset += -(-p.size // _ALIGN) * _ALIGN
        self.data = np.zeros(offset, np.float32)
        self.grad = np.zeros(offset, np.float32)
        self.layers = list(layers)
        for i, name, off, shape in self.entries:
            layer = layers[i]
            size = int(np.prod(shape, dtype=np.int64))
            view = self.data[off : off + size].reshape(shape)
            view[...] = layer.params[name]
            layer.params[name] = view
            layer.grads[name] = self.grad[off : off + size].reshape(shape)
            layer.bind_grads()

    @property
    def size(self) -> int:
        """The number of parameters (without alignment gaps)."""
        return sum(int(np.prod(s, dtype=np.int64)) for _, _, _, s in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(qualified name "<layer index>.<name>", parameter view, gradient view)."""
        for i, name, _, _ in self.entries:
            layer = self.layers[i]
            yield f"{i}.{name}", layer.params[name], layer.grads[name]

    def zero_grad(self) -> None:
        self.grad[...] = 0
