"""``bench training``: one training step (forward + backward) of the paper's g1d model with every gradient method.

The g1d task (PAPER.md §7.1): two points x = ∓1 → y = ±1, zero-augmented to a 4-D state, f = MLP(4 → W → W → 4)
with softplus, t ∈ [0, 1], dopri5 at rtol = atol = 1e-3, GQ's C = 0.1, MSE on the first coordinate of z(1).
Parameters ≫ state here (P ≈ W²), the regime where GQ is meant to win. Methods: direct backprop through
``gqtorch.odeint``, gqtorch's adjoint, seminorm adjoint and GQ, and torchdiffeq's ``odeint`` (direct) and
``odeint_adjoint`` as the peers. All share one set of initial weights and run interleaved, one thread, float32.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchdiffeq

import gqtorch
from validation.bench_solver import QUICK_REPEATS, time_interleaved, torch_threads
from validation.results import environment, write_json_atomic

WIDTHS = (100, 500, 1000)
QUICK_WIDTHS = (20, 50)
TOLERANCE = 1e-3
GTOL = 0.1
AUGMENTED_DIM = 4
SEED = 0


class G1dField(torch.nn.Module):
    """f(z) = W3·softplus(W2·softplus(W1·z + b1) + b2) + b3, autonomous."""

    def __init__(self, width: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(AUGMENTED_DIM, width), torch.nn.Softplus(), torch.nn.Linear(width, width),
            torch.nn.Softplus(), torch.nn.Linear(width, AUGMENTED_DIM))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def g1d_data() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor([[-1.0], [1.0]])
    z0 = torch.cat([x, torch.zeros(2, AUGMENTED_DIM - 1)], dim=1)
    return z0, -x


def _solvers() -> dict[str, Callable]:
    opts = {"rtol": TOLERANCE, "atol": TOLERANCE}
    return {
        "direct (gqtorch.odeint)": lambda f, z0, t: gqtorch.odeint(f, z0, t, **opts),
        "adjoint (gqtorch)": lambda f, z0, t: gqtorch.odeint_adjoint(f, z0, t, **opts),
        "seminorm (gqtorch)": lambda f, z0, t: gqtorch.odeint_adjoint(f, z0, t, adjoint_options={"norm": "seminorm"},
                                                                      **opts),
        "gq (gqtorch)": lambda f, z0, t: gqtorch.odeint_adjoint_gq(f, z0, t, gtol=GTOL, **opts),
        "direct (torchdiffeq)": lambda f, z0, t: torchdiffeq.odeint(f, z0, t, method="dopri5", **opts),
        "adjoint (torchdiffeq)": lambda f, z0, t: torchdiffeq.odeint_adjoint(f, z0, t, method="dopri5", **opts),
    }


def _training_step(solve: Callable, field: G1dField, z0: torch.Tensor, target: torch.Tensor) -> Callable:
    t = torch.tensor([0.0, 1.0])

    def step() -> np.ndarray:
        field.zero_grad(set_to_none=True)
        z1 = solve(field, z0, t)[-1]
        loss = torch.mean((z1[:, 0:1] - target) ** 2)
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in field.parameters()]).detach().numpy()

    return step


def run(repeats: int = 20, quick: bool = False, out: Path = Path("results/bench_training.json")) -> int:
    widths = QUICK_WIDTHS if quick else WIDTHS
    repeats = min(repeats, QUICK_REPEATS) if quick else repeats
    env = environment()
    print("## Training-step benchmark: the g1d model, every gradient method\n")
    print(f"dopri5 rtol = atol = {TOLERANCE:g}, GQ C = {GTOL}, batch 2, float32, one thread, {repeats} interleaved "
          f"rounds, medians; {env['platform']}\n")
    records = []
    z0, target = g1d_data()
    with torch_threads(1):
        for width in widths:
            torch.manual_seed(SEED)
            field = G1dField(width)
            n_params = sum(p.numel() for p in field.parameters())
            steps = {name: _training_step(solve, field, z0, target) for name, solve in _solvers().items()}
            grads = {name: step() for name, step in steps.items()}  # warm-up, and the gradients to compare
            print(f"width {width}: timing …", file=sys.stderr)
            times = time_interleaved(steps, repeats)
            reference = grads["direct (gqtorch.odeint)"]
            scale = float(np.max(np.abs(reference)))
            gq_time = float(np.median(times["gq (gqtorch)"]))
            rows = [{"method": name, "median_s": float(np.median(times[name])),
                     "relative_difference_vs_direct": float(np.max(np.abs(grads[name] - reference)) / scale)}
                    for name in steps]
            print(f"### width {width}, {n_params} parameters\n")
            print("| method | median step | time / GQ | ‖Δ∇θ‖∞/‖∇θ‖∞ vs direct |")
            print("|---|---:|---:|---:|")
            for r in rows:
                print(f"| {r['method']} | {r['median_s'] * 1e3:.3g} ms | {r['median_s'] / gq_time:.2f}× | "
                      f"{r['relative_difference_vs_direct']:.1e} |")
            print()
            records.append({"width": width, "parameters": n_params, "methods": rows})
    write_json_atomic(out, {"benchmark": "training", "environment": env, "widths": records,
                            "settings": {"repeats": repeats, "tolerance": TOLERANCE, "gtol": GTOL, "seed": SEED}})
    print(f"results written to {out}")
    return 0
