"""What gqtorch's two adjoint gradients share (twin of :mod:`gqref.augmented`): backward dynamics, the masked block
norm, the batched node VJP, argument checks and the statistics object.

With a(t) = ∂L/∂z(t) the adjoint runs backwards with da/dt = −aᵀ∂f/∂z. The continuous adjoint integrates
x = [adj_t (1), z (S), a (S), adj_p (P)] (torchdiffeq's order); GQ integrates only x = [z, a]. Both take one
evaluation of f and one ``torch.autograd.grad`` per backward stage, with the cotangent −a (as torchdiffeq does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np
import torch

from gqref.arguments import positive_float
from gqref.errors import InputError, NonFiniteFieldError
from gqtorch.arguments import host_scalar
from gqtorch.solve import ADAPTIVE_METHODS, METHODS, FlatField, MethodPlan, plan_method


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


class MaskedBlockRmsNorm:
    """max over the kept blocks of each block's RMS (torchdiffeq's mixed norm; dropped blocks are its seminorm)."""

    def __init__(self, sizes: Sequence[int], keep: Sequence[bool], dtype: torch.dtype, device: torch.device):
        rows = [j for j, k in enumerate(keep) if k]
        weights = torch.zeros(len(rows), sum(sizes), dtype=dtype)
        starts = [sum(sizes[:j]) for j in range(len(sizes))]
        for r, j in enumerate(rows):
            weights[r, starts[j]:starts[j] + sizes[j]] = 1.0 / sizes[j]
        self.weights = weights.to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mv(self.weights, x.square()).max().sqrt()


def grads_or_none(out: torch.Tensor, inputs: Sequence[torch.Tensor], cotangent: torch.Tensor) -> list:
    """``autograd.grad`` that answers None for inputs ``out`` does not depend on (also when it depends on none)."""
    if not inputs:
        return []
    if not out.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad(out, inputs, cotangent, allow_unused=True))


class GQDynamics:
    """d[z, a]/dt = [f, −aᵀ∂f/∂z]: one evaluation and one VJP with respect to z only (no parameter gradient)."""

    def __init__(self, field: FlatField, n: int):
        self.field = field
        self.n = n

    @staticmethod
    def split(x: torch.Tensor) -> torch.Tensor:
        """The state as the step callbacks see it: flat (torchdiffeq's augmented state is flat too)."""
        return x

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        with torch.enable_grad():
            z = x[:n].detach().requires_grad_(True)
            fz = self.field(t, z)
            (vjp_z,) = grads_or_none(fz, (z,), x[n:].neg())
        if vjp_z is None:
            vjp_z = torch.zeros_like(z)
        return torch.cat((fz.detach(), vjp_z))


class AdjointDynamics:
    """dx/dt = [−a·∂f/∂t, f, −aᵀ∂f/∂z, −aᵀ∂f/∂θ] on x = [adj_t, z, a, adj_θ]: one evaluation, one VJP."""

    def __init__(self, field: FlatField, n: int, params: tuple[torch.Tensor, ...], t_grad: bool):
        self.field = field
        self.n = n
        self.params = params
        self.t_grad = t_grad

    @staticmethod
    def split(x: torch.Tensor) -> torch.Tensor:
        """The state as the step callbacks see it: flat (torchdiffeq's augmented state is flat too)."""
        return x

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        with torch.enable_grad():
            tt = t.detach().requires_grad_(self.t_grad)
            z = x[1:1 + n].detach().requires_grad_(True)
            fz = self.field(tt, z)
            inputs = ((tt,) if self.t_grad else ()) + (z,) + self.params
            grads = grads_or_none(fz, inputs, x[1 + n:1 + 2 * n].neg())
        if not self.t_grad:
            grads.insert(0, None)
        vjp_t, vjp_z, *vjp_p = grads
        parts = [x.new_zeros(1) if vjp_t is None else vjp_t.reshape(1), fz.detach(),
                 torch.zeros_like(z) if vjp_z is None else vjp_z]
        parts += [p.new_zeros(p.numel()) if g is None else g.reshape(-1) for p, g in zip(self.params, vjp_p)]
        return torch.cat(parts)


def node_vjps(field: FlatField, taus: torch.Tensor, zs: torch.Tensor, cotangents: torch.Tensor,
              params: tuple[torch.Tensor, ...], t_grad: bool, batched: bool) -> tuple[list, bool]:
    """Σ_j cotangents_j ᵀ ∂f(τ_j, z_j)/∂(θ, τ_j) for all nodes of an interval: (grads per param [+ per τ], batched).

    Batched: ``torch.func.vmap(func)`` evaluates every node in one call and one ``autograd.grad`` gives the sum.
    This assumes ``func`` is vmap-compatible (pure tensor code; no ``.item()``, data-dependent Python branches or
    in-place writes to captured tensors). If vmap raises, the nodes are evaluated one by one (same single
    ``autograd.grad``) and ``batched`` comes back False, so later intervals skip the vmap attempt.
    """
    grads = None
    with torch.enable_grad():
        tau = taus.detach().requires_grad_(t_grad)
        inputs = params + ((tau,) if t_grad else ())
        if batched:
            try:
                out = torch.func.vmap(field)(tau, zs)
                grads = grads_or_none(out, inputs, cotangents)
            except InputError:
                raise
            except Exception:  # any vmap failure: fall back to the loop, which re-raises real errors
                batched = False
        if grads is None:
            out = torch.stack([field(tau[j], zs[j]) for j in range(zs.shape[0])])
            grads = grads_or_none(out, inputs, cotangents)
    # one host sync per call (per interval, or per backward pass for the step rule): a NaN from func's backward
    # must not become a silent NaN gradient
    sums = [g.sum() for g in grads if g is not None]
    if sums and not bool(torch.isfinite(torch.stack(sums)).all()):
        name_nonfinite_node(field, taus, zs, cotangents, params, t_grad)
        t = float(taus[0])
        raise NonFiniteFieldError(f"GQ's quadrature sum over the nodes from t = {t!r} to {float(taus[-1])!r} "
                                  "overflowed (every node's VJP is finite, their weighted sum is not)", t)
    return grads, batched


def name_nonfinite_node(field: FlatField, taus: torch.Tensor, zs: torch.Tensor, cotangents: torch.Tensor,
                        params: tuple[torch.Tensor, ...], t_grad: bool) -> None:
    """Once a sum of GQ's node VJPs came out NaN/inf: the nodes one by one (the slow path, taken only on failure),
    raising :class:`~gqref.errors.NonFiniteFieldError` at the first node whose VJP is not finite."""
    with torch.enable_grad():
        for j in range(zs.shape[0]):
            tau = taus[j].detach().requires_grad_(t_grad)
            grads = grads_or_none(field(tau, zs[j]), params + ((tau,) if t_grad else ()), cotangents[j])
            if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
                t = float(taus[j])
                raise NonFiniteFieldError(f"GQ's node VJP of func (aᵀ∂f/∂θ{' and a·∂f/∂t' if t_grad else ''}) is not "
                                          f"finite (NaN or inf) at t = {t!r}", t)


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


def solve_event_then(backsolve: Callable, func: Callable, y0, t, event_fn, *, rtol, atol, method, options, **kwargs):
    """``odeint_adjoint``/``odeint_adjoint_gq`` with ``event_fn``: (event_t, [y0, y(event_t)]) with the adjoint's
    memory and gradients.

    The event time is found by a solve without a graph (:func:`gqtorch.odeint` with ``event_fn``); the states then
    come from ``backsolve`` on the times [t0, event_t], so their gradients (y0, parameters) are the method's. The
    event time carries no gradient here, as in torchdiffeq; :func:`gqtorch.odeint_event` adds it through the
    implicit function theorem. The second solve runs its own steps, so its final state differs from the event
    solve's by the solver tolerance.
    """
    from gqtorch.solve import odeint  # a late import: solve imports this module's siblings

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
