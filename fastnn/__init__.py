"""fastnn: fast, readable neural networks on the CPU.

Layers call `fastnn.kernels` (validated), which run on the backend chosen by `fastnn.backend`:
the NumPy reference, Numba or Cython.
"""

__version__ = "0.1.0"

from . import backend, kernels  # noqa: E402

__all__ = ["backend", "kernels", "__version__"]
