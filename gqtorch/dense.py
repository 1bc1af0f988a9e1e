"""Dense output of a finished adaptive solve: every accepted step's quartic (twin of :mod:`gqref.dense`).

gqref recovers the quartics by replaying the accepted steps; gqtorch's solver records them as it goes
(``integrate_adaptive(..., record=[])``), so reading the dense output costs no evaluations. Time runs in the
solver's increasing variable s = direction·t; the step boundaries are host floats (the solver keeps its times on the
host), the coefficients a ``(steps, 5, n)`` tensor on the state's device. So locating the step that owns a time is
host arithmetic (numpy, the same float64 operations as gqref) and evaluating is one gather and four fused
multiply-and-adds on the device, for any number of times at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL
from gqref.dense import StepLocator
from gqref.errors import InputError


@dataclass(frozen=True)
class DenseOutput(StepLocator):
    """The piecewise-quartic continuous extension of one adaptive solve.

    Step j covers [``starts[j]``, ``starts[j + 1]``] in s = ``direction``·t and ``coeffs[j, k]`` is the coefficient
    of xᵏ with x = (s − starts[j]) / (starts[j+1] − starts[j]) (flat state), as in :mod:`gqtorch.interp`.
    """

    direction: float
    starts: np.ndarray
    coeffs: torch.Tensor

    def evaluate(self, t) -> torch.Tensor:
        """States at the times ``t`` (1-D), shape ``(len(t), n)``; ``step_times`` and ``locate`` (host float64,
        the same arithmetic) are gqref's."""
        owner, x = self.locate(t)
        return evaluate_quartics(self.coeffs, owner, x)


def evaluate_quartics(coeffs: torch.Tensor, owner: np.ndarray, x: np.ndarray) -> torch.Tensor:
    """Σ_k coeffs[owner, k]·xᵏ per row, with the powers accumulated in gqref's order (c0 + x·c1, then x^k = x^{k−1}·x
    added one by one); ``owner`` and ``x`` are host arrays (one transfer each)."""
    index = torch.as_tensor(owner, dtype=torch.long).to(coeffs.device)
    x = torch.as_tensor(x, dtype=torch.float64).to(dtype=coeffs.dtype, device=coeffs.device).unsqueeze(1)
    c = coeffs.index_select(0, index)
    total = c[:, 0] + x * c[:, 1]  # plain products and sums (no fused multiply-add): gqref's rounding
    power = x
    for k in range(2, 5):
        power = power * x
        total = total + power * c[:, k]
    return total


def dense_output(record: Sequence[tuple[float, float, torch.Tensor]], direction: float) -> DenseOutput:
    """The dense output from ``integrate_adaptive``'s ``record`` of a solve with ``direction`` (at least one step)."""
    if not record:
        raise InputError("dense output needs a solve with at least one accepted step")
    starts = np.array([record[0][0]] + [end for _, end, _ in record], dtype=np.float64)
    return DenseOutput(direction=float(direction), starts=starts, coeffs=torch.stack([c for _, _, c in record]))


class DenseReader:
    """Reads states from several dense outputs (group g = ``dense[g]``) at once: one gather for a whole batch."""

    def __init__(self, dense: Sequence[DenseOutput]):
        self.dense = list(dense)
        self.offsets = np.cumsum([0] + [len(d.starts) - 1 for d in self.dense])
        self.coeffs = torch.cat([d.coeffs for d in self.dense]) if self.dense else None

    def __call__(self, groups: np.ndarray, times: np.ndarray) -> torch.Tensor:
        """States at ``times[k]`` from ``dense[groups[k]]``, shape ``(len(times), n)``."""
        groups = np.asarray(groups, dtype=np.int64).reshape(-1)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        owner = np.empty(times.size, dtype=np.int64)
        x = np.empty(times.size)
        for g in np.unique(groups):
            where = groups == g
            owner[where], x[where] = self.dense[g].locate(times[where])
            owner[where] += self.offsets[g]
        return evaluate_quartics(self.coeffs, owner, x)


def odeint_dense(func, y0: torch.Tensor, t0, t1, *, rtol: float = DEFAULT_RTOL, atol=DEFAULT_ATOL,
                 method: str | None = None, options: dict | None = None):
    """torchdiffeq's ``odeint_dense``: solve from ``t0`` to ``t1`` and return ``dense_output_fn(t_eval)``, the
    solution at any times in [t0, t1] from the accepted steps' quartics (shape ``(len(t_eval), *y0.shape)``, or
    ``y0.shape`` for a 0-d ``t_eval``).

    As in torchdiffeq: a tensor ``y0`` only, an adaptive method (default dopri5; torchdiffeq allows only dopri5),
    no gradient through the dense output (it reads the recorded steps). Errors as :func:`gqtorch.odeint`.
    """
    from gqtorch.solve import (
        FlatField,
        as_norm,
        flat_atol,
        flat_state,
        integrate_plan,
        plan_method,
        time_grid,
        tolerance_number,
    )

    if not isinstance(y0, torch.Tensor):
        raise InputError(f"odeint_dense takes a tensor y0 (not a tuple), got {type(y0).__name__}")
    flat, shapes, _ = flat_state(y0)
    plan = plan_method(method, options, state_dtype=flat.dtype)
    if not plan.is_adaptive:
        raise InputError(f"odeint_dense needs an adaptive method with a dense output, got {plan.method!r}")
    times = torch.stack([torch.as_tensor(t0, dtype=torch.float64).reshape(()),
                         torch.as_tensor(t1, dtype=torch.float64).reshape(())]).detach().cpu()
    s_out, direction = time_grid(times)
    rtol = tolerance_number("rtol", rtol)
    atol_flat = flat_atol(atol, shapes, False, flat.numel(), flat.real.dtype if flat.is_complex() else flat.dtype,
                      flat.device)
    field = FlatField(func, shapes, False)
    norm = as_norm(plan.norm, None, field.split, atol_flat.dtype, flat.device)
    record: list = []
    with torch.no_grad():
        integrate_plan(plan, field, flat, s_out.tolist(), direction, rtol, atol_flat, norm, record=record)
    dense = dense_output(record, direction)

    def dense_output_fn(t_eval) -> torch.Tensor:
        t_eval = torch.as_tensor(t_eval, dtype=torch.float64)
        values = dense.evaluate(t_eval.detach().cpu().reshape(-1).numpy())
        return values.reshape(*t_eval.shape, *shapes[0])

    return dense_output_fn
