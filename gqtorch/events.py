"""Event handling: integrate until ``event_fn(t, y)`` changes sign, and ``odeint_event`` (torchdiffeq 0.2.5's).

Entry points (twin: :mod:`gqref.events`):

``flat_event_fn(event_fn, split, t0, y0_flat) -> event_fn_flat``
    The caller's ``event_fn(t, y)`` (``y`` in the caller's layout: a tensor of y0's shape or a tuple of blocks;
    any tensor output) as the scalar function on flat states that the search reads. Several outputs are combined
    as torchdiffeq combines them: each is multiplied by its sign at (t0, y0) (so every one starts non-negative) and
    the minimum is taken, so the first output to cross zero stops the solve. ``split`` maps a flat state to the
    caller's layout (:meth:`gqtorch.solve.FlatField.split`); ``t0`` is the caller's initial time (a 0-d tensor or a
    number).

``integrate_until_event(steps, event_fn_flat, s0, y0, direction, tol) -> (s_event: float, y_event: Tensor)``
    Consume accepted steps (:class:`gqtorch.steps.AcceptedStep`, solver time s = direction·t) until the event
    function's sign at a step's end differs from its sign at the start, then locate the root on that step's dense
    output by bisection, as torchdiffeq does: ⌈log₂((s1 − s0)/tol)⌉ halvings of the step, keeping the half whose
    start has the initial sign, returning the midpoint of the last bracket. ``event_fn_flat`` is evaluated at the
    caller's time t = direction·s (a 0-d tensor in the state's real dtype). ``tol`` is torchdiffeq's: the solve's
    scalar ``atol`` (:func:`event_tolerance`). If the event function is exactly zero at the start, the start is
    returned. ``y_event = step.state_at(s_event)`` keeps the step's graph (differentiable with s_event held fixed).
    Raises :class:`gqref.events.NoEventError` if the steps run out first.

``odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=None, **kwargs)``
    torchdiffeq's signature and semantics: calls ``odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)``
    (default :func:`gqtorch.odeint`) with ``t = [t0, t0 ± 1]`` and returns ``(event_t, solution)``, ``solution``
    being ``[y0, y(event_t)]`` (a tuple of such for a tuple ``y0``). Gradients of ``event_t`` and of the final
    state reach ``y0``, ``t0`` and ``func``'s parameters by the implicit function theorem (:class:`ImplicitEvent`):
    with c(t, y) the combined event function and y(t*) the solver's state at the event (differentiable at fixed
    t*), dt*/dθ = −(∂c/∂θ + ∂c/∂y·∂y(t*)/∂θ) / (∂c/∂t + ∂c/∂y·f(t*, y*)).

How gqtorch.odeint wires ``event_fn`` (the lead's side): require ``len(t) == 2``; build
``event_fn_flat = flat_event_fn(event_fn, field.split, t[0], flat_y0)``; feed the solver family's accepted steps
(an unbounded generator) to :func:`integrate_until_event` with ``tol = event_tolerance(atol)``; return
``event_t = tensor(direction·s_event)`` in ``t``'s dtype and device (no graph) and ``solution = stack([y0,
y_event])`` in the caller's layout.

Differences from torchdiffeq, all deliberate:

- the event time's derivative includes ∂c/∂θ, the explicit dependence of ``event_fn`` on parameters
  (torchdiffeq's gradient rerouting leaves that term out, so its dt*/dθ is wrong when the event function has
  parameters of its own; for event functions of (t, y) alone both agree to roundoff);
- an event function that is zero at the start stops at the start for every solver family (torchdiffeq checks
  this for its adaptive solvers only);
- a non-finite or non-tensor event value raises :class:`gqref.errors.InputError` naming the time.

Like torchdiffeq, the denominator of the implicit-function gradient is regularised: ∂c/∂s + 1e-12 in the solver
time s (so an event the trajectory only grazes gives a huge, finite gradient instead of inf/NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.autograd.functional import vjp

from gqref.arguments import flag, positive_float
from gqref.errors import InputError
from gqref.events import NoEventError
from gqtorch.arguments import host_scalar
from gqtorch.steps import AcceptedStep

EventFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GRADIENT_REGULARISER = 1e-12  # torchdiffeq's, added to ∂c/∂s in the solver time


def _event_value(event_fn: Callable, t: torch.Tensor, y) -> torch.Tensor:
    value = event_fn(t, y)
    if not isinstance(value, torch.Tensor):
        raise InputError(f"event_fn must return a tensor, got {type(value).__name__} at t = {float(t)!r}")
    if value.is_complex():
        raise InputError(f"event_fn must return a real tensor, got dtype {value.dtype} at t = {float(t)!r}")
    return value


def combine_event_fn(event_fn: Callable, t0: torch.Tensor, y0) -> Callable:
    """torchdiffeq's combination of a multi-output event function: each output times its sign at (t0, y0), then
    the minimum (a 0-d tensor). Takes and gives functions of (t, y in the caller's layout)."""
    if not callable(event_fn):
        raise InputError(f"event_fn must be callable as event_fn(t, y), got {type(event_fn).__name__}")
    with torch.no_grad():
        start = _event_value(event_fn, t0, y0)
        if not bool(torch.isfinite(start).all()):
            raise InputError(f"event_fn returned a non-finite value at the initial time t = {float(t0)!r}")
        signs = torch.sign(start)

    def combined(t: torch.Tensor, y) -> torch.Tensor:
        return torch.min(_event_value(event_fn, t, y) * signs)

    return combined


def flat_event_fn(event_fn: Callable, split: Callable, t0, y0_flat: torch.Tensor) -> EventFn:
    """The combined event function on flat states; see the module docstring."""
    t0 = torch.as_tensor(t0, dtype=_real_dtype(y0_flat), device=y0_flat.device)
    combined = combine_event_fn(event_fn, t0, split(y0_flat))

    def on_flat(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return combined(t, split(y))

    return on_flat


def event_tolerance(atol) -> float:
    """The bisection tolerance torchdiffeq uses: the solve's atol, which must then be one number."""
    if isinstance(atol, (tuple, list)) or (isinstance(atol, torch.Tensor) and atol.numel() != 1) or \
            (getattr(atol, "ndim", 0) > 0 and not isinstance(atol, torch.Tensor)):
        raise InputError("event location bisects to atol, which must then be a single number; got "
                         f"{'a tensor of shape ' + str(tuple(atol.shape)) if hasattr(atol, 'shape') else 'a sequence'}")
    return positive_float("event tolerance (atol)", host_scalar("atol", atol))


def _real_dtype(y: torch.Tensor) -> torch.dtype:
    return y.real.dtype if y.is_complex() else y.dtype


def bisection_count(s0: float, s1: float, tol: float) -> int:
    """torchdiffeq's number of halvings, ⌈log₂((s1 − s0)/tol)⌉ (≤ 0: none), computed with torch's log as it is."""
    ratio = torch.tensor((s1 - s0) / tol, dtype=torch.float64)
    return int(torch.ceil(torch.log(ratio) / math.log(2.0)))


def _sign(event_fn: EventFn, s: float, y: torch.Tensor, direction: float) -> float:
    t = torch.tensor(direction * s, dtype=_real_dtype(y), device=y.device)
    with torch.no_grad():
        value = float(event_fn(t, y))  # the host transfer the search needs
    if math.isnan(value):  # (torch.sign maps NaN to 0, which would pass for an event)
        raise InputError(f"event_fn returned NaN at t = {direction * s!r}")
    return float((value > 0) - (value < 0))


def find_event(state_at: Callable[[float], torch.Tensor], sign0: float, s0: float, s1: float, event_fn: EventFn,
               tol: float, direction: float) -> float:
    """The event's solver time in [s0, s1] by torchdiffeq's bisection (see :func:`integrate_until_event`)."""
    lo, hi = s0, s1
    for _ in range(bisection_count(s0, s1, tol)):
        mid = (hi + lo) / 2.0
        # not under no_grad: a step may fit its dense output lazily on first use and keep it, and the final
        # state_at(s_event) must carry the graph (the few small graphs built here are dropped at once)
        y_mid = state_at(mid).detach()
        if _sign(event_fn, mid, y_mid, direction) == sign0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def integrate_until_event(steps: Iterable[AcceptedStep], event_fn_flat: EventFn, s0: float, y0: torch.Tensor,
                          direction: float, tol: float) -> tuple[float, torch.Tensor]:
    """(s_event, y_event); see the module docstring."""
    if direction not in (1.0, -1.0):
        raise InputError(f"direction must be +1.0 or -1.0, got {direction!r}")
    tol = event_tolerance(tol)
    s0 = float(s0)
    sign0 = _sign(event_fn_flat, s0, y0, direction)
    if sign0 == 0.0:
        return s0, y0
    s_end = s0
    for step in steps:
        s_end = step.s1
        if _sign(event_fn_flat, step.s1, step.y1, direction) != sign0:
            s_event = find_event(step.state_at, sign0, step.s0, step.s1, event_fn_flat, tol, direction)
            return s_event, step.state_at(s_event)
    raise NoEventError(f"no event: event_fn kept its initial sign up to t = {direction * s_end!r}, where the "
                       f"steps ended", direction * s_end)


class _Layout:
    """Flat state ↔ the caller's layout (a tensor of y0's shape, or a tuple of blocks)."""

    def __init__(self, y0):
        self.is_tuple = isinstance(y0, (tuple, list))
        blocks = list(y0) if self.is_tuple else [y0]
        for i, block in enumerate(blocks):
            if not isinstance(block, torch.Tensor):
                name = f"y0[{i}]" if self.is_tuple else "y0"
                raise InputError(f"{name} must be a torch.Tensor, got {type(block).__name__}")
        self.shapes = [b.shape for b in blocks]
        self.sizes = [b.numel() for b in blocks]

    def split(self, y: torch.Tensor):
        if not self.is_tuple:
            return y
        return tuple(b.view(shape) for b, shape in zip(y.split(self.sizes), self.shapes))

    def last_state(self, solution) -> torch.Tensor:
        """The final state: y0's shape for a tensor, flat for a tuple (as torchdiffeq reroutes it)."""
        if not self.is_tuple:
            return solution[-1]
        return torch.cat([s[-1].reshape(-1) for s in solution])

    def field(self, func: Callable) -> Callable:
        if not self.is_tuple:
            return func
        return lambda t, y: torch.cat([o.reshape(-1) for o in func(t, self.split(y))])

    def with_last(self, solution, state_t: torch.Tensor):
        if not self.is_tuple:
            return torch.cat([solution[:-1], state_t[None]], dim=0)
        return tuple(torch.cat([s[:-1], s_t[None]], dim=0) for s, s_t in zip(solution, self.split(state_t)))


class ImplicitEvent(torch.autograd.Function):
    """Passes ``(event_t, state_t)`` through unchanged; backward sends their cotangents, by the implicit function
    theorem, into ``state_t``'s graph (y at the event time held fixed) and into ``link`` (the event function at the
    event, evaluated with its own parameters' graph; ∂c/∂θ).

    With f = func(t*, y*), ∂c/∂t and ∂c/∂y from a VJP of ``event_fn`` and incoming cotangents (ḡ_t, ḡ_y):
    the total time cotangent T = ḡ_t + ḡ_y·f, the scale λ = −T / (∂c/∂t + ∂c/∂y·f + direction·1e-12) (torchdiffeq's
    regulariser, in the solver time s = direction·t), and the outputs ḡ_y + λ·∂c/∂y for ``state_t``, λ for
    ``link``.
    """

    @staticmethod
    def forward(ctx, event_t, state_t, link, func, event_fn, direction):
        ctx.func = func
        ctx.event_fn = event_fn
        ctx.direction = direction
        ctx.link_shape = link.shape
        ctx.save_for_backward(event_t, state_t)
        return event_t.detach(), state_t.detach()

    @staticmethod
    def backward(ctx, grad_t, grad_state):
        event_t, state_t = ctx.saved_tensors
        t = event_t.detach().to(_real_dtype(state_t)).clone().requires_grad_(True)
        y = state_t.detach().clone().requires_grad_(True)
        with torch.no_grad():
            f = ctx.func(t.detach(), y.detach())
        with torch.enable_grad():
            c, (dc_dt, dc_dy) = vjp(ctx.event_fn, (t, y))
        dc_total = dc_dt + torch.sum(dc_dy * f)
        time_cotangent = grad_t + torch.sum(grad_state * f)
        scale = -time_cotangent / (dc_total + ctx.direction * GRADIENT_REGULARISER)
        grad_y = grad_state + dc_dy * scale.reshape_as(c)
        grad_link = scale.reshape(ctx.link_shape) if ctx.needs_input_grad[2] else None
        return None, grad_y, grad_link, None, None, None


def odeint_event(func: Callable, y0, t0, *, event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Callable | None = None, **kwargs):
    """Solve from (t0, y0) until ``event_fn`` crosses zero; see the module docstring. Returns
    ``(event_t, solution)``."""
    if odeint_interface is None:
        from gqtorch.solve import odeint as odeint_interface  # lazily: gqtorch.solve imports this module
    if not callable(func):
        raise InputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    if not callable(event_fn):
        raise InputError(f"event_fn must be callable as event_fn(t, y), got {type(event_fn).__name__}")
    reverse_time = flag("reverse_time", reverse_time)
    if not isinstance(t0, torch.Tensor):
        t0 = torch.tensor(t0, dtype=torch.float64)
    if t0.numel() != 1 or t0.is_complex():
        raise InputError(f"t0 must be a single real time, got a tensor of shape {tuple(t0.shape)} ({t0.dtype})")
    layout = _Layout(y0)
    direction = -1.0 if reverse_time else 1.0
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + direction])

    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)

    state_t = layout.last_state(solution)
    y0_detached = tuple(b.detach() for b in y0) if layout.is_tuple else y0.detach()
    combined = combine_event_fn(event_fn, t.detach()[0], y0_detached)  # the signs odeint_interface combined with

    def event_on_state(time, y):
        return combined(time, layout.split(y))

    event_t = torch.as_tensor(event_t).detach().to(t.dtype)
    time = event_t.to(_real_dtype(state_t))
    if torch.is_grad_enabled():  # the event function's own parameters (∂c/∂θ): one evaluation with their graph
        link = event_on_state(time, state_t.detach())
    else:
        link = torch.zeros(())
    event_t, state_t = ImplicitEvent.apply(event_t, state_t, link, layout.field(func), event_on_state, direction)
    return event_t, layout.with_last(solution, state_t)
