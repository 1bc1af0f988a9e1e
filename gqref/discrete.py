"""The exact derivative of the discrete solve with its accepted steps frozen ("discretise, then optimise").

This is what direct backpropagation through the solver computes when step sizes are not differentiated (as in
diffrax and gqtorch): the solution map is a fixed composition of Runge–Kutta steps of the solve's tableau (any
adaptive pair; the solve's :class:`gqref.solve.StepMethod` says which) with the recorded sizes, starting at t_0
and ending with the dense output at each output time, including the solver's one-ulp nudges and ``jump_t``
restarts. Fixed-grid solves are refused (InputError). :func:`replay` evaluates that map in any
dtype (complex too, for complex-step checks); :func:`discrete_gradient` is its hand-written reverse mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gqref.augmented import require_vjps
from gqref.errors import InputError
from gqref.field import VectorField, vjp_value
from gqref.interp import fit_matrix
from gqref.runge_kutta import one_ulp
from gqref.solve import Solution, StepMethod
from gqref.tableau import DOPRI5, FloatTableau, float_tableau

FIT = fit_matrix()
# A Solution built by hand (method=None) reads as the default solve: dopri5 under the torchdiffeq controller.
DEFAULT_METHOD = StepMethod(name="dopri5", tableau=DOPRI5, adaptive=True, nudged=True)


@dataclass(frozen=True)
class FrozenSteps:
    """The discrete map of a forward solve: its tableau, step sizes and step ends in the solver's time
    s = direction·t, which step's dense output serves each output time, and where the field restarted.

    Step m runs from ``starts[m]`` to ``starts[m + 1]`` with ``starts = ends + (s_0 − ends[0])``: the solver's own
    recorded ends (bitwise, also for steps shortened onto ``step_t``/``jump_t``), moved with the first output time
    (the derivative with the step sizes frozen). A stage with c = 1 sits ``end_gap[m]`` before the step's end (one
    ulp for the torchdiffeq controller, as its solver nudges it) — or, for the scipy controller, at start + size.
    After a step with ``jumps[m]`` the next first slope is f re-evaluated ``restart_gap[m]`` (one ulp) after it.
    """

    direction: float
    sizes: np.ndarray
    owner: np.ndarray  # owner[i] = index of the step whose dense output gives output i (i ≥ 1)
    ends: np.ndarray  # s_0 and every step's end, as the solver recorded them
    tab: FloatTableau
    fsal: bool
    nudged: bool
    end_gap: np.ndarray
    jumps: np.ndarray
    restart_gap: np.ndarray

    @classmethod
    def of(cls, forward: Solution) -> FrozenSteps:
        how = forward.method or DEFAULT_METHOD
        if not how.adaptive:
            raise InputError(f"the discrete gradient replays adaptive Runge–Kutta steps; method {how.name!r} is a "
                             f"fixed grid (supported: any of gqref.tableau.ADAPTIVE_TABLEAUX)")
        t = forward.ts
        direction = 1.0 if len(t) < 2 or t[-1] > t[0] else -1.0
        sizes = np.abs(forward.steps.hs)
        ends = np.concatenate([[direction * t[0]], direction * forward.steps.ts]).astype(np.float64)
        owner = np.array([0] + [int(np.argmax(ends[1:] >= direction * ti)) for ti in t[1:]], dtype=np.int64)
        single = forward.ys.dtype == np.float32
        end_gap = np.array([e - one_ulp(e, -np.inf, single) for e in ends[1:]])
        restart_gap = np.array([one_ulp(e, np.inf, single) - e for e in ends[1:]])
        jumps = forward.steps.jumps if forward.steps.jumps is not None else np.zeros(len(sizes), dtype=bool)
        return cls(direction=direction, sizes=sizes, owner=owner, ends=ends, tab=float_tableau(how.tableau),
                   fsal=how.tableau.fsal, nudged=how.nudged, end_gap=end_gap, jumps=np.asarray(jumps, dtype=bool),
                   restart_gap=restart_gap)

    def starts(self, s0):
        """The step boundaries for a first output time ``s0`` (any dtype: complex steps move them all)."""
        return self.ends + (s0 - self.ends[0])

    def stage_time(self, starts, m: int, j: int):
        c = self.tab.c[j]
        if c != 1.0:
            return starts[m] + c * self.sizes[m]
        return starts[m + 1] - self.end_gap[m] if self.nudged else starts[m] + self.sizes[m]

    def restart_time(self, starts, m: int):
        return starts[m + 1] + self.restart_gap[m]


def _flat(field: VectorField, shape: tuple[int, ...]) -> tuple[Callable, ...]:
    """The field's functions on flat states (compiled fields already are)."""
    if field.compiled:
        return field.f, field.vjp_t, field.vjp_y, field.vjp_p

    def f(t, y, p):
        return np.asarray(field.f(t, y.reshape(shape), p)).reshape(-1)

    def vjp_t(t, y, p, a):
        return field.vjp_t(t, y.reshape(shape), p, a.reshape(shape))

    def vjp_y(t, y, p, a):
        return np.asarray(field.vjp_y(t, y.reshape(shape), p, a.reshape(shape))).reshape(-1)

    def vjp_p(t, y, p, a):
        return np.asarray(field.vjp_p(t, y.reshape(shape), p, a.reshape(shape)))

    return f, vjp_t, vjp_y, vjp_p


def _run(f, params, y0, s_out, plan: FrozenSteps, keep: bool):
    """The frozen-step forward map; with ``keep`` also every step's stage inputs, slopes and y1."""
    d = plan.direction
    tab = plan.tab
    n_stages = tab.c.shape[0]
    y = y0.copy()
    dtype = np.result_type(y0.dtype, params.dtype, s_out.dtype)
    k = np.empty((n_stages, y.size), dtype=dtype)
    k[0] = d * f(d * s_out[0], y, params)
    outputs = np.empty((len(s_out), y.size), dtype=dtype)
    outputs[0] = y
    starts = plan.starts(s_out[0])
    stored = []
    for m, h in enumerate(plan.sizes):
        s = starts[m]
        stage_inputs = np.empty_like(k)
        stage_inputs[0] = y
        for j in range(1, n_stages):
            stage_inputs[j] = y + (k[:j].T * (tab.a[j, :j] * h)).sum(axis=1)
            k[j] = d * f(d * plan.stage_time(starts, m, j), stage_inputs[j], params)
        y1 = stage_inputs[-1] if plan.fsal else y + (k.T * (tab.b * h)).sum(axis=1)
        for i in np.flatnonzero(plan.owner == m):
            if i == 0:
                continue
            coeffs = _dense_coefficients(tab, y, y1, k, h)
            x = (s_out[i] - s) / (starts[m + 1] - s)
            outputs[i] = sum(x**power * coeffs[power] for power in range(5))
        if keep:
            stored.append((stage_inputs, k.copy(), y1))
        y = y1.copy()
        if plan.jumps[m]:  # the solver restarted the field just after a jump time
            k[0] = d * f(d * plan.restart_time(starts, m), y, params)
        else:
            k[0] = k[-1]
    return outputs, starts, stored


def _dense_coefficients(tab: FloatTableau, y0, y1, k, h):
    y_mid = y0 + (k.T * (tab.b_mid * h)).sum(axis=1)
    basis = np.stack([y0, y1, y_mid, h * k[0], h * k[-1]])
    return FIT @ basis


def replay(field: VectorField, y0, t, params, plan: FrozenSteps) -> np.ndarray:
    """The frozen-step solution at the output times ``t`` (any dtype, complex included)."""
    y0 = np.asarray(y0)
    t = np.asarray(t)
    params = np.asarray(params)
    f = _flat(field, y0.shape)[0]
    outputs, _, _ = _run(f, params, y0.reshape(-1), plan.direction * t, plan, keep=False)
    return outputs.reshape((len(t), *y0.shape))


def discrete_gradient(field: VectorField, forward: Solution, params: np.ndarray, dL_dy: np.ndarray, *,
                      t_grad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(dL/dy0, dL/dparams, dL/dt or None, counters): reverse mode through the frozen steps."""
    require_vjps(field, ("vjp_y", "vjp_p") + (("vjp_t",) if t_grad else ()))
    shape = forward.ys.shape[1:]
    f, vjp_t, vjp_y, vjp_p = _flat(field, shape)
    plan = FrozenSteps.of(forward)
    d = plan.direction
    s_out = d * forward.ts
    cot = dL_dy.reshape(len(s_out), -1)
    _, starts, stored = _run(f, params, forward.ys[0].reshape(-1), s_out, plan, keep=True)

    def pull(s, y, k_bar):
        """Cotangents of F(s, y) = d·f(d·s, y) for the slope cotangent k_bar: (y, params, s)."""
        t = d * s  # checked, so a NaN VJP names itself and its time instead of becoming a NaN gradient
        y_bar = vjp_value("vjp_y", vjp_y(t, y, params, d * k_bar), t, y.shape)
        p_bar = vjp_value("vjp_p", vjp_p(t, y, params, d * k_bar), t, params.shape)
        s_bar = float(vjp_value("vjp_t", vjp_t(t, y, params, k_bar), t, ())) if t_grad else 0.0
        return y_bar, p_bar, s_bar

    tab = plan.tab
    n_stages = tab.c.shape[0]
    y_bar_next = np.zeros(cot.shape[1])  # cotangent of the state at the end of the current step
    k_bar_next = np.zeros(cot.shape[1])  # cotangent of the next step's first slope
    p_bar = np.zeros(params.size)
    s_out_bar = np.zeros(len(s_out))
    s0_bar = 0.0
    nfe = 0
    for m in range(len(plan.sizes) - 1, -1, -1):
        h = plan.sizes[m]
        s = starts[m]
        stage_inputs, k, y1 = stored[m]
        y = stage_inputs[0]
        k_bar = np.zeros_like(k)
        stage_bar = np.zeros_like(stage_inputs)
        y_bar = np.zeros_like(y)
        y1_bar = y_bar_next.copy()
        s_bar = 0.0
        if plan.jumps[m]:  # the next first slope is f just after this step's end, at y1
            dy, dp, ds = pull(plan.restart_time(starts, m), y1, k_bar_next)
            nfe += 1
            y1_bar += dy
            p_bar += dp
            s_bar += ds
        else:  # the next first slope is this step's last stage, FSAL or not
            k_bar[-1] = k_bar_next
        for i in np.flatnonzero(plan.owner == m):
            if i == 0:
                continue
            coeffs = _dense_coefficients(tab, y, y1, k, h)
            width = starts[m + 1] - s
            x = (s_out[i] - s) / width
            basis_bar = FIT.T @ np.array([x**power * cot[i] for power in range(5)])
            y_bar += basis_bar[0] + basis_bar[2]
            y1_bar += basis_bar[1]
            k_bar += np.outer(tab.b_mid * h, basis_bar[2])
            k_bar[0] += h * basis_bar[3]
            k_bar[-1] += h * basis_bar[4]
            x_bar = sum(power * x ** (power - 1) * np.vdot(coeffs[power], cot[i]) for power in range(1, 5))
            s_out_bar[i] += x_bar / width
            s_bar -= x_bar / width
        if plan.fsal:
            stage_bar[-1] += y1_bar  # y1 is the last stage's input
        else:  # y1 = y + Σ k_j·(b_j·h)
            y_bar += y1_bar
            k_bar += np.outer(tab.b * h, y1_bar)
        for j in range(n_stages - 1, 0, -1):
            dy, dp, ds = pull(plan.stage_time(starts, m, j), stage_inputs[j], k_bar[j])
            nfe += 1
            stage_bar[j] += dy
            p_bar += dp
            s_bar += ds
            y_bar += stage_bar[j]
            k_bar[:j] += np.outer(tab.a[j, :j] * h, stage_bar[j])
        s0_bar += s_bar  # every step boundary is s_0 plus a frozen offset
        y_bar_next = y_bar
        k_bar_next = k_bar[0]
    dy, dp, ds = pull(s_out[0], forward.ys[0].reshape(-1), k_bar_next)  # the first slope f(t_0, y_0)
    nfe += 1
    y0_bar = y_bar_next + dy + cot[0]
    p_bar += dp
    s0_bar += ds
    dL_dt = None
    if t_grad:
        s_out_bar[0] += s0_bar
        dL_dt = d * s_out_bar
    counters = {"nfe_backward": nfe, "steps_backward": len(plan.sizes)}
    return y0_bar.reshape(shape), p_bar, dL_dt, counters
