"""The adaptive integration loop (torchdiffeq semantics: outputs by dense output, steps never cut to land on them).

Time runs in the solver's increasing variable s = direction·t. For each output time, the loop takes accepted steps
until the current step's end passes it, then evaluates the step's quartic there. The ``scipy`` controller instead
clips the last step to end exactly on the final output time, as ``solve_ivp`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gqref._numba import kernel
from gqref.arguments import count, real_array, real_number
from gqref.controller import (
    DFACTOR,
    IFACTOR,
    SAFETY,
    SCIPY,
    SCIPY_MIN_STEP_ULPS,
    accepts,
    error_ratio,
    initial_step,
    next_step,
)
from gqref.errors import MAX_STEPS_EXCEEDED, NONFINITE_FIELD, STEP_SIZE_UNDERFLOW, SUCCESS, InputError
from gqref.field import all_finite, evaluate
from gqref.interp import interp_evaluate, interp_fit
from gqref.records import INITIAL_RECORD_ROWS, ensure_rows
from gqref.runge_kutta import NUDGE_STATE, combine, dopri5_step, one_ulp, rk_step

DEFAULT_MAX_STEPS = 100_000
_NO_TIMES = np.empty(0)  # no step_t/jump_t (kernels only read it)
# torchdiffeq's adaptive options, in the order its documentation lists them; "norm" is converted by each twin.
ADAPTIVE_OPTIONS = ("first_step", "min_step", "max_step", "step_t", "jump_t", "safety", "ifactor", "dfactor",
                    "max_num_steps", "norm", "dtype")


@dataclass(frozen=True)
class AdaptiveOptions:
    """The validated options of an adaptive Runge–Kutta solve (torchdiffeq's semantics, in the caller's time).

    ``first_step``: the first attempted step (None: Hairer's initial-step heuristic). Every attempted step is
    clamped to [``min_step``, ``max_step``]; a step at or below ``min_step`` is accepted whatever its error.
    ``step_t``: times a step may not cross (a step that would is shortened to end there); ``jump_t``: the same, and
    the field is re-evaluated just after each such time (one ulp on), so a field with a jump there restarts on its
    far side. ``safety``, ``ifactor``, ``dfactor``: the step-size update's safety factor and growth and shrink
    limits. ``max_num_steps``: attempted steps in the whole solve.
    """

    first_step: float | None = None
    min_step: float = 0.0
    max_step: float = math.inf
    step_t: tuple[float, ...] = ()
    jump_t: tuple[float, ...] = ()
    safety: float = SAFETY
    ifactor: float = IFACTOR
    dfactor: float = DFACTOR
    max_num_steps: int = DEFAULT_MAX_STEPS

    def solver_times(self, name: str, s0: float, direction: float) -> np.ndarray:
        """``step_t`` or ``jump_t`` in the solver variable s = direction·t: sorted, those before the start dropped."""
        times = getattr(self, name)
        if not times:
            return _NO_TIMES  # the common case, without four numpy calls
        s = direction * np.asarray(times, dtype=np.float64)
        return np.sort(s[s >= s0])

    def kernel_args(self, s0: float, direction: float) -> tuple:
        """(min_step, max_step, step_t, jump_t) as the kernels take them (solver variable, float64 arrays)."""
        return (self.min_step, self.max_step, self.solver_times("step_t", s0, direction),
                self.solver_times("jump_t", s0, direction))


def _option_number(name: str, value, *, low: float, low_inclusive: bool, allow_inf: bool = False) -> float:
    return real_number(f"options[{name!r}]", value, low=low, low_open=not low_inclusive, allow_inf=allow_inf)


def _option_times(name: str, value) -> tuple[float, ...]:
    times = real_array(f"options[{name!r}]", value).reshape(-1)
    if not np.all(np.isfinite(times)):
        raise InputError(f"options[{name!r}] must hold finite times, got {times.tolist()!r}")
    return tuple(times.tolist())


def adaptive_options(options: dict | None, *, method: str = "dopri5", allowed: tuple[str, ...] = ADAPTIVE_OPTIONS
                     ) -> tuple[AdaptiveOptions, dict]:
    """(the validated :class:`AdaptiveOptions`, the options left for the caller: ``norm``).

    Values must already be Python or numpy numbers and sequences (gqtorch converts tensors first). Unknown names
    raise an InputError listing the supported ones.
    """
    if options is None:
        return AdaptiveOptions(), {}
    if not isinstance(options, dict):
        raise InputError(f"options must be a dict, got {type(options).__name__}")
    unknown = [key for key in options if key not in allowed]
    if unknown:
        raise InputError(f"options {unknown} are not supported for method {method!r}; supported: {list(allowed)}")
    values = {}
    if options.get("first_step") is not None:
        values["first_step"] = _option_number("first_step", options["first_step"], low=0.0, low_inclusive=False)
    if "min_step" in options:
        values["min_step"] = _option_number("min_step", options["min_step"], low=0.0, low_inclusive=True)
    if "max_step" in options:
        values["max_step"] = _option_number("max_step", options["max_step"], low=0.0, low_inclusive=False,
                                            allow_inf=True)
    if values.get("min_step", 0.0) > values.get("max_step", math.inf):
        raise InputError(f"options['min_step'] = {values['min_step']!r} exceeds options['max_step'] = "
                         f"{values['max_step']!r}")
    for name in ("step_t", "jump_t"):
        if options.get(name) is not None:
            values[name] = _option_times(name, options[name])
    if set(values.get("step_t", ())) & set(values.get("jump_t", ())):
        raise InputError("options['step_t'] and options['jump_t'] must not share a time; "
                         f"both hold {sorted(set(values['step_t']) & set(values['jump_t']))}")
    if "safety" in options:
        values["safety"] = _option_number("safety", options["safety"], low=0.0, low_inclusive=False)
    if "ifactor" in options:
        values["ifactor"] = _option_number("ifactor", options["ifactor"], low=1.0, low_inclusive=True)
    if "dfactor" in options:
        values["dfactor"] = _option_number("dfactor", options["dfactor"], low=0.0, low_inclusive=False)
        if values["dfactor"] > 1.0:
            raise InputError(f"options['dfactor'] must be in (0, 1], got {values['dfactor']!r}")
    if "max_num_steps" in options:
        values["max_num_steps"] = count("options['max_num_steps']", options["max_num_steps"])
    rest = {key: options[key] for key in ("norm", "dtype") if key in options}
    return AdaptiveOptions(**values), rest


def integrate_adaptive(f, p, y0, s_out, direction, rtol, atol, norm_kind, block_id, n_blocks, kind, safety,
                       ifactor, dfactor, order_low, first_step, max_steps, a, b, c, e, b_mid, fsal, fit, min_step,
                       max_step, step_t, jump_t):
    """Integrate through the increasing output times ``s_out`` (``s_out[0]`` is the initial time).

    ``kind`` TORCHDIFFEQ runs any embedded tableau (``fsal``: y1 is the last stage's input) with torchdiffeq's
    options: ``min_step``/``max_step`` clamp every attempted step (a step at or below ``min_step`` is accepted),
    ``step_t``/``jump_t`` (sorted, in s, none before the start) shorten the step that would cross them, and after
    a step ending on a ``jump_t`` time the field is re-evaluated one ulp after it. ``kind`` SCIPY is RK45 (the
    dopri5 tableau, which is FSAL) with scipy's own rules and ignores those options. ``first_step`` ≤ 0 asks
    for Hairer's initial step.

    Returns (status, s at stop, ys, steps [(s1, dt, error ratio, 1.0 if the step ended on a jump time else 0.0)],
    step states, nfe, n_accepted, n_rejected).
    """
    n = y0.shape[0]
    n_out = s_out.shape[0]
    n_stages = c.shape[0]
    last = n_stages - 1
    ys = np.empty((n_out, n), dtype=y0.dtype)
    ys[0] = y0
    steps_ts = np.empty((INITIAL_RECORD_ROWS, 4))
    steps_ys = np.empty((INITIAL_RECORD_ROWS, n), dtype=y0.dtype)
    n_accepted = 0
    n_rejected = 0
    s_start = s_out[0]
    s_end = s_out[n_out - 1]
    single = y0.itemsize == 4  # a float32 state: torchdiffeq nudges its times by float32 ulps

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
    # torchdiffeq's indices: the first prescribed time after the start, never past the last one
    n_step_t = step_t.shape[0]
    n_jump_t = jump_t.shape[0]
    i_step = min(np.searchsorted(step_t, s_start, side="right"), n_step_t - 1)
    i_jump = min(np.searchsorted(jump_t, s_start, side="right"), n_jump_t - 1)

    t_lo = s_start
    t_hi = s_start
    rejected_before = False  # within the current step (scipy caps growth right after a rejection)
    for out_index in range(1, n_out):
        target = s_out[out_index]
        while target > t_hi:
            if n_accepted + n_rejected >= max_steps:
                return MAX_STEPS_EXCEEDED, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, \
                    n_accepted, n_rejected
            on_step = False
            on_jump = False
            if kind == SCIPY:
                clipped = False
                scipy_min_step = SCIPY_MIN_STEP_ULPS * abs(np.nextafter(t_hi, np.inf) - t_hi)
                if not rejected_before and dt < scipy_min_step:
                    dt = scipy_min_step
                if not (dt >= scipy_min_step):
                    return STEP_SIZE_UNDERFLOW, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, \
                        n_accepted, n_rejected
                clipped = t_hi + dt > s_end
                if clipped:
                    dt = s_end - t_hi
                else:
                    dt = (t_hi + dt) - t_hi  # scipy steps by the representable difference
                t_next = s_end if clipped else t_hi + dt
                failed = dopri5_step(f, p, direction, t_hi, dt, y, k, y1, err, a, c, e)
            else:
                if not np.isfinite(dt):
                    dt = min_step
                dt = min(max(dt, min_step), max_step)
                if not (t_hi + dt > t_hi):
                    return STEP_SIZE_UNDERFLOW, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, \
                        n_accepted, n_rejected
                t_next = t_hi + dt
                if n_step_t > 0 and t_hi < step_t[i_step] < t_next:
                    on_step = True
                    t_next = step_t[i_step]
                    dt = t_next - t_hi
                if n_jump_t > 0 and t_hi < jump_t[i_jump] < t_next:  # after step_t: a jump inside wins
                    on_step = False
                    on_jump = True
                    t_next = jump_t[i_jump]
                    dt = t_next - t_hi
                failed = rk_step(f, p, direction, t_hi, dt, t_next, y, k, y1, err, a, b, c, e, fsal, NUDGE_STATE)
            nfe += last if failed < 0 else failed
            if failed >= 0:
                return NONFINITE_FIELD, t_hi + (dt if c[failed] == 1.0 else c[failed] * dt), ys, \
                    steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, n_accepted, n_rejected
            ratio = error_ratio(err, y, y1, rtol, atol, scale, norm_kind, block_id, n_blocks)
            accepted = accepts(kind, ratio) or (kind != SCIPY and dt <= min_step)
            if accepted:
                if t_next >= target:  # only a step that an output time falls in needs its interpolant
                    combine(y_mid, y, k, b_mid, n_stages, dt)
                    interp_fit(coeffs, fit, y, y1, y_mid, k[0], k[last], dt)
                if n_accepted == steps_ts.shape[0]:  # grow in place of a helper: returning arrays costs refcounts
                    steps_ts = ensure_rows(steps_ts, 2 * n_accepted)
                    steps_ys = ensure_rows(steps_ys, 2 * n_accepted)
                steps_ts[n_accepted, 0] = t_next
                steps_ts[n_accepted, 1] = dt
                steps_ts[n_accepted, 2] = ratio
                steps_ts[n_accepted, 3] = 1.0 if on_jump else 0.0
                for m in range(n):
                    steps_ys[n_accepted, m] = y1[m]
                n_accepted += 1
                t_lo = t_hi
                t_hi = t_next
                for m in range(n):
                    y[m] = y1[m]
                    k[0, m] = k[last, m]  # the last stage is the next step's first, FSAL or not (as torchdiffeq)
                if on_step and i_step < n_step_t - 1:
                    i_step += 1
                if on_jump:
                    if i_jump < n_jump_t - 1:
                        i_jump += 1
                    # the field may jump here: restart from its value one ulp after
                    evaluate(f, direction, one_ulp(t_next, np.inf, single), y, p, k[0])
                    nfe += 1
                    if not all_finite(k[0]):
                        return NONFINITE_FIELD, t_next, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, \
                            n_accepted, n_rejected
            else:
                n_rejected += 1
            dt = next_step(kind, dt, ratio, accepted, rejected_before, safety, ifactor, dfactor, order_low)
            if kind != SCIPY:
                dt = min(max(dt, min_step), max_step)
            rejected_before = False if accepted else True
        interp_evaluate(coeffs, t_lo, t_hi, target, ys[out_index])
    return SUCCESS, t_hi, ys, steps_ts[:n_accepted], steps_ys[:n_accepted], nfe, n_accepted, n_rejected


ADAPTIVE = kernel(integrate_adaptive)
