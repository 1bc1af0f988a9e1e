"""``gqtorch.odeint``: torchdiffeq 0.2.5's ``odeint`` (forward half), validated up front, on flat state tensors.

The twin of :mod:`gqref.solve`: validate the inputs, flatten the state, run the adaptive or fixed-grid loop, raise
gqref's exceptions. Differences from torchdiffeq, all deliberate:

- bad arguments raise :class:`gqref.errors.InputError` naming the argument (never ``assert``); a NaN/inf field, a
  step size underflow or too many steps raise gqref's :class:`~gqref.errors.SolverError` subclasses naming the time;
- step sizes are not differentiated (they are Python floats), so backprop through ``odeint`` gives the exact
  derivative of the computed solution with the accepted step sizes held fixed (as diffrax does), with respect to
  ``t`` too (torchdiffeq also differentiates the step-size selection);
- ``options["max_num_steps"]`` bounds the attempted steps of the whole solve (torchdiffeq: per output interval);
- stage times are computed in float64 and passed to ``func`` in the state's dtype, without torchdiffeq's one-ulp
  ``Perturb`` nudges at a step's end.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np
import torch

from gqref.controller import CONTROLLERS
from gqref.errors import InputError, raise_for_status
from gqref.solve import DEFAULT_MAX_STEPS, Stats, output_times, positive_number
from gqref.tableau import FIXED_GRID_TABLEAUX
from gqtorch.adaptive import integrate_adaptive
from gqtorch.controller import as_norm
from gqtorch.fixed_grid import integrate_fixed, step_size_grid
from gqtorch.tableau import torch_tableau

ADAPTIVE_METHODS = ("dopri5",)
METHODS = ADAPTIVE_METHODS + tuple(FIXED_GRID_TABLEAUX)
ADAPTIVE_OPTIONS = ("first_step", "max_num_steps", "norm")
FIXED_OPTIONS = ("step_size",)
STATE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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
            return out if self.flat else out.reshape(-1)
        if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes) or any(
                not isinstance(o, torch.Tensor) or o.shape != s for o, s in zip(out, self.shapes)):
            self._bad(t, out)
        return torch.cat([o.reshape(-1) for o in out])

    def _bad(self, t, out):
        got = (tuple(tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__ for o in out)
               if isinstance(out, (tuple, list)) else tuple(out.shape) if isinstance(out, torch.Tensor)
               else type(out).__name__)
        want = tuple(tuple(s) for s in self.shapes) if self.is_tuple else tuple(self.shapes[0])
        raise InputError(f"func returned {got} at t = {float(t)!r}; expected the state's shape {want}")


def _state(y0) -> tuple[torch.Tensor, list[torch.Size], bool]:
    """(flat y0, block shapes, is_tuple), validated."""
    is_tuple = isinstance(y0, (tuple, list))
    blocks = list(y0) if is_tuple else [y0]
    if is_tuple and not blocks:
        raise InputError("y0 must be a tensor or a non-empty tuple of tensors, got an empty tuple")
    for i, block in enumerate(blocks):
        name = f"y0[{i}]" if is_tuple else "y0"
        if not isinstance(block, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(block).__name__}")
        if block.dtype not in STATE_DTYPES:
            raise InputError(f"{name} must be a real floating tensor (float16/bfloat16/float32/float64), got "
                             f"{block.dtype}")
        if block.dtype != blocks[0].dtype or block.device != blocks[0].device:
            raise InputError(f"every block of y0 must share y0[0]'s dtype and device ({blocks[0].dtype}, "
                             f"{blocks[0].device}); {name} is {block.dtype} on {block.device}")
    flat = torch.cat([b.reshape(-1) for b in blocks]) if is_tuple else y0.reshape(-1)
    if flat.numel() == 0:
        raise InputError("y0 must have at least one element")
    with torch.no_grad():
        if not bool(torch.isfinite(flat).all()):
            raise InputError("y0 must be finite; it has NaN/inf entries")
    return flat, [b.shape for b in blocks], is_tuple


def _time_grid(t) -> tuple[np.ndarray, float]:
    if isinstance(t, torch.Tensor):
        if t.is_complex():
            raise InputError(f"t must be a real tensor, got dtype {t.dtype}")
        t = t.detach().to("cpu", torch.float64).numpy()
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


def _tolerance_number(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex():
            raise InputError(f"{name} must be a positive number, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    return positive_number(name, value)


def _atol(atol, shapes: list[torch.Size], is_tuple: bool, n: int, dtype, device) -> torch.Tensor:
    """atol as a flat tensor: a number, a tensor broadcasting to y0 (or, for a tuple, one entry per block)."""
    if isinstance(atol, numbers.Real) and not isinstance(atol, bool):
        return torch.full((n,), positive_number("atol", atol), dtype=dtype, device=device)
    if is_tuple and isinstance(atol, (tuple, list)):
        if len(atol) != len(shapes):
            raise InputError(f"atol given per block must have one entry per block of y0 ({len(shapes)}), "
                             f"got {len(atol)}")
        parts = [_atol(a, [s], False, s.numel(), dtype, device) for a, s in zip(atol, shapes)]
        return torch.cat(parts)
    if isinstance(atol, torch.Tensor):
        if atol.requires_grad:
            raise InputError("atol must not require grad")
        target = torch.Size([n]) if is_tuple else shapes[0]
        try:
            flat = torch.broadcast_to(atol.detach().to(dtype=dtype, device=device), target).reshape(-1)
        except RuntimeError:
            raise InputError(f"atol of shape {tuple(atol.shape)} does not broadcast to the state's shape "
                             f"{tuple(target)}") from None
        if not bool(torch.isfinite(flat).all()) or bool((flat <= 0).any()):
            raise InputError("atol must be positive and finite in every entry")
        return flat.contiguous()
    raise InputError(f"atol must be a positive number, a tensor or (for a tuple y0) a tuple, got {atol!r}")


def _options(options, method: str) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InputError(f"options must be a dict, got {type(options).__name__}")
    allowed = ADAPTIVE_OPTIONS if method in ADAPTIVE_METHODS else FIXED_OPTIONS
    for key in options:
        if key not in allowed:
            raise InputError(f"options[{key!r}] is not supported for method {method!r}; supported: {list(allowed)}")
    return dict(options)


def _max_steps(value) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InputError(f"options['max_num_steps'] must be a positive integer, got {value!r}")
    return int(value)


def odeint(func: Callable, y0, t, *, rtol: float = 1e-7, atol=1e-9, method: str | None = None,
           options: dict | None = None, event_fn=None, return_stats: bool = False):
    """Solve dy/dt = func(t, y) from ``y0`` at ``t[0]``; return y at every ``t[i]`` (torchdiffeq's signature).

    ``func(t, y)``: any callable (an ``nn.Module`` included) taking a 0-d time tensor (the state's dtype) and a
    state shaped like ``y0``. ``y0``: a float tensor of any shape, or a tuple of tensors (sharing dtype and
    device; the result is then a tuple). ``t``: strictly increasing or decreasing times (a tensor or sequence,
    read as float64). ``rtol``: a positive number. ``atol``: a positive number, a tensor broadcasting to ``y0``,
    or (tuple state) one such entry per block. ``method``: ``"dopri5"`` (default; torchdiffeq's adaptive
    Dormand–Prince with its step control, outputs by the quartic dense output, steps never cut to land on
    ``t``) or the fixed-grid ``"euler"``, ``"midpoint"``, ``"rk4"`` (Kutta's 3/8 rule, as torchdiffeq).
    ``options``: for dopri5 ``first_step``, ``max_num_steps`` (attempted steps in the whole solve, default
    100 000), ``norm`` (``"rms"``, ``"max"`` or a callable on the scaled error in y0's layout; default RMS, or the
    max of the blocks' RMS for a tuple state); for the fixed-grid methods ``step_size``.
    ``return_stats=True`` returns ``(ys, stats)`` with ``stats`` a :class:`gqref.Stats` (``nfe``: every
    evaluation of ``func``; ``n_accepted``, ``n_rejected``: steps). ``event_fn`` is not supported.

    Backprop through the result gives the exact derivative of the computed solution (step sizes held fixed)
    with respect to ``y0``, everything ``func`` closes over and, for dopri5, ``t`` (stage times move with t[0],
    each output's position in its step with its own time: gqref's ``discrete`` gradient). For the fixed-grid
    methods dL/dt comes from the flow's time identities instead (see :func:`_time_shifted`; K + 1 more
    evaluations, counted in ``nfe``).
    Raises :class:`gqref.errors.InputError` for bad arguments and :class:`gqref.errors.SolverError` subclasses
    (non-finite field, step size underflow, too many steps) with the time where the solve stopped.
    """
    if event_fn is not None:
        raise InputError("event_fn is not supported by gqtorch.odeint")
    if not callable(func):
        raise InputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    method = "dopri5" if method is None else method
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}")
    if not isinstance(return_stats, bool):
        raise InputError(f"return_stats must be a bool, got {return_stats!r}")
    flat, shapes, is_tuple = _state(y0)
    dtype, device = flat.dtype, flat.device
    s_out, direction = _time_grid(t)
    rtol = _tolerance_number("rtol", rtol)
    atol_flat = _atol(atol, shapes, is_tuple, flat.numel(), dtype, device)
    options = _options(options, method)
    field = FlatField(func, shapes, is_tuple)
    s_list = s_out.tolist()

    if method in ADAPTIVE_METHODS:
        first_step = options.get("first_step")
        if first_step is not None:
            first_step = _tolerance_number("options['first_step']", first_step)
        max_steps = _max_steps(options.get("max_num_steps", DEFAULT_MAX_STEPS))
        block_sizes = [s.numel() for s in shapes] if is_tuple else None
        norm = as_norm(options.get("norm"), block_sizes, field.split, dtype, device)
        control = CONTROLLERS["torchdiffeq"]
        tab = torch_tableau(control.tableau, dtype, device)

        def integrate(y_start: torch.Tensor, time_shifts: torch.Tensor | None = None):
            status, s_stop, ys, nfe, n_acc, n_rej = integrate_adaptive(
                field, y_start, s_list, direction, rtol, atol_flat, norm, control, first_step, max_steps, tab,
                time_shifts)
            raise_for_status(int(status), float(direction * s_stop), max_steps=max_steps)
            return ys, (nfe, n_acc, n_rej)
    else:
        step_size = options.get("step_size")
        if step_size is not None:
            step_size = _tolerance_number("options['step_size']", step_size)
        grid = step_size_grid(s_out, step_size).tolist()
        tab = torch_tableau(FIXED_GRID_TABLEAUX[method], dtype, device)

        def integrate(y_start: torch.Tensor):
            status, s_stop, ys, nfe, n_acc = integrate_fixed(field, y_start, s_list, direction, grid, tab)
            raise_for_status(int(status), float(direction * s_stop), max_steps=0)
            return ys, (nfe, n_acc, 0)

    t_grad = isinstance(t, torch.Tensor) and t.requires_grad and torch.is_grad_enabled()
    if t_grad and method in ADAPTIVE_METHODS:  # the exact derivative with frozen step sizes
        ys, (nfe, n_acc, n_rej) = integrate(flat, (t - t.detach()).to(device))
    elif t_grad:  # fixed grids: the grid itself moves with t, so use the flow's time identities
        ys, (nfe, n_acc, n_rej), nfe_times = _time_shifted(field, flat, t, integrate)
        nfe += nfe_times
    else:
        ys, (nfe, n_acc, n_rej) = integrate(flat)
    n_t = len(s_list)
    if is_tuple:
        ys = tuple(block.reshape(n_t, *shape) for block, shape in zip(ys.split(field.sizes, dim=1), shapes))
    else:
        ys = ys.reshape(n_t, *shapes[0])
    if return_stats:
        return ys, Stats(nfe=int(nfe), n_accepted=int(n_acc), n_rejected=int(n_rej))
    return ys
