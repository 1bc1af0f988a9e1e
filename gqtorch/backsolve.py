"""The autograd function both backsolve methods share (the continuous adjoint, :mod:`gqtorch.adjoint`, and GQ,
:mod:`gqtorch.gq`): the forward solve without a graph, keeping only the outputs, and the method's own backward sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from gqref.rules import Rule
from gqtorch.augmented import GradientStats
from gqtorch.solve import FlatField, MethodPlan, odeint
from gqtorch.steps import Callbacks


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
    ``seminorm``, ``user_norm`` and ``state_norm`` shape the adjoint's step-control norm.
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
