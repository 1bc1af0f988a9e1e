"""The adaptive integration loop (torchdiffeq semantics: outputs by dense output, steps never cut to land on them).

Time runs in the solver's increasing variable s = direction·t. For each output time, the loop takes accepted steps
until the current step's end passes it, then evaluates the step's quartic there. The ``scipy`` controller instead
clips the last step to end exactly on the final output time, as ``solve_ivp`` does.
"""

from __future__ import annotations

import numpy as np

from gqref._numba import kernel
from gqref.controller import (
    SCIPY,
    SCIPY_MIN_STEP_ULPS,
    accepts,
    error_ratio,
    initial_step,
    next_step,
)
from gqref.dopri5 import combine, dopri5_step
from gqref.errors import MAX_STEPS_EXCEEDED, NONFINITE_FIELD, STEP_SIZE_UNDERFLOW, SUCCESS
from gqref.field import all_finite, evaluate
from gqref.interp import interp_evaluate, interp_fit
from gqref.records import INITIAL_RECORD_ROWS, ensure_rows


def integrate_adaptive(f, p, y0, s_out, direction, rtol, atol, norm_kind, block_id, n_blocks, kind, safety,
                       ifactor, dfactor, order_low, first_step, max_steps, a, c, e, b_mid, fit):
    """Integrate through the increasing output times ``s_out`` (``s_out[0]`` is the initial time).

    Returns (status, s at stop, ys, steps [(s1, dt, error ratio)], step states, nfe, n_accepted, n_rejected).
    """
    n = y0.shape[0]
    n_out = s_out.shape[0]
    n_stages = c.shape[0]
    ys = np.empty((n_out, n), dtype=y0.dtype)
    ys[0] = y0
    steps_ts = np.empty((INITIAL_RECORD_ROWS, 3))
    steps_ys = np.empty((INITIAL_RECORD_ROWS, n), dtype=y0.dtype)
    n_accepted = 0
    n_rejected = 0
    s_start = s_out[0]
    s_end = s_out[n_out - 1]

    k = np.empty((n_stages, n), dtype=y0.dtype)
    y = y0.copy()
    y1 = np.empty_like(y0)
    err = np.empty_like(y0)
    y_mid = np.empty_like(y0)
    scale = np.empty(n)
    f_probe = np.empty_like(y0)
    coeffs = np.zeros((5, n), dtype=y0.dtype)
    coeffs[0] = y0  # before the first step the "interpolant" is the constant y0

    evaluate(f, direction, s_start, y, p, k[0])
    nfe = 1
    if not all_finite(k[0]):
        return NONFINITE_FIELD, s_start, ys, steps_ts[:0], steps_ys[:0], nfe, 0, 0
    if n_out == 1:
        return SUCCESS, s_start, ys, steps_ts[:0], steps_ys[:0], nfe, 0, 0
    if first_step > 0.0:
        dt = first_step
    else:
        dt = initial_step(f, p, direction, s_start, y, k[0], rtol, atol, order_low, norm_kind, block_id, n_blocks,
                          s_end - s_start, kind, f_probe)
        nfe += 1
        if not all_finite(f_probe):
            return NONFINITE_FIELD, s_start + dt, ys, steps_ts[:0], steps_ys[:0], nfe, 0, 0

    t_lo = s_start
    t_hi = s_start
    rejected_before = False  # within the current step (scipy caps growth right after a rejection)
    for out_index in range(1, n_out):
        target = s_out[out_index]
        while target > t_hi:
            if n_accepted + n_rejected >= max_steps:
                return MAX_STEPS_EXCEEDED, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, \
                    n_accepted, n_rejected
            clipped = False
            if kind == SCIPY:
                min_step = SCIPY_MIN_STEP_ULPS * abs(np.nextafter(t_hi, np.inf) - t_hi)
                if not rejected_before and dt < min_step:
                    dt = min_step
                if not (dt >= min_step):
                    return STEP_SIZE_UNDERFLOW, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, \
                        n_accepted, n_rejected
                clipped = t_hi + dt > s_end
                if clipped:
                    dt = s_end - t_hi
                else:
                    dt = (t_hi + dt) - t_hi  # scipy steps by the representable difference
            elif not (np.isfinite(dt) and t_hi + dt > t_hi):
                return STEP_SIZE_UNDERFLOW, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, \
                    n_accepted, n_rejected
            failed = dopri5_step(f, p, direction, t_hi, dt, y, k, y1, err, a, c, e)
            nfe += n_stages - 1 if failed < 0 else failed
            if failed >= 0:
                return NONFINITE_FIELD, t_hi + (dt if c[failed] == 1.0 else c[failed] * dt), ys, \
                    steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, n_accepted, n_rejected
            ratio = error_ratio(err, y, y1, rtol, atol, scale, norm_kind, block_id, n_blocks)
            accepted = accepts(kind, ratio)
            if accepted:
                t_next = s_end if kind == SCIPY and clipped else t_hi + dt
                combine(y_mid, y, k, b_mid, n_stages, dt)
                interp_fit(coeffs, fit, y, y1, y_mid, k[0], k[n_stages - 1], dt)
                if n_accepted == steps_ts.shape[0]:  # grow in place of a helper: returning arrays costs refcounts
                    steps_ts = ensure_rows(steps_ts, 2 * n_accepted)
                    steps_ys = ensure_rows(steps_ys, 2 * n_accepted)
                steps_ts[n_accepted, 0] = t_next
                steps_ts[n_accepted, 1] = dt
                steps_ts[n_accepted, 2] = ratio
                for m in range(n):
                    steps_ys[n_accepted, m] = y1[m]
                n_accepted += 1
                t_lo = t_hi
                t_hi = t_next
                for m in range(n):
                    y[m] = y1[m]
                    k[0, m] = k[n_stages - 1, m]  # FSAL: the last slope is the next step's first
            else:
                n_rejected += 1
            dt = next_step(kind, dt, ratio, accepted, rejected_before, safety, ifactor, dfactor, order_low)
            rejected_before = False if accepted else True
        interp_evaluate(coeffs, t_lo, t_hi, target, ys[out_index])
    return SUCCESS, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, n_accepted, n_rejected


ADAPTIVE = kernel(integrate_adaptive)
