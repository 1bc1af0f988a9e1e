"""The backward machinery both backsolve methods share (the continuous adjoint, :mod:`gqtorch.adjoint`, and GQ,
:mod:`gqtorch.gq`): the autograd function (the forward solve without a graph, keeping only the outputs, then the
method's own backward sweep), the statistics object, the checks of their extra arguments, the backward solve's plan
and tolerances, and events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from gqref.arguments import positive_float
from gqref.errors import InputError
from gqref.rules import Rule
from gqtorch.arguments import host_scalar
from gqtorch.solve import ADAPTIVE_METHODS, METHODS, FlatField, MethodPlan, odeint, plan_method
from gqtorch.steps import Callbacks


@dataclass
class GradientStats:
    """Cost of one solve and (once ``backward`` has run) of its gradient, without asking anything of ``func``.

    ``nfe_*`` count every evaluation of ``func`` (an evaluation and its VJP at the same point count once, as in
    the paper and :class:`gqref.Diagnostics`); ``steps_*`` are accepted steps; ``nodes`` is GQ's count of evaluated
    nodes per interval (first interval first; for "adaptive" every node of every refinement round);
    ``batched_nodes`` says whether GQ's node VJPs ran as one ``vmap``-ed call per interval ("interval") or per
    round ("step", "adaptive") (True) or fell back to a per-node loop (False). Backward fields are None until
    ``backward`` runs.

    GQ only, as in :class:`gqref.Diagnostics`: ``quadrature`` is the rule's name ("auto", "interval", "step" or
    "adaptive") and ``rule`` the rule object (:mod:`gqref.rules`);
    ``node_times[i]`` the nodes evaluated on interval i (numpy arrays, ``len(node_times[i]) == nodes[i]``);
    ``quadrature_error`` the estimated max-norm quadrature error of the parameter gradient and
    ``quadrature_error_dt0`` that of dL/dt[0] ("auto" and "adaptive", None otherwise; measured against the
    integrand read from the backward dense output, so the adjoint tolerances' error comes on top);
    ``quadrature_met`` ("auto") whether the estimate met its tolerance (False only after a budget warning);
    ``quadrature_checked`` ("auto") False on a call that reused a recent check (``AutoRule.recheck_every``: the
    paper's nodes alone, no new estimate); ``refinement`` the last check's :class:`gqref.panels.Refinement`.
    """

    method: str
    nfe_forward: int = 0
    steps_forward: int = 0
    rejected_forward: int = 0
    nfe_backward: int | None = None
    steps_backward: int | None = None
    nodes: tuple[int, ...] = ()
    batched_nodes: bool | None = None
    backward_calls: int = 0
    quadrature: str | None = None
    quadrature_error: float | None = None
    quadrature_error_dt0: float | None = None
    quadrature_met: bool | None = None
    quadrature_checked: bool | None = None
    refinement: object = dataclass_field(default=None, repr=False)
    rule: object = None
    node_times: tuple = ()
    _extra: dict = dataclass_field(default_factory=dict, repr=False)


def adjoint_parameters(func: Callable, adjoint_params) -> tuple[torch.Tensor, ...]:
    """The tensors to differentiate: ``adjoint_params``, or ``func.parameters()`` for an ``nn.Module``; those not
    requiring grad are dropped (as torchdiffeq does)."""
    if adjoint_params is None:
        if not isinstance(func, torch.nn.Module):
            raise InputError("adjoint_params must be given when func is not a torch.nn.Module (pass the tensors "
                             "func closes over, or adjoint_params=() if it has none)")
        adjoint_params = tuple(func.parameters())
    try:
        adjoint_params = tuple(adjoint_params)
    except TypeError:
        raise InputError(f"adjoint_params must be an iterable of tensors, got {type(adjoint_params).__name__}") \
            from None
    for j, p in enumerate(adjoint_params):
        if not isinstance(p, torch.Tensor):
            raise InputError(f"adjoint_params[{j}] must be a torch.Tensor, got {type(p).__name__}")
    return tuple(p for p in adjoint_params if p.requires_grad)


def backward_tolerances(rtol, atol, adjoint_rtol, adjoint_atol) -> tuple[float, float]:
    """The backward solve's (rtol, atol) as numbers; they default to the forward ones (one-element tensors count
    as numbers, as in :func:`gqtorch.odeint`). A bad forward value is named as such, not as the adjoint's."""
    rtol = positive_float("rtol", host_scalar("rtol", rtol))
    back_rtol = rtol if adjoint_rtol is None else positive_float("adjoint_rtol", host_scalar("adjoint_rtol",
                                                                                              adjoint_rtol))
    if adjoint_atol is not None:
        return back_rtol, positive_float("adjoint_atol", host_scalar("adjoint_atol", adjoint_atol))
    if (isinstance(atol, torch.Tensor) and atol.numel() != 1) or (isinstance(atol, np.ndarray) and atol.size != 1) \
            or isinstance(atol, (tuple, list)):
        raise InputError("adjoint_atol must be given (a positive number) when atol is not a number")
    return back_rtol, positive_float("atol", host_scalar("atol", atol))


def check_method(method) -> str:
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}")
    return method


def check_times(t, state: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(t as a tensor, whether it requires grad); the ordering itself is checked by ``gqtorch.odeint``."""
    if isinstance(t, torch.Tensor):
        if t.is_complex() or not t.is_floating_point():
            raise InputError(f"t must be a real floating tensor, got dtype {t.dtype}")
        return t, t.requires_grad
    try:
        return torch.as_tensor(t, dtype=torch.float64, device=state.device), False
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"t must be a 1-D tensor or sequence of real times: {error}") from None


def backward_plan(method: str, options, adjoint_method, adjoint_options, *, adaptive_only: bool = False
                  ) -> tuple[MethodPlan, bool, Callable | None]:
    """(the backward solve's :class:`MethodPlan`, seminorm, the caller's adjoint norm or None).

    As torchdiffeq: ``adjoint_method`` defaults to ``method`` and ``adjoint_options`` to ``options`` less its
    norm (when the methods match). ``adjoint_options["norm"]``: absent (the full mixed norm), ``"seminorm"``
    (Kidger et al. 2021: the parameter blocks left out) or a callable on the tuple (adj_t, y, adj_y, *adj_θ).
    ``adaptive_only``: the backward solve must give a dense output (GQ reads its nodes there).
    """
    adjoint_method = method if adjoint_method is None else adjoint_method
    supported = ADAPTIVE_METHODS if adaptive_only else METHODS
    if adjoint_method not in supported:
        what = "an adaptive method with a dense output" if adaptive_only else "a method"
        raise InputError(f"adjoint_method must be {what}, one of {list(supported)} or None (the forward method), "
                         f"got {adjoint_method!r}")
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in options.items() if k != "norm"} if isinstance(options, dict) and \
            adjoint_method == method else {}
    if not isinstance(adjoint_options, dict):
        raise InputError(f"adjoint_options must be a dict, got {type(adjoint_options).__name__}")
    adjoint_options = dict(adjoint_options)
    norm = adjoint_options.pop("norm", None)
    if norm is not None and norm != "seminorm" and not callable(norm):
        raise InputError(f"adjoint_options['norm'] must be 'seminorm', a callable or absent (the full norm), got "
                         f"{norm!r}")
    plan = plan_method(adjoint_method, adjoint_options, name="adjoint_options")
    return plan, norm == "seminorm", (norm if callable(norm) else None)


def flat_outputs(ys, n_t: int) -> torch.Tensor:
    """``odeint``'s result (a tensor or a tuple of blocks) as one (n_t, N) tensor."""
    if isinstance(ys, tuple):
        return torch.cat([y.reshape(n_t, -1) for y in ys], dim=1)
    return ys.reshape(n_t, -1)


def user_outputs(ys: torch.Tensor, field: FlatField):
    """The (n_t, N) result in the caller's layout."""
    n_t = ys.shape[0]
    if field.is_tuple:
        return tuple(b.reshape(n_t, *s) for b, s in zip(ys.split(field.sizes, dim=1), field.shapes))
    return ys.reshape(n_t, *field.shapes[0])


@dataclass
class BacksolveSetup:
    """Everything a backsolve's backward pass needs that is not a tensor input.

    The forward solve's ``func`` (the caller's), ``field`` (flat), tolerances, ``method`` and ``options``; the
    backward solve's tolerances, :class:`~gqtorch.solve.MethodPlan` and callbacks; the output times on the host and
    whether they need a gradient; the statistics to fill in; and ``backward``, the method's sweep
    (``backward(setup, ys, dL_dy, params) -> (dL/dy0, dL/dparams, dL/dt)``). ``rule`` is GQ's quadrature rule;
    ``seminorm``, ``user_norm`` and ``state_norm`` shape the adjoint's step-control norm. ``forward_last_step``:
    the forward solve's last accepted step (adaptive methods; set by the forward pass), where GQ's backward solve
    may start.
    """

    func: Callable
    field: FlatField
    rtol: object
    atol: object
    method: str
    options: dict | None
    adjoint_rtol: float
    adjoint_atol: float
    back_plan: MethodPlan
    back_callbacks: Callbacks
    t_host: list[float]
    t_grad: bool
    t_dtype: torch.dtype
    stats: GradientStats
    backward: Callable
    rule: Rule | None = None
    seminorm: bool = False
    user_norm: Callable | None = None
    state_norm: Callable | None = None
    forward_last_step: float | None = None


class BacksolveFunction(torch.autograd.Function):
    """Forward: the solve under no_grad, keeping only the outputs (memory O(K·S), no graph). Backward: the method's
    own backward sweep, ``setup.backward`` (GQ here, the continuous adjoint in :mod:`gqtorch.adjoint`)."""

    @staticmethod
    def forward(ctx, setup: BacksolveSetup, y0: torch.Tensor, t: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ys, stats = odeint(setup.func, setup.field.split(y0), t.detach(), rtol=setup.rtol, atol=setup.atol,
                               method=setup.method, options=setup.options, return_stats=True)
        ys = flat_outputs(ys, t.shape[0])
        setup.stats.nfe_forward = stats.nfe
        setup.stats.steps_forward = stats.n_accepted
        setup.stats.rejected_forward = stats.n_rejected
        setup.forward_last_step = stats.last_step
        ctx.setup = setup
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    @once_differentiable  # the backward sweep runs without a graph: a second derivative must fail, not be wrong
    def backward(ctx, grad_ys: torch.Tensor):
        setup = ctx.setup
        ys, *params = ctx.saved_tensors
        with torch.no_grad():
            dy0, dparams, dt = setup.backward(setup, ys, grad_ys, tuple(params))
        return (None, dy0, dt, *dparams)


def solve_event_then(backsolve: Callable, func: Callable, y0, t, event_fn, *, rtol, atol, method, options, **kwargs):
    """``odeint_adjoint``/``odeint_adjoint_gq`` with ``event_fn``: (event_t, [y0, y(event_t)]) with the adjoint's
    memory and gradients.

    The event time is found by a solve without a graph (:func:`gqtorch.odeint` with ``event_fn``); the states then
    come from ``backsolve`` on the times [t0, event_t], so their gradients (y0, parameters) are the method's. The
    event time carries no gradient here, as in torchdiffeq; :func:`gqtorch.odeint_event` adds it through the
    implicit function theorem. The second solve runs its own steps, so its final state differs from the event
    solve's by the solver tolerance.
    """
    with torch.no_grad():
        event_t, _ = odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn)
    times = torch.stack([torch.as_tensor(t)[0].detach().to(event_t.dtype), event_t])
    result = backsolve(func, y0, times, rtol=rtol, atol=atol, method=method, options=options, **kwargs)
    ys, stats = (result if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], GradientStats)
                 else (result, None))
    last = torch.cat([y[-1].reshape(-1) for y in ys]) if isinstance(ys, tuple) else ys[-1].reshape(-1)
    if last.requires_grad:  # in the graph, so that backward() through it runs, as torchdiffeq's does
        event_t = _EventTime.apply(event_t, last)
    return (event_t, ys) if stats is None else (event_t, ys, stats)


class _EventTime(torch.autograd.Function):
    """The event time of an adjoint solve, joined to the graph of the final state with a zero derivative: its
    gradient comes only through :func:`gqtorch.odeint_event` (the implicit function theorem), as in torchdiffeq."""

    @staticmethod
    def forward(ctx, event_t: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(last)
        return event_t.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (last,) = ctx.saved_tensors
        return None, torch.zeros_like(last)
