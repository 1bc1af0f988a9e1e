"""``method="scipy_solver"``: torchdiffeq 0.2.5's wrapper of :func:`scipy.integrate.solve_ivp`, on flat states.

Entry point (for :func:`gqtorch.odeint`)::

    scipy_solve(field, y0_flat, t_user, rtol, atol, options, callbacks=NO_CALLBACKS) -> ScipyResult

- ``field(t, y)``: the right-hand side on flat states (a :class:`gqtorch.solve.FlatField`): ``t`` a 0-d tensor in
  the caller's time and the state's dtype, ``y`` a flat tensor; returns a flat tensor.
- ``y0_flat``: the flat initial state (real or complex floating tensor, any device).
- ``t_user``: the caller's output times as float64 numpy, strictly increasing or decreasing (validated by the caller,
  e.g. with :func:`gqref.solve.output_times`).
- ``rtol``: a positive float; ``atol``: a positive float or a flat array/tensor (one entry per state element).
- ``options``: the caller's ``options`` dict (or None): ``solver`` (``"RK45"``, ``"RK23"``, ``"DOP853"``,
  ``"Radau"``, ``"BDF"``, ``"LSODA"``; default ``"LSODA"`` as in torchdiffeq), ``min_step`` (LSODA only, default
  0), ``max_step`` (default inf). Anything else raises :class:`gqref.errors.InputError` (torchdiffeq warns about
  unknown options and silently drops ``norm``, ``grid_points`` and ``eps``).
- ``callbacks``: scipy calls none of the step callbacks; build them with
  ``Callbacks.of(func, method="scipy_solver", supported=SUPPORTED_CALLBACKS)`` (which warns about any the caller
  defines) — a non-empty :class:`gqtorch.steps.Callbacks` given here warns the same way.

Returns a :class:`ScipyResult` ``(status, s_stop, ys, nfe, n_accepted)``: a gqref status code
(:data:`gqref.errors.SUCCESS`, ``NONFINITE_FIELD`` or ``STEP_SIZE_UNDERFLOW``; pass it to
:func:`gqref.errors.raise_for_status` with ``direction * s_stop``), the solver time s = direction·t where it stopped,
``ys`` of shape ``(len(t_user), n)`` in y0's dtype and device (None unless SUCCESS), the evaluations of ``field`` and
the accepted steps (and scipy's ``message`` when it failed: every scipy failure maps to ``STEP_SIZE_UNDERFLOW``).
The field gets a real time tensor (the real dtype of a complex state; torchdiffeq's wrapper alone passes a complex
one there).

What it does, as torchdiffeq does: integrate in the increasing variable s = direction·t with the field
direction·f(direction·s, y) (torchdiffeq negates decreasing times the same way, so scipy takes the same steps), from
``s_out[0]`` to ``s_out[-1]`` with ``t_eval = s_out``; the field is called under ``torch.no_grad()`` and its values
go to scipy as float64 (complex128 for a complex state); the outputs come back as a new tensor. So **the result is
not differentiable**: it carries no graph to ``y0``, ``t`` or the field's parameters (torchdiffeq detaches the same
way: its output is a fresh leaf tensor built from scipy's array). A single output time returns ``y0`` detached,
without calling the field.

Differences from torchdiffeq, all deliberate: bad options raise InputError naming the option; a complex state with
``Radau`` or ``LSODA`` (which scipy refuses) raises InputError up front; a failed scipy solve returns a status
(the caller raises gqref's :class:`~gqref.errors.SolverError`) instead of returning fewer rows; a NaN/inf field
value stops the solve at once with ``NONFINITE_FIELD`` (scipy would shrink the step until it fails); ``min_step``
is passed to scipy only for LSODA (the only solver that reads it; scipy warns for the others); the time handed to
the field is built in float64 (torchdiffeq builds it with torch's default dtype when scipy passes a Python float,
as LSODA does, so a time-dependent field sees t rounded to float32 there).

The gqref twin of this method is scipy itself: ``scipy.integrate.solve_ivp`` on the same numpy field.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.integrate._ivp.ivp import METHODS as _SCIPY_METHODS

from gqref.arguments import real_number
from gqref.errors import NONFINITE_FIELD, STEP_SIZE_UNDERFLOW, SUCCESS, InputError
from gqtorch.arguments import host_scalar
from gqtorch.steps import NO_CALLBACKS, Callbacks

SOLVERS = ("RK45", "RK23", "DOP853", "Radau", "BDF", "LSODA")
DEFAULT_SOLVER = "LSODA"  # torchdiffeq's default
OPTIONS = ("solver", "min_step", "max_step")
COMPLEX_SOLVERS = ("RK45", "RK23", "DOP853", "BDF")  # scipy refuses complex states for Radau and LSODA
SUPPORTED_CALLBACKS: tuple[str, ...] = ()


class ScipyResult(NamedTuple):
    status: int
    s_stop: float
    ys: torch.Tensor | None
    nfe: int
    n_accepted: int
    message: str = ""  # scipy's message when it failed


class _NonFinite(Exception):
    """Raised inside the numpy field to stop scipy at the first NaN/inf value."""

    def __init__(self, s: float):
        super().__init__(s)
        self.s = s


def _option_number(name: str, value, *, allow_zero: bool, allow_inf: bool) -> float:
    want = "a non-negative" if allow_zero else "a positive"
    want += " number (inf allowed)" if allow_inf else " finite number"
    return real_number(f"options[{name!r}]", host_scalar(name, value), low=0.0, low_open=not allow_zero,
                       allow_inf=allow_inf, expected=want)


def scipy_options(options: dict | None, complex_state: bool = False) -> dict:
    """The validated options as keyword arguments of ``solve_ivp`` (``method`` and ``max_step``, plus ``min_step``
    for LSODA)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InputError(f"options must be a dict, got {type(options).__name__}")
    for key in options:
        if key not in OPTIONS:
            raise InputError(f"options[{key!r}] is not supported for method 'scipy_solver'; supported: "
                             f"{list(OPTIONS)}")
    solver = options.get("solver", DEFAULT_SOLVER)
    if solver not in SOLVERS:
        raise InputError(f"options['solver'] must be one of {list(SOLVERS)}, got {solver!r}")
    if complex_state and solver not in COMPLEX_SOLVERS:
        raise InputError(f"options['solver'] = {solver!r} does not integrate complex states (scipy refuses them); "
                         f"use one of {list(COMPLEX_SOLVERS)}")
    min_step = _option_number("min_step", options.get("min_step", 0.0), allow_zero=True, allow_inf=False)
    max_step = _option_number("max_step", options.get("max_step", math.inf), allow_zero=False, allow_inf=True)
    if min_step > 0 and solver != "LSODA":
        raise InputError(f"options['min_step'] = {min_step!r} applies only to solver 'LSODA' (scipy ignores it for "
                         f"{solver!r})")
    if min_step > max_step:
        raise InputError(f"options['min_step'] = {min_step!r} must not exceed options['max_step'] = {max_step!r}")
    kwargs = {"method": solver, "max_step": max_step}
    if solver == "LSODA":
        kwargs["min_step"] = min_step
    return kwargs


def _counting(solver_class: type) -> type:
    """A subclass of scipy's solver class that counts accepted steps (each successful ``_step_impl`` is one);
    solve_ivp runs it exactly as it runs the class itself."""

    class Counting(solver_class):
        n_accepted = 0
        s_reached = None  # where the last accepted step ended

        def _step_impl(self):
            success, message = super()._step_impl()
            if success:
                type(self).n_accepted += 1
                type(self).s_reached = float(self.t)
            return success, message

    Counting.__name__ = f"Counting{solver_class.__name__}"
    return Counting


def _atol_for_scipy(atol, n: int):
    if isinstance(atol, torch.Tensor):
        atol = atol.detach().to("cpu", torch.float64).numpy()
    if np.ndim(atol) == 0:
        return float(atol)
    atol = np.asarray(atol, dtype=np.float64).reshape(-1)
    if atol.size != n:
        raise InputError(f"atol must be a number or have one entry per state element ({n}), got {atol.size}")
    return atol


def scipy_solve(field: Callable, y0_flat: torch.Tensor, t_user: np.ndarray, rtol: float, atol, options: dict | None,
                callbacks: Callbacks = NO_CALLBACKS) -> ScipyResult:
    """Solve with ``scipy.integrate.solve_ivp``; see the module docstring for the arguments and the result."""
    if callbacks.any:
        warnings.warn(f"method 'scipy_solver' does not call the step callbacks; got {callbacks}", stacklevel=2)
    complex_state = y0_flat.is_complex()
    kwargs = scipy_options(options, complex_state)
    t_user = np.asarray(t_user, dtype=np.float64).reshape(-1)
    direction = -1.0 if t_user.size > 1 and t_user[1] < t_user[0] else 1.0
    s_out = direction * t_user
    dtype, device = y0_flat.dtype, y0_flat.device
    if s_out.size == 1:
        return ScipyResult(SUCCESS, float(s_out[0]), y0_flat.detach().clone()[None], 0, 0)

    y0_np = y0_flat.detach().to("cpu").numpy()
    y0_np = y0_np.astype(np.complex128 if complex_state else np.float64)
    nfe = 0

    def numpy_field(s: float, y: np.ndarray) -> np.ndarray:
        nonlocal nfe
        nfe += 1
        t = torch.tensor(direction * float(s), dtype=torch.float64).to(device, dtype if not complex_state else
                                                                        y0_flat.real.dtype)
        with torch.no_grad():
            out = field(t, torch.from_numpy(np.asarray(y)).to(device, dtype))
            if direction < 0:
                out = -out
            out = out.detach().to("cpu").numpy()
        if not np.all(np.isfinite(out)):
            raise _NonFinite(float(s))
        return out

    solver_class = _counting(_SCIPY_METHODS[kwargs.pop("method")])
    try:
        with warnings.catch_warnings():
            # scipy's note that an option it was handed has no effect is about torchdiffeq's defaults, not ours
            warnings.filterwarnings("ignore", message="The following arguments have no effect")
            sol = solve_ivp(numpy_field, (float(s_out[0]), float(s_out[-1])), y0_np, method=solver_class,
                            t_eval=s_out, rtol=rtol, atol=_atol_for_scipy(atol, y0_np.size), **kwargs)
    except _NonFinite as stop:
        return ScipyResult(NONFINITE_FIELD, stop.s, None, nfe, solver_class.n_accepted)
    if sol.status != 0 or sol.y.shape[1] != s_out.size:
        s_stop = float(s_out[0]) if solver_class.s_reached is None else solver_class.s_reached
        return ScipyResult(STEP_SIZE_UNDERFLOW, s_stop, None, nfe, solver_class.n_accepted, str(sol.message))
    ys = torch.from_numpy(np.ascontiguousarray(sol.y.T)).to(device, dtype)
    return ScipyResult(SUCCESS, float(s_out[-1]), ys, nfe, solver_class.n_accepted)
