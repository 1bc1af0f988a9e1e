"""``gqtorch.odeint_adjoint``: torchdiffeq 0.2.5's backsolve adjoint, twin of :mod:`gqref.adjoint`.

Interval by interval from the last output time, solve x = [adj_t, z, a, adj_θ] backwards with dopri5 (see
:mod:`gqtorch.augmented`), then re-anchor z to the forward value and add the incoming gradient to a. The step
control is torchdiffeq's: the maximum over the blocks adj_t, z, a (split into y0's tuple blocks, as the forward
norm is) and each parameter of their RMS. ``adjoint_options=dict(norm="seminorm")`` (Kidger et al. 2021) leaves the
parameter blocks out and keeps adj_t, exactly as torchdiffeq 0.2.5 does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gqref.arguments import flag
from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL
from gqref.errors import InputError, NonFiniteFieldError
from gqref.solve import output_times
from gqtorch.augmented import backward_dynamics
from gqtorch.backsolve import (
    BacksolveFunction,
    BacksolveSetup,
    GradientStats,
    adjoint_parameters,
    backward_plan,
    backward_tolerances,
    check_method,
    check_times,
    solve_event_then,
    user_outputs,
)
from gqtorch.controller import BlockRmsNorm, as_norm
from gqtorch.solve import FlatField, flat_state, integrate_plan, plan_method
from gqtorch.steps import CALLBACK_NAMES, Callbacks


class AdjointNorm:
    """The step control's norm on the flat adjoint state x = [adj_t, y, adj_y, adj_θ...], as torchdiffeq builds it.

    ``user``: the caller's adjoint norm, called with the tuple (adj_t, y, adj_y, *adj_θ) — y and adj_y in the
    caller's layout, so a tuple state contributes its blocks — and returning a scalar. Otherwise the maximum of
    |adj_t|, the forward norm of y and of adj_y (``state_norm`` on the caller's layout) and, unless ``seminorm``,
    the RMS of every parameter block.
    """

    def __init__(self, field: FlatField, size: int, params: tuple[torch.Tensor, ...], state_norm, user, seminorm: bool):
        self.field, self.size, self.params = field, size, params
        self.state_norm, self.user, self.seminorm = state_norm, user, seminorm
        self.sizes = [1, size, size] + [p.numel() for p in params]

    def _parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        adj_t, y, adj_y, *adj_p = x.split(self.sizes)
        return [adj_t.reshape(()), y, adj_y] + [a.view(p.shape) for a, p in zip(adj_p, self.params)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        adj_t, y, adj_y, *adj_p = self._parts(x)
        if self.user is not None:
            def layout(v):
                v = self.field.split(v)
                return tuple(v) if self.field.is_tuple else (v,)
            value = self.user((adj_t, *layout(y), *layout(adj_y), *adj_p))
            if not isinstance(value, torch.Tensor):
                value = torch.tensor(float(value), dtype=x.dtype, device=x.device)
            return value.reshape(()).abs().to(x.dtype)
        norms = [adj_t.abs(), self.state_norm(y), self.state_norm(adj_y)]
        if not self.seminorm:
            norms += [a.square().mean().sqrt() for a in adj_p]
        return torch.stack(norms).max()


def adjoint_backward(setup: BacksolveSetup, ys: torch.Tensor, dL_dy: torch.Tensor, params: tuple[torch.Tensor, ...]):
    """(dL/dy0 flat, dL/dparams, dL/dt or None) by the backsolve adjoint; fills ``setup.stats``' backward fields."""
    field, stats, t_grad = setup.field, setup.stats, setup.t_grad
    t = setup.t_host
    size = ys.shape[1]
    dtype, device = ys.dtype, ys.device
    dL_dy = dL_dy.to(dtype)
    # adj_t is always integrated, as torchdiffeq does: it sits in the step control's norm, so a time-dependent
    # field's steps depend on it even when t needs no gradient
    dynamics = backward_dynamics(field, size, full=True, params=params)
    plan = setup.back_plan
    norm = None
    if plan.is_adaptive:
        if setup.user_norm is None and setup.state_norm is None:  # torchdiffeq's default, in 4 fused ops
            state_blocks = list(field.sizes) if field.is_tuple else [size]
            param_blocks = [p.numel() for p in params]
            blocks = [1, *state_blocks, *state_blocks, *param_blocks]
            keep = [True] * (1 + 2 * len(state_blocks)) + [not setup.seminorm] * len(param_blocks)
            norm = BlockRmsNorm(blocks, dtype, device, keep)
        else:
            norm = AdjointNorm(field, size, params, setup.state_norm, setup.user_norm, setup.seminorm)
    n_total = 1 + 2 * size + sum(p.numel() for p in params)
    atol = torch.full((n_total,), setup.adjoint_atol, dtype=dtype, device=device)
    x = torch.cat([ys.new_zeros(1), ys[-1], dL_dy[-1], *(p.new_zeros(p.numel()).to(dtype) for p in params)])
    dL_dt = torch.zeros(len(t), dtype=dtype, device=device) if t_grad else None
    nfe = steps = 0
    for i in range(len(t) - 1, 0, -1):
        if t_grad:
            t_i = torch.full((), t[i], dtype=dtype, device=device)
            incoming = torch.dot(field(t_i, ys[i]), dL_dy[i])
            x[0] -= incoming
            dL_dt[i] = incoming
            nfe += 1
        s_out, direction = output_times([t[i], t[i - 1]])
        grid_args = (dynamics, x, torch.tensor([t[i], t[i - 1]], dtype=setup.t_dtype))  # torchdiffeq's call
        try:
            back, back_stats = integrate_plan(plan, dynamics, x, s_out.tolist(), direction, setup.adjoint_rtol, atol,
                                              norm, callbacks=setup.back_callbacks, grid_args=grid_args)
        except NonFiniteFieldError as error:  # say which solve: func's forward values were finite
            raise NonFiniteFieldError(f"the adjoint's backward dynamics (func and its VJPs aᵀ∂f/∂y, aᵀ∂f/∂θ, "
                                      f"a·∂f/∂t) returned a non-finite value (NaN or inf) at t = {error.t!r}",
                                      error.t) from error
        x = back[-1].clone()
        x[1:1 + size] = ys[i - 1]  # re-anchor to the forward solution
        x[1 + size:1 + 2 * size] += dL_dy[i - 1]
        nfe += back_stats.nfe
        steps += back_stats.n_accepted
    if t_grad:
        dL_dt[0] = x[0]
        dL_dt = dL_dt.to(setup.t_dtype)
    stats.nfe_backward = nfe
    stats.steps_backward = steps
    stats.backward_calls += 1
    dparams, start = [], 1 + 2 * size
    for p in params:
        dparams.append(x[start:start + p.numel()].view(p.shape).to(p.dtype))
        start += p.numel()
    return x[1 + size:1 + 2 * size], dparams, dL_dt


def odeint_adjoint(func: Callable, y0, t, *, rtol: float = DEFAULT_RTOL, atol=DEFAULT_ATOL, method: str | None = None,
                   options: dict | None = None, event_fn=None, adjoint_rtol: float | None = None,
                   adjoint_atol: float | None = None, adjoint_method: str | None = None,
                   adjoint_options: dict | None = None, adjoint_params=None, return_stats: bool = False):
    """Solve like :func:`gqtorch.odeint`; differentiate by torchdiffeq's backsolve adjoint (same signature).

    Why: O(1) memory in the number of steps, and the reference GQ is compared against. The backward solves use
    ``adjoint_method`` (default: the forward ``method``, as torchdiffeq) at ``adjoint_rtol``/``adjoint_atol``
    (default: the forward ones). ``adjoint_options`` (default: ``options`` less its norm, when the methods match):
    for dopri5 ``norm="seminorm"`` (drop the parameter blocks from the step control) and ``max_num_steps``; for the
    fixed-grid methods ``step_size`` (default: the output times are the grid). ``adjoint_params`` as in
    :func:`gqtorch.odeint_adjoint_gq`. ``return_stats=True`` returns
    ``(ys, stats)`` (a :class:`GradientStats`, backward fields filled by ``backward``). ``event_fn`` is not
    supported. Bad arguments raise :class:`gqref.errors.InputError` naming the argument.
    """
    if event_fn is not None:
        return solve_event_then(odeint_adjoint, func, y0, t, event_fn, rtol=rtol, atol=atol, method=method,
                                options=options, adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
                                adjoint_method=adjoint_method, adjoint_options=adjoint_options,
                                adjoint_params=adjoint_params, return_stats=return_stats)
    if not callable(func):
        raise InputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    return_stats = flag("return_stats", return_stats)
    method = check_method(method)
    back_plan, seminorm, user_norm = backward_plan(method, options, adjoint_method, adjoint_options)
    params = adjoint_parameters(func, adjoint_params)
    back_rtol, back_atol = backward_tolerances(rtol, atol, adjoint_rtol, adjoint_atol)
    flat, shapes, is_tuple = flat_state(y0)
    if flat.is_complex():
        raise InputError(f"odeint_adjoint needs a real state, got {flat.dtype}; use gqtorch.odeint (backprop "
                         f"through the solver) for complex states")
    t, t_grad = check_times(t, flat)
    output_times(t.detach().to("cpu", torch.float64).numpy())
    field = FlatField(func, shapes, is_tuple)
    forward_plan = plan_method(method, options, state_dtype=flat.dtype)
    state_norm = None
    if forward_plan.norm is not None:  # the adjoint's default norm uses the caller's forward norm on y and adj_y
        state_norm = as_norm(forward_plan.norm, None, field.split, flat.dtype, flat.device)
    stats = GradientStats(method="seminorm" if seminorm else "adjoint")
    setup = BacksolveSetup(func=func, field=field, rtol=rtol, atol=atol, method=method,
                   options=options, adjoint_rtol=back_rtol, adjoint_atol=back_atol, seminorm=seminorm,
                   back_plan=back_plan, user_norm=user_norm, state_norm=state_norm,
                   back_callbacks=Callbacks.of(func, adjoint=True, method=back_plan.method,
                                               supported=CALLBACK_NAMES if back_plan.is_adaptive
                                               else ("callback_step",)),
                   t_grad=t_grad, t_dtype=t.dtype,
                   t_host=t.detach().to("cpu", torch.float64).numpy().tolist(), stats=stats,
                   backward=adjoint_backward)
    ys = user_outputs(BacksolveFunction.apply(setup, flat, t, *params), setup.field)
    return (ys, stats) if return_stats else ys
