"""Fixed-grid explicit Runge–Kutta integration (euler, midpoint, rk4) with torchdiffeq's semantics.

The grid is the output times themselves, or (with ``step_size``) t0, t0 + h, t0 + 2h, … with its last point moved
onto the final output time. Outputs inside a grid step are linear interpolations of its end points.
"""

from __future__ import annotations

import math

import numpy as np

from gqref._numba import jitable, kernel
from gqref.dopri5 import rk_stages
from gqref.errors import NONFINITE_FIELD, SUCCESS


def step_size_grid(s_out: np.ndarray, step_size: float | None) -> np.ndarray:
    """torchdiffeq's grid: ceil((T − t0)/h + 1) points t0 + j·h, the last replaced by T."""
    if step_size is None:
        return s_out.copy()
    start, end = s_out[0], s_out[-1]
    n_points = math.ceil((end - start) / step_size + 1.0)
    grid = np.arange(n_points, dtype=np.float64) * step_size + start
    grid[-1] = end
    return grid


@jitable
def _linear(y0, y1, t0, t1, t, out):
    if t == t0:
        out[:] = y0
    elif t == t1:
        out[:] = y1
    else:
        slope = (t - t0) / (t1 - t0)
        for i in range(out.shape[0]):
            out[i] = y0[i] + slope * (y1[i] - y0[i])


def integrate_fixed(f, p, y0, s_out, direction, grid, a, b, c):
    """Step over ``grid`` (increasing, from s_out[0] to s_out[-1]).

    Returns (status, s at stop, ys, step states, nfe, steps taken).
    """
    n = y0.shape[0]
    n_out = s_out.shape[0]
    n_stages = c.shape[0]
    ys = np.empty((n_out, n), dtype=y0.dtype)
    ys[0] = y0
    k = np.empty((n_stages, n), dtype=y0.dtype)
    y = y0.copy()
    y1 = np.empty_like(y0)
    y_stage = np.empty_like(y0)
    steps_ys = np.empty((grid.shape[0] - 1, n), dtype=y0.dtype)
    nfe = 0
    j = 1
    for step in range(grid.shape[0] - 1):
        t0 = grid[step]
        t1 = grid[step + 1]
        dt = t1 - t0
        failed = rk_stages(f, p, direction, t0, dt, y, k, y_stage, a, c, 0)
        nfe += n_stages if failed < 0 else failed + 1
        if failed >= 0:
            return NONFINITE_FIELD, t0 + c[failed] * dt, ys, steps_ys[:step], nfe, step
        for i in range(n):
            acc = 0.0
            for m in range(n_stages):
                acc += k[m, i] * b[m]
            y1[i] = y[i] + dt * acc
        steps_ys[step] = y1
        while j < n_out and t1 >= s_out[j]:
            _linear(y, y1, t0, t1, s_out[j], ys[j])
            j += 1
        y[:] = y1
    return SUCCESS, grid[grid.shape[0] - 1], ys, steps_ys, nfe, grid.shape[0] - 1


FIXED = kernel(integrate_fixed)
