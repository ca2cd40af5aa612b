"""fastnn: fast, readable neural networks on the CPU.

Layers call `fastnn.kernels` (validated), which run on the backend chosen by `fastnn.backend`:
the NumPy reference, Numba or Cython.
"""

import os as _os

__version__ = "0.1.0"

# libgomp (the Cython kernels' OpenMP, and Numba's "omp" threading layer) keeps idle threads
# spinning for ~300k iterations after each parallel region; on a 2-core machine they starve the
# BLAS threads of the GEMM that runs next. Spin briefly instead, unless the user has chosen.
# libgomp reads this once, when it is first loaded, which is below.
_os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from . import backend, kernels  # noqa: E402  (backend first: it picks the kernels' backend)
from . import callbacks, datasets, layers, losses, optim, schedules  # noqa: E402
from .gradcheck import gradcheck  # noqa: E402
from .io import load, load_checkpoint, save  # noqa: E402
from .model import Sequential  # noqa: E402
from .training import History  # noqa: E402

__all__ = [
    "History", "Sequential", "__version__", "backend", "callbacks", "datasets", "gradcheck",
    "kernels", "layers", "load", "load_checkpoint", "losses", "optim", "save", "schedules",
]
