"""Torch copies of gqref's tableau arrays, converted once per (dtype, device).

No coefficient is defined here: every number comes from :mod:`gqref.tableau` (exact rationals rounded once to
float64 there) and is only converted. Stage weights take the state's dtype (as torchdiffeq casts its tableau to
``y0.dtype``); the stage nodes ``c`` stay float64, since time is float64 whatever the state's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from gqref.tableau import Tableau, float_tableau


@dataclass(frozen=True)
class TorchTableau:
    """gqref's :class:`~gqref.tableau.FloatTableau` as tensors: ``a`` (stages × stages), ``b``, ``e`` (b − b_low),
    ``b_mid`` in the state's dtype; ``c`` in float64."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    e: torch.Tensor
    b_mid: torch.Tensor
    c_host: tuple[float, ...]
    stages: int
    order_low: int | None
    fsal: bool = False
    end_stages: tuple[int, ...] = ()  # the stages with c = 1, evaluated one ulp before the step's end


@cache
def _torch_tableau(tableau: Tableau, dtype: torch.dtype, device: torch.device) -> TorchTableau:
    ft = float_tableau(tableau)

    def convert(values, to=dtype):
        return torch.as_tensor(values, dtype=to, device=device)

    return TorchTableau(a=convert(ft.a), b=convert(ft.b), c=convert(ft.c, torch.float64), e=convert(ft.e),
                        b_mid=convert(ft.b_mid), c_host=tuple(float(x) for x in ft.c), stages=tableau.stages,
                        order_low=tableau.order_low, fsal=tableau.b_low is not None and tableau.fsal,
                        end_stages=tuple(i for i, c in enumerate(tableau.c) if c == 1))


def torch_tableau(tableau: Tableau, dtype: torch.dtype, device: torch.device | str) -> TorchTableau:
    """The tableau's arrays as tensors of ``dtype`` on ``device`` (cached: converted once per dtype and device)."""
    return _torch_tableau(tableau, dtype, torch.device(device))
