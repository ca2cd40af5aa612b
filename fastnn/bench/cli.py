"""`fastnn bench`: the workloads of the speed issue, timed for each implementation (the NumPy
reference, Numba, Cython, "auto", and PyTorch's eager CPU mode when torch imports), with the
machine's sgemm and memory-bandwidth limits measured in the same process.

The command's options (`add_parser` registers them on `fastnn`'s subparsers) and `main`.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..cli import positive_int_arg
from .impls import FASTNN_IMPLS, TORCH_IMPLS
from .report import format_compare, format_table, save_json
from .run import run_benchmarks
from .workloads import NAMES, workloads


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="a subset of the shapes, fewer repeats, no cold_start (under a minute)")
    p.add_argument("--threads", type=positive_int_arg, default=2,
                   help="threads for every implementation: Numba, OpenMP, BLAS, torch (default 2)")
    p.add_argument("--workloads", type=_csv, default=None, metavar="A,B",
                   help=f"only these workloads (all their shapes; with --quick, their quick "
                        f"shapes): {', '.join(NAMES)}")
    p.add_argument("--impls", type=_csv, default=None, metavar="A,B",
                   help=f"only these implementations: {', '.join((*FASTNN_IMPLS, *TORCH_IMPLS))}")
    p.add_argument("--repeat", type=positive_int_arg, default=None,
                   help="timed samples per implementation (default 15; 5 with --quick)")
    p.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                   help="minimum duration of one sample (default 0.02; 0.005 with --quick)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic of the samples shown and compared (default median; min is "
                        "steadier on a busy machine)")
    p.add_argument("--json", metavar="PATH", help="save the table and machine info as JSON")
    p.add_argument("--compare", metavar="PATH", help="show the change against a saved --json run")
    p.add_argument("--write-auto-order", nargs="?", const="", default=None, metavar="PATH",
                   help="write the per-kernel order of backend 'auto' measured by this run "
                        "(default PATH: the file fastnn reads, fastnn/data/auto_order.json)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `bench` on the `fastnn` command's subparsers; `args.func(args)` runs it."""
    p = subparsers.add_parser(
        "bench", help="time the workloads on every backend and torch; print one table",
        description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    prog = "fastnn bench"
    try:
        workloads(args.workloads)
    except ValueError as exc:
        print(f"{prog}: error: --{exc}", file=sys.stderr)
        return 2
    bad = set(args.impls or ()) - {*FASTNN_IMPLS, *TORCH_IMPLS}
    if bad:
        print(f"{prog}: error: --impls: expected names from "
              f"{', '.join((*FASTNN_IMPLS, *TORCH_IMPLS))}, got {', '.join(sorted(bad))}",
              file=sys.stderr)
        return 2
    old = None
    if args.compare:
        try:
            with open(args.compare) as f:
                old = json.load(f)
            if not isinstance(old, dict) or "rows" not in old:
                raise ValueError("not a fastnn bench --json file")
        except (OSError, ValueError) as exc:
            print(f"{prog}: error: --compare: cannot read {args.compare!r}: {exc}", file=sys.stderr)
            return 2
    result = run_benchmarks(args.workloads, args.impls, args.quick, args.threads, args.repeat,
                            args.min_time, args.stat,
                            log=lambda msg: print(f"  {msg}", file=sys.stderr, flush=True))
    print(format_table(result))
    if old is not None:
        print()
        print(format_compare(result, old, args.compare))
    if args.json:
        save_json(result, args.json)
        print(f"saved {args.json}")
    if args.write_auto_order is not None:
        from .autoorder import write

        print(f"wrote the auto order to {write(result, args.write_auto_order or None)}")
    return 1 if result["failures"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastnn bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return cmd_bench(parser.parse_args(argv))
