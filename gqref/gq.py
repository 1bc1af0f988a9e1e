"""The GQ gradient (Norcliffe & Deisenroth 2023): backward [z, a] only, parameter gradient by quadrature sums.

Per interval [t_{i−1}, t_i], from the last: solve [z, a] backwards from t_i to t_{i−1}; at t_{i−1} re-anchor z to
the forward value and add the incoming gradient to a. The backward step control uses max(rms(z), rms(a)); the
parameters never enter it. The parameter gradient Σ_i ∫_{t_{i−1}}^{t_i} aᵀ∂f/∂θ dt (and ∫ a·∂f/∂t for dL/dt_0) is a
quadrature whose nodes are read from the backward solver's dense output (steps are never cut to land on a node).
Four rules (``quadrature=``, :mod:`gqref.rules`):

- ``"auto"`` (the default): the paper's nodes per interval, checked by their Kronrod extension and refined where
  the check fails, until the estimated quadrature error is at the backward solve's own level (:mod:`gqref.panels`).
- ``"interval"`` (the paper's): n_i Gauß–Legendre nodes per interval, n_i = min(⌈C·NFE·Δt_i/T⌉,
  ``max_nodes``) with C = ``gtol`` — a node budget, not a tolerance. The nodes are output times of the backward
  solve (which do not change its steps). No error estimate (one would cost as many evaluations again).
- ``"step"``: :data:`STEP_NODES` = 3 Gauß–Legendre nodes on every accepted backward step (the last one clipped at
  t_{i−1}). Why 3: the dense output is a 4th-order continuous extension, so the integrand read from it is off by
  O(h⁵) and so is the gradient, whatever the rule. n Gauß nodes on a step of size h err by O(h^{2n+1}) per step,
  O(h^{2n}) over the ~1/h steps: n = 2 gives O(h⁴), which would dominate as h shrinks; n = 3 gives O(h⁶), an order
  below the dense output's own error, so the rule never limits the accuracy asymptotically (and it is exact to
  degree 5, beyond the quartic's 4). No error estimate, and no guarantee: the steps follow the state [z, a],
  not the integrand, which can vary faster (∂f/∂θ may depend on t in ways the state does not feel: for
  y' = θ₀·cos(θ₁t)·y at θ₀ = 0 the solver takes one big step and 3 nodes miss cos(θ₁t)). "adaptive" catches that.
- ``"adaptive"``: error-controlled. Every backward step (clipped as above) starts as a panel with the
  Gauß–Kronrod pair G3/K7 (:mod:`gqref.kronrod`; G3 is the step rule), and panels are bisected
  (:mod:`gqref.refinement`) until the estimated error E of the integral vector meets
  E_j ≤ max(gatol + gtol·‖I_b‖_∞, ρ_j) for every component j of each block b: b = the parameter gradient
  ∫aᵀ∂f/∂θ (P components) and, with ``t_grad``, the time integral ∫a·∂f/∂t of dL/dt_0; ρ_j is the roundoff floor
  100·ε·∫|g_j|. The Gauß sum is used and E = |K − G| of the totals (K7 on every panel) is reported: an
  estimate of its actual quadrature error (realistic, not a bound). Why panels start at the steps: the dense output
  is a different quartic on each step, so the integrand is smooth within a step but only C¹ across step ends, and
  carries per-step wiggles of the size of the interpolation error. A rule spanning several steps samples those like
  noise; its G and K then err alike and |K − G| misses the error (measured on the paper's toy, T = 29, rtol 1e-6:
  one G7/K15 panel over its 25 steps estimated 1e-9 for an actual 4e-8). Within a step the pair is reliable
  (measured: E within 10% of the actual error on the problem zoo) as long as the panel resolves the integrand; one
  that varies much faster than the state (the θ₀ = 0 example) can fool a first, coarse panel by a few times at loose
  tolerances, until refinement resolves it. The price: at least 7 nodes per step (the step rule's 3 and the 4
  Kronrod nodes). ``max_nodes`` is a safety limit on the refinement nodes (beyond those 7 per step) per interval
  (:class:`gqref.refinement.QuadratureLimitError`).

Accuracy floor: every rule integrates the integrand *as read from the dense output*, the Dormand–Prince quartic
(a 4th-order continuous extension) of the backward solve. Its error — the backward solve's error plus O(h⁵)
interpolation — is controlled only by the adjoint tolerances (``adjoint_rtol``/``adjoint_atol``), and no gtol can
take the gradient below it: E measures the quadrature error against that integrand, not the solver's error.
gtol far below the adjoint rtol buys only nodes; tighten the adjoint tolerances to go further.

"auto", "step" and "adaptive" recover the dense output by replaying the accepted backward steps
(:mod:`gqref.dense`); those
evaluations are counted apart (``nfe_dense_replay``), since a solver that keeps its interpolants needs none.
"""

from __future__ import annotations

import numpy as np

from gqref.augmented import backward_dynamics, require_vjps
from gqref.controller import ErrorNorm
from gqref.dense import DenseOutput, dense_output, step_panels
from gqref.field import VectorField, vjp_value
from gqref.panels import AUTO_CHECKS, NumpyPanelSums, first_round_counts, interval_panels, parameter_fingerprint, refine
from gqref.quadrature import gauss_legendre, node_count
from gqref.refinement import DEFAULT_KRONROD_N, integrate_panels
from gqref.rules import PAPER_MAX_NODES, STEP_NODES, AdaptiveRule, AutoRule, IntervalRule, Rule, StepRule
from gqref.solve import Solution, solve

__all__ = ["BackwardSweep", "gq_gradient", "warm_step"]



def gq_gradient(field: VectorField, forward: Solution, params: np.ndarray, dL_dy: np.ndarray, *, rule: Rule,
                rtol: float, atol: float, t_grad: bool, step_nodes: int = STEP_NODES,
                kronrod_n: int = DEFAULT_KRONROD_N) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(dL/dy0, dL/dparams, dL/dt or None, counters) by GQ with the quadrature ``rule`` (:mod:`gqref.rules`).

    ``rtol``/``atol`` are the backward solve's. ``step_nodes`` and ``kronrod_n`` (Gauß nodes per step / per
    Kronrod panel of the step and adaptive rules) are for tests and measurements.
    counters: nfe_backward, steps_backward, nodes (per interval, first first), node_times, quadrature_error and
    quadrature_error_dt0 (None unless the rule estimates them), quadrature_met, nfe_dense_replay.
    """
    if isinstance(rule, IntervalRule):
        return _interval_gradient(field, forward, params, dL_dy, rtol=rtol, atol=atol, gtol=rule.C,
                                  max_nodes=rule.max_nodes, t_grad=t_grad, warm_start=rule.warm_start)
    if not isinstance(rule, AutoRule):
        *gradients, counters = _dense_gradient(field, forward, params, dL_dy, rtol=rtol, atol=atol, t_grad=t_grad,
                                               rule=rule, step_nodes=step_nodes, kronrod_n=kronrod_n)
        counters.pop("refinement")
        return (*gradients, counters)
    t = forward.ts
    counts = first_round_counts(rule, forward.stats.nfe, t)
    reuse = rule.recheck_every > 1  # opt-in: the default checks every call, with no memory and no digest to take
    context = (tuple(t.tolist()), forward.ys.shape, parameter_fingerprint(params), rtol, atol, t_grad, rule) \
        if reuse else None
    if reuse and AUTO_CHECKS.trusted(field, context, counts):  # a recent check found the paper's nodes ample: reuse it
        *gradients, counters = _interval_gradient(field, forward, params, dL_dy, rtol=rtol, atol=atol, gtol=rule.C,
                                                  max_nodes=PAPER_MAX_NODES, t_grad=t_grad, counts=counts,
                                                  warm_start=rule.warm_start)
        return (*gradients, {**counters, "quadrature_checked": False})
    *gradients, counters = _dense_gradient(field, forward, params, dL_dy, rtol=rtol, atol=atol, t_grad=t_grad,
                                           rule=rule, step_nodes=step_nodes, kronrod_n=kronrod_n, counts=counts)
    done = counters.pop("refinement")
    if reuse and done is not None:
        AUTO_CHECKS.record(field, context, counts, done, rule.recheck_every)
    return (*gradients, {**counters, "quadrature_checked": True})


class BackwardSweep:
    """The backward solves of [z, a] every quadrature rule shares.

    Interval by interval from the last: :meth:`incoming` adds f(t_i, z_i)·dL/dy_i to dL/dt_i (and takes it from
    dL/dt_0), :meth:`solve` integrates [z, a] from t_i through the given output times (the steps never depend on
    them), :meth:`reanchor` resets z to the forward value at t_{i−1} and adds dL/dy_{i−1} to a. The rules add their
    node sums to ``dL_dt0`` and read the counters ``nfe`` and ``steps``.

    ``warm_start``: each backward solve's first step is the last accepted step before it (the forward solve's for
    the last interval, then the previous backward solve's) instead of the initial-step heuristic
    (:mod:`gqref.rules`).
    """

    def __init__(self, field: VectorField, forward: Solution, params: np.ndarray, dL_dy: np.ndarray, *,
                 rtol: float, atol: float, t_grad: bool, warm_start: bool = False):
        require_vjps(field, ("vjp_y", "vjp_p") + (("vjp_t",) if t_grad else ()))
        self.field, self.params, self.dL_dy = field, params, dL_dy
        self.rtol, self.atol, self.t_grad = rtol, atol, t_grad
        self.t, self.ys = forward.ts, forward.ys
        self.shape = self.ys.shape[1:]
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.dynamics = backward_dynamics(field, self.shape, full=False,
                                          at=(self.t[-1], self.ys[-1], params, dL_dy[-1]))
        self.norm = ErrorNorm("mixed", blocks=(self.size, self.size))
        self.state = np.concatenate([self.ys[-1].ravel(), dL_dy[-1].ravel()])
        self.dL_dt = np.zeros(len(self.t)) if t_grad else None
        self.dL_dt0 = 0.0
        self.nfe = self.steps = 0
        self.warm_start = warm_start
        self.first_step = forward.stats.last_step if warm_start else None

    def intervals(self) -> range:
        """i for the intervals [t_{i−1}, t_i], the last first."""
        return range(len(self.t) - 1, 0, -1)

    def incoming(self, i: int) -> None:
        if self.t_grad:
            f_i = np.asarray(self.field.f(self.t[i], self.ys[i], self.params)).ravel()
            incoming = float(np.vdot(f_i, self.dL_dy[i].ravel()))
            self.dL_dt[i] = incoming
            self.dL_dt0 -= incoming
            self.nfe += 1

    def solve(self, times: np.ndarray) -> Solution:
        """[z, a] at ``times`` (t_i first, t_{i−1} last), from the current state."""
        back = solve(self.dynamics, self.state, times, self.params, rtol=self.rtol, atol=self.atol, norm=self.norm,
                     first_step=warm_step(self.first_step, times))
        if self.warm_start:
            self.first_step = back.stats.last_step
        self.nfe += back.stats.nfe
        self.steps += back.stats.n_accepted
        return back

    def reanchor(self, i: int, back: Solution) -> None:
        self.state = np.concatenate([self.ys[i - 1].ravel(), back.ys[-1][self.size:] + self.dL_dy[i - 1].ravel()])

    def time_gradient(self, time_integral: float | None = None) -> np.ndarray | None:
        """dL/dt: dL/dt_0 is the sum of the incoming terms and the rule's time integral."""
        if self.t_grad:
            self.dL_dt[0] = self.dL_dt0 if time_integral is None else self.dL_dt0 + time_integral
        return self.dL_dt


def warm_step(step: float | None, times) -> float | None:
    """A warm start's first step for the backward solve through ``times``: at most the interval's length, since steps
    are never cut at the last output and a step carried over from a longer interval would evaluate the field far
    beyond t_{i−1} (where it may not even be defined)."""
    return None if step is None else min(step, abs(float(times[-1]) - float(times[0])))


def _interval_gradient(field: VectorField, forward: Solution, params: np.ndarray, dL_dy: np.ndarray, *,
                       rtol: float, atol: float, gtol: float, max_nodes: int, t_grad: bool,
                       counts: list[int] | None = None, warm_start: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """The paper's rule: its arithmetic is frozen (bit for bit the original implementation, when not
    ``warm_start``; tested). ``counts`` (first interval first) replaces the node rule: the auto rule's reuse of a
    checked node set."""
    sweep = BackwardSweep(field, forward, params, dL_dy, rtol=rtol, atol=atol, t_grad=t_grad,
                          warm_start=warm_start)
    t, shape, size = sweep.t, sweep.shape, sweep.size
    dL_dparams = np.zeros(params.size)
    nodes_used = []
    node_times = []
    for i in sweep.intervals():
        sweep.incoming(i)
        n = node_count(gtol, forward.stats.nfe, t[i - 1], t[i], t[0], t[-1], max_nodes) if counts is None \
            else counts[i - 1]
        nodes, weights = gauss_legendre(n, t[i], t[i - 1])
        orientation = np.sign(t[i] - t[i - 1])  # the integral runs from t_{i−1} to t_i
        back = sweep.solve(np.concatenate([[t[i]], nodes, [t[i - 1]]]))
        for tau, weight, node_state in zip(nodes, weights, back.ys[1:-1]):
            z_node = node_state[:size].reshape(shape)
            a_node = node_state[size:].reshape(shape)
            dL_dparams += orientation * weight * vjp_value("vjp_p", field.vjp_p(tau, z_node, params, a_node), tau,
                                                           params.shape)
            if t_grad:
                sweep.dL_dt0 += orientation * weight * float(vjp_value("vjp_t", field.vjp_t(tau, z_node, params,
                                                                                            a_node), tau, ()))
        sweep.nfe += n  # each node costs one more evaluation (with its VJP)
        nodes_used.append(n)
        node_times.append(nodes)
        sweep.reanchor(i, back)
    dL_dt = sweep.time_gradient()
    counters = {"nfe_backward": sweep.nfe, "steps_backward": sweep.steps, "nodes": tuple(reversed(nodes_used)),
                "node_times": tuple(reversed(node_times)), "quadrature_error": None, "quadrature_error_dt0": None,
                "quadrature_met": None, "quadrature_checked": None, "nfe_dense_replay": 0}
    return sweep.state[size:].reshape(shape), dL_dparams, dL_dt, counters


def _node_integrand(field: VectorField, params: np.ndarray, shape: tuple[int, ...], t_grad: bool,
                    dense: list[DenseOutput]):
    """g(groups, times) -> rows [aᵀ∂f/∂θ, (a·∂f/∂t)] at the nodes; group i−1 is the interval [t_{i−1}, t_i].

    First every node's [z, a] from its interval's dense output (one vectorised read per interval), then the VJPs:
    a loop here, one batched VJP call in a twin.
    """
    size = int(np.prod(shape, dtype=np.int64))

    def integrand(groups: np.ndarray, times: np.ndarray) -> np.ndarray:
        states = np.empty((times.size, 2 * size))
        for g in np.unique(groups):
            where = groups == g
            states[where] = dense[g].evaluate(times[where])
        rows = np.empty((times.size, params.size + int(t_grad)))
        for k, (tau, node_state) in enumerate(zip(times, states)):
            z_node = node_state[:size].reshape(shape)
            a_node = node_state[size:].reshape(shape)
            rows[k, : params.size] = vjp_value("vjp_p", field.vjp_p(tau, z_node, params, a_node), tau, params.shape)
            if t_grad:
                rows[k, params.size] = float(vjp_value("vjp_t", field.vjp_t(tau, z_node, params, a_node), tau, ()))
        return rows

    return integrand


def _dense_gradient(field: VectorField, forward: Solution, params: np.ndarray, dL_dy: np.ndarray, *,
                    rtol: float, atol: float, t_grad: bool, rule: Rule, step_nodes: int, kronrod_n: int,
                    counts: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """"auto", "step" and "adaptive": one sweep of backward solves (keeping their dense outputs), then the
    quadrature. ``counts``: the auto rule's first-round Gauß nodes per interval (the paper's)."""
    sweep = BackwardSweep(field, forward, params, dL_dy, rtol=rtol, atol=atol, t_grad=t_grad,
                          warm_start=rule.warm_start)
    t, shape, size = sweep.t, sweep.shape, sweep.size
    replay = 0
    dense = []
    for i in sweep.intervals():
        sweep.incoming(i)
        # the same steps and end state as the interval rule's solve with the same warm_start: output times never
        # change the steps
        back = sweep.solve(np.array([t[i], t[i - 1]]))
        dense.append(dense_output(sweep.dynamics, back, params))
        replay += dense[-1].nfe
        sweep.reanchor(i, back)
    dense.reverse()  # dense[i − 1] covers [t_{i−1}, t_i]
    integrand = _node_integrand(field, params, shape, t_grad, dense)
    dimension = params.size + int(t_grad)
    error = error_dt0 = None
    met = done = None
    blocks = [slice(0, params.size)] + ([slice(params.size, dimension)] if t_grad else [])
    eps = float(np.finfo(np.float64).eps)
    if dimension == 0:  # nothing to integrate (no parameters, no time gradient)
        integral, nodes_used, node_times = np.zeros(0), (0,) * len(dense), (np.empty(0),) * len(dense)
    elif isinstance(rule, StepRule):
        integral, nodes_used, node_times = _step_rule(integrand, step_panels(dense, t), len(dense), step_nodes)
    elif isinstance(rule, AdaptiveRule):
        result = integrate_panels(integrand, step_panels(dense, t), n_groups=len(dense), dimension=dimension,
                                    rtol=rule.relative_tolerance(rtol, eps), atol=rule.atol, blocks=blocks,
                                    max_refinement_nodes=rule.max_nodes, n=kronrod_n)
        integral, nodes_used, node_times = result.integral, result.nodes, result.node_times
        error = float(np.max(result.error[: params.size], initial=0.0))
        error_dt0 = float(result.error[params.size]) if t_grad else None
    else:
        sums = NumpyPanelSums(integrand, dimension)
        done = refine(sums, interval_panels([d.step_times for d in dense], t, counts), n_groups=len(dense),
                      rtol=rule.relative_tolerance(rtol, eps), atol=rule.atol, blocks=blocks,
                      max_nodes=rule.max_nodes, strict=rule.strict,
                      scales=[0.0] + ([float(np.sum(np.abs(sweep.dL_dt[1:])))] if t_grad else []))
        integral, total_error = sums.totals()
        nodes_used, node_times, met = done.nodes, done.node_times, done.met
        error = float(np.max(total_error[: params.size], initial=0.0))
        error_dt0 = float(total_error[params.size]) if t_grad else None
    dL_dt = sweep.time_gradient(integral[params.size] if t_grad else None)
    sweep.nfe += int(sum(nodes_used))  # each node costs one more evaluation (with its VJP)
    counters = {"nfe_backward": sweep.nfe, "steps_backward": sweep.steps, "nodes": tuple(nodes_used),
                "node_times": node_times, "quadrature_error": error, "quadrature_error_dt0": error_dt0,
                "quadrature_met": met, "nfe_dense_replay": replay, "refinement": done}
    return sweep.state[size:].reshape(shape), integral[: params.size].copy(), dL_dt, counters


def _step_rule(integrand, panels: list[tuple[int, float, float]], n_groups: int,
               step_nodes: int) -> tuple[np.ndarray, tuple[int, ...], tuple[np.ndarray, ...]]:
    """``step_nodes`` Gauß–Legendre nodes on every panel (backward step); all nodes in one batch."""
    x_ref, w_ref = gauss_legendre(step_nodes)
    groups = np.array([g for g, _, _ in panels])
    lo = np.array([a for _, a, _ in panels])
    hi = np.array([b for _, _, b in panels])
    half = 0.5 * (hi - lo)
    times = (0.5 * (lo + hi))[:, None] + half[:, None] * x_ref[None, :]
    weights = half[:, None] * w_ref[None, :]
    values = integrand(np.repeat(groups, step_nodes), times.reshape(-1))
    integral = weights.reshape(-1) @ values
    counts = tuple(int(c) for c in step_nodes * np.bincount(groups, minlength=n_groups))
    return integral, counts, tuple(times[groups == g].reshape(-1) for g in range(n_groups))
