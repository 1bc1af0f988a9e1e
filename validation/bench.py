"""``bench <which>``: time one part of gq against its baselines and write the results as JSON."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

HELP = "time gq against scipy and torchdiffeq"
# benchmark name -> module with run(repeats, quick, out) -> int
BENCHMARKS: dict[str, str] = {
    "solver": "validation.bench_solver",
    "gradients": "validation.bench_gradients",
    "training": "validation.bench_training",
}
DEFAULT_REPEATS = 20


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="what to benchmark")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help=f"timed runs per solver, interleaved round-robin (default {DEFAULT_REPEATS})")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (3 repeats)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results path (default results/bench_<which>.json)")


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    out = args.out if args.out is not None else Path("results") / f"bench_{args.which}.json"
    module = importlib.import_module(BENCHMARKS[args.which])
    return module.run(repeats=args.repeats, quick=args.quick, out=out)
