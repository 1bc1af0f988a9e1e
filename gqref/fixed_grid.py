"""The fixed-grid family with torchdiffeq 0.2.5's semantics: explicit Runge–Kutta on a grid and the Adams methods.

Methods (:data:`FIXED_METHODS`): the tableaux of :data:`gqref.tableau.FIXED_GRID_TABLEAUX` (euler, midpoint, rk4 =
Kutta's 3/8 rule, heun2, heun3) and :data:`gqref.adams.ADAMS_METHODS` (explicit_adams, implicit_adams, and its
alias fixed_adams). Options (:data:`FIXED_OPTIONS`, validated by :func:`fixed_options`):

- ``step_size``: the grid s0, s0 + h, s0 + 2h, … (ceil((S − s0)/h + 1) points) with its last point moved onto the
  last output time; ``grid_constructor``: a callable returning the grid in the caller's time, called once per
  solve as ``grid_constructor(*grid_args)`` (gqtorch: ``(func, y0, t)`` with the caller's func, y0 and output
  times); it must start on t[0], end on t[-1] and be strictly monotone. They are mutually exclusive; without
  either the grid is the output times.
- ``interp``: ``"linear"`` (default) or ``"cubic"``: outputs inside a step are the linear interpolant of its end
  states, or the cubic Hermite interpolant of (y0, f0, y1, f1) with f0 the step's first evaluation and a fresh
  f1 = f(t1, y1) evaluated for every output (so cubic costs one evaluation per output time).
- ``perturb``: evaluations at a step's start t0 are made at the next float after t0 and those at its end t1 at the
  float before t1 (in the integration direction, in the state's dtype), so a field with a jump at a grid point is
  sampled on each step's own side of it. A stage is at the start when its node c is 0 and at the end when c is 1.
- Adams only: ``max_order`` (1..12, default 12) and ``max_iters`` (≥ 1, default 4); see :mod:`gqref.adams`.

Time inside the solvers is the increasing solver variable s = direction·t; stage times are s0 + c·(s1 − s0) in
float64, except that rk4's last stage is the grid point s1 itself (torchdiffeq evaluates its 3/8 rule there,
while its generic two- and three-stage routines use s0 + c·ds).

Entry points: :func:`fixed_options` (method, options) → :class:`FixedOptions`; :func:`solve_fixed` (f, p, y0,
s_out, direction, method, opts, rtol, atol, grid_args=None) → :class:`FixedResult` (status, s_stop, ys, nfe,
n_steps, grid, steps_ys), with ``f(t, y, p)`` the flat NumPy field in the caller's time; :func:`fixed_steps` (a
generator of :class:`GridStep` with the step's interpolant, for event location, over any grid of solver times
such as :func:`event_grid`). :mod:`gqtorch.fixed_grid` is the twin on tensors and shares the option handling,
grids, stage placement and interpolation weights defined here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from gqref.adams import ADAMS_METHODS, DEFAULT_MAX_ITERS, MAX_ORDER, MIN_ORDER, AdamsStepper
from gqref.arguments import count, flag, optional_positive_float
from gqref.errors import NONFINITE_FIELD, SUCCESS, InputError
from gqref.tableau import FIXED_GRID_TABLEAUX, RK4, Tableau, float_tableau

FIXED_RK_METHODS: tuple[str, ...] = tuple(FIXED_GRID_TABLEAUX)
FIXED_METHODS: tuple[str, ...] = FIXED_RK_METHODS + ADAMS_METHODS
GRID_OPTIONS = ("step_size", "grid_constructor", "interp", "perturb")
FIXED_OPTIONS: dict[str, tuple[str, ...]] = {
    **{method: GRID_OPTIONS for method in FIXED_RK_METHODS},
    **{method: (*GRID_OPTIONS, "max_iters", "max_order") for method in ADAMS_METHODS},
}
INTERPOLATIONS = ("linear", "cubic")
END_STAGE_ON_GRID = frozenset({RK4.name})  # methods whose c = 1 stage is at the grid point s1, not s0 + 1·ds


# --- options ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FixedOptions:
    """A fixed-grid method's validated options (see the module docstring)."""

    method: str
    step_size: float | None = None
    grid_constructor: Callable | None = None
    interp: str = "linear"
    perturb: bool = False
    max_iters: int = DEFAULT_MAX_ITERS
    max_order: int = MAX_ORDER

    @property
    def adams(self) -> bool:
        return self.method in ADAMS_METHODS


def _integer(name: str, value, low: int, high: int | None) -> int:
    return count(f"options['{name}']", value, minimum=low, maximum=high)


def fixed_options(method: str, options: dict | None) -> FixedOptions:
    """Validate ``options`` for the fixed-grid ``method``; InputError names any bad or unknown option."""
    if method not in FIXED_METHODS:
        raise InputError(f"method must be one of {list(FIXED_METHODS)}, got {method!r}")
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InputError(f"options must be a dict, got {type(options).__name__}")
    allowed = FIXED_OPTIONS[method]
    for key in options:
        if key not in allowed:
            raise InputError(f"options[{key!r}] is not supported for method {method!r}; supported: {list(allowed)}")
    values: dict = {"method": method}

    step_size = optional_positive_float("options['step_size']", options.get("step_size"))
    if step_size is not None:
        values["step_size"] = step_size

    grid_constructor = options.get("grid_constructor")
    if grid_constructor is not None:
        if not callable(grid_constructor):
            raise InputError("options['grid_constructor'] must be callable as grid_constructor(func, y0, t), got "
                             f"{type(grid_constructor).__name__}")
        if step_size is not None:
            raise InputError("options['step_size'] and options['grid_constructor'] are mutually exclusive; "
                             "give one of them")
        values["grid_constructor"] = grid_constructor

    interp = options.get("interp", "linear")
    if interp not in INTERPOLATIONS:
        raise InputError(f"options['interp'] must be one of {list(INTERPOLATIONS)}, got {interp!r}")
    values["interp"] = interp

    values["perturb"] = flag("options['perturb']", options.get("perturb", False))

    if "max_iters" in options:
        values["max_iters"] = _integer("max_iters", options["max_iters"], 1, None)
    if "max_order" in options:
        values["max_order"] = _integer("max_order", options["max_order"], 1, MAX_ORDER)
        if values["max_order"] < MIN_ORDER:
            warnings.warn(f"{method}: max_order = {values['max_order']} is below {MIN_ORDER}, so every step is an "
                          "rk4 step", stacklevel=2)
    return FixedOptions(**values)


# --- grids ------------------------------------------------------------------------------------------------------

def step_size_grid(s_out: np.ndarray, step_size: float | None) -> np.ndarray:
    """torchdiffeq's grid: ceil((S − s0)/h + 1) points s0 + j·h, the last replaced by S (the output times when
    ``step_size`` is None).

    When h is so large that (S − s0)/h vanishes against 1 the grid keeps its two end points (torchdiffeq's would
    collapse to the single point S and leave the outputs unset).
    """
    if step_size is None:
        return np.array(s_out, dtype=np.float64)
    start, end = s_out[0], s_out[-1]
    n_points = math.ceil((end - start) / step_size + 1.0)
    if len(s_out) > 1:
        n_points = max(n_points, 2)
    grid = np.arange(n_points, dtype=np.float64) * step_size + start
    grid[-1] = end
    return grid


def constructed_grid(grid: np.ndarray, s_out: np.ndarray, direction: float) -> np.ndarray:
    """A grid_constructor's result (caller's time, as float64) checked and turned into solver time s."""
    grid = np.asarray(grid, dtype=np.float64)
    t_first, t_last = direction * s_out[0], direction * s_out[-1]
    if grid.ndim != 1 or grid.size < 1:
        raise InputError(f"options['grid_constructor'] must return a 1-D grid of times, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)):
        raise InputError("options['grid_constructor'] returned a grid with NaN/inf times")
    if grid[0] != t_first or grid[-1] != t_last:
        raise InputError(f"options['grid_constructor'] must return a grid from t[0] = {t_first!r} to t[-1] = "
                         f"{t_last!r}; it runs from {grid[0]!r} to {grid[-1]!r}")
    s = direction * grid
    if np.any(np.diff(s) <= 0):
        order = "increasing" if direction > 0 else "decreasing"
        raise InputError(f"options['grid_constructor'] must return a strictly {order} grid (as t is)")
    return s


def fixed_grid(s_out: np.ndarray, direction: float, opts: FixedOptions, grid_args: tuple | None = None,
               as_array: Callable = np.asarray) -> np.ndarray:
    """The solve's grid in solver time s (float64): from ``step_size``, ``grid_constructor(*grid_args)`` (its
    result converted by ``as_array``) or the output times."""
    if opts.grid_constructor is None:
        return step_size_grid(np.asarray(s_out, dtype=np.float64), opts.step_size)
    if grid_args is None:
        raise InputError("options['grid_constructor'] needs grid_args (func, y0, t) from the caller")
    return constructed_grid(as_array(opts.grid_constructor(*grid_args)), np.asarray(s_out, np.float64), direction)


def event_grid(s0: float, opts: FixedOptions) -> Iterator[float]:
    """The unbounded grid s0, s0 + h, (s0 + h) + h, … that event location steps on (accumulated, as torchdiffeq).

    Event location needs ``step_size`` (the end of the solve is not known in advance): InputError without it.
    """
    if opts.step_size is None:
        raise InputError(f"event location with the fixed-grid method {opts.method!r} needs options['step_size'] "
                         "(the grid cannot be built from output times or a grid_constructor)")
    s = float(s0)
    while True:
        yield s
        s = s + opts.step_size


# --- stages and interpolation -------------------------------------------------------------------------------------

def stage_nudges(c) -> tuple[int, ...]:
    """Perturb's direction per stage: +1 (next float) at the step's start, −1 (previous float) at its end."""
    return tuple(1 if float(x) == 0.0 else -1 if float(x) == 1.0 else 0 for x in c)


@dataclass(frozen=True, eq=False)
class StagePlan:
    """A fixed-grid RK method's float arrays, where its stages sit and which way perturb moves them."""

    name: str
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    nudges: tuple[int, ...]
    end_on_grid: bool

    @property
    def stages(self) -> int:
        return self.b.shape[0]

    def stage_s(self, i: int, s0: float, s1: float) -> float:
        if self.end_on_grid and self.c[i] == 1.0:
            return s1
        return float(self.c[i] * (s1 - s0) + s0)


def stage_plan(tableau: Tableau) -> StagePlan:
    ft = float_tableau(tableau)
    return StagePlan(name=tableau.name, a=ft.a, b=ft.b, c=ft.c, nudges=stage_nudges(tableau.c),
                     end_on_grid=tableau.name in END_STAGE_ON_GRID)


def hermite_weights(x: float) -> tuple[float, float, float, float]:
    """The cubic Hermite basis at x ∈ [0, 1]: the weights of y0, h·f0, y1, h·f1."""
    return ((1 + 2 * x) * (1 - x) * (1 - x), x * (1 - x) * (1 - x), x * x * (3 - 2 * x), x * x * (x - 1))


def linear_state(s0: float, s1: float, y0, y1, s: float):
    """The linear interpolant (exactly y0 at s0 and y1 at s1)."""
    if s == s0:
        return y0
    if s == s1:
        return y1
    return y0 + (s - s0) / (s1 - s0) * (y1 - y0)


def cubic_state(s0: float, s1: float, direction: float, y0, f0, y1, f1, s: float):
    """The cubic Hermite interpolant; f0, f1 are derivatives in the caller's time (h = direction·(s1 − s0))."""
    w00, w10, w01, w11 = hermite_weights((s - s0) / (s1 - s0))
    h = direction * (s1 - s0)
    return w00 * y0 + (w10 * h) * f0 + w01 * y1 + (w11 * h) * f1


# --- the NumPy solver ---------------------------------------------------------------------------------------------

class _NonFinite(Exception):
    def __init__(self, s: float):
        self.s = s


class _Evaluator:
    """f at solver time s (perturbed when asked), counted; a non-finite value stops the solve."""

    def __init__(self, f: Callable, p, direction: float, perturb: bool, dtype):
        self.f, self.p, self.direction, self.perturb = f, p, direction, perturb
        self.scalar = np.dtype(dtype).type
        self.nfe = 0

    def time(self, s: float, nudge: int) -> float:
        if self.perturb and nudge:
            s_dtype = self.scalar(s)  # the state's dtype, as torchdiffeq casts time before nudging it
            s = float(np.nextafter(s_dtype, s_dtype + self.scalar(nudge)))
        return self.direction * s

    def __call__(self, s: float, nudge: int, y: np.ndarray) -> np.ndarray:
        self.nfe += 1
        value = np.asarray(self.f(self.time(s, nudge), y, self.p))
        if not np.all(np.isfinite(value)):
            raise _NonFinite(s)
        return value


def _rk_step(evaluate: _Evaluator, plan: StagePlan, s0: float, s1: float, direction: float, y0: np.ndarray,
             f0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(y1, f0) of one RK step; ``f0`` (the first stage) is evaluated unless given."""
    h = direction * (s1 - s0)
    k = np.empty((plan.stages, y0.shape[0]), dtype=y0.dtype)
    k[0] = evaluate(s0, plan.nudges[0], y0) if f0 is None else f0
    for i in range(1, plan.stages):
        y_stage = y0 + (plan.a[i, :i] * h) @ k[:i]
        k[i] = evaluate(plan.stage_s(i, s0, s1), plan.nudges[i], y_stage)
    return y0 + (plan.b * h) @ k, k[0]


class GridStep(NamedTuple):
    """One step of a fixed-grid solve: solver times, end states, the first evaluation f0, and the interpolant."""

    s0: float
    s1: float
    y0: np.ndarray
    y1: np.ndarray
    f0: np.ndarray
    state_at: Callable[[float], np.ndarray]


def _stepper(evaluate: _Evaluator, method: str, opts: FixedOptions, rtol: float, atol: np.ndarray) -> Callable:
    """step(s0, s1, direction, y0) -> (y1, f0) for ``method``."""
    if opts.adams:
        rk4 = stage_plan(RK4)

        def startup(s0, s1, direction, y0, f0):
            return _rk_step(evaluate, rk4, s0, s1, direction, y0, f0)[0]

        return AdamsStepper(method, opts.max_order, opts.max_iters, rtol, atol, evaluate, startup).step
    plan = stage_plan(FIXED_GRID_TABLEAUX[method])
    return lambda s0, s1, direction, y0: _rk_step(evaluate, plan, s0, s1, direction, y0)


def _interpolant(evaluate: _Evaluator, opts: FixedOptions, s0: float, s1: float, direction: float,
                 y0: np.ndarray, f0: np.ndarray, y1: np.ndarray) -> Callable[[float], np.ndarray]:
    """The step's dense output; the cubic one evaluates f1 = f(t1, y1) on first use, once."""
    if opts.interp == "linear":
        return lambda s: linear_state(s0, s1, y0, y1, s)
    f1: list[np.ndarray] = []

    def state_at(s: float) -> np.ndarray:
        if not f1:
            f1.append(evaluate(s1, 0, y1))
        return cubic_state(s0, s1, direction, y0, f0, y1, f1[0], s)

    return state_at


def _grid_steps(evaluate: _Evaluator, y0: np.ndarray, grid: Iterable[float], direction: float, method: str,
                opts: FixedOptions, rtol: float, atol) -> Iterator[GridStep]:
    step = _stepper(evaluate, method, opts, rtol, np.asarray(atol, dtype=np.float64))
    points = iter(grid.tolist() if isinstance(grid, np.ndarray) else grid)  # Python floats, as in gqtorch
    s0 = next(points, None)
    y = y0
    for s1 in points:
        y1, f0 = step(s0, s1, direction, y)
        yield GridStep(s0, s1, y, y1, f0, _interpolant(evaluate, opts, s0, s1, direction, y, f0, y1))
        s0, y = s1, y1


def fixed_steps(f: Callable, p, y0: np.ndarray, grid: Iterable[float], direction: float, method: str,
                opts: FixedOptions, rtol: float, atol) -> Iterator[GridStep]:
    """The steps of a fixed-grid solve over ``grid`` (solver times; may be unbounded, e.g. :func:`event_grid`).

    A non-finite field value raises :class:`gqref.errors.NonFiniteFieldError` (the generator cannot return a
    status).
    """
    from gqref.errors import raise_for_status

    evaluate = _Evaluator(f, p, direction, opts.perturb, y0.dtype)
    try:
        yield from _grid_steps(evaluate, y0, grid, direction, method, opts, rtol, atol)
    except _NonFinite as stop:
        raise_for_status(NONFINITE_FIELD, direction * stop.s, max_steps=0)


class FixedResult(NamedTuple):
    """What :func:`solve_fixed` returns: ``ys`` (len(s_out), n) is complete only on SUCCESS; ``grid`` is the
    solver-time grid, ``steps_ys[j]`` the state at ``grid[j + 1]`` for the ``n_steps`` steps taken."""

    status: int
    s_stop: float
    ys: np.ndarray
    nfe: int
    n_steps: int
    grid: np.ndarray
    steps_ys: np.ndarray


def solve_fixed(f: Callable, p, y0: np.ndarray, s_out: np.ndarray, direction: float, method: str,
                opts: FixedOptions, rtol: float, atol, grid_args: tuple | None = None) -> FixedResult:
    """Solve on the fixed grid; ``f(t, y, p)`` is the flat field in the caller's time, ``y0`` flat, ``s_out`` the
    increasing solver times s = direction·t of the outputs. ``grid_args`` are what ``opts.grid_constructor`` is
    called with (default ``(f, y0, t)``). rtol/atol (a number or per-component array) steer implicit_adams'
    corrector. On a non-finite field value the status is NONFINITE_FIELD and ``s_stop`` the (unperturbed) solver
    time of that evaluation.
    """
    s_out = np.asarray(s_out, dtype=np.float64)
    if grid_args is None:
        grid_args = (f, y0, direction * s_out)
    grid = fixed_grid(s_out, direction, opts, grid_args)
    n_out = s_out.shape[0]
    ys = np.empty((n_out, y0.shape[0]), dtype=y0.dtype)
    ys[0] = y0
    steps_ys = np.empty((grid.shape[0] - 1, y0.shape[0]), dtype=y0.dtype)
    evaluate = _Evaluator(f, p, direction, opts.perturb, y0.dtype)
    j, n_steps = 1, 0
    try:
        for step in _grid_steps(evaluate, y0, grid, direction, method, opts, rtol, atol):
            while j < n_out and step.s1 >= s_out[j]:
                if opts.interp == "cubic":  # a fresh f1 per output, as torchdiffeq
                    f1 = evaluate(step.s1, 0, step.y1)
                    ys[j] = cubic_state(step.s0, step.s1, direction, step.y0, step.f0, step.y1, f1, s_out[j])
                else:
                    ys[j] = linear_state(step.s0, step.s1, step.y0, step.y1, s_out[j])
                j += 1
            steps_ys[n_steps] = step.y1
            n_steps += 1
    except _NonFinite as stop:
        return FixedResult(NONFINITE_FIELD, stop.s, ys, evaluate.nfe, n_steps, grid, steps_ys[:n_steps])
    return FixedResult(SUCCESS, float(grid[-1]), ys, evaluate.nfe, n_steps, grid, steps_ys)
