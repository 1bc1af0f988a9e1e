"""``gqtorch.odeint_adjoint_gq``: the GQ gradient (Norcliffe & Deisenroth 2023), twin of :mod:`gqref.gq`.

Forward: ``gqtorch.odeint`` under no_grad, keeping z at every t_i and the solve's own NFE (nothing is asked of
``func``). Backward, per interval [t_{i−1}, t_i] from the last: solve [z, a] backwards with the output times t_i,
the n_i Gauß–Legendre nodes (from t_i towards t_{i−1}) and t_{i−1}; the solver never cuts a step to land on a
node, each node is read from the dense output of the step that contains it. The backward step control is
max(rms(z), rms(a)); parameters are not in the backward state. At the nodes, W_j·aᵀ∂f/∂θ (and W_j·a·∂f/∂t) for all
nodes of the interval come from one batched call and one ``autograd.grad``; at t_{i−1} z is re-anchored to the
forward value and the incoming gradient is added to a.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from gqref.controller import CONTROLLERS
from gqref.errors import InputError, raise_for_status
from gqref.solve import output_times
from gqtorch.adaptive import integrate_adaptive
from gqtorch.augmented import (
    GQDynamics,
    GradientStats,
    MaskedBlockRmsNorm,
    adjoint_parameters,
    backward_tolerances,
    check_method,
    check_times,
    max_steps_option,
    node_vjps,
)
from gqtorch.quadrature import DEFAULT_MAX_NODES, gauss_legendre, node_count, reference_rule
from gqtorch.solve import FlatField, _state, odeint
from gqtorch.tableau import torch_tableau


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


class _Setup:
    """Everything the backward pass needs that is not a tensor input."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class BacksolveFunction(torch.autograd.Function):
    """Forward: the solve under no_grad, keeping only the outputs (memory O(K·S), no graph). Backward: the method's
    own backward sweep, ``setup.backward`` (GQ here, the continuous adjoint in :mod:`gqtorch.adjoint`)."""

    @staticmethod
    def forward(ctx, setup: _Setup, y0: torch.Tensor, t: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ys, stats = odeint(setup.func, setup.field.split(y0), t.detach(), rtol=setup.rtol, atol=setup.atol,
                               method=setup.method, options=setup.options, return_stats=True)
        ys = flat_outputs(ys, t.shape[0])
        setup.stats.nfe_forward = stats.nfe
        setup.stats.steps_forward = stats.n_accepted
        setup.stats.rejected_forward = stats.n_rejected
        ctx.setup = setup
        ctx.save_for_backward(ys, *params)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        setup = ctx.setup
        ys, *params = ctx.saved_tensors
        with torch.no_grad():
            dy0, dparams, dt = setup.backward(setup, ys, grad_ys, tuple(params))
        return (None, dy0, dt, *dparams)


def gq_backward(setup: _Setup, ys: torch.Tensor, dL_dy: torch.Tensor, params: tuple[torch.Tensor, ...]):
    """(dL/dy0 flat, dL/dparams, dL/dt or None) by GQ; fills ``setup.stats``' backward fields."""
    field, stats, t_grad = setup.field, setup.stats, setup.t_grad
    t = setup.t_host
    size = ys.shape[1]
    dtype, device = ys.dtype, ys.device
    dL_dy = dL_dy.to(dtype)
    dynamics = GQDynamics(field, size)
    norm = MaskedBlockRmsNorm((size, size), (True, True), dtype, device)
    atol = torch.full((2 * size,), setup.adjoint_atol, dtype=dtype, device=device)
    control = CONTROLLERS["torchdiffeq"]
    tab = torch_tableau(control.tableau, dtype, device)
    state = torch.cat((ys[-1], dL_dy[-1]))
    # the first interval's node sums become the accumulators (no zero-filled P-sized copies); later ones add in place
    dL_dparams: list[torch.Tensor | None] = [None] * len(params)
    dL_dt = torch.zeros(len(t), dtype=dtype, device=device) if t_grad else None
    dL_dt0 = torch.zeros((), dtype=dtype, device=device)
    batched = stats.batched_nodes is not False
    nfe = steps = 0
    nodes_used = []
    for i in range(len(t) - 1, 0, -1):
        if t_grad:
            t_i = torch.full((), t[i], dtype=dtype, device=device)
            incoming = torch.dot(field(t_i, ys[i]), dL_dy[i])
            dL_dt[i] = incoming
            dL_dt0 -= incoming
            nfe += 1
        n = node_count(setup.gtol, stats.nfe_forward, t[i - 1], t[i], t[0], t[-1], setup.max_nodes)
        nodes, _ = gauss_legendre(n, t[i], t[i - 1])
        half, mid = 0.5 * (t[i - 1] - t[i]), 0.5 * (t[i] + t[i - 1])
        x_ref, w_ref = reference_rule(n, dtype, device)
        taus = x_ref * half + mid
        orientation = math.copysign(1.0, t[i] - t[i - 1])  # the integral runs from t_{i−1} to t_i
        s_out, direction = output_times(np.concatenate([[t[i]], nodes, [t[i - 1]]]))
        status, s_stop, back, nfe_b, n_acc, _ = integrate_adaptive(
            dynamics, state, s_out.tolist(), direction, setup.adjoint_rtol, atol, norm, control, None,
            setup.max_steps, tab)
        raise_for_status(int(status), float(direction * s_stop), max_steps=setup.max_steps)
        if params or t_grad:
            cotangents = back[1:-1, size:] * (w_ref * (orientation * abs(half))).unsqueeze(1)
            grads, batched = node_vjps(field, taus, back[1:-1, :size], cotangents, params, t_grad, batched)
            for j, grad in enumerate(grads[:len(params)]):
                if grad is not None:
                    dL_dparams[j] = grad if dL_dparams[j] is None else dL_dparams[j].add_(grad)
            if t_grad and grads[-1] is not None:
                dL_dt0 += grads[-1].sum()
        nfe += nfe_b + n  # each node costs one more evaluation (with its VJP)
        steps += n_acc
        nodes_used.append(n)
        state = torch.cat((ys[i - 1], back[-1, size:] + dL_dy[i - 1]))
    if t_grad:
        dL_dt[0] = dL_dt0
        dL_dt = dL_dt.to(setup.t_dtype)
    dL_dparams = [torch.zeros_like(p) if g is None else g for p, g in zip(params, dL_dparams)]
    stats.nfe_backward = nfe
    stats.steps_backward = steps
    stats.nodes = tuple(reversed(nodes_used))
    stats.batched_nodes = batched if (params or t_grad) else None
    stats.backward_calls += 1
    return state[size:], dL_dparams, dL_dt


def _check_gtol(gtol, max_nodes) -> tuple[float, int]:
    if not isinstance(gtol, (int, float)) or isinstance(gtol, bool) or not math.isfinite(gtol) or gtol <= 0:
        raise InputError(f"gtol must be a positive finite number, got {gtol!r}")
    if not isinstance(max_nodes, int) or isinstance(max_nodes, bool) or max_nodes < 1:
        raise InputError(f"max_nodes must be a positive integer, got {max_nodes!r}")
    return float(gtol), max_nodes


def odeint_adjoint_gq(func: Callable, y0, t, *, rtol: float = 1e-7, atol=1e-9, gtol: float = 0.1,
                      max_nodes: int = DEFAULT_MAX_NODES, method: str | None = None, options: dict | None = None,
                      adjoint_rtol: float | None = None, adjoint_atol: float | None = None, adjoint_params=None,
                      return_stats: bool = False):
    """Solve like :func:`gqtorch.odeint`; differentiate by the GQ method (torchdiffeq's ``odeint_adjoint`` signature).

    Why: for a big field with a small state (P ≫ S) the backward solve carries only [z, a], and the parameter
    gradient is paid only at the few Gauß–Legendre nodes. ``gtol`` is the paper's node-rule constant C (more nodes
    when larger; not a tolerance), ``max_nodes`` the cap per interval. The forward solve uses ``method`` (default
    dopri5); backward solves are dopri5 at ``adjoint_rtol``/``adjoint_atol`` (default: the forward ones).
    ``adjoint_params``: the tensors to differentiate (default ``func.parameters()`` for an ``nn.Module``; a plain
    function must pass them, or ``()``). ``func`` needs no ``nfe`` attribute. For the batched node VJP ``func``
    should be ``torch.func.vmap``-compatible; otherwise nodes are evaluated one at a time (see
    :func:`gqtorch.augmented.node_vjps`). Gradients reach ``y0`` (tensor or tuple), ``adjoint_params`` and ``t``.
    ``return_stats=True`` returns ``(ys, stats)``: a :class:`GradientStats` whose backward fields fill in when
    ``backward`` runs. Bad arguments raise :class:`gqref.errors.InputError` naming the argument.
    """
    if not callable(func):
        raise InputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    if not isinstance(return_stats, bool):
        raise InputError(f"return_stats must be a bool, got {return_stats!r}")
    gtol, max_nodes = _check_gtol(gtol, max_nodes)
    method = check_method(method)
    params = adjoint_parameters(func, adjoint_params)
    back_rtol, back_atol = backward_tolerances(rtol, atol, adjoint_rtol, adjoint_atol)
    flat, shapes, is_tuple = _state(y0)
    t, t_grad = check_times(t, flat)
    output_times(t.detach().to("cpu", torch.float64).numpy())  # order checked before any solve
    t_host = t.detach().to("cpu", torch.float64).numpy().tolist()
    stats = GradientStats(method="gq")
    setup = _Setup(func=func, field=FlatField(func, shapes, is_tuple), rtol=rtol, atol=atol, method=method,
                   options=options, adjoint_rtol=back_rtol, adjoint_atol=back_atol, gtol=gtol, max_nodes=max_nodes,
                   max_steps=max_steps_option(None), t_host=t_host, t_grad=t_grad, t_dtype=t.dtype,
                   stats=stats, backward=gq_backward)
    ys = user_outputs(BacksolveFunction.apply(setup, flat, t, *params), setup.field)
    return (ys, stats) if return_stats else ys
