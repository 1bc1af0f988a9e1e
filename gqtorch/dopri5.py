"""One explicit Runge–Kutta step: stages, propagated solution, error estimate, mid-point (Dormand–Prince, FSAL).

The twin of :mod:`gqref.dopri5` on flat torch tensors. Stages live in one preallocated ``(stages, n)`` tensor
``k``; every stage input is one ``addmv`` over the stages before it. ``dt`` is the signed step in the caller's time
(so a decreasing solve needs no negated field), a Python float: step sizes are not differentiated.
"""

from __future__ import annotations

import torch


def combine(y0: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, n_terms: int, dt: float) -> torch.Tensor:
    """y0 + dt·Σ_{j < n_terms} w_j k_j, in one op."""
    return torch.addmv(y0, k[:n_terms].t(), weights[:n_terms], alpha=dt)


def stage_times(c: torch.Tensor, t0: float, dt: float, dtype: torch.dtype,
                shift: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """t0 + c_s·dt for every stage, as 0-d tensors of ``dtype`` on c's device (computed there: no host transfer).

    Computed in float64 as gqref does (c·dt first, then t0; c = 1 gives exactly t0 + dt), then cast to the
    state's dtype, which is what torchdiffeq passes to the field. ``shift`` (a zero-valued 0-d tensor carrying
    the derivative with respect to the first output time) is added when the solve differentiates its times.
    """
    times = c.mul(dt).add_(t0)
    if dtype != times.dtype:
        times = times.to(dtype)
    if shift is not None:
        times = times + shift.to(dtype)
    return times.unbind()


def rk_stages(f, t0: float, dt: float, y0: torch.Tensor, k: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
              first: int, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Evaluate stages ``first..`` of an explicit RK step into ``k`` (``k[:first]`` are given).

    Returns the input of the last stage. Finiteness is not checked here (that would cost a host sync per stage):
    the caller checks the whole step at once.
    """
    times = stage_times(c, t0, dt, y0.dtype, shift)
    y_stage = y0
    for s in range(first, k.shape[0]):
        y_stage = combine(y0, k, a[s], s, dt) if s > 0 else y0
        k[s] = f(times[s], y_stage)
    return y_stage


def dopri5_step(f, t0: float, dt: float, y0: torch.Tensor, k: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
                e: torch.Tensor, shift: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A Dormand–Prince step from (t0, y0) with ``k[0] = f(t0, y0)`` given (FSAL).

    Fills ``k`` (``k[6]`` = f(t1, y1), the next step's ``k[0]``) and returns ``(y1, err)``: y1 is the 5th-order
    solution (the last stage's input, since b equals the last row of a), ``err = dt·Σ e_j k_j`` the local error
    estimate, computed without recording a graph (it only steers the step size).
    """
    y1 = rk_stages(f, t0, dt, y0, k, a, c, 1, shift)
    with torch.no_grad():
        err = torch.addmv(y0, k.t(), e, beta=0.0, alpha=dt)
    return y1, err


def midpoint_state(y0: torch.Tensor, k: torch.Tensor, b_mid: torch.Tensor, dt: float) -> torch.Tensor:
    """The solution at the step's mid-point (Shampine's weights), for the quartic dense output."""
    return combine(y0, k, b_mid, k.shape[0], dt)
