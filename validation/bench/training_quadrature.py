"""``bench training-quadrature``: GQ's quadrature error along a g1d training run, and what the default rule pays.

Why: at initialization the default ("auto") rule runs at or above the paper's speed (``bench gradients``), yet over
whole training runs it was 1.1–2.0× slower (validation/reproduction). This measures why. g1d (W = 100, seed 0, Adam
lr 0.01, tolerance 1e-3) is trained with the paper's rule; at a few checkpoints the same parameters get their
gradient by:

- ``reference``: the auto rule at gtol 1e-9 on the same backward solve (every rule here starts it warm from the
  forward's last step, and nodes never change the steps), so differences from it are quadrature error alone;
- ``paper``: the paper's nodes, ⌈0.1·NFE⌉ per interval (``IntervalRule(warm_start=True)``);
- ``kronrod``: the auto rule's first round alone (the paper's nodes and their Kronrod extension, no refinement);
- ``auto``: the default, checking every call;
- and, for scale, ``direct`` backprop through a solve at 1e-9 (the solver error of the 1e-3 backward solve is the
  reference's distance from it).

Errors are max|g − g_ref| / max|g_ref|. Then a second run trains with the default rule and counts its checks,
refinement rounds and reuses (``AutoRule.recheck_every``), and the backward NFE of both rules.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import gqtorch
from gqref.rules import AutoRule, IntervalRule
from validation.bench.quadrature import relative_error
from validation.harness.atomic import write_json_atomic
from validation.tasks.g1d import G1dModel, g1d_data, mse

TOL = 1e-3  # the solver tolerance of the reproduction's g1d runs
LR = 0.01  # g1d's default learning rate
FULL = {"width": 100, "steps": 150, "checkpoints": (0, 10, 30, 60, 100, 149)}
QUICK = {"width": 8, "steps": 4, "checkpoints": (0, 3)}
RULES = {"paper": IntervalRule(warm_start=True), "kronrod": AutoRule(max_nodes=1), "auto": AutoRule()}


def _gradient(model: G1dModel, solve) -> np.ndarray:
    z0, targets = g1d_data()
    loss = mse(model(z0, solve), targets)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]).double().numpy()


def _gq(rule, record: list):
    def solve(func, y0, t):
        ys, stats = gqtorch.odeint_adjoint_gq(func, y0, t, rtol=TOL, atol=TOL, quadrature=rule, return_stats=True)
        record.append(stats)
        return ys
    return solve


def checkpoint_errors(model: G1dModel) -> dict:
    """Relative quadrature errors of each rule (and the solver error) at the model's current parameters."""
    stats: list = []
    with warnings.catch_warnings():  # the first round alone exhausts its budget by design: no warning wanted
        warnings.simplefilter("ignore")
        reference = _gradient(model, _gq(AutoRule(rtol=1e-9, max_nodes=100_000), stats))
        row = {"nfe_forward": stats[-1].nfe_forward}
        direct = _gradient(model, lambda f, y0, t: gqtorch.odeint(f, y0, t, rtol=1e-9, atol=1e-9))
        row["solver_error"] = relative_error(reference, direct)
        for name, rule in RULES.items():
            row[name] = relative_error(_gradient(model, _gq(rule, stats)), reference)
            row[f"{name}_nfe_backward"] = stats[-1].nfe_backward
    return row


def _train(config: dict, rule, at_step=None) -> tuple[list, G1dModel]:
    """Train g1d with ``rule`` for the configured steps; ``at_step(step, model)`` runs before each step's update.
    Returns each step's solver stats and the model."""
    torch.manual_seed(0)
    model = G1dModel(config["width"])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    steps = []
    for step in range(config["steps"]):
        if at_step is not None:
            at_step(step, model)
        stats: list = []
        optimizer.zero_grad()
        z0, targets = g1d_data()
        mse(model(z0, _gq(rule, stats)), targets).backward()
        optimizer.step()
        steps.append(stats[-1])
    return steps, model


def _count_checks(config: dict) -> dict:
    """Train with the default rule, counting its calls by outcome (reused, checked in one round, refined)."""
    steps, _ = _train(config, AutoRule())
    reused = sum(not s.quadrature_checked for s in steps)
    one_round = sum(s.quadrature_checked and s.refinement.rounds == 1 for s in steps)
    return {"reused": reused, "one_round": one_round, "refined": len(steps) - reused - one_round,
            "nfe_backward": sum(s.nfe_backward for s in steps)}


def format_report(result: dict) -> str:
    lines = ["| step | forward NFE | solver error | paper's nodes | + Kronrod, 1 round | auto (default) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for step, row in result["checkpoints"].items():
        lines.append(f"| {step} | {row['nfe_forward']} | {row['solver_error']:.1e} | "
                     + " | ".join(f"{row[n]:.1e} ({row[n + '_nfe_backward']})" for n in RULES) + " |")
    counts = result["default_training"]
    lines += ["", "(quadrature error relative to max|∇θ|, backward NFE in brackets)", "",
              f"Training {result['config']['steps']} steps with the default rule: {counts['reused']} calls reused a "
              f"check, {counts['one_round']} checks passed in one round, {counts['refined']} needed refinement; "
              f"backward NFE {counts['nfe_backward']} against {result['paper_training_nfe_backward']} with the "
              f"paper's rule ({counts['nfe_backward'] / result['paper_training_nfe_backward']:.2f}×)."]
    return "\n".join(lines)


def run(repeats: int, quick: bool, out: Path) -> int:
    """``repeats`` is unused: this benchmark measures errors and evaluation counts, not times."""
    config = QUICK if quick else FULL
    rows: dict = {}

    def at_step(step, model):
        if step in config["checkpoints"]:
            rows[step] = checkpoint_errors(model)
            print(f"step {step}: {rows[step]}", file=sys.stderr, flush=True)

    paper_steps, _ = _train(config, IntervalRule(), at_step)
    result = {"config": {**config, "tolerance": TOL, "lr": LR}, "checkpoints": rows,
              "paper_training_nfe_backward": sum(s.nfe_backward for s in paper_steps),
              "default_training": _count_checks(config)}
    write_json_atomic(out, result)
    print(format_report(result))
    return 0
