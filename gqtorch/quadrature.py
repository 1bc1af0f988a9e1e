"""Gauß–Legendre tables as torch tensors (twin of :mod:`gqref.quadrature`): gqref's numbers, converted once.

The nodes and weights on [−1, 1] come from :func:`gqref.quadrature.gauss_legendre` (data once) and are cached per
(n, dtype, device), so a backward pass never rebuilds a table or copies one to the device. The node-count rule is
gqref's, re-exported unchanged.
"""

from __future__ import annotations

from functools import cache

import torch

from gqref.quadrature import DEFAULT_MAX_NODES, gauss_legendre, node_count

__all__ = ["DEFAULT_MAX_NODES", "gauss_legendre", "node_count", "reference_rule"]


@cache
def _reference_rule(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    nodes, weights = gauss_legendre(n)
    return (torch.as_tensor(nodes, dtype=torch.float64).to(dtype=dtype, device=device),
            torch.as_tensor(weights, dtype=torch.float64).to(dtype=dtype, device=device))


def reference_rule(n: int, dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The n-point rule on [−1, 1] as (nodes, weights) tensors of ``dtype`` on ``device`` (cached; do not modify)."""
    return _reference_rule(int(n), dtype, torch.device(device))
