"""``gqref.gradient``: one call, four methods — gq, adjoint, seminorm, discrete."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gqref.adjoint import adjoint_gradient
from gqref.discrete import discrete_gradient
from gqref.errors import InputError
from gqref.field import VectorField, as_field
from gqref.gq import gq_gradient
from gqref.quadrature import DEFAULT_MAX_NODES
from gqref.solve import Solution, solve

GRADIENT_METHODS = ("gq", "adjoint", "seminorm", "discrete")
DEFAULT_GTOL = 0.1  # the paper's C


@dataclass(frozen=True)
class Diagnostics:
    """Cost of one gradient: evaluations and accepted steps forward and backward; GQ's nodes per interval
    (first interval first). NFE counts every evaluation of f or of a VJP point (f and its VJP at the same point
    count once, as in the paper)."""

    method: str
    nfe_forward: int
    nfe_backward: int
    steps_forward: int
    steps_backward: int
    nodes: tuple[int, ...]
    forward: Solution


@dataclass(frozen=True)
class Gradient:
    """Gradients of a loss L(y(t_0), …, y(t_K)) given ∂L/∂y(t_i) at every output time."""

    dL_dy0: np.ndarray
    dL_dparams: np.ndarray
    dL_dt: np.ndarray | None
    diagnostics: Diagnostics


def _cotangents(dL_dy, shape: tuple[int, ...]) -> np.ndarray:
    dL_dy = np.asarray(dL_dy, dtype=np.float64)
    if dL_dy.shape != shape:
        raise InputError(f"dL_dy must have the shape of Solution.ys, {shape}; got {dL_dy.shape}")
    if not np.all(np.isfinite(dL_dy)):
        raise InputError("dL_dy must be finite")
    return dL_dy


def _tolerance(name: str, value, default: float) -> float:
    if value is None:
        return default
    if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def gradient(
    field: VectorField | Callable,
    y0,
    t,
    params,
    dL_dy,
    *,
    method: str = "gq",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    gtol: float = DEFAULT_GTOL,
    max_nodes: int = DEFAULT_MAX_NODES,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    t_grad: bool = True,
    param_blocks: tuple[int, ...] | None = None,
    max_steps: int = 100_000,
) -> Gradient:
    """dL/dy0, dL/dparams and dL/dt for the loss whose gradient w.r.t. the solution is ``dL_dy``.

    The forward solve is dopri5 with the torchdiffeq controller at ``rtol``/``atol``; backward solves use
    ``adjoint_rtol``/``adjoint_atol`` (default: the forward ones). Methods:

    - ``"gq"``: the paper's GQ method; ``gtol`` is its node-rule constant C, ``max_nodes`` the cap per interval.
    - ``"adjoint"``: torchdiffeq's backsolve adjoint, full norm over [adj_t, z, a, each of ``param_blocks``].
    - ``"seminorm"``: the same with the parameter blocks left out of the norm.
    - ``"discrete"``: the exact derivative of the computed solution with the accepted step sizes held fixed.

    dL_dt[i] for i ≥ 1 is f(t_i, y_i)·dL_dy[i]; dL_dt[0] includes the integral of a·∂f/∂t.
    """
    field = as_field(field)
    if method not in GRADIENT_METHODS:
        raise InputError(f"method must be one of {list(GRADIENT_METHODS)}, got {method!r}")
    if params is None:
        params = np.empty(0)
    params = np.asarray(params, dtype=np.float64)
    if params.ndim != 1:
        raise InputError(f"params must be a 1-D array, got shape {params.shape}")
    forward = solve(field, y0, t, params, rtol=rtol, atol=atol, max_steps=max_steps)
    dL_dy = _cotangents(dL_dy, forward.ys.shape)
    back_rtol = _tolerance("adjoint_rtol", adjoint_rtol, rtol)
    back_atol = _tolerance("adjoint_atol", adjoint_atol, atol)
    if method == "gq":
        dy0, dp, dt, counters = gq_gradient(field, forward, params, dL_dy, rtol=back_rtol, atol=back_atol,
                                            gtol=gtol, max_nodes=max_nodes, t_grad=t_grad)
    elif method in ("adjoint", "seminorm"):
        blocks = (params.size,) if param_blocks is None else tuple(int(b) for b in param_blocks)
        if any(b < 0 for b in blocks) or sum(blocks) != params.size:
            raise InputError(f"param_blocks {blocks} must be non-negative sizes summing to params.size "
                             f"{params.size}")
        dy0, dp, dt, counters = adjoint_gradient(field, forward, params, dL_dy, rtol=back_rtol, atol=back_atol,
                                                 seminorm=method == "seminorm", t_grad=t_grad,
                                                 param_blocks=tuple(b for b in blocks if b > 0))
    else:
        dy0, dp, dt, counters = discrete_gradient(field, forward, params, dL_dy, t_grad=t_grad)
    diagnostics = Diagnostics(method=method, nfe_forward=forward.stats.nfe, nfe_backward=counters["nfe_backward"],
                              steps_forward=forward.stats.n_accepted, steps_backward=counters["steps_backward"],
                              nodes=counters.get("nodes", ()), forward=forward)
    return Gradient(dL_dy0=dy0, dL_dparams=dp, dL_dt=dt, diagnostics=diagnostics)
