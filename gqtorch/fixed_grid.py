"""Fixed-grid explicit Runge–Kutta integration (euler, midpoint, rk4) with torchdiffeq's semantics.

The twin of :mod:`gqref.fixed_grid`: the grid is the output times themselves, or (with ``step_size``) gqref's
:func:`~gqref.fixed_grid.step_size_grid`; outputs inside a grid step are linear interpolations of its end points.
No host transfer happens inside the loop: each step's per-stage finiteness flags stay on the device and are read
once, at the end.
"""

from __future__ import annotations

import torch

from gqref.errors import NONFINITE_FIELD, SUCCESS
from gqref.fixed_grid import step_size_grid
from gqtorch.dopri5 import combine, rk_stages
from gqtorch.tableau import TorchTableau

__all__ = ["integrate_fixed", "step_size_grid"]


def _linear(y0: torch.Tensor, y1: torch.Tensor, t0: float, t1: float, t: float) -> torch.Tensor:
    if t == t0:
        return y0
    if t == t1:
        return y1
    return torch.add(y0, y1 - y0, alpha=(t - t0) / (t1 - t0))


def integrate_fixed(f, y0: torch.Tensor, s_out: list[float], direction: float, grid: list[float],
                    tab: TorchTableau):
    """Step over ``grid`` (increasing, from s_out[0] to s_out[-1]); returns (status, s at stop, ys, nfe, steps)."""
    n_out = len(s_out)
    n_stages = tab.stages
    track = torch.is_grad_enabled()
    outputs = [y0.unsqueeze(0)]
    k = y0.new_empty((n_stages, y0.shape[0]))
    finite = []
    y = y0
    j = 1
    for step in range(len(grid) - 1):
        s0, s1 = grid[step], grid[step + 1]
        dt = s1 - s0
        h = direction * dt
        if track and step > 0:
            k = y0.new_empty((n_stages, y0.shape[0]))
        rk_stages(f, direction * s0, h, y, k, tab.a, tab.c, 0)
        with torch.no_grad():
            finite.append(torch.isfinite(k).all(dim=1))
        y1 = combine(y, k, tab.b, n_stages, h)
        while j < n_out and s1 >= s_out[j]:
            outputs.append(_linear(y, y1, s0, s1, s_out[j]).unsqueeze(0))
            j += 1
        y = y1
    n_steps = len(grid) - 1
    nfe = n_steps * n_stages
    if finite:
        flags = torch.stack(finite).tolist()  # the solve's one host transfer
        bad = next((i for i, row in enumerate(flags) if not all(row)), -1)
        if bad >= 0:
            failed = flags[bad].index(False)
            s0, s1 = grid[bad], grid[bad + 1]
            return NONFINITE_FIELD, s0 + tab.c_host[failed] * (s1 - s0), None, nfe, bad
    return SUCCESS, grid[-1], torch.cat(outputs), nfe, n_steps
