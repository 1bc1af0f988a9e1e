"""``reproduce``: the paper's experiments as one resumable grid within a time budget, and its report.

``python -m validation reproduce [--budget-hours H] [--only TASK] [--jobs N] [--out DIR]`` runs the grid of
:mod:`validation.reproduction.plan` in its order (most informative first), skipping finished runs and resuming
partial ones (:mod:`validation.reproduction.runner`), and stops at an epoch boundary when the budget is spent; run
it again to continue. ``--dry-run`` prints the plan with each run's estimated minutes and state; ``--measure``
times every cell briefly and rewrites ``costs.json``; ``--report-only`` writes ``report.md`` and the figures from
the result JSONs (:mod:`validation.reproduction.report`), as every sitting also does at its end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from validation.harness.atomic import write_json_atomic
from validation.harness.cli import UsageError, check_writable_dir, integer_in, positive_float
from validation.reproduction import plan as grid_plan
from validation.reproduction.plan import COSTS_FILE, DEFAULT_RESULTS, TOY, Costs, Run

HELP = ("the paper's experiments as one resumable grid within a time budget (--dry-run: the plan and its estimates; "
        "--report-only: the report)")
DEFAULT_BUDGET_H = 3.0
DEFAULT_JOBS = 2
TASKS = (TOY, "g1d", "nested-spheres", "sines", "images", "ornstein-uhlenbeck")
# Epochs per timing run: one-step epochs need several to rise above the start-up; the slow tasks one.
MEASURE_EPOCHS = {"g1d": 5, "sines": 3, "nested-spheres": 2, "images": 1, "ornstein-uhlenbeck": 1}
# The field stiffens as training proceeds (nested spheres: 14 forward NFE per solve at first, 26–30 after 30
# epochs; sines 26 → 38), so the first epochs' cost is scaled up to stand for the whole run.
NFE_GROWTH = {"nested-spheres": 1.8, "sines": 1.4, "g1d": 1.5, "images": 1.5, "ornstein-uhlenbeck": 1.3}
TOY_QUICK_FRACTION = 5  # --quick runs 5 values of T
# Tasks timed on a part of an epoch: (extra flags, epoch / part). None now: images and OU were first timed on 64
# digits / 40 ICs and scaled up, which also scaled their fixed costs (data, evaluation) and overestimated an epoch 3×
# against a whole one (images W = 16: 37 CPU-s; OU W = 20, gq: 28 CPU-s); a whole epoch is cheap enough to time.
MEASURE_PART: dict[str, tuple[tuple[str, ...], float]] = {}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget-hours", type=positive_float, default=DEFAULT_BUDGET_H,
                        help=f"wall-clock budget of this sitting (default {DEFAULT_BUDGET_H:g})")
    parser.add_argument("--only", choices=TASKS, default=None, help="only this task's runs")
    parser.add_argument("--jobs", type=integer_in(1, 64), default=DEFAULT_JOBS,
                        help=f"runs at a time, one thread each; more than 1 runs them in subprocesses (default "
                             f"{DEFAULT_JOBS})")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULTS,
                        help="results folder (default validation/reproduction/results)")
    parser.add_argument("--report-out", type=Path, default=None,
                        help="folder for report.md and its figures (default: validation/reproduction/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan, its estimates and each run's state")
    mode.add_argument("--report-only", action="store_true", help="only write the report from the results")
    mode.add_argument("--measure", action="store_true",
                      help="time every cell of the grid briefly (into a temporary folder) and rewrite costs.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def select(only: str | None) -> list[Run]:
    runs = grid_plan.grid()
    return [r for r in runs if only is None or r.task == only]


def dry_run(runs: list[Run], costs: Costs, out: Path, jobs: int, budget_s: float) -> str:
    """The plan as markdown: each run's estimate and state, the totals, what the budget reaches."""
    from validation.reproduction.runner import run_state

    done = {r: run_state(r, out).epochs_done for r in runs}
    left = [r for r in runs if done[r] < r.epochs]
    wall, starts = grid_plan.schedule(left, costs, jobs, done)
    reached = sum(1 for s in starts if s < budget_s)
    total = grid_plan.totals(runs, costs, jobs)
    lines = [grid_plan.plan_table(runs, costs, jobs, done), "",
             f"{len(runs)} runs, {len(runs) - len(left)} finished. Estimated CPU time of the whole grid: "
             f"{total['cpu total'] / 3600:.2f} h; wall clock at {jobs} at a time: {total['wall'] / 3600:.2f} h "
             f"(what is left: {wall / 3600:.2f} h). This sitting's budget, {budget_s / 3600:.2f} h, starts "
             f"{reached} of the {len(left)} runs left.",
             "Per task (CPU h): " + ", ".join(f"{k} {v / 3600:.2f}" for k, v in total.items()
                                              if k not in ("cpu total", "wall"))]
    missing = grid_plan.unmeasured(runs, costs)
    if missing:
        lines.append(f"{len(missing)} run(s) have no measured cost (counted as 0): run --measure")
    return "\n".join(lines)


def measure(runs: list[Run], progress: bool = True, path: Path = COSTS_FILE) -> Costs:
    """CPU seconds per epoch of every cell (one thread, a short run in a temporary folder), written to ``path``
    after each cell (an interrupted measurement keeps what it measured); the toy sweep last."""
    from validation.reproduction.runner import in_process, toy_count, toy_methods

    cells: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: r.task == TOY):
        cells.setdefault(run.cell, run)
    costs = Costs()
    costs.measured = (f"{time.strftime('%Y-%m-%d')}: CPU time of one-thread runs of {MEASURE_EPOCHS} epochs per "
                      f"cell (start-up and evaluation included; images and OU on a part of an epoch, scaled: "
                      f"{ {k: v[1] for k, v in MEASURE_PART.items()} }), times {NFE_GROWTH} for the NFE growth "
                      f"during training")
    bar = tqdm(cells.values(), desc="measure", unit="cell", disable=not progress, file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="gq-measure-") as tmp:
        # one-time costs (lazy imports, JIT compilation) must not land on the first cell
        in_process(["g1d", "--quick", "--out", str(Path(tmp) / "warm-up"), "--no-progress"])
        for run in bar:
            bar.set_postfix_str(run.label)
            began = time.process_time()
            if run.task == TOY:  # --quick refuses --t-step: time its 5 values of T with the run's methods
                argv = [TOY, "--quick", "--methods", *toy_methods(run), "--out", str(Path(tmp) / "toy.json"),
                        "--no-progress"]
                if in_process(argv) == 0:
                    costs.per_epoch_s[run.cell] = (time.process_time() - began) * toy_count(run) / TOY_QUICK_FRACTION
            else:
                epochs = MEASURE_EPOCHS.get(run.task, 1)
                extra, scale = MEASURE_PART.get(run.task, ((), 1.0))
                if in_process([*run.argv(Path(tmp), epochs=epochs), *extra]) == 0:
                    cpu = time.process_time() - began
                    costs.per_epoch_s[run.cell] = cpu / epochs * scale * NFE_GROWTH.get(run.task, 1.0)
            _merge_into(path, costs)
    return costs


def _merge_into(path: Path, costs: Costs) -> None:
    """Write ``costs`` over the cells it holds, keeping every other cell of the file as it is now (another
    measurement, e.g. of another task, may be writing it too)."""
    current = Costs.load(path)
    current.per_epoch_s.update(costs.per_epoch_s)
    current.measured = costs.measured
    write_json_atomic(path, current.to_json())


def main(args: argparse.Namespace) -> int:
    runs = grid_plan.ordered(select(args.only))
    costs = Costs.load(COSTS_FILE, grid_plan.grid())
    budget_s = args.budget_hours * 3600
    if args.measure:
        measure(runs, progress=not args.no_progress)
        print(f"costs written to {COSTS_FILE}")
        return 0
    if args.dry_run:
        print(dry_run(runs, costs, args.out, args.jobs, budget_s))
        return 0
    from validation.reproduction import report

    failed = False
    if not args.report_only:
        from validation.reproduction.runner import Runner

        check_writable_dir(args.out, "--out")
        outcome = Runner(runs, args.out, budget_s, costs, jobs=args.jobs, progress=not args.no_progress).run()
        print(f"reproduce: {len(outcome.finished)} run(s) finished now, {len(outcome.advanced)} checkpointed "
              f"part-way, {len(outcome.skipped)} already finished, {len(outcome.not_started)} not started, "
              f"{len(outcome.failed)} failed" + ("; the budget is spent: run the command again to continue"
                                                  if outcome.budget_spent else ""))
        for run, why in outcome.failed:
            print(f"failed ({why}): {run.command(args.out)}", file=sys.stderr)
        failed = bool(outcome.failed)
    try:
        written = report.write(args.out, args.report_out)
    except report.NoResults as error:
        if args.report_only:
            raise UsageError(str(error)) from None
        print(f"reproduce: no report yet: {error}")
        return 1 if failed else 0
    print(f"report written to {written}")
    return 1 if failed else 0
