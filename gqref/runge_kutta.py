"""One explicit Runge–Kutta step: stages, propagated solution, error estimate, mid-point.

:func:`rk_step` takes a step of any embedded tableau with torchdiffeq's semantics; :func:`dopri5_step` is the
Dormand–Prince (FSAL) step without the end-of-step nudge, as scipy takes it.
"""

from __future__ import annotations

import numpy as np

from gqref._numba import jitable
from gqref.field import all_finite, evaluate


@jitable
def combine(out, y0, k, weights, n_terms, dt):
    """out ← y0 + Σ_{j < n_terms} k_j·(w_j·dt)  (the grouping torchdiffeq uses)."""
    for i in range(y0.shape[0]):
        acc = 0.0
        for j in range(n_terms):
            acc += k[j, i] * (weights[j] * dt)
        out[i] = y0[i] + acc


@jitable
def rk_stages(f, p, direction, t0, dt, y0, k, y_stage, a, c, first):
    """Evaluate stages ``first..`` of an explicit RK step into ``k`` (``k[:first]`` are given).

    ``y_stage`` ends holding the input of the last stage. Returns the index of the first stage whose value was
    not finite, or -1. A stage with node 1 is evaluated at exactly t0 + dt (the step's end time).
    """
    t1 = t0 + dt
    for s in range(first, c.shape[0]):
        combine(y_stage, y0, k, a[s], s, dt)
        ts = t1 if c[s] == 1.0 else t0 + c[s] * dt
        evaluate(f, direction, ts, y_stage, p, k[s])
        if not all_finite(k[s]):
            return s
    return -1


@jitable
def embedded_error(err, k, dt, e, n_stages, n):
    """``err[:n] = Σ_j k_j·(dt·e_j)`` over the first ``n_stages`` stages: an embedded pair's error estimate."""
    for i in range(n):
        acc = 0.0
        for j in range(n_stages):
            acc += k[j, i] * (dt * e[j])
        err[i] = acc


@jitable
def dopri5_step(f, p, direction, t0, dt, y0, k, y1, err, a, c, e):
    """A Dormand–Prince step from (t0, y0) with ``k[0] = f(t0, y0)`` given (FSAL).

    Fills ``k`` (``k[6]`` = f(t1, y1), the next step's ``k[0]``), ``y1`` (5th order: the last stage's input, since
    b equals the last row of a) and ``err = dt·Σ e_j k_j``. Returns the failing stage index or -1.
    """
    failed = rk_stages(f, p, direction, t0, dt, y0, k, y1, a, c, 1)
    if failed >= 0:
        return failed
    embedded_error(err, k, dt, e, c.shape[0], y0.shape[0])
    return -1


# How a kernel moves the stages with node c = 1 off the step's end (torchdiffeq's controller; scipy does not).
NUDGE_NONE = 0
NUDGE_STATE = 1


@jitable
def one_ulp(s, towards, single):
    """``s`` moved one ulp towards ``towards`` (±inf), the ulp of float32 when ``single`` else of float64.

    torchdiffeq casts a stage's time to the state's dtype before it nudges it, so a float32 state sees the float32
    neighbour of float32(s); gqref reproduces that value (exactly representable in float64) and passes it on as
    float64. Rounding to nearest is symmetric, so nudging in s = direction·t equals nudging in t.
    """
    if single:
        return float(np.nextafter(np.float32(s), np.float32(towards)))
    return np.nextafter(s, towards)


@jitable
def rk_step(f, p, direction, t0, dt, t1, y0, k, y1, err, a, b, c, e, fsal, nudge):
    """An embedded Runge–Kutta step of any explicit tableau from (t0, y0), with ``k[0] = f(t0, y0)`` given.

    ``t1`` is the step's end (t0 + dt, or the prescribed time the step was shortened to). Fills ``k``, ``y1``
    (the last stage's input when the tableau is FSAL, else y0 + Σ k_j·(b_j·dt)) and ``err = Σ k_j·(dt·e_j)``.
    With ``nudge`` = NUDGE_STATE the stages with c = 1 are evaluated one ulp of the state's dtype before t1
    (towards t0): a field with a jump at t1 is then seen from the step's own side. Returns the index of the first
    stage that was not finite, or -1. ``k[last]`` is what the next step takes as ``k[0]`` whatever the tableau.
    """
    n_stages = c.shape[0]
    t_end_stage = t1
    if nudge == NUDGE_STATE:
        t_end_stage = one_ulp(t1, -np.inf, y0.itemsize == 4)
    for s in range(1, n_stages):
        combine(y1, y0, k, a[s], s, dt)  # y1 doubles as the stage input: for FSAL pairs the last one is y1
        ts = t_end_stage if c[s] == 1.0 else t0 + c[s] * dt
        evaluate(f, direction, ts, y1, p, k[s])
        if not all_finite(k[s]):
            return s
    if not fsal:
        combine(y1, y0, k, b, n_stages, dt)
    embedded_error(err, k, dt, e, n_stages, y0.shape[0])
    return -1
