"""``gqref.solve``: validate inputs, run the adaptive or fixed-grid kernel, return a :class:`Solution`."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gqref.adaptive import ADAPTIVE
from gqref.controller import Controller, ErrorNorm, as_controller, as_norm
from gqref.errors import InputError, raise_for_status
from gqref.field import VectorField, as_field, flat_python_function
from gqref.fixed_grid import FIXED, step_size_grid
from gqref.interp import fit_matrix
from gqref.tableau import FIXED_GRID_TABLEAUX, float_tableau

ADAPTIVE_METHODS = ("dopri5",)
METHODS = ADAPTIVE_METHODS + tuple(FIXED_GRID_TABLEAUX)
DEFAULT_MAX_STEPS = 100_000


@dataclass(frozen=True)
class Steps:
    """The accepted steps of an adaptive solve, in the caller's time direction.

    ``ts[j]`` is where step j ended, ``hs[j]`` its signed size, ``ys[j]`` the state there (shape of y0) and
    ``error_ratios[j]`` its error estimate in units of the tolerance (≤ 1 for an accepted step; NaN on a fixed
    grid, which has no estimate).
    """

    ts: np.ndarray
    hs: np.ndarray
    ys: np.ndarray
    error_ratios: np.ndarray


@dataclass(frozen=True)
class Stats:
    nfe: int
    n_accepted: int
    n_rejected: int


@dataclass(frozen=True)
class Solution:
    """``ys[i]`` is the solution at ``ts[i]``; ``ys`` has shape ``(len(ts), *y0.shape)``."""

    ts: np.ndarray
    ys: np.ndarray
    steps: Steps
    stats: Stats


def output_times(t) -> tuple[np.ndarray, float]:
    """(s = direction·t as a fresh float64 array, direction): t must be 1-D, finite and strictly monotone."""
    t = np.array(t, dtype=np.float64)  # a copy: the caller's array is never aliased
    if t.ndim != 1 or t.size < 1:
        raise InputError(f"t must be a 1-D array of at least one time, got shape {t.shape}")
    finite = np.isfinite(t)
    if not finite.all():
        raise InputError(f"t must be finite; t[{int(np.argmin(finite))}] is not")
    steps = t[1:] - t[:-1]
    if (steps > 0).all():
        return t, 1.0
    if (steps < 0).all():
        return -t, -1.0
    bad = int(np.argmin(steps > 0)) if steps[0] > 0 else int(np.argmin(steps < 0))
    raise InputError(
        f"t must be strictly increasing or strictly decreasing (no repeats); t[{bad}] = {t[bad]!r} and "
        f"t[{bad + 1}] = {t[bad + 1]!r} break the order"
    )


def _state(y0) -> np.ndarray:
    y0 = np.array(y0, copy=True)
    if y0.dtype.kind in "biu":
        y0 = y0.astype(np.float64)
    if y0.dtype.kind != "f":
        # complex states: the step control compares magnitudes; use gqref.discrete.replay for complex steps
        raise InputError(f"y0 must be a real floating-point array, got dtype {y0.dtype}")
    if y0.size == 0:
        raise InputError("y0 must have at least one element")
    if not np.all(np.isfinite(y0)):
        raise InputError(f"y0 must be finite; it has {int(np.sum(~np.isfinite(y0)))} NaN/inf entries")
    return y0


def positive_number(name: str, value, allow_none: bool = False):
    """``value`` as a float, or an InputError naming ``name`` unless it is a positive finite number."""
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _atol(atol, shape: tuple[int, ...], size: int) -> np.ndarray:
    if np.ndim(atol) == 0:
        return np.full(size, positive_number("atol", atol))
    atol = np.asarray(atol, dtype=np.float64)
    try:
        atol = np.broadcast_to(atol, shape)
    except ValueError:
        raise InputError(f"atol of shape {atol.shape} does not broadcast to the state's shape {shape}") from None
    if not np.all(np.isfinite(atol)) or np.any(atol <= 0):
        raise InputError("atol must be positive and finite in every entry")
    return np.ascontiguousarray(atol).reshape(-1)


def _params(params) -> np.ndarray:
    if params is None:
        return np.empty(0)
    params = np.asarray(params)
    if params.dtype.kind not in "fciu":
        raise InputError(f"params must be a numeric array, got dtype {params.dtype}")
    if not np.all(np.isfinite(params)):
        raise InputError("params must be finite")
    return np.ascontiguousarray(params, dtype=np.result_type(params.dtype, np.float64))


def prepare_field(field: VectorField, y0: np.ndarray, t0: float, params: np.ndarray) -> tuple[Callable, object]:
    """(the f a kernel should call, the kernel variant): compiled fields run compiled, others as Python."""
    if field.compiled:
        if y0.ndim != 1:
            raise InputError(f"a compiled field takes a 1-D state; got y0 of shape {y0.shape} (flatten it)")
        probe = np.asarray(field.f(t0, y0, params))
        if probe.shape != y0.shape:
            raise InputError(f"field.f returned shape {probe.shape} at t = {t0!r}; expected the state's {y0.shape}")
        return field.f, "compiled"
    return flat_python_function(field.f, y0.shape, y0.dtype, "f"), "python"


def solve(
    field: VectorField | Callable,
    y0,
    t,
    params=None,
    *,
    rtol: float = 1e-7,
    atol: float | np.ndarray = 1e-9,
    method: str = "dopri5",
    controller: str | Controller = "torchdiffeq",
    norm: str | ErrorNorm = "rms",
    first_step: float | None = None,
    step_size: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> Solution:
    """Solve dy/dt = f(t, y, params) from ``y0`` at ``t[0]`` and return the solution at every ``t[i]``.

    ``t`` may increase or decrease (strictly). ``method``: ``"dopri5"`` (adaptive; ``controller`` picks the
    torchdiffeq or scipy step control, ``norm`` the error norm, ``max_steps`` bounds the attempted steps) or a
    fixed-grid ``"euler"``, ``"midpoint"``, ``"rk4"`` (on the grid ``t``, or of ``step_size`` when given).
    Errors: :class:`gqref.errors.InputError` for bad arguments, :class:`gqref.errors.SolverError` subclasses when
    the field returns NaN/inf, the step size underflows, or ``max_steps`` is exceeded.
    """
    field = as_field(field)
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}")
    s_out, direction = output_times(t)
    t_given = direction * s_out
    y0 = _state(y0)
    params = _params(params)
    rtol = positive_number("rtol", rtol)
    atol_vec = _atol(atol, y0.shape, y0.size)
    if not isinstance(max_steps, numbers.Integral) or isinstance(max_steps, bool) or max_steps < 1:
        raise InputError(f"max_steps must be a positive integer, got {max_steps!r}")
    f, variant = prepare_field(field, y0, float(t_given[0]), params)
    flat = y0.reshape(-1)

    if method in ADAPTIVE_METHODS:
        if step_size is not None:
            raise InputError("step_size applies to the fixed-grid methods (euler, midpoint, rk4), not dopri5")
        first_step = positive_number("first_step", first_step, allow_none=True)
        control = as_controller(controller)
        norm_kind, block_id, n_blocks = as_norm(norm).kernel_data(flat.size)
        tab = float_tableau(control.tableau)
        status, s_stop, ys, steps_ts, steps_ys, nfe, n_acc, n_rej = getattr(ADAPTIVE, variant)(
            f, params, flat, s_out, direction, rtol, atol_vec, norm_kind, block_id, n_blocks, control.kind,
            control.safety, control.ifactor, control.dfactor, control.tableau.order_low,
            -1.0 if first_step is None else first_step, max_steps, tab.a, tab.c, tab.e, tab.b_mid, fit_matrix(),
        )
        steps = Steps(ts=direction * steps_ts[:, 0], hs=direction * steps_ts[:, 1],
                      ys=steps_ys.reshape((-1, *y0.shape)), error_ratios=steps_ts[:, 2].copy())
    else:
        if first_step is not None:
            raise InputError(f"first_step applies to adaptive methods, not {method!r}")
        step_size = positive_number("step_size", step_size, allow_none=True)
        tab = float_tableau(FIXED_GRID_TABLEAUX[method])
        grid = step_size_grid(s_out, step_size)
        status, s_stop, ys, steps_ys, nfe, n_acc = getattr(FIXED, variant)(f, params, flat, s_out, direction, grid,
                                                                          tab.a, tab.b, tab.c)
        n_rej = 0
        steps = Steps(ts=direction * grid[1:n_acc + 1], hs=direction * np.diff(grid[: n_acc + 1]),
                      ys=steps_ys.reshape((-1, *y0.shape)), error_ratios=np.full(n_acc, np.nan))
    raise_for_status(int(status), float(direction * s_stop), max_steps=max_steps)
    return Solution(ts=t_given, ys=ys.reshape((len(s_out), *y0.shape)), steps=steps,
                    stats=Stats(nfe=int(nfe), n_accepted=int(n_acc), n_rejected=int(n_rej)))
