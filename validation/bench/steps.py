"""The training steps the gradient benchmarks time: each paper task's field, batch and loss at a width, and one
solve per gradient method (gqtorch's and torchdiffeq's), all at the same tolerance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torchdiffeq

import gqtorch
from gqref.rules import PAPER_C, AutoRule
from validation.tasks.g1d import G1dField, g1d_data, g1d_readout
from validation.tasks.nested_spheres import NestedSpheresField, nested_spheres_data, nested_spheres_readout

TOLERANCE = 1e-3  # dopri5 rtol = atol, the paper's training tolerance
GTOL = PAPER_C
SEED = 0
NESTED_SPHERES_BATCH = 200


# short names for ``bench gradients --methods`` → the labels of :func:`solvers`
METHOD_KEYS = {
    "direct": "direct (gqtorch)", "adjoint": "adjoint (gqtorch)", "seminorm": "seminorm (gqtorch)",
    "gq": "gq (gqtorch)", "gq-auto": "gq auto (gqtorch)", "gq-auto-reuse": "gq auto, reusing checks (gqtorch)",
    "td-direct": "direct (torchdiffeq)", "td-adjoint": "adjoint (torchdiffeq)", "td-seminorm": "seminorm (torchdiffeq)",
}


def solvers(tolerance: float = TOLERANCE) -> dict[str, Callable]:
    """Method label → solve(func, y0, t), every one at rtol = atol = ``tolerance``."""
    opts = {"rtol": tolerance, "atol": tolerance}
    seminorm = {"adjoint_options": {"norm": "seminorm"}}
    return {
        "direct (gqtorch)": lambda f, y0, t: gqtorch.odeint(f, y0, t, **opts),
        "adjoint (gqtorch)": lambda f, y0, t: gqtorch.odeint_adjoint(f, y0, t, **opts),
        "seminorm (gqtorch)": lambda f, y0, t: gqtorch.odeint_adjoint(f, y0, t, **seminorm, **opts),
        "gq (gqtorch)": lambda f, y0, t: gqtorch.odeint_adjoint_gq(f, y0, t, quadrature="interval", gtol=GTOL,
                                                                    **opts),
        "gq auto (gqtorch)": lambda f, y0, t: gqtorch.odeint_adjoint_gq(f, y0, t, **opts),
        # opt-in reuse (AutoRule.recheck_every): at fixed parameters, as a timed step repeats, a check passed with
        # the margin serves 9 more calls; training changes the parameters every step and never reuses
        "gq auto, reusing checks (gqtorch)": lambda f, y0, t: gqtorch.odeint_adjoint_gq(
            f, y0, t, quadrature=AutoRule(recheck_every=10), **opts),
        "direct (torchdiffeq)": lambda f, y0, t: torchdiffeq.odeint(f, y0, t, method="dopri5", **opts),
        "adjoint (torchdiffeq)": lambda f, y0, t: torchdiffeq.odeint_adjoint(f, y0, t, method="dopri5", **opts),
        "seminorm (torchdiffeq)": lambda f, y0, t: torchdiffeq.odeint_adjoint(f, y0, t, method="dopri5",
                                                                              **seminorm, **opts),
    }


@dataclass
class TrainingStep:
    """One task at one width: ``step(solve)`` zeroes the gradients, runs forward + backward, returns ∇θ of f."""

    field: torch.nn.Module
    loss: Callable[[torch.Tensor], torch.Tensor]
    y0: torch.Tensor
    t: torch.Tensor

    def parameters(self) -> int:
        return sum(p.numel() for p in self.field.parameters())

    def step(self, solve: Callable) -> np.ndarray:
        """One forward + backward; the gradient comes back to the host (on CUDA that is the step's one sync)."""
        self.field.zero_grad(set_to_none=True)
        z1 = solve(self.field, self.y0, self.t)[-1]
        self.loss(z1).backward()
        return torch.cat([p.grad.reshape(-1) for p in self.field.parameters()]).detach().cpu().numpy()


def training_step(task: str, width: int, seed: int = SEED, device: str = "cpu") -> TrainingStep:
    """The task's model (initial weights from ``seed``), data batch and loss, on ``device``."""
    torch.manual_seed(seed)
    t = torch.tensor([0.0, 1.0], device=device)
    if task == "g1d":
        z0, target = (x.to(device) for x in g1d_data())
        field = G1dField(width).to(device)
        return TrainingStep(field, lambda z1: torch.mean((g1d_readout(z1) - target) ** 2), z0, t)
    if task == "nested-spheres":
        field = NestedSpheresField(width).to(device)
        readout = nested_spheres_readout().to(device)
        z0, labels = (x.to(device) for x in
                      nested_spheres_data(NESTED_SPHERES_BATCH // 2, torch.Generator().manual_seed(seed)))
        return TrainingStep(field, lambda z1: torch.nn.functional.cross_entropy(readout(z1), labels), z0, t)
    raise ValueError(f"unknown task {task!r}; expected 'g1d' or 'nested-spheres'")


TASKS = ("g1d", "nested-spheres")
