"""``bench <which>``: time one part of gq against its baselines and write the results as JSON."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

HELP = "time gq against scipy and torchdiffeq"
# benchmark name -> module with run(repeats, quick, out, **options) -> int
BENCHMARKS: dict[str, str] = {
    "solver": "validation.bench.solver",
    "reference": "validation.bench.reference",
    "gradients": "validation.bench.gradients",
    "quadrature": "validation.bench.quadrature",
    "methods": "validation.bench.methods",
    "training-quadrature": "validation.bench.training_quadrature",
}
DEFAULT_REPEATS = 20


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="what to benchmark")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"timed runs per solver, interleaved round-robin (default {DEFAULT_REPEATS})")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (3 repeats)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results path (default results/bench_<which>.json)")
    parser.add_argument("--widths", type=_int_list, default=None,
                        help="gradients only: comma-separated hidden widths (default 100,500,1000,2000,3000)")
    parser.add_argument("--tasks", type=lambda s: tuple(s.split(",")), default=None,
                        help="gradients only: comma-separated tasks among g1d,nested-spheres (default both)")
    parser.add_argument("--device", default="cpu", help="gradients only: cpu or cuda[:index] (default cpu)")
    parser.add_argument("--no-memory", action="store_true",
                        help="gradients only: skip the peak-memory measurements (one fresh process each)")
    parser.add_argument("--methods", type=lambda s: tuple(s.split(",")), default=None,
                        help="gradients only: comma-separated methods to time (direct, adjoint, seminorm, gq, "
                             "gq-auto, gq-auto-reuse, td-direct, td-adjoint, td-seminorm; gqtorch's direct and "
                             "gq always run; default all)")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return values


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    out = args.out if args.out is not None else Path("results") / f"bench_{args.which}.json"
    module = importlib.import_module(BENCHMARKS[args.which])
    options = {}
    if args.which == "gradients":
        options = {"widths": args.widths, "tasks": args.tasks, "memory": not args.no_memory, "device": args.device,
                   "methods": args.methods}
    elif args.widths is not None or args.tasks is not None or args.no_memory or args.device != "cpu" or \
            args.methods is not None:
        raise SystemExit("--widths, --tasks, --methods, --device and --no-memory: options for `bench gradients` only")
    return module.run(repeats=args.repeats, quick=args.quick, out=out, **options)
