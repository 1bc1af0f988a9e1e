"""The fixed-grid family on flat tensors (torchdiffeq 0.2.5's euler, midpoint, rk4, heun2, heun3, explicit_adams,
implicit_adams / fixed_adams): the twin of :mod:`gqref.fixed_grid`, which defines the methods, options, grids,
stage placement, perturbation and interpolation weights used here (see its docstring for the semantics).

Entry points (the caller validates and flattens; time inside is the increasing solver variable s = direction·t):

- :data:`FIXED_METHODS`, :data:`FIXED_OPTIONS` (method → accepted option names), :func:`fixed_options`
  (method, options dict) → :class:`~gqref.fixed_grid.FixedOptions` (frozen; InputError naming a bad option).
- :func:`solve_fixed` (field, y0, s_out, direction, method, opts, rtol, atol, callbacks, grid_args) →
  :class:`FixedResult` (status, s_stop, ys, nfe, n_steps). ``field(t, y)``: a 0-d time tensor (caller's time,
  the state's dtype) and the flat state → the flat derivative, with ``field.split(y)`` giving the caller's layout
  (read only to pass y0 to ``callbacks.step``). ``atol``: flat, the state's dtype. ``grid_args = (func, y0, t)``
  (the caller's func, y0 in its own layout, the output-times tensor) is what ``options['grid_constructor']`` is
  called with; it returns the grid in the caller's time.
- :func:`fixed_steps` (field, y0, grid, direction, method, opts, rtol, atol, callbacks, tally) → a generator of
  :class:`gqtorch.steps.AcceptedStep` (``state_at`` is the linear or cubic interpolant; the cubic one evaluates
  f(t1, y1) once, on first use). ``grid`` may be unbounded (:func:`gqref.fixed_grid.event_grid`, which raises
  InputError without ``step_size``, as torchdiffeq's fixed-grid event handling requires it). A :class:`Tally`
  counts evaluations and steps and reports non-finite values (:meth:`Tally.status`).

For a backward (adjoint) solve pass ``fixed_callbacks(func, method, adjoint=True)`` and the backward grid_args.

No value is read back to the host inside the loop (except implicit_adams' corrector test, which needs it): each
evaluation's finiteness flag stays on the device and :meth:`Tally.status` reads them all once, at the end. The
field is never evaluated at a perturbed time by adding a tensor to the grid: stage times are computed on the
device from Python floats (float64, then the state's dtype, then one-ulp ``nextafter`` when ``perturb``).

:func:`fixed_callbacks` (func, method, adjoint) reads the callbacks a fixed-grid method supports off the caller's
func (warning about accept/reject callbacks, which it never calls). ``callbacks.step(t0, y0, dt)`` is called
before every grid step (t0, dt as 0-d tensors of the state's dtype in
the caller's time, dt signed; y0 in the caller's layout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache
from typing import NamedTuple

import numpy as np
import torch

from gqref.errors import NONFINITE_FIELD, SUCCESS
from gqref.fixed_grid import (
    FIXED_METHODS,
    FIXED_OPTIONS,
    FixedOptions,
    StagePlan,
    event_grid,
    fixed_grid,
    hermite_weights,
    stage_plan,
    step_size_grid,
)
from gqref.fixed_grid import fixed_options as numeric_fixed_options
from gqref.tableau import FIXED_GRID_TABLEAUX, RK4, Tableau
from gqtorch.adams import AdamsStepper
from gqtorch.arguments import host_scalar
from gqtorch.steps import NO_CALLBACKS, AcceptedStep, Callbacks

__all__ = ["FIXED_METHODS", "FIXED_OPTIONS", "SUPPORTED_CALLBACKS", "FixedOptions", "FixedResult", "Tally",
           "event_grid", "fixed_callbacks", "fixed_options", "fixed_steps", "solve_fixed", "step_size_grid",
           "torch_grid"]


def fixed_options(method: str, options: dict | None) -> FixedOptions:
    """gqref's :func:`~gqref.fixed_grid.fixed_options` after one-element tensors became numbers (torchdiffeq takes
    a tensor ``step_size``); the checks themselves are gqref's."""
    if options:
        options = {k: host_scalar(f"options[{k!r}]", v) for k, v in options.items()}
    return numeric_fixed_options(method, options)


# --- grid -------------------------------------------------------------------------------------------------------

SUPPORTED_CALLBACKS = ("callback_step",)


def fixed_callbacks(func: Callable, method: str, adjoint: bool = False) -> Callbacks:
    """The step callbacks of ``func`` a fixed-grid method calls (``callback_step``; the ``*_adjoint`` one for a
    backward solve); defining ``callback_accept_step``/``callback_reject_step`` warns, as in torchdiffeq."""
    return Callbacks.of(func, adjoint=adjoint, method=method, supported=SUPPORTED_CALLBACKS)


def _host_times(grid) -> np.ndarray:
    """A grid_constructor's result (tensor, array or sequence) as a float64 host array."""
    if isinstance(grid, torch.Tensor):
        return grid.detach().to("cpu", torch.float64).numpy()
    return np.asarray(grid, dtype=np.float64)


def torch_grid(s_out, direction: float, opts: FixedOptions, grid_args: tuple | None) -> list[float]:
    """The solve's grid in solver time (Python floats): see :func:`gqref.fixed_grid.fixed_grid`."""
    return fixed_grid(np.asarray(s_out, dtype=np.float64), direction, opts, grid_args, _host_times).tolist()


# --- stages -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _TorchPlan:
    """gqref's :class:`~gqref.fixed_grid.StagePlan` on a device: weights in the state's dtype, nodes in float64."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    nudges: torch.Tensor
    host: StagePlan
    end_on_grid: bool
    stages: int


@cache
def _torch_plan(tableau: Tableau, dtype: torch.dtype, device: torch.device) -> _TorchPlan:
    plan = stage_plan(tableau)
    return _TorchPlan(a=torch.as_tensor(plan.a, dtype=dtype, device=device),
                      b=torch.as_tensor(plan.b, dtype=dtype, device=device),
                      c=torch.as_tensor(plan.c, dtype=torch.float64, device=device),
                      nudges=torch.as_tensor(plan.nudges, dtype=dtype, device=device),
                      host=plan, end_on_grid=plan.end_on_grid, stages=plan.stages)


@dataclass
class Tally:
    """Evaluations and steps of one fixed-grid solve so far, with each evaluation's finiteness kept on the device."""

    nfe: int = 0
    n_steps: int = 0
    _flags: list = dataclass_field(default_factory=list)  # 1-D bool tensors, one entry per evaluation
    _where: list = dataclass_field(default_factory=list)  # (solver time, steps completed before it) per entry

    def record(self, flags: torch.Tensor, times: Iterable[float]) -> None:
        with torch.no_grad():
            self._flags.append(flags)
        self._where.extend((s, self.n_steps) for s in times)

    def status(self) -> tuple[int, float | None, int]:
        """(status, solver time of the first non-finite evaluation or None, steps completed before it): reads every
        flag in one host transfer."""
        if not self._flags:
            return SUCCESS, None, self.n_steps
        flags = torch.cat(self._flags).tolist()
        bad = next((i for i, ok in enumerate(flags) if not ok), -1)
        if bad < 0:
            return SUCCESS, None, self.n_steps
        s, steps = self._where[bad]
        return NONFINITE_FIELD, s, steps


class _Evaluator:
    """The field at solver times (caller's time, state dtype, nudged one ulp when perturbing), counted in a tally."""

    def __init__(self, field: Callable, direction: float, y0: torch.Tensor, perturb: bool, tally: Tally,
                 check: bool = True):
        self.field, self.direction, self.perturb, self.tally = field, direction, perturb, tally
        self.dtype, self.device = y0.dtype, y0.device
        # check=False: the caller checks the outputs once at the end (NaN/inf reach y) and re-runs with checks on
        # to find where they started; per-step checks cost a fifth of a small field's step
        self.check = check
        real = y0.real.dtype if y0.is_complex() else y0.dtype
        self.host_dtype = {torch.float64: np.float64, torch.float32: np.float32}.get(real) \
            if self.device.type == "cpu" else None

    def _nudged(self, times: torch.Tensor, nudges) -> torch.Tensor:
        """nextafter(s, s + nudge) in solver time s = direction·t (so the ulp points along the integration)."""
        s = times * self.direction
        return torch.nextafter(s, s + nudges) * self.direction

    def stage_times(self, plan: _TorchPlan, s0: float, s1: float) -> tuple[torch.Tensor, ...]:
        """Every stage's time as a 0-d tensor: on the CPU from host floats (one tensor), elsewhere computed on the
        device (no host transfer); the same float64 arithmetic, rounding and nudges either way."""
        if self.host_dtype is not None:
            s = np.array([plan.host.stage_s(i, s0, s1) for i in range(plan.stages)])
            t = (self.direction * s).astype(self.host_dtype)
            if self.perturb:  # nextafter along the integration, in the state's dtype
                nudges = np.asarray(plan.host.nudges, dtype=self.host_dtype) * self.direction
                t = np.where(nudges != 0, np.nextafter(t, t + nudges), t)
            return torch.from_numpy(t).to(self.dtype).unbind()
        times = plan.c.mul(self.direction * (s1 - s0)).add_(self.direction * s0)
        if plan.end_on_grid:
            times[-1] = self.direction * s1
        times = times.to(self.dtype)
        if self.perturb:
            times = self._nudged(times, plan.nudges)
        return times.unbind()

    def time(self, s: float, nudge: int) -> torch.Tensor:
        t = torch.full((), self.direction * s, dtype=torch.float64, device=self.device).to(self.dtype)
        return self._nudged(t, nudge) if self.perturb and nudge else t

    def __call__(self, s: float, nudge: int, y: torch.Tensor) -> torch.Tensor:
        f = self.call(self.time(s, nudge), y)
        if self.check:
            self.tally.record(torch.isfinite(f).all().reshape(1), (s,))
        return f

    def call(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.tally.nfe += 1
        return self.field(t, y)


def _rk_step(evaluate: _Evaluator, plan: _TorchPlan, s0: float, s1: float, direction: float, y0: torch.Tensor,
             f0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y1, f0) of one RK step; ``f0`` is evaluated unless given.

    Stage inputs and y1 are chains of ``torch.add(acc, k_j, alpha=h·w_j)`` over the nonzero weights, as
    torchdiffeq writes its steps: for the few stages of a fixed-grid method that is fewer ops than a stage buffer
    and ``addmv``, and a smaller autograd graph.
    """
    h = direction * (s1 - s0)
    times = evaluate.stage_times(plan, s0, s1)
    a, b = plan.host.a, plan.host.b
    ks = [evaluate.call(times[0], y0) if f0 is None else f0]
    for i in range(1, plan.stages):
        ks.append(evaluate.call(times[i], _weighted(y0, ks, a[i], h)))
    if evaluate.check:
        first = 0 if f0 is None else 1
        stage_s = [plan.host.stage_s(i, s0, s1) for i in range(first, plan.stages)]
        evaluate.tally.record(torch.isfinite(torch.stack(ks[first:])).all(dim=1), stage_s)
    return _weighted(y0, ks, b, h), ks[0]


def _weighted(y0: torch.Tensor, ks: list[torch.Tensor], weights: np.ndarray, h: float) -> torch.Tensor:
    """y0 + h·Σ_j w_j k_j over the nonzero weights."""
    out = y0
    for w, k in zip(weights.tolist(), ks):
        if w != 0.0:
            out = torch.add(out, k, alpha=h * w)
    return out


def _stepper(evaluate: _Evaluator, y0: torch.Tensor, method: str, opts: FixedOptions, rtol: float,
             atol: torch.Tensor) -> Callable:
    """step(s0, s1, direction, y) -> (y1, f0) for ``method``."""
    if opts.adams:
        rk4 = _torch_plan(RK4, y0.dtype, y0.device)

        def startup(s0, s1, direction, y, f0):
            return _rk_step(evaluate, rk4, s0, s1, direction, y, f0)[0]

        return AdamsStepper(method, opts.max_order, opts.max_iters, rtol, atol, evaluate, startup).step
    plan = _torch_plan(FIXED_GRID_TABLEAUX[method], y0.dtype, y0.device)
    return lambda s0, s1, direction, y: _rk_step(evaluate, plan, s0, s1, direction, y)


def _linear(s0: float, s1: float, y0: torch.Tensor, y1: torch.Tensor, s: float) -> torch.Tensor:
    if s == s0:
        return y0
    if s == s1:
        return y1
    return torch.add(y0, y1 - y0, alpha=(s - s0) / (s1 - s0))


def _cubic(s0: float, s1: float, direction: float, y0: torch.Tensor, f0: torch.Tensor, y1: torch.Tensor,
           f1: torch.Tensor, s: float) -> torch.Tensor:
    w00, w10, w01, w11 = hermite_weights((s - s0) / (s1 - s0))
    h = direction * (s1 - s0)
    return y0 * w00 + f0 * (w10 * h) + y1 * w01 + f1 * (w11 * h)


class _Step(NamedTuple):
    s0: float
    s1: float
    y0: torch.Tensor
    y1: torch.Tensor
    f0: torch.Tensor


def _grid_steps(evaluate: _Evaluator, y0: torch.Tensor, grid: Iterable[float], direction: float, method: str,
                opts: FixedOptions, rtol: float, atol: torch.Tensor, callbacks: Callbacks) -> Iterator[_Step]:
    step = _stepper(evaluate, y0, method, opts, rtol, atol)
    calls_back = callbacks.step is not NO_CALLBACKS.step
    points = iter(grid)
    s0 = next(points, None)
    y = y0
    for s1 in points:
        if calls_back:
            t0 = torch.full((), direction * s0, dtype=y0.dtype, device=y0.device)
            dt = torch.full((), direction * (s1 - s0), dtype=y0.dtype, device=y0.device)
            callbacks.step(t0, evaluate.field.split(y), dt)
        y1, f0 = step(s0, s1, direction, y)
        evaluate.tally.n_steps += 1
        yield _Step(s0, s1, y, y1, f0)
        s0, y = s1, y1


def fixed_steps(field: Callable, y0: torch.Tensor, grid: Iterable[float], direction: float, method: str,
                opts: FixedOptions, rtol: float, atol: torch.Tensor, callbacks: Callbacks = NO_CALLBACKS,
                tally: Tally | None = None) -> Iterator[AcceptedStep]:
    """The steps over ``grid`` (increasing solver times, possibly unbounded) as :class:`AcceptedStep` records.

    ``state_at`` is the method's interpolant (linear, or cubic Hermite with f(t1, y1) evaluated once on first
    use). Evaluations, steps and non-finite values go to ``tally`` (read :meth:`Tally.status` when done).
    """
    evaluate = _Evaluator(field, direction, y0, opts.perturb, Tally() if tally is None else tally)
    for st in _grid_steps(evaluate, y0, grid, direction, method, opts, rtol, atol, callbacks):
        yield AcceptedStep(s0=st.s0, s1=st.s1, y0=st.y0, y1=st.y1, state_at=_interpolant(evaluate, opts, direction, st))


def _interpolant(evaluate: _Evaluator, opts: FixedOptions, direction: float, st: _Step) -> Callable:
    """The step's dense output; the cubic one evaluates f1 = f(t1, y1) on first use, once."""
    if opts.interp == "linear":
        return lambda s: _linear(st.s0, st.s1, st.y0, st.y1, s)
    f1: list[torch.Tensor] = []

    def state_at(s: float) -> torch.Tensor:
        if not f1:
            f1.append(evaluate(st.s1, 0, st.y1))
        return _cubic(st.s0, st.s1, direction, st.y0, st.f0, st.y1, f1[0], s)

    return state_at


class FixedResult(NamedTuple):
    """What :func:`solve_fixed` returns; ``ys`` is None unless status is SUCCESS."""

    status: int
    s_stop: float
    ys: torch.Tensor | None
    nfe: int
    n_steps: int


def solve_fixed(field: Callable, y0: torch.Tensor, s_out: list[float], direction: float, method: str,
                opts: FixedOptions, rtol: float, atol: torch.Tensor, callbacks: Callbacks = NO_CALLBACKS,
                grid_args: tuple | None = None) -> FixedResult:
    """Solve on the fixed grid and return the state at every output time (rows, flat).

    ``s_out`` are the increasing solver times of the outputs; rtol/atol (flat, the state's dtype) steer
    implicit_adams' corrector. On a non-finite field value the status is NONFINITE_FIELD, ``s_stop`` the
    (unperturbed) solver time of the first such evaluation and ``n_steps`` the steps completed before it.
    """
    grid = torch_grid(s_out, direction, opts, grid_args)
    result = _solve_on_grid(field, y0, s_out, grid, direction, method, opts, rtol, atol, callbacks, check=False)
    if result.status == SUCCESS:
        return result
    # NaN/inf somewhere: re-run with per-evaluation checks to name where it started (callbacks are not repeated)
    return _solve_on_grid(field, y0, s_out, grid, direction, method, opts, rtol, atol, NO_CALLBACKS, check=True)


def _solve_on_grid(field: Callable, y0: torch.Tensor, s_out: list[float], grid: list[float], direction: float,
                   method: str, opts: FixedOptions, rtol: float, atol: torch.Tensor, callbacks: Callbacks,
                   check: bool) -> FixedResult:
    tally = Tally()
    evaluate = _Evaluator(field, direction, y0, opts.perturb, tally, check=check)
    n_out = len(s_out)
    outputs = [y0.unsqueeze(0)]
    j = 1
    y_last = y0
    for st in _grid_steps(evaluate, y0, grid, direction, method, opts, rtol, atol, callbacks):
        while j < n_out and st.s1 >= s_out[j]:
            if opts.interp == "cubic":  # a fresh f1 for every output, as torchdiffeq
                f1 = evaluate(st.s1, 0, st.y1)
                out = _cubic(st.s0, st.s1, direction, st.y0, st.f0, st.y1, f1, s_out[j])
            else:
                out = _linear(st.s0, st.s1, st.y0, st.y1, s_out[j])
            outputs.append(out.unsqueeze(0))
            j += 1
        y_last = st.y1
    ys = torch.cat(outputs)
    if not check:
        with torch.no_grad():  # the solve's one host transfer: NaN/inf in any stage reaches the state
            finite = bool(torch.isfinite(ys).all()) and bool(torch.isfinite(y_last).all())
        if finite:
            return FixedResult(SUCCESS, grid[-1], ys, tally.nfe, tally.n_steps)
        return FixedResult(NONFINITE_FIELD, grid[0], None, tally.nfe, 0)  # located by the checked re-run
    status, s_bad, steps_before = tally.status()
    if status != SUCCESS:
        return FixedResult(status, s_bad, None, tally.nfe, steps_before)
    # finite in every evaluation yet not in the state: overflow of the state itself
    return FixedResult(NONFINITE_FIELD, grid[-1], None, tally.nfe, tally.n_steps)
