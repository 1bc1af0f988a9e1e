"""Event location and the event time's gradient: the NumPy oracle for :mod:`gqtorch.events`.

Entry points:

``solve_until_event(field, y0, t0, params, event_fn, *, t_max, rtol=1e-7, atol=1e-9, tol=None,
max_steps=100_000) -> EventSolution``
    The first time after ``t0`` (towards ``t_max``, either direction) where ``event_fn`` changes sign along the
    dopri5 solve (torchdiffeq controller) of ``field`` from ``y0``. The solve runs over [t0, t_max]; since that
    controller never clips a step to reach an output time, its steps are the open-ended solve's, and the last one
    reaches or passes ``t_max``. The event is searched on those steps as torchdiffeq (and gqtorch) search: the
    first step at whose end the event function's sign differs from its sign at t0, then ⌈log₂(h/tol)⌉ bisections
    of that step on its dense output (:func:`gqref.dense_output`), keeping the half whose start has the initial
    sign; the event time is the last bracket's midpoint. ``tol`` defaults to ``atol`` (torchdiffeq's choice; it
    must then be one number). So gqtorch's event time on the same problem agrees to roundoff. Raises
    :class:`NoEventError` if the sign never changes on the recorded steps.

``event_gradient(field, y0, t0, params, event_fn, *, t_max, dL_dt_event=1.0, dL_dy_event=None, event_jac=None,
method="discrete", rtol=1e-7, atol=1e-9, tol=None, max_steps=100_000, **gradient_options) -> EventGradient``
    The gradient of L(t*, y(t*)) with respect to ``y0``, ``params`` and ``t0`` by the implicit function theorem:
    with c the combined event function, f* = f(t*, y*) and y(t*) the computed state at the event time held fixed,
    T = ∂L/∂t* + ∂L/∂y*·f*, λ = −T / (∂c/∂t + ∂c/∂y·f*), and
    dL/d(y0, θ, t0) = (∂L/∂y* + λ ∂c/∂y)·∂y(t*)/∂(y0, θ, t0) + λ ∂c/∂θ.
    The product with ∂y(t*)/∂(·) is :func:`gqref.gradient` of the solve over [t0, t*] with that cotangent at t*
    (``method``: ``"discrete"``, the exact derivative of the computed solution with its steps frozen, which is what
    backprop through gqtorch computes; or ``"gq"``, ``"adjoint"``, ``"seminorm"``). The defaults give the event
    time's own derivatives: ``dL_dy0 = dt*/dy0``, ``dL_dparams = dt*/dθ``, ``dL_dt0 = dt*/dt0``.

Conventions: ``field`` is a :class:`gqref.VectorField` (or ``f(t, y, p)``) on a 1-D state, with its VJPs for the
gradient; ``event_fn(t, y, p)`` returns a number or a 1-D array (numpy). Several outputs are combined as
torchdiffeq combines them: each times its sign at (t0, y0), then the minimum, so the first to cross zero is the
event. ``event_jac(t, y, p) -> (∂g/∂t, ∂g/∂y, ∂g/∂p)`` (shapes ``(m,)``, ``(m, n)``, ``(m, P)``, or ``()``,
``(n,)``, ``(P,)`` for one output) gives the event function's derivatives; without it they are taken by central
differences (relative accuracy about 1e-10, ample against the solve's own error).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gqref.arguments import finite_float, positive_float
from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL
from gqref.dense import DenseOutput, dense_output
from gqref.errors import InputError, SolverError
from gqref.field import VectorField, as_field
from gqref.gradient import Gradient, gradient
from gqref.solve import DEFAULT_MAX_STEPS, Solution, solve


class NoEventError(SolverError):
    """The event function kept its initial sign over every step of the solve (``t``: where the steps ended)."""


@dataclass(frozen=True)
class EventSolution:
    """``t_event``, the state there (``y_event``), the solve over [t0, t_max] with its dense output, the index of
    the accepted step holding the event (-1 when the event function is zero at t0) and the signs that combined
    the event function's outputs."""

    t_event: float
    y_event: np.ndarray
    solution: Solution
    dense: DenseOutput
    step: int
    signs: np.ndarray


@dataclass(frozen=True)
class EventGradient:
    """dL/dy0, dL/dparams and dL/dt0 for L(t*, y(t*)) (by default L = t*); ``gradient`` is gqref's gradient of
    the solve over [t0, t*] that supplied ∂y(t*)/∂(·)."""

    t_event: float
    dL_dy0: np.ndarray
    dL_dparams: np.ndarray
    dL_dt0: float
    gradient: Gradient


def _event_values(event_fn: Callable, t: float, y: np.ndarray, params: np.ndarray) -> np.ndarray:
    value = np.asarray(event_fn(t, y, params), dtype=np.float64)
    if value.ndim > 1:
        raise InputError(f"event_fn must return a number or a 1-D array, got shape {value.shape} at t = {t!r}")
    if not np.all(np.isfinite(value)):
        raise InputError(f"event_fn returned a non-finite value at t = {t!r}")
    return value.reshape(-1)


def combine_event_fn(event_fn: Callable, t0: float, y0: np.ndarray, params: np.ndarray
                     ) -> tuple[Callable[[float, np.ndarray], float], np.ndarray]:
    """(c(t, y) = min_k sign_k·g_k(t, y, p), the signs at (t0, y0))."""
    if not callable(event_fn):
        raise InputError(f"event_fn must be callable as event_fn(t, y, p), got {type(event_fn).__name__}")
    signs = np.sign(_event_values(event_fn, t0, y0, params))

    def combined(t: float, y: np.ndarray) -> float:
        return float(np.min(_event_values(event_fn, t, y, params) * signs))

    return combined, signs


def event_tolerance(tol, atol) -> float:
    if tol is not None:
        return positive_float("tol", tol)
    if np.ndim(atol) != 0:
        raise InputError("the event tolerance defaults to atol, which must then be one number; pass tol")
    return positive_float("atol", atol)


def bisection_count(s0: float, s1: float, tol: float) -> int:
    """⌈log₂((s1 − s0)/tol)⌉ (≤ 0: no halving), torchdiffeq's count."""
    return math.ceil(math.log((s1 - s0) / tol) / math.log(2.0))


def _bisect(dense: DenseOutput, combined: Callable, sign0: float, s0: float, s1: float, tol: float) -> float:
    direction = dense.direction
    lo, hi = s0, s1
    for _ in range(bisection_count(s0, s1, tol)):
        mid = (hi + lo) / 2.0
        t_mid = direction * mid
        if np.sign(combined(t_mid, dense.evaluate([t_mid])[0])) == sign0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _inputs(field, y0, params) -> tuple[VectorField, np.ndarray, np.ndarray]:
    field = as_field(field)
    y0 = np.asarray(y0, dtype=np.float64)
    if y0.ndim != 1:
        raise InputError(f"y0 must be 1-D for event location (flatten it), got shape {y0.shape}")
    params = np.empty(0) if params is None else np.asarray(params, dtype=np.float64)
    if params.ndim != 1:
        raise InputError(f"params must be a 1-D array, got shape {params.shape}")
    return field, y0, params


def solve_until_event(field: VectorField | Callable, y0, t0: float, params, event_fn: Callable, *, t_max: float,
                      rtol: float = DEFAULT_RTOL, atol=DEFAULT_ATOL, tol: float | None = None,
                      max_steps: int = DEFAULT_MAX_STEPS) -> EventSolution:
    """The first sign change of ``event_fn`` after ``t0``; see the module docstring."""
    field, y0, params = _inputs(field, y0, params)
    t0, t_max = finite_float("t0", t0), finite_float("t_max", t_max)
    if t_max == t0:
        raise InputError(f"t0 and t_max must be different, got t0 = t_max = {t0!r}")
    tol = event_tolerance(tol, atol)
    combined, signs = combine_event_fn(event_fn, t0, y0, params)
    solution = solve(field, y0, [t0, t_max], params, rtol=rtol, atol=atol, max_steps=max_steps)
    dense = dense_output(field, solution, params)
    direction = dense.direction
    sign0 = np.sign(combined(t0, y0))
    if sign0 == 0.0:
        return EventSolution(t_event=t0, y_event=y0.copy(), solution=solution, dense=dense, step=-1, signs=signs)
    ends = solution.steps.ts
    for j in range(ends.size):
        if np.sign(combined(float(ends[j]), solution.steps.ys[j])) != sign0:
            s_event = _bisect(dense, combined, sign0, dense.starts[j], dense.starts[j + 1], tol)
            t_event = direction * s_event
            return EventSolution(t_event=t_event, y_event=dense.evaluate([t_event])[0], solution=solution,
                                 dense=dense, step=j, signs=signs)
    raise NoEventError(f"no event: event_fn kept its initial sign up to t = {float(ends[-1])!r}, where the solve "
                       f"to t_max ended (raise t_max)", float(ends[-1]))


def _difference_jacobian(event_fn: Callable, t: float, y: np.ndarray, p: np.ndarray):
    """Central differences of every output (step ε^(1/3)·max(1, |x|), error O(step²))."""

    def step(x):
        return np.finfo(np.float64).eps ** (1 / 3) * max(1.0, abs(x))

    def g(t_, y_, p_):
        return _event_values(event_fn, t_, y_, p_)

    h = step(t)
    dg_dt = (g(t + h, y, p) - g(t - h, y, p)) / (2 * h)
    columns_y, columns_p = [], []
    for array, columns, other in ((y, columns_y, "y"), (p, columns_p, "p")):
        for i in range(array.size):
            h = step(array[i])
            up, down = array.copy(), array.copy()
            up[i] += h
            down[i] -= h
            if other == "y":
                columns.append((g(t, up, p) - g(t, down, p)) / (2 * h))
            else:
                columns.append((g(t, y, up) - g(t, y, down)) / (2 * h))
    m = dg_dt.size
    dg_dy = np.stack(columns_y, axis=1) if columns_y else np.zeros((m, 0))
    dg_dp = np.stack(columns_p, axis=1) if columns_p else np.zeros((m, 0))
    return dg_dt, dg_dy, dg_dp


def _jacobian(event_fn, event_jac, t, y, p, m):
    if event_jac is None:
        dg_dt, dg_dy, dg_dp = _difference_jacobian(event_fn, t, y, p)
    else:
        dg_dt, dg_dy, dg_dp = event_jac(t, y, p)
    dg_dt = np.asarray(dg_dt, dtype=np.float64).reshape(m)
    dg_dy = np.asarray(dg_dy, dtype=np.float64).reshape(m, y.size)
    dg_dp = np.asarray(dg_dp, dtype=np.float64).reshape(m, p.size)
    return dg_dt, dg_dy, dg_dp


def event_gradient(field: VectorField | Callable, y0, t0: float, params, event_fn: Callable, *, t_max: float,
                   dL_dt_event: float = 1.0, dL_dy_event=None, event_jac: Callable | None = None,
                   method: str = "discrete", rtol: float = DEFAULT_RTOL, atol=DEFAULT_ATOL, tol: float | None = None,
                   max_steps: int = DEFAULT_MAX_STEPS, **gradient_options) -> EventGradient:
    """The implicit-function gradient of L(t*, y(t*)); see the module docstring."""
    field, y0, params = _inputs(field, y0, params)
    found = solve_until_event(field, y0, t0, params, event_fn, t_max=t_max, rtol=rtol, atol=atol, tol=tol,
                              max_steps=max_steps)
    if found.step < 0:
        raise InputError("event_fn is zero at t0: the event time is t0 itself and has no implicit gradient")
    t_event, y_event = found.t_event, found.y_event
    dL_dy_event = np.zeros_like(y0) if dL_dy_event is None else np.asarray(dL_dy_event, dtype=np.float64)
    if dL_dy_event.shape != y0.shape:
        raise InputError(f"dL_dy_event must have y0's shape {y0.shape}, got {dL_dy_event.shape}")

    values = _event_values(event_fn, t_event, y_event, params)
    active = int(np.argmin(values * found.signs))  # the output the combined minimum follows at t*
    dg_dt, dg_dy, dg_dp = _jacobian(event_fn, event_jac, t_event, y_event, params, values.size)
    sign = found.signs[active]
    dc_dt, dc_dy, dc_dp = sign * dg_dt[active], sign * dg_dy[active], sign * dg_dp[active]

    f_event = np.asarray(field.f(t_event, y_event, params), dtype=np.float64).reshape(-1)
    total_rate = dc_dt + dc_dy @ f_event
    scale = -(float(dL_dt_event) + dL_dy_event @ f_event) / total_rate
    cotangent = dL_dy_event + scale * dc_dy
    fixed_time = gradient(field, y0, [float(t0), t_event], params, np.stack([np.zeros_like(y0), cotangent]),
                          method=method, rtol=rtol, atol=atol, max_steps=max_steps, **gradient_options)
    return EventGradient(t_event=t_event, dL_dy0=fixed_time.dL_dy0, dL_dparams=fixed_time.dL_dparams + scale * dc_dp,
                         dL_dt0=float(fixed_time.dL_dt[0]), gradient=fixed_time)
