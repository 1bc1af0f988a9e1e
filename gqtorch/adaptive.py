"""The adaptive integration loop (twin of :mod:`gqref.adaptive`, torchdiffeq controller only).

Time runs in the solver's increasing variable s = direction·t, kept as Python floats (float64) on the host: the
step size is a number, not a tensor, so it is never differentiated and costs no device work. The state, the stages
and the outputs are flat tensors on the state's device. The one host transfer per step is the error ratio (with a
finiteness check of the stages folded into the same transfer). For each output time the loop takes accepted steps
until the current step's end passes it, then evaluates the step's quartic there; the quartic is fitted only for
steps that hold an output, unless the caller asks for every accepted step's (``record``: GQ's "step" and "adaptive"
quadratures read their nodes from this dense output after the solve).
"""

from __future__ import annotations

import math

import torch

from gqref.controller import Controller, accepts, next_step
from gqref.errors import MAX_STEPS_EXCEEDED, NONFINITE_FIELD, STEP_SIZE_UNDERFLOW, SUCCESS
from gqtorch.controller import Norm, error_ratio, initial_step
from gqtorch.dopri5 import dopri5_step, midpoint_state
from gqtorch.interp import interp_evaluate, interp_fit
from gqtorch.tableau import TorchTableau


def first_nonfinite_stage(k: torch.Tensor) -> int:
    """Index of the first stage of ``k`` holding NaN or inf, or -1 (a rare path: one more host transfer)."""
    with torch.no_grad():
        finite = torch.isfinite(k).all(dim=1).tolist()
    return finite.index(False) if False in finite else -1


def integrate_adaptive(f, y0: torch.Tensor, s_out: list[float], direction: float, rtol: float, atol: torch.Tensor,
                       norm: Norm, control: Controller, first_step: float | None, max_steps: int,
                       tab: TorchTableau, time_shifts: torch.Tensor | None = None, record: list | None = None):
    """Integrate the flat state ``y0`` through the increasing output times ``s_out`` (``s_out[0]`` is the start).

    ``f(t, y)`` takes a 0-d time tensor in the caller's time and a flat state. Returns
    (status, s at stop, ys of shape (len(s_out), n), nfe, n_accepted, n_rejected); ``ys`` is None unless the
    status is SUCCESS. ``time_shifts`` (zero-valued, one per output time, in the caller's time) make the outputs
    differentiable with respect to the output times with the step sizes frozen: every stage time moves with the
    first, each output's position in its step moves with its own (the derivative gqref's ``discrete`` computes).
    ``record``: a list to which every accepted step appends ``(s_start, s_end, coeffs)`` (its quartic, ``(5, n)``;
    see :mod:`gqtorch.interp`), in step order; None (the default) fits only the steps that hold an output.
    """
    n_out = len(s_out)
    n_stages = tab.stages
    last = n_stages - 1
    s_start = s_out[0]
    track = torch.is_grad_enabled()  # keep every step's stages in its own buffer so the graph stays valid

    shift_0 = None if time_shifts is None else time_shifts[0]
    t_start = torch.full((), direction * s_start, dtype=y0.dtype, device=y0.device)
    f_start = f(t_start if shift_0 is None else t_start + shift_0.to(y0.dtype), y0)
    nfe = 1
    if n_out == 1:
        if not bool(torch.isfinite(f_start).all()):
            return NONFINITE_FIELD, s_start, None, nfe, 0, 0
        return SUCCESS, s_start, y0.unsqueeze(0), nfe, 0, 0
    if first_step is None:
        dt, f0_finite, probe_finite = initial_step(f, direction * s_start, direction, y0, f_start, rtol, atol,
                                                   tab.order_low, norm)
        if not f0_finite:
            return NONFINITE_FIELD, s_start, None, nfe, 0, 0
        nfe += 1
        if not probe_finite:
            return NONFINITE_FIELD, s_start + dt, None, nfe, 0, 0
    else:
        dt = first_step

    outputs = [y0.unsqueeze(0)]
    n_accepted = 0
    n_rejected = 0
    k = y0.new_empty((n_stages, y0.shape[0]))
    k[0] = f_start
    y = y0
    with torch.no_grad():
        y_abs = y0.abs()
    coeffs = None
    s_lo = s_hi = s_start
    rejected_before = False
    j = 1
    while j < n_out:
        target = s_out[j]
        while target > s_hi:
            if n_accepted + n_rejected >= max_steps:
                return MAX_STEPS_EXCEEDED, s_hi, None, nfe, n_accepted, n_rejected
            if not (math.isfinite(dt) and s_hi + dt > s_hi):
                return STEP_SIZE_UNDERFLOW, s_hi, None, nfe, n_accepted, n_rejected
            h = direction * dt
            if track and (n_accepted + n_rejected) > 0:
                k = y0.new_empty((n_stages, y0.shape[0]))
                k[0] = f_start
            y1, err = dopri5_step(f, direction * s_hi, h, y, k, tab.a, tab.c, tab.e, shift_0)
            nfe += n_stages - 1
            ratio, y1_abs = error_ratio(err, y_abs, y1, rtol, atol, norm)
            with torch.no_grad():
                ratio, k_sum = torch.stack((ratio, k.sum())).tolist()  # the step's one host transfer
            if not math.isfinite(k_sum):
                failed = first_nonfinite_stage(k)
                if failed >= 0:
                    return NONFINITE_FIELD, s_hi + tab.c_host[failed] * dt, None, nfe, n_accepted, n_rejected
            accepted = accepts(control.kind, ratio)
            if accepted:
                s_next = s_hi + dt
                if target <= s_next or record is not None:  # fit the quartic before k is reused
                    coeffs = interp_fit(y, y1, midpoint_state(y, k, tab.b_mid, h), k[0], k[last], h)
                    if record is not None:
                        record.append((s_hi, s_next, coeffs))
                n_accepted += 1
                s_lo, s_hi = s_hi, s_next
                y, y_abs = y1, y1_abs
                if track:
                    f_start = k[last]
                else:
                    k[0] = k[last]  # FSAL: the last slope is the next step's first
            else:
                n_rejected += 1
            dt = next_step(control.kind, dt, ratio, accepted, rejected_before, control.safety, control.ifactor,
                           control.dfactor, tab.order_low)
            rejected_before = not accepted
        m = j
        while m < n_out and s_out[m] <= s_hi:
            m += 1
        shifts = None if time_shifts is None else direction * (time_shifts[j:m] - shift_0)
        outputs.append(interp_evaluate(coeffs, s_lo, s_hi, s_out[j:m], shifts))
        j = m
    return SUCCESS, s_hi, torch.cat(outputs), nfe, n_accepted, n_rejected
