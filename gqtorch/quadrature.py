"""Gauß–Legendre and Gauß–Kronrod tables as torch tensors (twin of :mod:`gqref.quadrature` and
:mod:`gqref.kronrod`): gqref's numbers, converted once.

The nodes and weights on [−1, 1] come from :func:`gqref.quadrature.gauss_legendre` and
:func:`gqref.kronrod.gauss_kronrod` (data once) and are cached per (n, dtype, device), so a backward pass never
rebuilds a table or copies one to the device. The node-count rule is gqref's, re-exported unchanged.
"""

from __future__ import annotations

from functools import cache

import torch

from gqref.kronrod import gauss_kronrod
from gqref.quadrature import DEFAULT_MAX_NODES, gauss_legendre, node_count

__all__ = ["DEFAULT_MAX_NODES", "gauss_legendre", "kronrod_rule", "node_count", "reference_rule"]


def _convert(arrays, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    # through float64 first: the numbers are gqref's, only rounded once to the target dtype
    return tuple(torch.as_tensor(a, dtype=torch.float64).to(dtype=dtype, device=device) for a in arrays)


@cache
def _reference_rule(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return _convert(gauss_legendre(n), dtype, device)


@cache
def _kronrod_rule(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _convert(gauss_kronrod(n), dtype, device)


def reference_rule(n: int, dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """The n-point rule on [−1, 1] as (nodes, weights) tensors of ``dtype`` on ``device`` (cached; do not modify)."""
    return _reference_rule(int(n), dtype, torch.device(device))


def kronrod_rule(n: int, dtype: torch.dtype,
                 device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """gqref's (2n+1)-point Gauß–Kronrod pair on [−1, 1] as (nodes, Kronrod weights, Gauß weights) tensors
    (Gauß weights zero at the Kronrod-only nodes; see :func:`gqref.kronrod.gauss_kronrod`), cached; do not modify."""
    return _kronrod_rule(int(n), dtype, torch.device(device))
