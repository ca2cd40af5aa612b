"""The `fastnn` command line: `fastnn info` (and `python -m fastnn info`)."""

from __future__ import annotations

import argparse
import os
import platform
import sys


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    import fastnn
    from fastnn import backend

    print(f"fastnn {fastnn.__version__} (Python {platform.python_version()}, numpy {np.__version__})")
    print(f"backends available: {', '.join(backend.available())}")
    for name, why in backend.unavailable().items():
        print(f"backend missing: {name}: {why}")
    print(f"backend selected: {backend.current()} (FASTNN_BACKEND={os.environ.get('FASTNN_BACKEND', '')!r})")
    print(f"threads: {backend.get_num_threads()} (cores usable: {len(os.sched_getaffinity(0))})")
    if "cython" in backend.available():
        from fastnn import _cython

        print(f"cython kernels: OpenMP {'on' if _cython.openmp_enabled() else 'off (serial build)'}")
    if "numba" in backend.available():
        import numba

        from fastnn import _numba

        cache = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
            os.path.dirname(_numba.__file__), "__pycache__")
        print(f"numba {numba.__version__}: threading layer {numba.config.THREADING_LAYER}, "
              f"threads {_numba.get_num_threads()}, cache {cache}")
    for info in backend.blas_info():
        print(f"{info['user_api']}: {info.get('internal_api')} {info.get('version')} "
              f"threads={info.get('num_threads')} arch={info.get('architecture')} "
              f"({os.path.basename(info.get('filepath', ''))})")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        if var in os.environ:
            print(f"env {var}={os.environ[var]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastnn", description="Fast, readable neural networks on the CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="version, backends, threads, BLAS and the Numba cache")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
