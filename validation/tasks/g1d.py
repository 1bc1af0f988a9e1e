"""g1d (PAPER.md §7.1): the 1-D crossing map x = ∓1 → y = ±1 that a plain neural ODE cannot represent.

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
