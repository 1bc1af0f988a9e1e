"""``advise``: run :func:`gqtorch.advise` on one of the paper's training tasks and print its table.

The task is built exactly as the training-step benchmark builds it (``validation.bench.gradients.training_step``:
seeded weights and batch; dopri5 rtol = atol = 1e-3, GQ's C = 0.1, t = [0, 1], float32) and, as there, torch runs
on one thread, so the advisor's timings can be set beside ``python -m validation bench gradients``.
"""

from __future__ import annotations

import argparse

from gqtorch.advise import advise
from validation.bench.steps import GTOL, TASKS, TOLERANCE, training_step
from validation.bench.timing import torch_threads
from validation.harness.cli import float_in, positive_int
from validation.harness.training import resolve_device

HELP = "measured advice: which gradient method to train a task with (time, memory, gradient agreement)"


def configure(parser: argparse.ArgumentParser) -> None:
    """The command's arguments."""
    parser.add_argument("--task", choices=TASKS, required=True, help="the training task")
    parser.add_argument("--width", type=positive_int, required=True, help="hidden width of the field's MLP")
    parser.add_argument("--steps", type=positive_int, default=3,
                        help="timed training steps per method, interleaved (default 3; one warm-up step first)")
    parser.add_argument("--memory-budget", type=float_in(0.0, 1e12), default=None, metavar="MB",
                        help="peak memory budget in MiB: methods above it are excluded (default: none)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index] (default cpu)")


def main(args: argparse.Namespace) -> int:
    """Build the task, run the advisor, print the table; 0 on success."""
    device = resolve_device(args.device)
    setup = training_step(args.task, args.width, device=str(device))
    parameters = setup.parameters()
    print(f"{args.task}, width {args.width}, {parameters:,} parameters; dopri5 rtol = atol = {TOLERANCE:g}, "
          f"GQ C = {GTOL}, one CPU thread\n")
    with torch_threads(1):  # as the gradients benchmark, so the two can be compared
        advice = advise(setup.field, setup.y0, setup.t, lambda ys: setup.loss(ys[-1]), steps=args.steps,
                        memory_budget=args.memory_budget, device=device, rtol=TOLERANCE, atol=TOLERANCE,
                        gtol=GTOL)
    print(advice)
    return 0
