"""g1d (docs/paper.md §3.1): the 1-D crossing map x = ∓1 → y = ±1 that a plain neural ODE cannot represent.

Two points, zero-augmented to a 4-D state; f = MLP(4 → W → W → 4), autonomous; the readout is z₁(1); MSE. The
training set is also the validation set. P = W² + 10W + 4.
"""

from __future__ import annotations

import torch

from validation.tasks.mlp import softplus_mlp, zero_augment

AUGMENTED_DIM = 4  # the 1-D input plus 3 zero dimensions


class G1dField(torch.nn.Module):
    """f(t, z) = MLP(z), autonomous."""

    def __init__(self, width: int):
        super().__init__()
        self.net = softplus_mlp(AUGMENTED_DIM, width, AUGMENTED_DIM)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def g1d_data(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(z0 of shape (2, 4), targets of shape (2, 1)): x = −1 → +1 and x = +1 → −1."""
    x = torch.tensor([[-1.0], [1.0]], dtype=dtype)
    return zero_augment(x, AUGMENTED_DIM - 1), -x


def g1d_readout(z1: torch.Tensor) -> torch.Tensor:
    """The prediction: the first coordinate of z(1)."""
    return z1[:, 0:1]


# --- the training task -------------------------------------------------------------------------------------------

NAME = "g1d"
HELP = "g1d: the 1-D crossing map (docs/paper.md §3.1), MSE"
DEFAULTS = {"width": 100, "epochs": 150, "lr": 0.01, "batch_size": 2}
QUICK = {"width": 8, "epochs": 2}
VARIANT_KEYS = ()  # no variant folder beyond "default"


class G1dModel(torch.nn.Module):
    """z(1) of the augmented ODE from the zero-augmented input; the prediction is its first coordinate."""

    def __init__(self, width: int):
        super().__init__()
        self.field = G1dField(width)

    def forward(self, z0: torch.Tensor, solve) -> torch.Tensor:
        t = torch.tensor([0.0, 1.0], dtype=torch.float64, device=z0.device)
        return g1d_readout(solve(self.field, z0, t)[-1])


def build(args, generator: torch.Generator, seed: int):
    from validation.harness.training import TaskSetup

    z0, targets = g1d_data()
    data = torch.utils.data.TensorDataset(z0, targets)
    model = G1dModel(args.width)
    return TaskSetup(model=model, field=model.field, train=data, val=data, loss=mse, metric=mse, metric_name="mse",
                     data_source="the two g1d points x = ∓1 → y = ±1 (training set = validation set)")


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((pred - target) ** 2)


def _command():
    import sys

    from validation.harness.training import task_command

    return task_command(sys.modules[__name__])


configure, main = _command()
