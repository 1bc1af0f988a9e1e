"""Adaptive Runge–Kutta integration with torchdiffeq's step control (twin of :mod:`gqref.adaptive`).

:func:`adaptive_steps` is the solver: a generator of accepted steps (:class:`gqtorch.steps.AcceptedStep`) for any
embedded tableau with mid-point weights (dopri5, dopri8, bosh3, fehlberg2, adaptive_heun, tsit5), honouring every
torchdiffeq option (:class:`gqref.adaptive.AdaptiveOptions`) and calling the caller's step callbacks.
:func:`integrate_adaptive` reads the outputs off it; events (:mod:`gqtorch.events`) and GQ's node placement read
the same steps.

Time runs in the solver's increasing variable s = direction·t, kept as Python floats (float64) on the host: the
step size is a number, not a tensor, so it is never differentiated and costs no device work. The state, the stages
and the outputs are flat tensors on the state's device. The one host transfer per step is the error ratio (with a
finiteness check of the stages folded into the same transfer). A step's quartic dense output is fitted only when a
consumer asks for it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from gqref.adaptive import AdaptiveOptions
from gqref.controller import TORCHDIFFEQ, next_step
from gqref.errors import MAX_STEPS_EXCEEDED, NONFINITE_FIELD, STEP_SIZE_UNDERFLOW, raise_for_status
from gqtorch.controller import Norm, error_ratio, initial_step
from gqtorch.interp import interp_evaluate, interp_fit
from gqtorch.runge_kutta import NUDGEABLE, midpoint_state, rk_step
from gqtorch.steps import NO_CALLBACKS, AcceptedStep, Callbacks
from gqtorch.tableau import TorchTableau


@dataclass
class StepCounts:
    """Evaluations of the field and attempted steps, updated as the solve runs; ``last_step``: the size of the last
    accepted step not cut short to end on a ``step_t``/``jump_t`` time, else of the last step (as gqref's
    ``Stats.last_step``); ``free_step``: whether an accepted step was not cut."""

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    last_step: float | None = None
    free_step: bool = False


def first_nonfinite_stage(k: torch.Tensor) -> int:
    """Index of the first stage of ``k`` holding NaN or inf, or -1 (a rare path: one more host transfer)."""
    with torch.no_grad():
        finite = torch.isfinite(k).all(dim=1).tolist()
    return finite.index(False) if False in finite else -1


def _fail(status: int, s: float, direction: float, max_steps: int = 0):
    raise_for_status(status, float(direction * s), max_steps=max_steps)


def _just_after(t: float, towards: float, dtype: torch.dtype, device) -> torch.Tensor:
    """The time one ulp of the state's dtype past ``t`` (away from the step's start), as torchdiffeq nudges it."""
    value = torch.full((), t, dtype=dtype, device=device)
    if dtype in NUDGEABLE:
        value = torch.nextafter(value, torch.full((), towards, dtype=dtype, device=device))
    return value


class _LazyQuartic:
    """A step's quartic, fitted on first use from the buffers the step left (valid until the next step starts)."""

    def __init__(self, y0, y1, k, tab: TorchTableau, h: float, s0: float, s1: float):
        self.args = (y0, y1, k, tab, h)
        self.s0, self.s1 = s0, s1
        self.coeffs = None
        self.grad_mode = torch.is_grad_enabled()  # the solve's: a first use under no_grad must not drop the graph

    def __call__(self) -> torch.Tensor:
        if self.coeffs is None:
            y0, y1, k, tab, h = self.args
            with torch.set_grad_enabled(self.grad_mode):
                self.coeffs = interp_fit(y0, y1, midpoint_state(y0, k, tab.b_mid, h), k[0], k[tab.stages - 1], h)
            self.args = None
        return self.coeffs

    def state_at(self, s: float) -> torch.Tensor:
        return interp_evaluate(self(), self.s0, self.s1, [s])[0]


def adaptive_steps(f, y0: torch.Tensor, s_start: float, direction: float, rtol: float, atol: torch.Tensor,
                   norm: Norm, tab: TorchTableau, opts: AdaptiveOptions, counts: StepCounts, *,
                   callbacks: Callbacks = NO_CALLBACKS, split=None, shift_0: torch.Tensor | None = None
                   ) -> Iterator[AcceptedStep]:
    """Accepted steps from (s_start, y0) onwards, without end: the consumer stops when it has what it needs.

    ``f(t, y)`` takes a 0-d time tensor in the caller's time and a flat state. Every attempted step is clamped to
    [min_step, max_step], shortened to end on the next ``step_t``/``jump_t`` time it would cross, and controlled
    by torchdiffeq's rule (accept when the error ratio ≤ 1, or when the step is at ``min_step``). After a step that
    ends on a ``jump_t`` time, the field is re-evaluated one ulp after it (one more evaluation). Raises gqref's
    :class:`~gqref.errors.SolverError` subclasses on a non-finite field, step-size underflow or more than
    ``max_num_steps`` attempted steps. ``shift_0`` (zero-valued) moves every stage time with the first output time
    (the solve's derivative with respect to t with the step sizes frozen). ``split`` gives the caller's layout of a
    flat state, for the callbacks.
    """
    n_stages = tab.stages
    last = n_stages - 1
    dtype, device = y0.dtype, y0.device
    track = torch.is_grad_enabled()  # keep every step's stages in its own buffer so the graph stays valid
    max_steps = opts.max_num_steps
    t_start = torch.full((), direction * s_start, dtype=dtype, device=device)
    f_start = f(t_start if shift_0 is None else t_start + shift_0.to(dtype), y0)
    counts.nfe += 1
    if opts.first_step is None:
        dt, f0_finite, probe_finite = initial_step(f, direction * s_start, direction, y0, f_start, rtol, atol,
                                                   tab.order_low, norm)
        if not f0_finite:
            _fail(NONFINITE_FIELD, s_start, direction)
        counts.nfe += 1
        if not probe_finite:
            _fail(NONFINITE_FIELD, s_start + dt, direction)
    else:
        dt = opts.first_step
    min_step, max_step, step_t, jump_t = opts.kernel_args(s_start, direction)
    step_t, jump_t = step_t.tolist(), jump_t.tolist()
    # torchdiffeq's indices: the first prescribed time after the start, never past the last one
    i_step = min(bisect.bisect(step_t, s_start), len(step_t) - 1)
    i_jump = min(bisect.bisect(jump_t, s_start), len(jump_t) - 1)
    split = split or (lambda y: y)

    k = y0.new_empty((n_stages, y0.shape[0]))
    k[0] = f_start
    y = y0
    with torch.no_grad():
        y_abs = y0.abs()
    s_hi = s_start
    rejected_before = False
    while True:
        if counts.n_accepted + counts.n_rejected >= max_steps:
            _fail(MAX_STEPS_EXCEEDED, s_hi, direction, max_steps)
        if not math.isfinite(dt):
            dt = min_step
        dt = min(max(dt, min_step), max_step)
        if callbacks.any:
            callbacks.step(torch.tensor(direction * s_hi, dtype=torch.float64), split(y),
                           torch.tensor(dt, dtype=torch.float64))
        if not s_hi + dt > s_hi:
            _fail(STEP_SIZE_UNDERFLOW, s_hi, direction)
        s_end = s_hi + dt
        on_step = on_jump = False
        if step_t and s_hi < step_t[i_step] < s_end:
            on_step, s_end = True, step_t[i_step]
            dt = s_end - s_hi
        if jump_t and s_hi < jump_t[i_jump] < s_end:  # after step_t, so a jump inside a clipped step wins
            on_step, on_jump, s_end = False, True, jump_t[i_jump]
            dt = s_end - s_hi
        h = direction * dt
        if track and (counts.n_accepted + counts.n_rejected) > 0:
            k = y0.new_empty((n_stages, y0.shape[0]))
            k[0] = f_start
        y1, err = rk_step(f, direction * s_hi, h, y, k, tab, shift_0,
                          direction * s_end if (on_step or on_jump) else None)
        counts.nfe += n_stages - 1
        ratio, y1_abs = error_ratio(err, y_abs, y1, rtol, atol, norm)
        with torch.no_grad():
            k_sum = k.sum().abs() if k.is_complex() else k.sum()  # NaN/inf survive both
            ratio, k_sum = torch.stack((ratio.to(k_sum.dtype), k_sum)).tolist()  # the step's one host transfer
        if not math.isfinite(k_sum):
            failed = first_nonfinite_stage(k)
            if failed >= 0:
                _fail(NONFINITE_FIELD, s_hi + tab.c_host[failed] * dt, direction)
        accepted = ratio <= 1.0 or dt <= min_step
        if accepted:
            if callbacks.any:
                callbacks.accept(torch.tensor(direction * s_hi, dtype=torch.float64), split(y),
                                 torch.tensor(dt, dtype=torch.float64))
            f_next = k[last]
            if on_jump:  # the field may jump here: restart from its value just after
                f_next = f(_just_after(direction * s_end, direction * (s_end + dt), dtype, device), y1)
                counts.nfe += 1
            if on_step and i_step < len(step_t) - 1:
                i_step += 1
            if on_jump and i_jump < len(jump_t) - 1:
                i_jump += 1
            counts.n_accepted += 1
            if not (on_step or on_jump):
                counts.last_step, counts.free_step = dt, True
            elif not counts.free_step:
                counts.last_step = dt
            quartic = _LazyQuartic(y, y1, k, tab, h, s_hi, s_end)
            yield AcceptedStep(s0=s_hi, s1=s_end, y0=y, y1=y1, state_at=quartic.state_at, f1=f_next,
                               coefficients=quartic)
            s_hi = s_end
            y, y_abs = y1, y1_abs
            if track:
                f_start = f_next
            else:
                k[0] = f_next  # FSAL: the last slope is the next step's first
        else:
            if callbacks.any:
                callbacks.reject(torch.tensor(direction * s_hi, dtype=torch.float64), split(y),
                                 torch.tensor(dt, dtype=torch.float64))
            counts.n_rejected += 1
        dt = next_step(TORCHDIFFEQ, dt, ratio, accepted, rejected_before, opts.safety, opts.ifactor, opts.dfactor,
                       tab.order_low)
        dt = min(max(dt, min_step), max_step)
        rejected_before = not accepted


def integrate_adaptive(f, y0: torch.Tensor, s_out: list[float], direction: float, rtol: float, atol: torch.Tensor,
                       norm: Norm, tab: TorchTableau, opts: AdaptiveOptions,
                       time_shifts: torch.Tensor | None = None, record: list | None = None, *,
                       callbacks: Callbacks = NO_CALLBACKS, split=None) -> tuple[torch.Tensor, StepCounts]:
    """The flat state ``y0`` at every increasing output time of ``s_out`` (``s_out[0]`` is the start).

    Returns (ys of shape (len(s_out), n), counts). For each output time the solver takes accepted steps until the
    current step's end passes it (steps are never cut to land on outputs), then evaluates that step's quartic.
    ``time_shifts`` (zero-valued, one per output time, in the caller's time) make the outputs differentiable with
    respect to the output times with the step sizes frozen: every stage time moves with the first, each output's
    position in its step with its own (the derivative gqref's ``discrete`` computes). ``record``: a list to which
    every accepted step appends ``(s_start, s_end, coeffs)`` (its quartic, ``(5, n)``; see
    :mod:`gqtorch.interp`), in step order.
    """
    counts = StepCounts()
    n_out = len(s_out)
    if n_out == 1:
        t_start = torch.full((), direction * s_out[0], dtype=y0.dtype, device=y0.device)
        counts.nfe += 1
        if not bool(torch.isfinite(f(t_start, y0)).all()):
            _fail(NONFINITE_FIELD, s_out[0], direction)
        return y0.unsqueeze(0), counts
    shift_0 = None if time_shifts is None else time_shifts[0]
    outputs = [y0.unsqueeze(0)]
    j = 1
    for step in adaptive_steps(f, y0, s_out[0], direction, rtol, atol, norm, tab, opts, counts,
                               callbacks=callbacks, split=split, shift_0=shift_0):
        if record is not None:
            record.append((step.s0, step.s1, step.coefficients()))
        if s_out[j] <= step.s1:
            m = j
            while m < n_out and s_out[m] <= step.s1:
                m += 1
            shifts = None if time_shifts is None else direction * (time_shifts[j:m] - shift_0)
            outputs.append(interp_evaluate(step.coefficients(), step.s0, step.s1, s_out[j:m], shifts))
            j = m
            if j == n_out:
                break
    return torch.cat(outputs), counts


__all__ = ["StepCounts", "adaptive_steps", "first_nonfinite_stage", "integrate_adaptive"]
