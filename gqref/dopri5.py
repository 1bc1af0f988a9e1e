"""One explicit Runge–Kutta step: stages, propagated solution, error estimate, mid-point (Dormand–Prince, FSAL)."""

from __future__ import annotations

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
def dopri5_step(f, p, direction, t0, dt, y0, k, y1, err, a, c, e):
    """A Dormand–Prince step from (t0, y0) with ``k[0] = f(t0, y0)`` given (FSAL).

    Fills ``k`` (``k[6]`` = f(t1, y1), the next step's ``k[0]``), ``y1`` (5th order: the last stage's input, since
    b equals the last row of a) and ``err = dt·Σ e_j k_j``. Returns the failing stage index or -1.
    """
    failed = rk_stages(f, p, direction, t0, dt, y0, k, y1, a, c, 1)
    if failed >= 0:
        return failed
    n_stages = c.shape[0]
    for i in range(y0.shape[0]):
        acc = 0.0
        for j in range(n_stages):
            acc += k[j, i] * (dt * e[j])
        err[i] = acc
    return -1
