"""``gqref.gradient``: one call, four methods — gq, adjoint, seminorm, discrete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import numpy as np

from gqref.adjoint import adjoint_gradient
from gqref.arguments import count, finite_array, flag, positive_float
from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL
from gqref.discrete import discrete_gradient
from gqref.errors import InputError
from gqref.field import VectorField, as_field, complete_vjps
from gqref.gq import gq_gradient
from gqref.rules import DEFAULT_QUADRATURE, Rule, quadrature_rule
from gqref.solve import Solution, solve

GRADIENT_METHODS = ("gq", "adjoint", "seminorm", "discrete")


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
    ``vjp_sources`` says how each VJP the method used was obtained: "given" (the field's own) or "complex step"
    (derived from f, see :func:`gqref.field.complete_vjps`); complex-step VJP calls count once each in NFE although
    each costs dim(y), dim(p) or 1 evaluations of f.
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
    rule: Rule | None = None
    quadrature_met: bool | None = None
    quadrature_checked: bool | None = None
    vjp_sources: dict[str, str] = dataclass_field(default_factory=dict)


@dataclass(frozen=True)
class Gradient:
    """Gradients of a loss L(y(t_0), …, y(t_K)) given ∂L/∂y(t_i) at every output time."""

    dL_dy0: np.ndarray
    dL_dparams: np.ndarray
    dL_dt: np.ndarray | None
    diagnostics: Diagnostics


def _cotangents(dL_dy, shape: tuple[int, ...]) -> np.ndarray:
    # real only: a complex cotangent's imaginary part would be silently dropped
    return finite_array("dL_dy", dL_dy, shape=shape, shape_of="Solution.ys")


def gradient(
    field: VectorField | Callable,
    y0,
    t,
    params,
    dL_dy,
    *,
    method: str = "gq",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    gtol: float | None = None,
    max_nodes: int | None = None,
    quadrature: str | Rule = DEFAULT_QUADRATURE,
    gatol: float | None = None,
    strict: bool | None = None,
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
      the rule ``quadrature``: a rule object of :mod:`gqref.rules`, or its name with the keyword options
      (:func:`gqref.rules.quadrature_rule`; the reasons in :mod:`gqref.gq` and :mod:`gqref.panels`):

      - ``"auto"`` (default): the paper's nodes per interval plus their Kronrod extension, refined where the
        estimated error E exceeds ``gatol`` + ``gtol``·‖integral‖_∞ (``gtol`` default: max(adjoint rtol,
        100·ε), i.e. the backward solve's own error level; ``gatol`` default 0). ``max_nodes`` (default 10 000)
        bounds the refinement nodes per interval: past it a :class:`gqref.QuadratureAccuracyWarning` names the
        interval and the error reached, or with ``strict=True`` a :class:`gqref.QuadratureLimitError` is raised.
      - ``"interval"`` (the paper's rule, bit for bit): ``gtol`` is the node-rule constant C (default 0.1, *not* a
        tolerance), ``max_nodes`` the cap on nodes per interval (default 64). No error estimate.
      - ``"step"``: 3 Gauß–Legendre nodes on every accepted backward step; no options, no error estimate.
      - ``"adaptive"``: G3/K7 panels on every backward step, bisected until E ≤ ``gatol`` + ``gtol``·‖I‖_∞
        (``gtol`` default: the adjoint rtol); ``max_nodes`` a safety limit (10 000) that raises
        :class:`gqref.QuadratureLimitError`.

      E is reported in ``diagnostics.quadrature_error`` (``quadrature_error_dt0`` for dL_dt[0]); whether it met
      its tolerance in ``diagnostics.quadrature_met``; ``diagnostics.quadrature_checked`` is False on the "auto"
      calls that reused a recent check (``AutoRule.recheck_every``; those report no new estimate). Accuracy floor
      (every rule): the nodes are read from the backward solve's 4th-order dense output, so the gradient cannot be
      more accurate than the adjoint tolerances make the backward solve; E measures the quadrature on top of that.
    - ``"adjoint"``: torchdiffeq's backsolve adjoint, full norm over [adj_t, z, a, each of ``param_blocks``].
    - ``"seminorm"``: the same with the parameter blocks left out of the norm.
    - ``"discrete"``: the exact derivative of the computed solution with the accepted step sizes held fixed.

    dL_dt[i] for i ≥ 1 is f(t_i, y_i)·dL_dy[i]; dL_dt[0] includes the integral of a·∂f/∂t.

    ``field`` may be a bare ``f(t, y, p)`` or a VectorField lacking some VJPs: the missing ones (vjp_t only when
    ``t_grad``) are derived by complex step, exact to roundoff, at dim(y) (vjp_y), dim(p) (vjp_p) and 1 (vjp_t)
    evaluations of f per VJP call. This assumes f accepts complex t, y, p and is real-analytic; a field that
    raises on complex input, returns real output for it, or whose complex-step derivative disagrees with central
    differences at (t_0, y0, params) gets an :class:`InputError` asking for the VJPs (never a silent
    finite-difference fallback). Hand-written VJPs always win; ``diagnostics.vjp_sources`` says which were used.
    """
    field = as_field(field)
    if method not in GRADIENT_METHODS:
        raise InputError(f"method must be one of {list(GRADIENT_METHODS)}, got {method!r}")
    params = np.empty(0) if params is None else finite_array("params", params)
    t_grad = flag("t_grad", t_grad)
    if params.ndim != 1:
        raise InputError(f"params must be a 1-D array, got shape {params.shape}")
    rule = quadrature_rule(quadrature, gtol, gatol, max_nodes, strict)
    if method != "gq" and quadrature != DEFAULT_QUADRATURE:
        raise InputError(f"quadrature={quadrature!r} applies to method='gq', not {method!r}")
    forward = solve(field, y0, t, params, rtol=rtol, atol=atol, max_steps=max_steps)
    # after the forward solve, which has validated y0 and t
    field, vjp_sources = complete_vjps(field, float(forward.ts[0]), forward.ys[0], params,
                                       roles=("vjp_y", "vjp_p") + (("vjp_t",) if t_grad else ()))
    dL_dy = _cotangents(dL_dy, forward.ys.shape)
    back_rtol = positive_float("rtol" if adjoint_rtol is None else "adjoint_rtol", rtol if adjoint_rtol is None
                               else adjoint_rtol)
    if adjoint_atol is None and np.ndim(atol) != 0 and method != "discrete":
        # the backward state is not the forward one: a per-component atol has no meaning there (gqtorch says so too)
        raise InputError("adjoint_atol must be given (a positive number) when atol is not a number")
    back_atol = atol if adjoint_atol is None else positive_float("adjoint_atol", adjoint_atol)
    if method == "gq":
        dy0, dp, dt, counters = gq_gradient(field, forward, params, dL_dy, rule=rule, rtol=back_rtol,
                                            atol=back_atol, t_grad=t_grad)
    elif method in ("adjoint", "seminorm"):
        blocks = (params.size,) if param_blocks is None else tuple(
            count(f"param_blocks[{j}]", b, minimum=0) for j, b in enumerate(param_blocks))
        if sum(blocks) != params.size:
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
                              quadrature=rule.name if method == "gq" else None, rule=rule if method == "gq" else None,
                              quadrature_met=counters.get("quadrature_met"),
                              quadrature_checked=counters.get("quadrature_checked"),
                              quadrature_error=counters.get("quadrature_error"),
                              quadrature_error_dt0=counters.get("quadrature_error_dt0"),
                              node_times=counters.get("node_times", ()),
                              nfe_dense_replay=counters.get("nfe_dense_replay", 0), vjp_sources=vjp_sources)
    return Gradient(dL_dy0=dy0, dL_dparams=dp, dL_dt=dt, diagnostics=diagnostics)
