"""``gqtorch.odeint_adjoint_gq``: the GQ gradient (Norcliffe & Deisenroth 2023), twin of :mod:`gqref.gq`.

Forward: ``gqtorch.odeint`` under no_grad, keeping z at every t_i and the solve's own NFE (nothing is asked of
``func``). Backward, per interval [t_{i−1}, t_i] from the last: solve [z, a] backwards with the output times t_i,
the n_i Gauß–Legendre nodes (from t_i towards t_{i−1}) and t_{i−1}; the solver never cuts a step to land on a
node, each node is read from the dense output of the step that contains it. The backward step control is
max(rms(z), rms(a)); parameters are not in the backward state. At the nodes, W_j·aᵀ∂f/∂θ (and W_j·a·∂f/∂t) for all
nodes of the interval come from one batched call and one ``autograd.grad``; at t_{i−1} z is re-anchored to the
forward value and the incoming gradient is added to a.

That is the paper's rule, ``quadrature="interval"`` (its arithmetic is unchanged); the default, ``"auto"``, checks it
with Kronrod extensions and refines where needed (:mod:`gqref.panels`). As in
:mod:`gqref.gq` (which explains the rules and why), two more read their nodes from the backward dense output after
each interval's solve: the solver records every accepted step's quartic (:mod:`gqtorch.dense`; no replay, so no
extra evaluations, unlike gqref), and the panels are the backward steps, the last one of each interval clipped at
t_{i−1}.

- ``"step"``: 3 Gauß–Legendre nodes per panel; all nodes of all intervals in one batched VJP (the weights folded
  into the cotangents, as for "interval").
- ``"adaptive"``: G3/K7 panels bisected until the estimated quadrature error meets gtol/gatol
  (:mod:`gqtorch.refinement`); each round reads all its nodes' states first, then evaluates every node's own VJP in
  one call, and makes one host transfer for the stop decision.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from gqref.arguments import flag
from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL
from gqref.dense import step_panels
from gqref.errors import InputError, NonFiniteFieldError
from gqref.gq import warm_step
from gqref.panels import AUTO_CHECKS, first_round_counts, interval_panels, refine
from gqref.refinement import DEFAULT_KRONROD_N
from gqref.rules import (
    DEFAULT_QUADRATURE,
    STEP_NODES,
    AdaptiveRule,
    AutoRule,
    IntervalRule,
    Rule,
    StepRule,
    quadrature_rule,
)
from gqref.solve import output_times
from gqref.tableau import ADAPTIVE_TABLEAUX
from gqtorch import refinement
from gqtorch.adaptive import integrate_adaptive
from gqtorch.arguments import host_scalar
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
from gqtorch.controller import BlockRmsNorm
from gqtorch.dense import DenseOutput, DenseReader, dense_output
from gqtorch.nodes import node_vjps
from gqtorch.panels import TorchPanelSums, parameter_fingerprint
from gqtorch.quadrature import gauss_legendre, node_count, reference_rule
from gqtorch.solve import ADAPTIVE_METHODS, SCIPY_METHODS, FlatField, flat_state, integrate_plan, plan_method
from gqtorch.steps import Callbacks
from gqtorch.tableau import torch_tableau


class BackwardSweep:
    """The backward solves of [z, a] every quadrature rule shares (twin of :class:`gqref.gq.BackwardSweep`).

    Interval by interval from the last: :meth:`incoming` adds f(t_i, z_i)·dL/dy_i to dL/dt_i (and takes it from
    dL/dt_0), :meth:`solve` integrates [z, a] from t_i through the given output times (the steps never depend on
    them), :meth:`reanchor` resets z to the forward value at t_{i−1} and adds dL/dy_{i−1} to a. The rules add their
    node sums to ``dL_dt0`` and read the counters ``nfe`` and ``steps``.

    ``warm_start`` (the rule's, :mod:`gqref.rules`): each adaptive backward solve's first step is the last
    accepted step before it (the forward solve's for the last interval, then the previous backward solve's), not
    the initial-step heuristic (at most the interval's length: :func:`gqref.gq.warm_step`); a ``first_step`` in
    ``adjoint_options`` (or inherited from ``options``) wins.
    """

    def __init__(self, setup: BacksolveSetup, ys: torch.Tensor, dL_dy: torch.Tensor, warm_start: bool):
        self.setup, self.ys = setup, ys
        self.field, self.t = setup.field, setup.t_host
        self.size = ys.shape[1]
        self.dtype, self.device = ys.dtype, ys.device
        self.dL_dy = dL_dy.to(self.dtype)
        self.dynamics = backward_dynamics(self.field, self.size, full=False)
        self.norm = BlockRmsNorm((self.size, self.size), self.dtype, self.device)
        self.atol = torch.full((2 * self.size,), setup.adjoint_atol, dtype=self.dtype, device=self.device)
        plan = setup.back_plan
        self.tab = torch_tableau(ADAPTIVE_TABLEAUX[plan.method], self.dtype, self.device) if plan.is_adaptive \
            else None
        self.state = torch.cat((ys[-1], self.dL_dy[-1]))
        self.dL_dt = torch.zeros(len(self.t), dtype=self.dtype, device=self.device) if setup.t_grad else None
        self.dL_dt0 = torch.zeros((), dtype=self.dtype, device=self.device)
        self.nfe = self.steps = 0
        self.warm_start = warm_start and self.tab is not None and plan.adaptive.first_step is None
        self.first_step = setup.forward_last_step if self.warm_start else None

    def intervals(self) -> range:
        """i for the intervals [t_{i−1}, t_i], the last first."""
        return range(len(self.t) - 1, 0, -1)

    def incoming(self, i: int) -> None:
        if self.setup.t_grad:
            t_i = torch.full((), self.t[i], dtype=self.dtype, device=self.device)
            incoming = torch.dot(self.field(t_i, self.ys[i]), self.dL_dy[i])
            self.dL_dt[i] = incoming
            self.dL_dt0 -= incoming
            self.nfe += 1

    def solve(self, times, record: list | None = None) -> torch.Tensor:
        """[z, a] at ``times`` (t_i first, t_{i−1} last), from the current state."""
        try:
            return self._solve(times, record)
        except NonFiniteFieldError as error:  # say which solve: func's forward values were finite
            raise NonFiniteFieldError(f"GQ's backward dynamics (func and its VJP aᵀ∂f/∂y) returned a non-finite "
                                      f"value (NaN or inf) at t = {error.t!r}", error.t) from error

    def _solve(self, times, record: list | None) -> torch.Tensor:
        setup = self.setup
        s_out, direction = output_times(np.asarray(times))
        if self.tab is None:  # a fixed grid: the nodes read off its interpolant, the grid built on [t_i, t_{i−1}]
            interval = torch.tensor([times[0], times[-1]], dtype=setup.t_dtype)
            back, stats = integrate_plan(setup.back_plan, self.dynamics, self.state, s_out.tolist(), direction,
                                         setup.adjoint_rtol, self.atol, None, callbacks=setup.back_callbacks,
                                         grid_args=(self.dynamics, self.state, interval))
            self.nfe += stats.nfe
            self.steps += stats.n_accepted
            self.direction = direction
            return back
        first_step = warm_step(self.first_step, times)
        options = setup.back_plan.adaptive if first_step is None else \
            dataclasses.replace(setup.back_plan.adaptive, first_step=first_step)
        back, counts = integrate_adaptive(
            self.dynamics, self.state, s_out.tolist(), direction, setup.adjoint_rtol, self.atol, self.norm,
            self.tab, options, record=record, callbacks=setup.back_callbacks)
        if self.warm_start:
            self.first_step = counts.last_step
        self.nfe += counts.nfe
        self.steps += counts.n_accepted
        self.direction = direction  # of the last solve, for reading its recorded dense output
        return back

    def reanchor(self, i: int, back: torch.Tensor) -> None:
        self.state = torch.cat((self.ys[i - 1], back[-1, self.size:] + self.dL_dy[i - 1]))

    def time_gradient(self, time_integral: torch.Tensor | None = None) -> torch.Tensor | None:
        """dL/dt in the times' dtype: dL/dt_0 is the sum of the incoming terms and the rule's time integral."""
        if not self.setup.t_grad:
            return None
        self.dL_dt[0] = self.dL_dt0 if time_integral is None else self.dL_dt0 + time_integral
        return self.dL_dt.to(self.setup.t_dtype)


def gq_backward(setup: BacksolveSetup, ys: torch.Tensor, dL_dy: torch.Tensor, params: tuple[torch.Tensor, ...]):
    """(dL/dy0 flat, dL/dparams, dL/dt or None) by GQ; fills ``setup.stats``' backward fields."""
    rule = setup.rule
    if isinstance(rule, IntervalRule):
        return interval_backward(setup, ys, dL_dy, params, rule)
    if not setup.back_plan.is_adaptive:  # a fixed grid has no per-step dense output to check or refine on
        setup.stats.quadrature_checked = False
        return interval_backward(setup, ys, dL_dy, params, IntervalRule(C=rule.C))
    if not isinstance(rule, AutoRule):
        return dense_backward(setup, ys, dL_dy, params)
    t = setup.t_host
    counts = first_round_counts(rule, setup.stats.nfe_forward, t)
    reuse = rule.recheck_every > 1  # opt-in: the default checks every call and keeps no memory
    context = (tuple(t), tuple(ys.shape), ys.dtype, ys.device, parameter_fingerprint(params), setup.adjoint_rtol,
               setup.adjoint_atol, setup.t_grad, rule) if reuse else None
    if reuse and AUTO_CHECKS.trusted(setup.func, context, counts):  # a recent check found the paper's nodes ample
        setup.stats.quadrature_checked = False
        return interval_backward(setup, ys, dL_dy, params, IntervalRule(C=rule.C, warm_start=rule.warm_start), counts)
    setup.stats.refinement = None
    result = dense_backward(setup, ys, dL_dy, params, counts)
    if reuse and setup.stats.refinement is not None:  # None: nothing to integrate (no params, no time gradient)
        AUTO_CHECKS.record(setup.func, context, counts, setup.stats.refinement, rule.recheck_every)
    setup.stats.quadrature_checked = True
    return result


def interval_backward(setup: BacksolveSetup, ys: torch.Tensor, dL_dy: torch.Tensor, params: tuple[torch.Tensor, ...],
                      rule: IntervalRule, counts: list[int] | None = None):
    """The paper's rule: n_i Gauß–Legendre nodes per interval as output times of the backward solve (``counts``,
    first interval first, replaces the node rule: the auto rule's reuse of a checked node set)."""
    field, stats, t_grad = setup.field, setup.stats, setup.t_grad
    sweep = BackwardSweep(setup, ys, dL_dy, rule.warm_start)
    t, size, dtype, device = sweep.t, sweep.size, sweep.dtype, sweep.device
    # the first interval's node sums become the accumulators (no zero-filled P-sized copies); later ones add in place
    dL_dparams: list[torch.Tensor | None] = [None] * len(params)
    batched = stats.batched_nodes is not False
    nodes_used = []
    node_times = []
    for i in sweep.intervals():
        sweep.incoming(i)
        n = node_count(rule.C, stats.nfe_forward, t[i - 1], t[i], t[0], t[-1], rule.max_nodes) if counts is None \
            else counts[i - 1]
        nodes, _ = gauss_legendre(n, t[i], t[i - 1])
        half, mid = 0.5 * (t[i - 1] - t[i]), 0.5 * (t[i] + t[i - 1])
        x_ref, w_ref = reference_rule(n, dtype, device)
        taus = x_ref * half + mid
        orientation = math.copysign(1.0, t[i] - t[i - 1])  # the integral runs from t_{i−1} to t_i
        back = sweep.solve(np.concatenate([[t[i]], nodes, [t[i - 1]]]))
        if params or t_grad:
            cotangents = back[1:-1, size:] * (w_ref * (orientation * abs(half))).unsqueeze(1)
            grads, batched = node_vjps(field, taus, back[1:-1, :size], cotangents, params, t_grad, batched)
            for j, grad in enumerate(grads[:len(params)]):
                if grad is not None:
                    dL_dparams[j] = grad if dL_dparams[j] is None else dL_dparams[j].add_(grad)
            if t_grad and grads[-1] is not None:
                sweep.dL_dt0 += grads[-1].sum()
        sweep.nfe += n  # each node costs one more evaluation (with its VJP)
        nodes_used.append(n)
        node_times.append(nodes)
        sweep.reanchor(i, back)
    dL_dt = sweep.time_gradient()
    dL_dparams = [torch.zeros_like(p) if g is None else g for p, g in zip(params, dL_dparams)]
    stats.nfe_backward = sweep.nfe
    stats.steps_backward = sweep.steps
    stats.nodes = tuple(reversed(nodes_used))
    stats.node_times = tuple(reversed(node_times))
    stats.batched_nodes = batched if (params or t_grad) else None
    stats.backward_calls += 1
    return sweep.state[size:], dL_dparams, dL_dt


def dense_backward(setup: BacksolveSetup, ys: torch.Tensor, dL_dy: torch.Tensor, params: tuple[torch.Tensor, ...],
                   counts: list[int] | None = None):
    """"step" and "adaptive": one sweep of backward solves recording their dense outputs, then the quadrature.

    The backward solves and the re-anchoring are those of the interval rule with the same ``warm_start`` (output
    times never change the steps), so dL/dy0 and dL/dt[1:] are that rule's, bit for bit; only the parameter and
    time integrals differ.
    """
    field, stats, t_grad = setup.field, setup.stats, setup.t_grad
    sweep = BackwardSweep(setup, ys, dL_dy, setup.rule.warm_start)
    t, size, dtype, device = sweep.t, sweep.size, sweep.dtype, sweep.device
    dense: list[DenseOutput] = []
    for i in sweep.intervals():
        sweep.incoming(i)
        record: list = []
        back = sweep.solve([t[i], t[i - 1]], record)
        dense.append(dense_output(record, sweep.direction))
        sweep.reanchor(i, back)
    dense.reverse()  # dense[i − 1] covers [t_{i−1}, t_i]
    panels = step_panels(dense, t)
    n_params = sum(p.numel() for p in params)
    dimension = n_params + int(t_grad)
    batched = stats.batched_nodes is not False
    dL_dparams = [torch.zeros_like(p) for p in params]
    time_integral = None
    if dimension == 0 or not panels:  # nothing to integrate (no parameters and no time gradient, or one time)
        nodes_used, node_times = (0,) * len(dense), (np.empty(0),) * len(dense)
    elif isinstance(setup.rule, StepRule):
        nodes_used, node_times, grads, batched = _step_rule(field, DenseReader(dense), panels, len(dense), size,
                                                            params, t_grad, batched, dtype, device)
        for j, grad in enumerate(grads[:len(params)]):
            if grad is not None:
                dL_dparams[j] = grad.to(params[j].dtype)
        if t_grad and grads[-1] is not None:
            time_integral = grads[-1].sum()
    elif not isinstance(setup.rule, AdaptiveRule):  # the auto rule (gqref.panels)
        rule = setup.rule
        sums = TorchPanelSums(field, DenseReader(dense), size, params, t_grad, batched, dtype, device)
        blocks = [slice(0, n_params)] + ([slice(n_params, dimension)] if t_grad else [])
        done = refine(sums, interval_panels([d.step_times for d in dense], t, counts), n_groups=len(dense),
                      rtol=rule.relative_tolerance(setup.adjoint_rtol, torch.finfo(dtype).eps), atol=rule.atol,
                      blocks=blocks, max_nodes=rule.max_nodes, strict=rule.strict,
                      scales=[0.0] + ([float(sweep.dL_dt[1:].abs().sum())] if t_grad else []))
        integral, total_error = sums.totals()
        nodes_used, node_times, batched = done.nodes, done.node_times, sums.batched
        dL_dparams = [part.to(p.dtype) for p, part in zip(params, integral)]
        if t_grad:
            time_integral = integral[-1]
        _record_errors(stats, total_error[:len(params)], total_error[-1] if t_grad else None, dtype, device)
        stats.quadrature_met = done.met
        stats.refinement = done
    else:
        reader = DenseReader(dense)
        flags = {"batched": batched}

        def integrand(groups: np.ndarray, times: np.ndarray) -> torch.Tensor:
            states = reader(groups, times)  # every node's [z, a] first, then one VJP call for them all
            taus = torch.as_tensor(times, dtype=torch.float64).to(dtype=dtype, device=device)
            rows, flags["batched"] = refinement.node_rows(field, taus, states[:, :size], states[:, size:], params,
                                                          t_grad, flags["batched"])
            return rows

        blocks = [slice(0, n_params)] + ([slice(n_params, dimension)] if t_grad else [])
        result = refinement.integrate_panels(integrand, panels, n_groups=len(dense), dimension=dimension,
                                               rtol=setup.rule.relative_tolerance(setup.adjoint_rtol, 0.0),
                                               atol=setup.rule.atol, dtype=dtype, device=device,
                                               blocks=blocks, max_refinement_nodes=setup.rule.max_nodes,
                                               n=DEFAULT_KRONROD_N)
        nodes_used, node_times, batched = result.nodes, result.node_times, flags["batched"]
        for j, part in enumerate(result.integral[:n_params].split([p.numel() for p in params])):
            dL_dparams[j] = part.reshape(params[j].shape).to(params[j].dtype)
        if t_grad:
            time_integral = result.integral[n_params]
        _record_errors(stats, [result.error[:n_params]], result.error[n_params] if t_grad else None, dtype, device)
    dL_dt = sweep.time_gradient(time_integral)
    stats.nfe_backward = sweep.nfe + int(sum(nodes_used))  # each node costs one more evaluation (with its VJP)
    stats.steps_backward = sweep.steps
    stats.nodes = tuple(nodes_used)
    stats.node_times = tuple(node_times)
    stats.batched_nodes = batched if dimension else None
    stats.backward_calls += 1
    return sweep.state[size:], dL_dparams, dL_dt


def _record_errors(stats: GradientStats, param_errors: list[torch.Tensor], time_error: torch.Tensor | None,
                   dtype: torch.dtype, device: torch.device) -> None:
    """The estimates to the host, in one transfer: the max over the parameter components, and the time integral's."""
    maxima = [e.max() for e in param_errors if e.numel()]
    error_max = torch.stack(maxima).max() if maxima else torch.zeros((), dtype=dtype, device=device)
    errors = torch.stack((error_max, error_max if time_error is None else time_error.reshape(()))).tolist()
    stats.quadrature_error = errors[0]
    stats.quadrature_error_dt0 = None if time_error is None else errors[1]


def _step_rule(field: FlatField, reader: DenseReader, panels: list[tuple[int, float, float]], n_groups: int,
               size: int, params: tuple[torch.Tensor, ...], t_grad: bool, batched: bool, dtype: torch.dtype,
               device: torch.device):
    """:data:`STEP_NODES` Gauß–Legendre nodes on every panel, all in one batched VJP with the weights in the
    cotangents. Returns (nodes per interval, node times per interval, node_vjps' grads, batched)."""
    x_ref, w_ref = gauss_legendre(STEP_NODES)
    groups = np.array([g for g, _, _ in panels])
    lo = np.array([a for _, a, _ in panels])
    hi = np.array([b for _, _, b in panels])
    half = 0.5 * (hi - lo)
    times = (0.5 * (lo + hi))[:, None] + half[:, None] * x_ref[None, :]  # gqref's node times, bit for bit
    weights = (half[:, None] * w_ref[None, :]).reshape(-1)
    states = reader(np.repeat(groups, STEP_NODES), times.reshape(-1))
    taus = torch.as_tensor(times.reshape(-1), dtype=torch.float64).to(dtype=dtype, device=device)
    w = torch.as_tensor(weights, dtype=torch.float64).to(dtype=dtype, device=device)
    grads, batched = node_vjps(field, taus, states[:, :size], states[:, size:] * w.unsqueeze(1), params, t_grad,
                               batched)
    counts = tuple(int(c) for c in STEP_NODES * np.bincount(groups, minlength=n_groups))
    return counts, tuple(times[groups == g].reshape(-1) for g in range(n_groups)), grads, batched


def odeint_adjoint_gq(func: Callable, y0, t, *, rtol: float = DEFAULT_RTOL, atol=DEFAULT_ATOL,
                      method: str | None = None, options: dict | None = None, event_fn=None,
                      adjoint_rtol: float | None = None, adjoint_atol: float | None = None,
                      adjoint_method: str | None = None,
                      adjoint_options: dict | None = None, adjoint_params=None, gtol: float | None = None,
                      max_nodes: int | None = None, return_stats: bool = False,
                      quadrature: str | Rule = DEFAULT_QUADRATURE, gatol: float | None = None,
                      strict: bool | None = None):
    """Solve like :func:`gqtorch.odeint`; differentiate by the GQ method (torchdiffeq's ``odeint_adjoint`` signature).

    Why: for a big field with a small state (P ≫ S) the backward solve carries only [z, a], and the parameter
    gradient is paid only at the few Gauß–Legendre nodes. ``quadrature`` picks the rule (as
    ``gqref.gradient(method="gq")``; reasons in :mod:`gqref.gq`):

    - ``"auto"`` (default): the paper's nodes plus their Kronrod extension, refined until the estimated error meets
      ``gtol`` (default max(adjoint rtol, 100·ε)) + ``gatol``; ``max_nodes`` is the refinement budget, ``strict``
      turns its warning into an error (:class:`gqref.rules.AutoRule`).
    - ``"interval"`` (the paper's): ``gtol`` is the node-rule constant C (default 0.1; more nodes when
      larger, not a tolerance), ``max_nodes`` the cap per interval (default 64); no ``gatol``.
    - ``"step"``: 3 Gauß–Legendre nodes on every accepted backward step; takes no ``gtol``, ``gatol`` or
      ``max_nodes``.
    - ``"adaptive"``: Gauß–Kronrod panels (from the backward steps) bisected until the estimated quadrature error
      E meets E ≤ ``gatol`` + ``gtol``·‖integral‖_∞ (max norm; or the roundoff floor 100·ε·∫|integrand|) for the
      parameter gradient and, separately, the integral in dL/dt[0]. ``gtol`` defaults to the adjoint rtol,
      ``gatol`` to 0; ``max_nodes`` is a safety limit on the refinement nodes per interval beyond the first 7 per
      step (default 10 000; :class:`gqref.refinement.QuadratureLimitError`). E is reported in
      ``stats.quadrature_error``. Per-node VJPs run batched when ``func`` is an ``nn.Module`` owning the
      ``adjoint_params`` (see :func:`gqtorch.refinement.node_rows`), else node by node.

    No rule makes the gradient more accurate than the backward solve (``adjoint_rtol``/``adjoint_atol``): the nodes
    are read from its 4th-order dense output. The forward solve uses ``method`` (default
    dopri5); backward solves are dopri5 at ``adjoint_rtol``/``adjoint_atol`` (default: the forward ones).
    ``adjoint_params``: the tensors to differentiate (default ``func.parameters()`` for an ``nn.Module``; a plain
    function must pass them, or ``()``). ``func`` needs no ``nfe`` attribute. For the batched node VJP ``func``
    should be ``torch.func.vmap``-compatible; otherwise nodes are evaluated one at a time (see
    :func:`gqtorch.nodes.node_vjps`). Gradients reach ``y0`` (tensor or tuple), ``adjoint_params`` and ``t``.
    ``return_stats=True`` returns ``(ys, stats)``: a :class:`GradientStats` whose backward fields fill in when
    ``backward`` runs. Bad arguments raise :class:`gqref.errors.InputError` naming the argument.
    """
    if not callable(func):
        raise InputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    return_stats = flag("return_stats", return_stats)
    if event_fn is not None:
        return solve_event_then(odeint_adjoint_gq, func, y0, t, event_fn, rtol=rtol, atol=atol, method=method,
                                options=options, adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
                                adjoint_method=adjoint_method, adjoint_options=adjoint_options,
                                adjoint_params=adjoint_params, gtol=gtol, max_nodes=max_nodes,
                                return_stats=return_stats, quadrature=quadrature, gatol=gatol, strict=strict)
    # tensors (torch.tensor(1e-5), torch.tensor(64)) read as numbers, as odeint reads its tolerances
    gtol, gatol, max_nodes, strict = (host_scalar(name, value) for name, value in
                                      (("gtol", gtol), ("gatol", gatol), ("max_nodes", max_nodes), ("strict", strict)))
    method = check_method(method)
    plan_method(method, options)  # the forward options, checked before anything runs
    # GQ reads its nodes off the backward solve's dense output: an adaptive pair's quartics, or a fixed grid's
    # interpolant (as torchdiffeq's adjoint, the backward method defaults to the forward one)
    if adjoint_method is None and method in SCIPY_METHODS:  # scipy's solve has no dense output to read nodes off
        adjoint_method, adjoint_options = "dopri5", adjoint_options or {}
    back_plan, _, user_norm = backward_plan(method, options, adjoint_method, adjoint_options)
    if back_plan.scipy is not None:
        raise InputError(f"adjoint_method 'scipy_solver' gives GQ no dense output to place its nodes on; use an "
                         f"adaptive method, one of {list(ADAPTIVE_METHODS)}, or a fixed grid")
    chosen = quadrature_rule(quadrature, gtol, gatol, max_nodes, strict)
    if not back_plan.is_adaptive and isinstance(chosen, (StepRule, AdaptiveRule)):
        raise InputError(f"quadrature={chosen.name!r} places its nodes on the backward solve's adaptive steps; the "
                         f"backward method {back_plan.method!r} is a fixed grid: use quadrature='auto' or "
                         f"'interval', or an adaptive adjoint_method, one of {list(ADAPTIVE_METHODS)}")
    if user_norm is not None:
        raise InputError("adjoint_options['norm'] as a callable is not supported by odeint_adjoint_gq: its backward "
                         "state [y, adj_y] has no time or parameter blocks; use 'seminorm' or leave it out")
    params = adjoint_parameters(func, adjoint_params)
    back_rtol, back_atol = backward_tolerances(rtol, atol, adjoint_rtol, adjoint_atol)
    rule = quadrature_rule(quadrature, gtol, gatol, max_nodes, strict)
    flat, shapes, is_tuple = flat_state(y0)
    if flat.is_complex():
        raise InputError(f"odeint_adjoint_gq needs a real state, got {flat.dtype}; use gqtorch.odeint (backprop "
                         f"through the solver) for complex states")
    t, t_grad = check_times(t, flat)
    output_times(t.detach().to("cpu", torch.float64).numpy())  # order checked before any solve
    t_host = t.detach().to("cpu", torch.float64).numpy().tolist()
    stats = GradientStats(method="gq", quadrature=rule.name, rule=rule)
    setup = BacksolveSetup(func=func, field=FlatField(func, shapes, is_tuple), rtol=rtol, atol=atol, method=method,
                   options=options, adjoint_rtol=back_rtol, adjoint_atol=back_atol, rule=rule,
                   back_plan=back_plan, back_callbacks=Callbacks.of(func, adjoint=True, method=back_plan.method),
                   t_host=t_host, t_grad=t_grad, t_dtype=t.dtype, stats=stats, backward=gq_backward)
    ys = user_outputs(BacksolveFunction.apply(setup, flat, t, *params), setup.field)
    return (ys, stats) if return_stats else ys
