"""The MLP every task's vector field is built from: Linear → Softplus → Linear → Softplus → Linear (docs/paper.md
§3)."""

from __future__ import annotations

import torch


def softplus_mlp(n_in: int, width: int, n_out: int) -> torch.nn.Sequential:
    """n_in → width → width → n_out with Softplus activations: (n_in + 1)·W + (W + 1)·W + (W + 1)·n_out parameters."""
    return torch.nn.Sequential(
        torch.nn.Linear(n_in, width), torch.nn.Softplus(),
        torch.nn.Linear(width, width), torch.nn.Softplus(),
        torch.nn.Linear(width, n_out))


def zero_augment(x: torch.Tensor, extra: int) -> torch.Tensor:
    """x with ``extra`` zero columns appended (ANODE's augmentation)."""
    return torch.cat([x, x.new_zeros(x.shape[0], extra)], dim=1)
