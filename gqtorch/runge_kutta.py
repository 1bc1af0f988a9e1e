"""One explicit Runge–Kutta step of any tableau: stages, propagated solution, error estimate, mid-point.

The twin of :mod:`gqref.runge_kutta` on flat torch tensors. Stages live in one preallocated ``(stages, n)`` tensor
``k``; every stage input is one ``addmv`` over the stages before it. ``dt`` is the signed step in the caller's time
(so a decreasing solve needs no negated field), a Python float: step sizes are not differentiated.
"""

from __future__ import annotations

import torch

from gqtorch.tableau import TorchTableau


def combine(y0: torch.Tensor, k: torch.Tensor, weights: torch.Tensor, n_terms: int, dt: float) -> torch.Tensor:
    """y0 + dt·Σ_{j < n_terms} w_j k_j, in one op."""
    return torch.addmv(y0, k[:n_terms].t(), weights[:n_terms], alpha=dt)


NUDGEABLE = (torch.float32, torch.float64)  # dtypes torch.nextafter supports on every device


def stage_times(c: torch.Tensor, t0: float, dt: float, dtype: torch.dtype,
                shift: torch.Tensor | None = None, end_stages: tuple[int, ...] = (),
                t_end: float | None = None) -> tuple[torch.Tensor, ...]:
    """t0 + c_s·dt for every stage, as 0-d tensors of ``dtype`` on c's device (computed there: no host transfer).

    Computed in float64 as gqref does (c·dt first, then t0; c = 1 gives exactly t0 + dt), then cast to the
    state's dtype, which is what torchdiffeq passes to the field. The ``end_stages`` (those with c = 1) are moved
    one ulp of the state's dtype back towards t0, as torchdiffeq does: a field with a jump at the step's end is
    then evaluated on the step's own side of it. ``shift`` (a zero-valued 0-d tensor carrying the derivative with
    respect to the first output time) is added when the solve differentiates its times. ``t_end``: the step's
    recorded end, when it was shortened onto a prescribed time (t0 + (t1 − t0) may miss t1 by an ulp).
    """
    times = c.mul(dt).add_(t0)
    if t_end is not None and end_stages:
        times = times.index_fill(0, torch.tensor(end_stages, device=times.device), t_end)
    if dtype != times.dtype:
        times = times.to(dtype)
    if end_stages and dtype in NUDGEABLE:
        end = torch.tensor(end_stages, device=times.device)
        times = times.index_put((end,), torch.nextafter(times[end], times[0].expand(len(end_stages))))
    if shift is not None:
        times = times + shift.to(dtype)
    return times.unbind()


def rk_stages(f, t0: float, dt: float, y0: torch.Tensor, k: torch.Tensor, a: torch.Tensor, c: torch.Tensor,
              first: int, shift: torch.Tensor | None = None, end_stages: tuple[int, ...] = (),
              t_end: float | None = None) -> torch.Tensor:
    """Evaluate stages ``first..`` of an explicit RK step into ``k`` (``k[:first]`` are given).

    Returns the input of the last stage. Finiteness is not checked here (that would cost a host sync per stage):
    the caller checks the whole step at once.
    """
    times = stage_times(c, t0, dt, y0.dtype, shift, end_stages, t_end)
    y_stage = y0
    for s in range(first, k.shape[0]):
        y_stage = combine(y0, k, a[s], s, dt) if s > 0 else y0
        k[s] = f(times[s], y_stage)
    return y_stage


def rk_step(f, t0: float, dt: float, y0: torch.Tensor, k: torch.Tensor, tab: TorchTableau,
            shift: torch.Tensor | None = None, t_end: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An embedded Runge–Kutta step from (t0, y0) with ``k[0] = f(t0, y0)`` given.

    Fills ``k`` and returns ``(y1, err)``: y1 = y0 + dt·Σ b_j k_j (for a pair with the FSAL property that is the
    last stage's input, reused, so ``k[-1]`` = f(t1, y1)); ``err = dt·Σ e_j k_j`` is the local error estimate,
    computed without recording a graph (it only steers the step size). Whatever the tableau, the last stage is
    what the next step takes as its first, as torchdiffeq does.
    """
    y_last = rk_stages(f, t0, dt, y0, k, tab.a, tab.c, 1, shift, tab.end_stages, t_end)
    y1 = y_last if tab.fsal else combine(y0, k, tab.b, tab.stages, dt)
    with torch.no_grad():
        err = torch.addmv(y0, k.t(), tab.e, beta=0.0, alpha=dt)
    return y1, err


def midpoint_state(y0: torch.Tensor, k: torch.Tensor, b_mid: torch.Tensor, dt: float) -> torch.Tensor:
    """The solution at the step's mid-point (Shampine's weights), for the quartic dense output."""
    return combine(y0, k, b_mid, k.shape[0], dt)
