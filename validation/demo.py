"""``demo`` (what ``make demo`` runs, on CPU in a few minutes): gqtorch's four gradient methods side by side.

1. Accuracy: the paper's toy (dz/dt = a·z, L = z(T)², docs/paper.md §4) at a few T in float64, every method's relative
   errors of L, dL/dz0, dL/da and dL/dT against the closed form, with the evaluation counts.
2. Training: g1d (docs/paper.md §3.1) through the harness with each method from the same initial weights, for the
   paper's 150 epochs at a width where the field's parameters dwarf the state (GQ's regime): every method fits the
   map (MSE from ~1 to ~1e-6), then a table of training time, final MSE, NFE and GQ's speed-ups.
3. The report (:mod:`validation.report`) of those runs: markdown tables and figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from validation import report
from validation.harness.cli import check_writable_dir, integer_in, positive_float, positive_int
from validation.harness.methods import PAPER_METHODS as METHODS
from validation.harness.training import MAX_THREADS, run_records
from validation.tasks import g1d
from validation.tasks.toy_gradient import LABELS, QUANTITIES, toy_gradient

HELP = "toy-gradient accuracy of the four methods, a g1d training race between them, and its report"
DEMO_T = (19.0, 24.0, 29.04)  # the ends and middle of the paper's sweep
QUICK_T = (19.0,)
# g1d at width 300: P_f = 93,004 parameters against a state of 2 × 4, so GQ's backward solve is the small one. It
# trains to MSE ~1e-6 in the paper's 150 epochs (one full-batch step each) at lr 1e-3; the authors' 1e-2 (meant
# for small widths) leaves it at MSE 1.8 at this width. The four methods together cost ~1 CPU-min (one thread).
# Nested spheres was the race before: in a few minutes it stays at chance (ln 2 plateau for its first ~12 epochs).
DEMO_WIDTH, DEMO_EPOCHS, DEMO_LR = 300, 150, 1e-3
QUICK_WIDTH, QUICK_EPOCHS = 8, 2
# One thread: a batch of 2 through a 300-wide MLP gains nothing from intra-op threads, and on a busy machine two
# spinning threads took ~5× the CPU time of one.
DEMO_THREADS = 1
SOLVED_MSE = 1e-3  # the targets are ±1, so a constant prediction has MSE 1: below this the map is learnt
DEFAULT_OUT = Path("results/demo")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a few seconds: one T, a tiny network and data set")
    parser.add_argument("--width", type=positive_int, default=None,
                        help=f"g1d hidden width (default {DEMO_WIDTH}, quick {QUICK_WIDTH}; an explicit "
                             f"value wins over --quick)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"g1d epochs (default {DEMO_EPOCHS}, quick {QUICK_EPOCHS}; an explicit value "
                             f"wins over --quick)")
    parser.add_argument("--lr", type=positive_float, default=DEMO_LR,
                        help=f"Adam learning rate (default {DEMO_LR:g})")
    parser.add_argument("--threads", type=integer_in(1, MAX_THREADS), default=DEMO_THREADS,
                        help=f"torch CPU threads (default {DEMO_THREADS}: g1d's tensors are a few hundred numbers, "
                             f"too small to share out)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder for the training results and the report, checked for writing first (default "
                             f"{DEFAULT_OUT})")


def _heading(text: str, underline: str = "=") -> None:
    print(f"\n{text}\n{underline * len(text)}")


def toy_table(times: tuple[float, ...]) -> tuple[str, float]:
    """(markdown: each method's relative errors against the closed form at each T, the largest of them); float64,
    rtol 1e-6, atol 1e-7, C = 0.4."""
    largest = 0.0
    lines = ["| T | method | " + " | ".join(f"rel. err. {LABELS[q]}" for q in QUANTITIES) +
             " | NFE fwd | NFE bwd | GQ nodes |",
             "|---:|---|" + "---:|" * (len(QUANTITIES) + 3)]
    for T in times:
        for method in METHODS:
            run = toy_gradient(T, method)
            largest = max(largest, *run.rel_errors.values())
            errors = " | ".join(f"{run.rel_errors[q]:.1e}" for q in QUANTITIES)
            lines.append(f"| {T:g} | {method} | {errors} | {run.nfe_forward} | "
                         f"{'—' if run.nfe_backward is None else run.nfe_backward} | "
                         f"{'—' if run.nodes is None else run.nodes} |")
    return "\n".join(lines), largest


def race(out: Path, width: int, epochs: int, lr: float, quick: bool, threads: int | None = None) \
        -> report.GroupSummary:
    """Train g1d with each method (seed 0: the same initial weights); summarise the runs."""
    records = []
    for method in METHODS:
        parser = argparse.ArgumentParser()
        g1d.configure(parser)
        argv = ["--method", method, "--width", str(width), "--epochs", str(epochs), "--lr", str(lr),
                "--out", str(out), "--no-progress"]
        argv += ["--threads", str(threads)] if threads else []
        args = parser.parse_args(argv + (["--quick"] if quick else []))
        (record,) = run_records(g1d, args)
        path = Path(record["path"])
        records.append((path, json.loads(path.read_text())))
    (group,) = report.summarize_training(records, out)
    return group


def main(args: argparse.Namespace) -> int:
    width = args.width if args.width is not None else (QUICK_WIDTH if args.quick else DEMO_WIDTH)
    epochs = args.epochs if args.epochs is not None else (QUICK_EPOCHS if args.quick else DEMO_EPOCHS)
    check_writable_dir(args.out, "--out")  # before minutes of work
    began = time.perf_counter()
    _heading("gq demo: neural-ODE gradients by direct backprop, the adjoint, the seminorm adjoint and GQ")

    _heading("1. Accuracy on the paper's toy problem: dz/dt = a·z, z0 = 10, a = 0.2, L = z(T)², t = [0, T]", "-")
    print("float64, dopri5 rtol 1e-6, atol 1e-7, GQ's C = 0.4; relative errors against the closed forms "
          "L = z0²e^{2aT}, dL/dz0 = 2z0e^{2aT}, dL/da = 2T·L, dL/dT = 2a·L.")
    table, largest = toy_table(QUICK_T if args.quick else DEMO_T)
    print(table)
    print(f"Largest relative error: {largest:.1e}, at rtol 1e-6 over the solve's ~20 steps. GQ's backward NFE "
          f"includes its quadrature nodes (C·NFE_fwd of them, at most 64).")

    _heading(f"2. Training: g1d, width {width}, {epochs} epoch(s), each method from the same weights", "-")
    print(f"x = −1 → +1 and x = +1 → −1 through a 4-D augmented ODE, full batch (one step per epoch); Adam lr "
          f"{args.lr:g}; dopri5 rtol = atol = 1e-3 and C = 0.1 (the harness's defaults). MSE 1 is a constant guess.")
    group = race(args.out, width, epochs, args.lr, args.quick, args.threads)
    print()
    print(report.training_table(group))
    speedups = report.speedup_table(group)
    if speedups:
        print("\nSpeed-up of GQ (training time of the baseline / that of GQ):\n")
        print(speedups)
    runs = group.widths[width]
    finals = {method: s.metric.mean for method, s in runs.items()}
    solved = all(v is not None and v < SOLVED_MSE for v in finals.values())
    verdict = (f"every method fits the map (final MSE below {SOLVED_MSE:g}: equal performance)" if solved else
               f"not every method is below MSE {SOLVED_MSE:g} yet"
               + (" (--quick trains too briefly to fit it)" if args.quick else ""))
    print(f"\nFinal MSE: {', '.join(f'{m} {v:.2g}' for m, v in finals.items())}: {verdict}. Times are wall clock, "
          f"noisy on a busy machine; GQ gains when the network is large next to the state (docs/paper.md §1): "
          f"P_f = {next(iter(runs.values())).parameters_field} here against a state of 2 × 4.")

    _heading("3. Report", "-")
    written = report.write_report(args.out)
    print(f"{written.path} with {len(written.figures)} figure(s) (every run under {args.out} is included)")
    print(f"\ndemo finished in {time.perf_counter() - began:.0f} s")
    return 0
