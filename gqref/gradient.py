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
from gqref.gq import QUADRATURES, gq_gradient
from gqref.quadrature import DEFAULT_MAX_NODES
from gqref.solve import Solution, solve

GRADIENT_METHODS = ("gq", "adjoint", "seminorm", "discrete")
DEFAULT_GTOL = 0.1  # the paper's C (quadrature="interval")
DEFAULT_ADAPTIVE_MAX_NODES = 10_000  # quadrature="adaptive": safety limit on refinement nodes per interval


@dataclass(frozen=True)
class Diagnostics:
    """Cost of one gradient: evaluations and accepted steps forward and backward; GQ's nodes per interval
    (first interval first). NFE counts every evaluation of f or of a VJP point (f and its VJP at the same point
    count once, as in the paper).

    GQ only (``None``/empty otherwise): ``quadrature`` is the rule used; ``node_times[i]`` the nodes evaluated on
    interval i (for "adaptive" every node of every round, so ``len(node_times[i]) == nodes[i]``);
    ``quadrature_error`` the estimated max-norm error of dL_dparams caused by the quadrature and
    ``quadrature_error_dt0`` that of dL_dt[0] — estimated only by "adaptive" (None for "interval" and "step"). It
    measures the quadrature against the integrand read from the backward dense output, not the solver's own error:
    if it is far below the gradient's error against the truth, the solver (the adjoint tolerances) limits the
    accuracy, not the quadrature. ``nfe_dense_replay``: evaluations gqref spent replaying backward steps to recover
    their dense output ("step", "adaptive"); not in ``nfe_backward``, which counts what the method itself needs.
    """

    method: str
    nfe_forward: int
    nfe_backward: int
    steps_forward: int
    steps_backward: int
    nodes: tuple[int, ...]
    forward: Solution
    quadrature: str | None = None
    quadrature_error: float | None = None
    quadrature_error_dt0: float | None = None
    node_times: tuple[np.ndarray, ...] = ()
    nfe_dense_replay: int = 0


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


def _quadrature_options(quadrature: str, gtol, gatol, max_nodes, back_rtol: float) -> tuple[float, float, int]:
    """(gtol, gatol, max_nodes) for GQ's rule, with each rule's defaults; options a rule has no use for are errors
    (their meaning differs between the rules, so a value given to the wrong one is a mistake, not a no-op)."""
    if quadrature == "step":
        for name, value in (("gtol", gtol), ("gatol", gatol), ("max_nodes", max_nodes)):
            if value is not None:
                raise InputError(f"{name} does not apply to quadrature='step' (3 Gauss-Legendre nodes per step)")
        return DEFAULT_GTOL, 0.0, DEFAULT_MAX_NODES  # unused by the step rule
    if quadrature == "interval" and gatol is not None:
        raise InputError("gatol applies to quadrature='adaptive'; for 'interval' gtol is the node-rule constant C")
    default_gtol = DEFAULT_GTOL if quadrature == "interval" else back_rtol
    gtol = _tolerance("gtol", gtol, default_gtol)
    gatol = 0.0 if gatol is None else _non_negative("gatol", gatol)
    default_max = DEFAULT_MAX_NODES if quadrature == "interval" else DEFAULT_ADAPTIVE_MAX_NODES
    if max_nodes is None:
        max_nodes = default_max
    elif not isinstance(max_nodes, numbers.Integral) or isinstance(max_nodes, bool) or max_nodes < 1:
        raise InputError(f"max_nodes must be a positive integer, got {max_nodes!r}")
    return gtol, gatol, int(max_nodes)


def _non_negative(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not np.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a non-negative finite number, got {value!r}")
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
    gtol: float | None = None,
    max_nodes: int | None = None,
    quadrature: str = "interval",
    gatol: float | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    t_grad: bool = True,
    param_blocks: tuple[int, ...] | None = None,
    max_steps: int = 100_000,
) -> Gradient:
    """dL/dy0, dL/dparams and dL/dt for the loss whose gradient w.r.t. the solution is ``dL_dy``.

    The forward solve is dopri5 with the torchdiffeq controller at ``rtol``/``atol``; backward solves use
    ``adjoint_rtol``/``adjoint_atol`` (default: the forward ones). Methods:

    - ``"gq"``: the paper's GQ method. The parameter gradient is a quadrature over the backward dense output, by
      the rule ``quadrature`` (see :mod:`gqref.gq` for the details and the reasons):

      - ``"interval"`` (default, the paper's): ``gtol`` is the node-rule constant C (default 0.1, *not* a
        tolerance), ``max_nodes`` the cap on Gauß–Legendre nodes per interval (default 64); no ``gatol``.
        Bit for bit the original method. No error estimate.
      - ``"step"``: 3 Gauß–Legendre nodes on every accepted backward step; takes no ``gtol``, ``gatol`` or
        ``max_nodes``. No error estimate.
      - ``"adaptive"``: Gauß–Kronrod panels refined until the estimated quadrature error E of each integral
        meets, in the max norm over its components, E ≤ ``gatol`` + ``gtol``·‖integral‖_∞ (or the roundoff floor
        100·ε·∫|integrand|): for dL_dparams and, separately, for the integral in dL_dt[0]. ``gtol`` is the
        relative tolerance (default: the adjoint rtol), ``gatol`` the absolute one (default 0), ``max_nodes`` a
        safety limit on the refinement nodes per interval, beyond the first 7 per backward step (default 10 000;
        exceeding it raises :class:`gqref.QuadratureLimitError`). E is reported in ``diagnostics.quadrature_error``.

      Accuracy floor (every rule): the nodes are read from the backward solve's dense output, a 4th-order
      interpolant, so the gradient cannot be more accurate than the adjoint tolerances make the backward solve;
      the quadrature error E is on top of that. A gtol far below the adjoint rtol only buys nodes.
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
    if quadrature not in QUADRATURES:
        raise InputError(f"quadrature must be one of {list(QUADRATURES)}, got {quadrature!r}")
    if method != "gq" and quadrature != "interval":
        raise InputError(f"quadrature={quadrature!r} applies to method='gq', not {method!r}")
    forward = solve(field, y0, t, params, rtol=rtol, atol=atol, max_steps=max_steps)
    dL_dy = _cotangents(dL_dy, forward.ys.shape)
    back_rtol = _tolerance("adjoint_rtol", adjoint_rtol, rtol)
    back_atol = _tolerance("adjoint_atol", adjoint_atol, atol)
    if method == "gq":
        gtol, gatol, max_nodes = _quadrature_options(quadrature, gtol, gatol, max_nodes, back_rtol)
        dy0, dp, dt, counters = gq_gradient(field, forward, params, dL_dy, rtol=back_rtol, atol=back_atol,
                                            gtol=gtol, max_nodes=max_nodes, t_grad=t_grad, quadrature=quadrature,
                                            gatol=gatol)
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
                              nodes=counters.get("nodes", ()), forward=forward,
                              quadrature=quadrature if method == "gq" else None,
                              quadrature_error=counters.get("quadrature_error"),
                              quadrature_error_dt0=counters.get("quadrature_error_dt0"),
                              node_times=counters.get("node_times", ()),
                              nfe_dense_replay=counters.get("nfe_dense_replay", 0))
    return Gradient(dL_dy0=dy0, dL_dparams=dp, dL_dt=dt, diagnostics=diagnostics)
