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

from gqref.controller import CONTROLLERS
from gqref.errors import InputError, raise_for_status
from gqref.solve import output_times, positive_number
from gqref.tableau import FIXED_GRID_TABLEAUX
from gqtorch.adaptive import integrate_adaptive
from gqtorch.augmented import (
    AdjointDynamics,
    GradientStats,
    MaskedBlockRmsNorm,
    adjoint_parameters,
    backward_tolerances,
    check_method,
    check_times,
    max_steps_option,
)
from gqtorch.fixed_grid import integrate_fixed, step_size_grid
from gqtorch.gq import BacksolveFunction, _Setup, user_outputs
from gqtorch.solve import ADAPTIVE_METHODS, METHODS, FlatField, _state
from gqtorch.tableau import torch_tableau

ADJOINT_OPTIONS = ("norm", "max_num_steps")
FIXED_ADJOINT_OPTIONS = ("step_size",)


def adjoint_backward(setup: _Setup, ys: torch.Tensor, dL_dy: torch.Tensor, params: tuple[torch.Tensor, ...]):
    """(dL/dy0 flat, dL/dparams, dL/dt or None) by the backsolve adjoint; fills ``setup.stats``' backward fields."""
    field, stats, t_grad = setup.field, setup.stats, setup.t_grad
    t = setup.t_host
    size = ys.shape[1]
    dtype, device = ys.dtype, ys.device
    dL_dy = dL_dy.to(dtype)
    dynamics = AdjointDynamics(field, size, params, t_grad)
    state_blocks = list(field.sizes) if field.is_tuple else [size]
    param_blocks = [p.numel() for p in params]
    blocks = [1, *state_blocks, *state_blocks, *param_blocks]
    keep = [True] * (1 + 2 * len(state_blocks)) + [not setup.seminorm] * len(param_blocks)
    norm = MaskedBlockRmsNorm(blocks, keep, dtype, device)
    n_total = sum(blocks)
    atol = torch.full((n_total,), setup.adjoint_atol, dtype=dtype, device=device)
    control = CONTROLLERS["torchdiffeq"]
    tableau = control.tableau if setup.adjoint_method == "dopri5" else FIXED_GRID_TABLEAUX[setup.adjoint_method]
    tab = torch_tableau(tableau, dtype, device)
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
        if setup.adjoint_method == "dopri5":
            status, s_stop, back, nfe_b, n_acc, _ = integrate_adaptive(
                dynamics, x, s_out.tolist(), direction, setup.adjoint_rtol, atol, norm, control, None,
                setup.max_steps, tab)
        else:
            grid = step_size_grid(s_out, setup.adjoint_step_size).tolist()
            status, s_stop, back, nfe_b, n_acc = integrate_fixed(dynamics, x, s_out.tolist(), direction, grid, tab)
        raise_for_status(int(status), float(direction * s_stop), max_steps=setup.max_steps)
        x = back[-1].clone()
        x[1:1 + size] = ys[i - 1]  # re-anchor to the forward solution
        x[1 + size:1 + 2 * size] += dL_dy[i - 1]
        nfe += nfe_b
        steps += n_acc
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


def _adjoint_options(adjoint_options, options, adjoint_method: str) -> tuple[bool, dict, float | None]:
    """(seminorm, options for the backward solve, fixed-grid step size); like torchdiffeq they default to
    ``options`` less its norm."""
    if adjoint_options is None:
        adjoint_options = {k: v for k, v in (options or {}).items() if k != "norm"} if isinstance(options, dict) \
            else {}
    if not isinstance(adjoint_options, dict):
        raise InputError(f"adjoint_options must be a dict, got {type(adjoint_options).__name__}")
    allowed = ADJOINT_OPTIONS if adjoint_method in ADAPTIVE_METHODS else FIXED_ADJOINT_OPTIONS
    for key in adjoint_options:
        if key not in allowed:
            raise InputError(f"adjoint_options[{key!r}] is not supported for adjoint_method {adjoint_method!r}; "
                             f"supported: {list(allowed)}")
    norm = adjoint_options.get("norm")
    if norm not in (None, "seminorm"):
        raise InputError(f"adjoint_options['norm'] must be 'seminorm' or absent (the full norm), got {norm!r}")
    step_size = adjoint_options.get("step_size")
    if step_size is not None:
        step_size = positive_number("adjoint_options['step_size']", step_size)
    return norm == "seminorm", adjoint_options, step_size


def odeint_adjoint(func: Callable, y0, t, *, rtol: float = 1e-7, atol=1e-9, method: str | None = None,
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
        raise InputError("event_fn is not supported by gqtorch.odeint_adjoint")
    if not callable(func):
        raise InputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    if not isinstance(return_stats, bool):
        raise InputError(f"return_stats must be a bool, got {return_stats!r}")
    method = check_method(method)
    adjoint_method = method if adjoint_method is None else adjoint_method
    if adjoint_method not in METHODS:
        raise InputError(f"adjoint_method must be one of {list(METHODS)} or None (the forward method), got "
                         f"{adjoint_method!r}")
    seminorm, back_options, step_size = _adjoint_options(
        adjoint_options, options if adjoint_method == method else None, adjoint_method)
    params = adjoint_parameters(func, adjoint_params)
    back_rtol, back_atol = backward_tolerances(rtol, atol, adjoint_rtol, adjoint_atol)
    flat, shapes, is_tuple = _state(y0)
    t, t_grad = check_times(t, flat)
    output_times(t.detach().to("cpu", torch.float64).numpy())
    stats = GradientStats(method="seminorm" if seminorm else "adjoint")
    setup = _Setup(func=func, field=FlatField(func, shapes, is_tuple), rtol=rtol, atol=atol, method=method,
                   options=options, adjoint_rtol=back_rtol, adjoint_atol=back_atol, seminorm=seminorm,
                   adjoint_method=adjoint_method, adjoint_step_size=step_size,
                   max_steps=max_steps_option(back_options if adjoint_method in ADAPTIVE_METHODS else None),
                   t_grad=t_grad, t_dtype=t.dtype,
                   t_host=t.detach().to("cpu", torch.float64).numpy().tolist(), stats=stats,
                   backward=adjoint_backward)
    ys = user_outputs(BacksolveFunction.apply(setup, flat, t, *params), setup.field)
    return (ys, stats) if return_stats else ys
