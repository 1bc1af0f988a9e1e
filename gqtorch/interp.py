"""Dense output: the quartic through y0, y1, y_mid and the slopes f0, f1 of one step (twin of :mod:`gqref.interp`).

Coefficients are a ``(5, n)`` tensor, row k the coefficient of x**k with x = (t − t0)/(t1 − t0). Fitting is two
matrix products; evaluating any number of times in one step is one more.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import torch

from gqref.tableau import INTERP_FIT_FLOAT


@cache
def _fit_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(INTERP_FIT_FLOAT, dtype=dtype, device=device)


def fit_matrix(dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """gqref's 5 × 5 quartic fit matrix (row k: the coefficient of x**k in the basis [y0, y1, y_mid, dt·f0, dt·f1])."""
    return _fit_matrix(dtype, torch.device(device))


def interp_fit(y0: torch.Tensor, y1: torch.Tensor, y_mid: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor,
               dt: float) -> torch.Tensor:
    """The coefficients from the basis [y0, y1, y_mid, dt·f0, dt·f1] (gqref's fit matrix)."""
    fit = fit_matrix(y0.dtype, y0.device)
    values = torch.mm(fit[:, :3], torch.stack((y0, y1, y_mid)))
    return torch.addmm(values, fit[:, 3:], torch.stack((f0, f1)), alpha=dt)


def interp_powers(t0: float, t1: float, ts: Sequence[float]) -> list[list[float]]:
    """[1, x, x², x³, x⁴] for each t, x = (t − t0)/(t1 − t0), powers accumulated as torchdiffeq does."""
    rows = []
    for t in ts:
        x = (t - t0) / (t1 - t0)
        row = [1.0, x]
        for _ in range(3):
            row.append(row[-1] * x)
        rows.append(row)
    return rows


def interp_evaluate(coeffs: torch.Tensor, t0: float, t1: float, ts: Sequence[float],
                    shifts: torch.Tensor | None = None) -> torch.Tensor:
    """The quartic at each time of ``ts`` (all in [t0, t1]): shape ``(len(ts), n)``.

    ``shifts`` (zero-valued, one per time, in float64) carry the derivative of each evaluation time relative to
    the step's start; the powers are then built by the same float64 products from the shifted x, so the values
    are unchanged and backprop gives the derivative of the quartic with respect to the output times.
    """
    if shifts is None:
        powers = torch.tensor(interp_powers(t0, t1, ts), dtype=coeffs.dtype, device=coeffs.device)
        return torch.mm(powers, coeffs)
    xs = torch.tensor([(t - t0) / (t1 - t0) for t in ts], dtype=torch.float64, device=coeffs.device)
    x = xs + shifts.to(torch.float64) / (t1 - t0)
    columns = [torch.ones_like(x), x]
    for _ in range(3):
        columns.append(columns[-1] * x)
    return torch.mm(torch.stack(columns, dim=1).to(coeffs.dtype), coeffs)
