"""``gqtorch.odeint``: torchdiffeq 0.2.5's ``odeint`` (forward half), validated up front, on flat state tensors.

The twin of :mod:`gqref.solve`: validate the inputs, flatten the state, run the adaptive or fixed-grid loop, raise
gqref's exceptions. Differences from torchdiffeq, all deliberate:

- bad arguments raise :class:`gqref.errors.InputError` naming the argument (never ``assert``); a NaN/inf field, a
  step size underflow or too many steps raise gqref's :class:`~gqref.errors.SolverError` subclasses naming the time;
- step sizes are not differentiated (they are Python floats), so backprop through ``odeint`` gives the exact
  derivative of the computed solution with the accepted step sizes held fixed (as diffrax does), with respect to
  ``t`` too (torchdiffeq also differentiates the step-size selection);
- ``options["max_num_steps"]`` bounds the attempted steps of the whole solve (torchdiffeq: per output interval);
- time is float64 whatever the state's dtype (``options["dtype"]`` may only ask for that), and the callbacks get
  the state in the caller's layout (torchdiffeq hands a tuple state's callbacks the flat concatenation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gqref.adaptive import AdaptiveOptions, adaptive_options
from gqref.arguments import flag, positive_float, real_array
from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL
from gqref.errors import InputError, raise_for_status
from gqref.fixed_grid import FixedOptions, event_grid
from gqref.solve import Stats, output_times
from gqref.tableau import ADAPTIVE_TABLEAUX
from gqtorch.adaptive import StepCounts, adaptive_steps, integrate_adaptive
from gqtorch.arguments import host_scalar
from gqtorch.controller import as_norm
from gqtorch.events import event_tolerance, flat_event_fn, integrate_until_event
from gqtorch.fixed_grid import FIXED_METHODS, Tally, fixed_options, fixed_steps, solve_fixed
from gqtorch.scipy_solver import scipy_options, scipy_solve
from gqtorch.steps import CALLBACK_NAMES, NO_CALLBACKS, Callbacks
from gqtorch.tableau import torch_tableau

ADAPTIVE_METHODS = tuple(ADAPTIVE_TABLEAUX)
SCIPY_METHODS = ("scipy_solver",)
METHODS = ADAPTIVE_METHODS + tuple(FIXED_METHODS) + SCIPY_METHODS
REAL_DTYPES = (torch.float32, torch.float64)
# float16/bfloat16 carry 11/8 significant bits: a step's increment is lost against the state (y' = −y in bfloat16
# never moves), and time itself cannot resolve the steps. Refused, with the fix named.
LOW_PRECISION = (torch.float16, torch.bfloat16)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
STATE_DTYPES = REAL_DTYPES + COMPLEX_DTYPES


class FlatField:
    """The caller's ``func(t, y)`` seen on flat states: ``y`` reshaped (or split into the tuple's blocks) on the
    way in, the result checked and flattened on the way out."""

    def __init__(self, func: Callable, shapes: list[torch.Size], is_tuple: bool):
        self.func = func
        self.shapes = shapes
        self.is_tuple = is_tuple
        self.sizes = [s.numel() for s in shapes]
        self.flat = not is_tuple and len(shapes[0]) == 1

    def split(self, y: torch.Tensor):
        """The caller's layout of a flat tensor: a tensor of y0's shape, or a tuple of the blocks."""
        if self.flat:
            return y
        if not self.is_tuple:
            return y.view(self.shapes[0])
        return tuple(block.view(shape) for block, shape in zip(y.split(self.sizes), self.shapes))

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.func(t, self.split(y))
        if not self.is_tuple:
            if not isinstance(out, torch.Tensor) or out.shape != self.shapes[0]:
                self._bad(t, out)
            if out.dtype != y.dtype:
                self._bad_dtype(t, out.dtype, y.dtype)
            return out if self.flat else out.reshape(-1)
        if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes) or any(
                not isinstance(o, torch.Tensor) or o.shape != s for o, s in zip(out, self.shapes)):
            self._bad(t, out)
        if any(o.dtype != y.dtype for o in out):
            self._bad_dtype(t, next(o.dtype for o in out if o.dtype != y.dtype), y.dtype)
        return torch.cat([o.reshape(-1) for o in out])

    @staticmethod
    def _bad_dtype(t, got, want):
        # a float32 field under a float64 state would silently cap the solve at float32 accuracy
        raise InputError(f"func returned {got} at t = {float(t)!r} for a {want} state; return the state's dtype "
                         f"(e.g. build the field's tensors with dtype=y.dtype)")

    def _bad(self, t, out):
        got = (tuple(tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out)
               if isinstance(out, (tuple, list)) else tuple(out.shape) if isinstance(out, torch.Tensor)
               else type(out).__name__)
        want = tuple(tuple(s) for s in self.shapes) if self.is_tuple else tuple(self.shapes[0])
        raise InputError(f"func returned {got} at t = {float(t)!r}; expected the state's shape {want}")


def flat_state(y0) -> tuple[torch.Tensor, list[torch.Size], bool]:
    """(flat y0, block shapes, is_tuple), validated."""
    is_tuple = isinstance(y0, (tuple, list))
    blocks = list(y0) if is_tuple else [y0]
    if is_tuple and not blocks:
        raise InputError("y0 must be a tensor or a non-empty tuple of tensors, got an empty tuple")
    for i, block in enumerate(blocks):
        name = f"y0[{i}]" if is_tuple else "y0"
        if not isinstance(block, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(block).__name__}")
        if block.dtype in LOW_PRECISION:
            raise InputError(f"{name} is {block.dtype}, too coarse for an ODE solve (steps vanish against the state "
                             f"and time); solve in float32 or float64 (y0.float()) and cast the result back")
        if block.dtype not in STATE_DTYPES:
            raise InputError(f"{name} must be a floating tensor (float32/float64, or complex64/complex128 for "
                             f"odeint), got {block.dtype}")
        if block.dtype != blocks[0].dtype or block.device != blocks[0].device:
            raise InputError(f"every block of y0 must share y0[0]'s dtype and device ({blocks[0].dtype}, "
                             f"{blocks[0].device}); {name} is {block.dtype} on {block.device}")
    # a copy, never a view: a func that writes into its y argument must not change the caller's y0
    flat = torch.cat([b.reshape(-1) for b in blocks]) if is_tuple else y0.reshape(-1).clone()
    if flat.numel() == 0:
        raise InputError("y0 must have at least one element")
    with torch.no_grad():
        if not bool(torch.isfinite(flat).all()):
            raise InputError("y0 must be finite; it has NaN/inf entries")
    return flat, [b.shape for b in blocks], is_tuple


def time_grid(t) -> tuple[np.ndarray, float]:
    if isinstance(t, torch.Tensor):  # bool and complex tensors reach gqref's check uncast, to be refused there
        t = t.detach().cpu()
        t = (t.to(torch.float64) if t.is_floating_point() else t).numpy()
    try:
        return output_times(t)
    except (TypeError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"t must be a 1-D tensor or sequence of real times: {error}") from None


def _time_shift(t: torch.Tensor, i: int, like: torch.Tensor) -> torch.Tensor:
    """t_i − t_i.detach(): zero in value, with derivative one with respect to t_i (in ``like``'s dtype/device)."""
    return (t[i] - t[i].detach()).to(dtype=like.dtype, device=like.device)


def _time_shifted(field: FlatField, flat: torch.Tensor, t: torch.Tensor, solve: Callable) -> tuple:
    """``solve(y0)`` with gradients reaching ``t`` through the flow's time identities; returns (ys, solve's
    counters, the evaluations added here).

    Shifting t_0 by δ with y_0 held is, to first order, starting at t_0 from y_0 − δ·f(t_0, y_0); moving t_i by δ
    moves y(t_i) by δ·f(t_i, y_i). So the solve starts from y_0 − (t_0 − t_0.detach())·f_0 (equal to y_0 in value)
    and each output y_i (i ≥ 1) gets + (t_i − t_i.detach())·f(t_i, y_i): the values are untouched and backprop gives
    dL/dt_i = f(t_i, y_i)·dL/dy_i and dL/dt_0 = −f(t_0, y_0)·dL/dy_0 (dL/dy_0 through the whole solve), the
    identities the adjoint and GQ gradients use. The f values are detached: they carry no second derivatives.
    """
    times = t.detach().to(flat.dtype)
    with torch.no_grad():
        f_start = field(times[0], flat.detach())
    shift_0 = _time_shift(t, 0, flat)
    ys, counters = solve(flat - shift_0 * f_start)
    with torch.no_grad():
        f_outputs = [field(times[i], ys[i].detach()) for i in range(1, ys.shape[0])]
    shifted = [ys[0] + shift_0 * f_start]  # y(t_0) = y_0 does not depend on t_0
    shifted += [ys[i] + _time_shift(t, i, flat) * f_outputs[i - 1] for i in range(1, ys.shape[0])]
    return torch.stack(shifted), counters, ys.shape[0]


def tolerance_number(name: str, value) -> float:
    """A positive number, given as a Python or numpy number or a one-element tensor."""
    return positive_float(name, host_scalar(name, value))


def flat_atol(atol, shapes: list[torch.Size], is_tuple: bool, n: int, dtype, device) -> torch.Tensor:
    """atol as a flat tensor: a number, a tensor or numpy array broadcasting to y0 (or, for a tuple, one entry per
    block)."""
    if is_tuple and isinstance(atol, (tuple, list)):
        if len(atol) != len(shapes):
            raise InputError(f"atol given per block must have one entry per block of y0 ({len(shapes)}), "
                             f"got {len(atol)}")
        parts = [flat_atol(a, [s], False, s.numel(), dtype, device) for a, s in zip(atol, shapes)]
        return torch.cat(parts)
    if isinstance(atol, np.ndarray) and atol.ndim > 0:  # per component, like a tensor
        atol = torch.from_numpy(real_array("atol", atol))
    if not isinstance(atol, torch.Tensor):
        return torch.full((n,), positive_float("atol", atol), dtype=dtype, device=device)
    if atol.requires_grad:
        raise InputError("atol must not require grad")
    if atol.is_complex() or atol.dtype == torch.bool:
        raise InputError(f"atol must be a real tensor, got dtype {atol.dtype}")
    target = torch.Size([n]) if is_tuple else shapes[0]
    try:
        flat = torch.broadcast_to(atol.detach().to(dtype=dtype, device=device), target).reshape(-1)
    except RuntimeError:
        raise InputError(f"atol of shape {tuple(atol.shape)} does not broadcast to the state's shape "
                         f"{tuple(target)}") from None
    if not bool(torch.isfinite(flat).all()) or bool((flat <= 0).any()):
        raise InputError("atol must be positive and finite in every entry")
    return flat.contiguous()


def host_value(value):
    """A tensor option as Python data (a number, or a list for a 1-D tensor); anything else unchanged."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.ndim == 0 else value.tolist()
    return value


@dataclass(frozen=True)
class MethodPlan:
    """A method with its validated options: ``adaptive`` for the embedded Runge–Kutta pairs, ``fixed`` for the
    fixed grids and Adams, ``scipy`` for scipy_solver; ``norm`` is the caller's norm option (converted per solve,
    since it needs the state's layout)."""

    method: str
    adaptive: AdaptiveOptions | None = None
    norm: object = None
    fixed: FixedOptions | None = None
    scipy: dict | None = None

    @property
    def is_adaptive(self) -> bool:
        return self.adaptive is not None


def plan_method(method, options, *, name: str = "options", state_dtype: torch.dtype | None = None) -> MethodPlan:
    """Validate ``method`` (None: dopri5) and its ``options`` dict (None: defaults); tensors become host numbers.
    Errors name the dict as the caller passed it (``name``: "options" or "adjoint_options")."""
    try:
        return _plan_method(method, options, name, state_dtype)
    except InputError as error:
        if name == "options":
            raise
        raise InputError(str(error).replace("options", name, 1)) from None


def _plan_method(method, options, name: str, state_dtype: torch.dtype | None) -> MethodPlan:
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}")
    if options is not None and not isinstance(options, dict):
        raise InputError(f"{name} must be a dict, got {type(options).__name__}")
    options = {key: host_value(value) for key, value in (options or {}).items()}
    if method in ADAPTIVE_METHODS:
        opts, rest = adaptive_options(options, method=method)
        time_dtype = rest.get("dtype")
        if time_dtype is not None:
            real = torch.float64 if state_dtype is None else (state_dtype.to_real() if state_dtype.is_complex
                                                                 else state_dtype)
            if not isinstance(time_dtype, torch.dtype) or torch.promote_types(time_dtype, real) != torch.float64:
                raise InputError(f"{name}['dtype'] sets the dtype of time, which gqtorch keeps in float64; got "
                                 f"{time_dtype!r} (leave it out, or pass torch.float64)")
        return MethodPlan(method=method, adaptive=opts, norm=rest.get("norm"))
    if method in SCIPY_METHODS:
        scipy_options(options, complex_state=state_dtype is not None and state_dtype.is_complex)
        return MethodPlan(method=method, scipy=options)
    return MethodPlan(method=method, fixed=fixed_options(method, options))


def integrate_plan(plan: MethodPlan, field, y_start: torch.Tensor, s_list: list[float], direction: float,
                   rtol: float, atol: torch.Tensor, norm, *, time_shifts: torch.Tensor | None = None,
                   record: list | None = None, callbacks: Callbacks = NO_CALLBACKS,
                   grid_args: tuple | None = None) -> tuple[torch.Tensor, Stats]:
    """The flat solution at the increasing solver times ``s_list`` by ``plan``'s method; raises on failure.

    ``grid_args``: (func, y0, t) as a fixed grid's ``grid_constructor`` is called with."""
    dtype, device = y_start.dtype, y_start.device
    if plan.is_adaptive:
        tab = torch_tableau(ADAPTIVE_TABLEAUX[plan.method], dtype, device)
        ys, counts = integrate_adaptive(field, y_start, s_list, direction, rtol, atol, norm, tab, plan.adaptive,
                                        time_shifts, record, callbacks=callbacks, split=getattr(field, "split", None))
        return ys, Stats(nfe=counts.nfe, n_accepted=counts.n_accepted, n_rejected=counts.n_rejected,
                         last_step=counts.last_step)
    if plan.scipy is not None:
        result = scipy_solve(field, y_start, direction * np.asarray(s_list), rtol, atol, plan.scipy)
        raise_for_status(int(result.status), float(direction * result.s_stop), max_steps=0)
        return result.ys, Stats(nfe=int(result.nfe), n_accepted=int(result.n_accepted), n_rejected=0)
    result = solve_fixed(field, y_start, s_list, direction, plan.method, plan.fixed, rtol, atol, callbacks,
                         grid_args)
    raise_for_status(int(result.status), float(direction * result.s_stop), max_steps=0)
    return result.ys, Stats(nfe=int(result.nfe), n_accepted=int(result.n_steps), n_rejected=0)


def _event_grid(s0: float, opts: FixedOptions, flat: torch.Tensor):
    """gqref's unbounded event grid s0, s0 + h, …, accumulated in the state's real dtype as torchdiffeq does (its
    fixed-grid event loop keeps time in that dtype), so float32 events land where torchdiffeq's do."""
    if opts.step_size is None:
        raise InputError(f"event_fn with the fixed-grid method {opts.method!r} needs options['step_size'] (the grid "
                         f"cannot be built from output times or a grid_constructor)")
    real = flat.real.dtype if flat.is_complex() else flat.dtype
    if real == torch.float64:
        return event_grid(s0, opts)

    def float32_grid():
        s, h = np.float32(s0), np.float32(opts.step_size)
        while True:
            yield float(s)
            s = np.float32(s + h)

    return float32_grid()


def _solve_until_event(plan: MethodPlan, field: FlatField, flat: torch.Tensor, t, s_list: list[float],
                       direction: float, rtol: float, atol_flat: torch.Tensor, atol, norm, callbacks: Callbacks,
                       event_fn, return_stats: bool):
    """``odeint(..., event_fn=...)``: solve from t[0] until ``event_fn`` changes sign; (event_t, [y0, y_event])."""
    if len(s_list) != 2:
        raise InputError(f"with event_fn, t must hold exactly two times (the start, and any later time giving the "
                         f"direction), got {len(s_list)}")
    if plan.scipy is not None:
        raise InputError("event_fn is not supported with method 'scipy_solver' (nor is it in torchdiffeq); use an "
                         f"adaptive method, one of {list(ADAPTIVE_METHODS)}")
    t0 = torch.tensor(direction * s_list[0], dtype=flat.real.dtype if flat.is_complex() else flat.dtype,
                      device=flat.device)
    event_flat = flat_event_fn(event_fn, field.split, t0, flat)
    counts = StepCounts()
    if plan.is_adaptive:
        tab = torch_tableau(ADAPTIVE_TABLEAUX[plan.method], flat.dtype, flat.device)
        steps = adaptive_steps(field, flat, s_list[0], direction, rtol, atol_flat, norm, tab, plan.adaptive, counts,
                               callbacks=callbacks, split=field.split)
    else:  # torchdiffeq's fixed-grid event loop steps by step_size from t0 and calls no callbacks
        tally = Tally()
        steps = fixed_steps(field, flat, _event_grid(s_list[0], plan.fixed, flat), direction, plan.method,
                            plan.fixed, rtol, atol_flat, tally=tally)
    s_event, y_event = integrate_until_event(steps, event_flat, s_list[0], flat, direction, event_tolerance(atol))
    if not plan.is_adaptive:
        counts = StepCounts(nfe=tally.nfe, n_accepted=tally.n_steps)
    t_dtype = t.dtype if isinstance(t, torch.Tensor) else torch.float64
    event_t = torch.tensor(direction * s_event, dtype=t_dtype, device=flat.device)
    ys = torch.stack([flat, y_event])
    ys = (tuple(block.reshape(2, *shape) for block, shape in zip(ys.split(field.sizes, dim=1), field.shapes))
          if field.is_tuple else ys.reshape(2, *field.shapes[0]))
    if return_stats:
        return event_t, ys, Stats(nfe=counts.nfe, n_accepted=counts.n_accepted, n_rejected=counts.n_rejected,
                                  last_step=counts.last_step)
    return event_t, ys


def odeint(func: Callable, y0, t, *, rtol: float = DEFAULT_RTOL, atol=DEFAULT_ATOL, method: str | None = None,
           options: dict | None = None, event_fn=None, return_stats: bool = False):
    """Solve dy/dt = func(t, y) from ``y0`` at ``t[0]``; return y at every ``t[i]`` (torchdiffeq's signature).

    ``func(t, y)``: any callable (an ``nn.Module`` included) taking a 0-d time tensor (the state's dtype) and a
    state shaped like ``y0``. ``y0``: a float tensor of any shape, or a tuple of tensors (sharing dtype and
    device; the result is then a tuple). ``t``: strictly increasing or decreasing times (a tensor or sequence,
    read as float64). ``rtol``: a positive number. ``atol``: a positive number, a tensor broadcasting to ``y0``,
    or (tuple state) one such entry per block. ``method``: any of :data:`METHODS` — the adaptive pairs (``"dopri5"``,
    the default, ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``, ``"adaptive_heun"``, ``"tsit5"``: torchdiffeq's step
    control, outputs by the quartic dense output, steps never cut to land on ``t``), the fixed grids (``"euler"``,
    ``"midpoint"``, ``"rk4"`` (Kutta's 3/8 rule), ``"heun2"``, ``"heun3"``), the Adams methods
    (``"explicit_adams"``, ``"implicit_adams"``) and ``"scipy_solver"``. ``options``: torchdiffeq's, per method
    (:func:`plan_method` validates them; the list is in ``docs/compatibility.md``); ``max_num_steps`` counts the
    attempted steps of the whole solve (default 100 000). Step callbacks (``func.callback_step`` etc.) are called
    as torchdiffeq calls them. ``event_fn(t, y)``: with ``t`` of two times, solve until it changes sign and return
    ``(event_t, ys)`` with ``ys`` the states at t[0] and at the event (``(event_t, ys, stats)`` with
    ``return_stats``). ``return_stats=True`` returns ``(ys, stats)`` with ``stats`` a :class:`gqref.Stats`
    (``nfe``: every evaluation of ``func``; ``n_accepted``, ``n_rejected``: steps).

    Backprop through the result gives the exact derivative of the computed solution (step sizes held fixed)
    with respect to ``y0``, everything ``func`` closes over and, for the adaptive pairs, ``t`` (stage times move
    with t[0],
    each output's position in its step with its own time: gqref's ``discrete`` gradient). For the fixed-grid
    methods dL/dt comes from the flow's time identities instead (see :func:`_time_shifted`; K + 1 more
    evaluations, counted in ``nfe``).
    Raises :class:`gqref.errors.InputError` for bad arguments and :class:`gqref.errors.SolverError` subclasses
    (non-finite field, step size underflow, too many steps) with the time where the solve stopped.
    """
    if not callable(func):
        raise InputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    return_stats = flag("return_stats", return_stats)
    flat, shapes, is_tuple = flat_state(y0)
    dtype, device = flat.dtype, flat.device
    plan = plan_method(method, options, state_dtype=dtype)
    s_out, direction = time_grid(t)
    rtol = tolerance_number("rtol", rtol)
    atol_flat = flat_atol(atol, shapes, is_tuple, flat.numel(), flat.real.dtype if flat.is_complex() else dtype, device)
    field = FlatField(func, shapes, is_tuple)
    s_list = s_out.tolist()
    supported = CALLBACK_NAMES if plan.is_adaptive else () if plan.scipy is not None else ("callback_step",)
    grid_args = (func, y0, t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64))
    callbacks = Callbacks.of(func, method=plan.method, supported=supported)
    norm = None
    if plan.is_adaptive:
        block_sizes = [s.numel() for s in shapes] if is_tuple else None
        norm = as_norm(plan.norm, block_sizes, field.split, atol_flat.dtype, device)

    if event_fn is not None:
        return _solve_until_event(plan, field, flat, t, s_list, direction, rtol, atol_flat, atol, norm, callbacks,
                                  event_fn, return_stats)

    def integrate(y_start: torch.Tensor, time_shifts: torch.Tensor | None = None):
        return integrate_plan(plan, field, y_start, s_list, direction, rtol, atol_flat, norm,
                              time_shifts=time_shifts, callbacks=callbacks, grid_args=grid_args)

    t_grad = isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled()
    if t_grad and plan.is_adaptive:  # the exact derivative with frozen step sizes
        ys, stats = integrate(flat, (t - t.detach()).to(device))
    elif t_grad:  # fixed grids: the grid itself moves with t, so use the flow's time identities
        ys, stats, nfe_times = _time_shifted(field, flat, t, integrate)
        stats = Stats(nfe=stats.nfe + nfe_times, n_accepted=stats.n_accepted, n_rejected=stats.n_rejected)
    else:
        ys, stats = integrate(flat)
    n_t = len(s_list)
    if is_tuple:
        ys = tuple(block.reshape(n_t, *shape) for block, shape in zip(ys.split(field.sizes, dim=1), shapes))
    else:
        ys = ys.reshape(n_t, *shapes[0])
    if return_stats:
        return ys, stats
    return ys
