"""Sines (docs/paper.md §3.3): second-order dynamics x'' = g(x, x') learned from sine curves, as a first-order ODE.

Data from a seeded generator (the paper's are unseeded): (x0, v0) ~ U(−1, 1)², target y(t) = v0·sin t + x0·cos t
at ``--points`` times in [0, 2π], regular (linspace) or irregular (sorted uniform draws, the first set to 0);
15 training and 5 validation curves. State [x, v], f([x, v]) = [v, MLP(2 → W → W → 1)([x, v])], autonomous;
P = W² + 5W + 1. With irregular times a batch's times are merged into one sorted set, solved once, and each
curve's outputs gathered at its own times. MSE loss and metric.
"""

from __future__ import annotations

import math
import sys

import torch

from validation.tasks.mlp import softplus_mlp

NAME = "sines"
HELP = "sines: second-order ODE fitted to sine curves (docs/paper.md §3.3), MSE"
DEFAULTS = {"width": 100, "epochs": 250, "lr": 0.001, "batch_size": 15}
QUICK = {"width": 8, "epochs": 2}
N_TRAIN, N_VAL = 15, 5
POINTS = (10, 50)


class SinesField(torch.nn.Module):
    """d[x, v]/dt = [v, MLP([x, v])]."""

    def __init__(self, width: int):
        super().__init__()
        self.net = softplus_mlp(2, width, 1)

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return torch.cat([state[..., 1:2], self.net(state)], dim=-1)


class SinesModel(torch.nn.Module):
    """Inputs are rows [x0, v0, t_1 … t_K]; the prediction is x at each curve's own times."""

    def __init__(self, width: int):
        super().__init__()
        self.field = SinesField(width)

    def forward(self, inputs: torch.Tensor, solve) -> torch.Tensor:
        y0, times = inputs[:, :2], inputs[:, 2:].detach().to(torch.float64)
        grid, index = torch.unique(times, sorted=True, return_inverse=True)  # one solve for the whole batch
        if grid.numel() == 1:
            return y0[:, :1].expand(-1, times.shape[1])
        xs = solve(self.field, y0, grid)[..., 0]  # (len(grid), batch)
        return torch.gather(xs.T, 1, index)


def sines_data(n_curves: int, points: int, irregular: bool, generator: torch.Generator,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs (n, 2 + points) = [x0, v0, times], targets (n, points))."""
    start = torch.rand(n_curves, 2, generator=generator, dtype=torch.float64) * 2 - 1
    if irregular:
        times = torch.sort(2 * math.pi * torch.rand(n_curves, points, generator=generator, dtype=torch.float64))[0]
        times[:, 0] = 0.0
    else:
        times = torch.linspace(0.0, 2 * math.pi, points, dtype=torch.float64).expand(n_curves, points)
    x0, v0 = start[:, :1], start[:, 1:]
    targets = v0 * torch.sin(times) + x0 * torch.cos(times)
    return torch.cat([start, times], dim=1).to(dtype), targets.to(dtype)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred - target) ** 2)


def configure_task(parser) -> None:
    parser.add_argument("--points", type=int, choices=POINTS, default=10, help="times per curve (default 10)")
    parser.add_argument("--irregular", action="store_true", help="irregular times (default: regular)")


VARIANT_KEYS = ("points", "irregular")  # the flags variant() names


def variant(args) -> str:
    return f"{args.points}pts-{'irregular' if args.irregular else 'regular'}"


def build(args, generator: torch.Generator, seed: int):
    from validation.harness.training import TaskSetup

    train = torch.utils.data.TensorDataset(*sines_data(N_TRAIN, args.points, args.irregular, generator))
    val = torch.utils.data.TensorDataset(*sines_data(N_VAL, args.points, args.irregular, generator))
    model = SinesModel(args.width)
    return TaskSetup(model=model, field=model.field, train=train, val=val, loss=mse, metric=mse, metric_name="mse",
                     data_source=f"generated: {N_TRAIN} training and {N_VAL} validation sine curves, {args.points} "
                                 f"{'irregular' if args.irregular else 'regular'} times, from the seeded generator")


def _command():
    from validation.harness.training import task_command

    return task_command(sys.modules[__name__])


configure, main = _command()
