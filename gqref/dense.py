"""Dense output of a finished adaptive solve (any embedded pair): every accepted step's quartic, readable later.

``gqref.solve`` evaluates each step's quartic (:mod:`gqref.interp`) only at the output times it was given and keeps
just the step ends (``Solution.steps``). GQ's "step" and "adaptive" quadratures choose their nodes after the
backward solve, so :func:`dense_output` recovers the quartics by replaying the accepted steps with their recorded
sizes: the same kernel functions on the same inputs (start state, FSAL slope, step start and size), so the
coefficients are bit for bit those the solver used and :meth:`DenseOutput.evaluate` at an output time reproduces
``Solution.ys`` exactly (tested). The price is the replay's evaluations, stages − 1 per accepted step plus one (and
one per ``jump_t`` restart), reported in
``DenseOutput.nfe``; a solver that records its coefficients (as gqtorch's may) does not pay it.

Accuracy: the quartic is a 4th-order continuous extension (Dormand–Prince's for dopri5; for higher-order pairs
such as dopri8 it is far less accurate than the steps), so between step ends it adds an O(h⁵)
local interpolation error to the solution's own error; both are controlled only through the solve's rtol/atol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gqref._numba import kernel
from gqref.errors import NONFINITE_FIELD, SUCCESS, InputError, raise_for_status
from gqref.field import VectorField, all_finite, evaluate
from gqref.interp import fit_matrix, interp_fit
from gqref.runge_kutta import NUDGE_NONE, NUDGE_STATE, combine, one_ulp, rk_step
from gqref.solve import Solution, StepMethod, prepare_field, run_kernel
from gqref.tableau import DOPRI5, float_tableau


class StepLocator:
    """The steps of a dense output, both twins': ``direction`` and the step boundaries ``starts`` (host float64, in
    s = ``direction``·t), which a subclass holds."""

    @property
    def step_times(self) -> np.ndarray:
        """The step boundaries in the caller's time t (the first is the solve's initial time)."""
        return self.direction * self.starts

    def locate(self, t) -> tuple[np.ndarray, np.ndarray]:
        """(owning step, x in [0, 1]) for each time of ``t`` (1-D, anywhere within the steps), in float64.

        The owner is the first step whose end is at or beyond the time (the solver's rule).
        """
        s = self.direction * np.asarray(t, dtype=np.float64).reshape(-1)
        if s.size and (np.min(s) < self.starts[0] or np.max(s) > self.starts[-1]):
            raise InputError(f"dense output covers t in [{self.step_times[0]!r}, {self.step_times[-1]!r}]; "
                             f"asked for t outside it")
        owner = np.minimum(np.searchsorted(self.starts[1:], s, side="left"), len(self.starts) - 2)
        lo, hi = self.starts[owner], self.starts[owner + 1]
        return owner, (s - lo) / (hi - lo)


def step_panels(dense: Sequence[StepLocator], t) -> list[tuple[int, float, float]]:
    """(interval, lo, hi) for every backward step, the last of each interval clipped at t_{i−1}:
    ∫_{t_{i−1}}^{t_i} = Σ over its steps of ∫_lo^hi (lo on the t_{i−1} side). ``dense[g]`` is interval g's backward
    solve and ``t[g]`` the time it runs towards; both twins' GQ step rules use this."""
    panels = []
    for g, d in enumerate(dense):
        ends = d.step_times.copy()  # from t_i towards (and possibly past) t_{i−1}
        ends[-1] = t[g]
        panels += [(g, float(lo), float(hi)) for lo, hi in zip(ends[1:], ends[:-1])]
    return panels


@dataclass(frozen=True)
class DenseOutput(StepLocator):
    """The piecewise-quartic continuous extension of a dopri5 solve.

    Time runs in the solver's increasing variable s = ``direction``·t. Step j covers [``starts[j]``,
    ``starts[j + 1]``] and ``coeffs[j, k]`` is the coefficient of xᵏ with x = (s − starts[j]) / (starts[j+1] −
    starts[j]) (flat state). ``nfe`` is what recovering it cost (0 if the solver recorded it).
    """

    direction: float
    starts: np.ndarray
    coeffs: np.ndarray
    nfe: int

    def evaluate(self, t) -> np.ndarray:
        """States at the times ``t`` (1-D, anywhere within the steps), shape ``(len(t), n)``, one vectorised call.

        Each time is read from its :meth:`locate` step, with the powers accumulated in
        :func:`gqref.interp.interp_evaluate`'s order, so results equal the solver's bit for bit.
        """
        owner, x = self.locate(t)
        x = x[:, None]
        c = self.coeffs[owner]
        total = c[:, 0] + x * c[:, 1]
        x_power = x
        for power in range(2, 5):
            x_power = x_power * x
            total = total + x_power * c[:, power]
        return total


def refit_steps(f, p, direction, y0, starts, sizes, jumps, a, b, c, e, b_mid, fsal, nudge, fit):
    """Replay the accepted steps (start ``starts[j]``, end ``starts[j + 1]``, size ``sizes[j]``) from ``y0``;
    fill their quartics.

    ``nudge`` as the solver ran: NUDGE_STATE (torchdiffeq controller: c = 1 stages one ulp before the recorded
    end) or NUDGE_NONE (scipy: at start + size). After a step with ``jumps[j]`` the field restarts one ulp after
    its end, as the solver did. Returns (status, coefficients (steps, 5, n), step-end states (steps, n), nfe).
    """
    n = y0.shape[0]
    n_steps = sizes.shape[0]
    n_stages = c.shape[0]
    coeffs = np.zeros((n_steps, 5, n), dtype=y0.dtype)
    ends = np.empty((n_steps, n), dtype=y0.dtype)
    k = np.empty((n_stages, n), dtype=y0.dtype)
    y = y0.copy()
    y1 = np.empty_like(y0)
    err = np.empty_like(y0)
    y_mid = np.empty_like(y0)
    evaluate(f, direction, starts[0], y, p, k[0])
    nfe = 1
    if not all_finite(k[0]):
        return NONFINITE_FIELD, coeffs, ends, nfe
    for j in range(n_steps):
        dt = sizes[j]
        t1 = starts[j + 1] if nudge == NUDGE_STATE else starts[j] + dt
        failed = rk_step(f, p, direction, starts[j], dt, t1, y, k, y1, err, a, b, c, e, fsal, nudge)
        nfe += n_stages - 1 if failed < 0 else failed
        if failed >= 0:
            return NONFINITE_FIELD, coeffs, ends, nfe
        combine(y_mid, y, k, b_mid, n_stages, dt)
        interp_fit(coeffs[j], fit, y, y1, y_mid, k[0], k[n_stages - 1], dt)
        for m in range(n):
            ends[j, m] = y1[m]
            y[m] = y1[m]
            k[0, m] = k[n_stages - 1, m]  # the last stage is the next first, as in the solver
        if jumps[j]:
            evaluate(f, direction, one_ulp(starts[j + 1], np.inf, y0.itemsize == 4), y, p, k[0])
            nfe += 1
            if not all_finite(k[0]):
                return NONFINITE_FIELD, coeffs, ends, nfe
    return SUCCESS, coeffs, ends, nfe


REFIT = kernel(refit_steps)


def dense_output(field: VectorField, solution: Solution, params: np.ndarray) -> DenseOutput:
    """The dense output of ``solution``, an adaptive solve of ``field`` (1-D state) with ``params``.

    Replays the recorded steps with the solve's tableau (:class:`gqref.solve.StepMethod`; any adaptive pair, any
    controller, ``jump_t`` restarts included); raises :class:`gqref.errors.InputError` for a fixed-grid solve, or
    if the replay does not land on the recorded step ends bit for bit (a solve of another field or params).
    """
    how = solution.method or StepMethod(name="dopri5", tableau=DOPRI5, adaptive=True, nudged=True)
    if not how.adaptive:
        raise InputError(f"dense output replays adaptive Runge–Kutta steps; method {how.name!r} is a fixed grid "
                         f"(supported: any of gqref.tableau.ADAPTIVE_TABLEAUX)")
    ts = solution.ts
    if len(ts) < 2 or len(solution.steps.hs) == 0:
        raise InputError("dense output needs a solve with at least one accepted step")
    direction = 1.0 if ts[-1] > ts[0] else -1.0
    y0 = np.ascontiguousarray(solution.ys[0], dtype=np.float64).reshape(-1)
    starts = np.concatenate([[direction * ts[0]], direction * solution.steps.ts])
    sizes = np.abs(solution.steps.hs)
    jumps = solution.steps.jumps if solution.steps.jumps is not None else np.zeros(len(sizes), dtype=bool)
    tab = float_tableau(how.tableau)
    f, variant = prepare_field(field, y0, float(ts[0]), params, in_place=True)
    status, coeffs, ends, nfe = run_kernel(
        REFIT, variant, f, params, direction, y0, starts, sizes, np.asarray(jumps, dtype=np.bool_), tab.a,
        tab.b, tab.c, tab.e, tab.b_mid, how.tableau.fsal, NUDGE_STATE if how.nudged else NUDGE_NONE, fit_matrix(),
        state_dtype=y0.dtype)
    raise_for_status(int(status), float(ts[0]), max_steps=len(sizes))
    if not np.array_equal(ends, solution.steps.ys.reshape(len(sizes), -1)):
        raise InputError(f"replaying the recorded steps does not reproduce them: dense_output needs the "
                         f"{how.name} solve of this field with these params")
    return DenseOutput(direction=direction, starts=starts, coeffs=coeffs, nfe=int(nfe))
