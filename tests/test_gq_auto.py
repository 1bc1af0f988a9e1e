"""GQ's default quadrature, the auto rule (gqref.panels, gqtorch.panels): the paper's nodes per interval checked by
their Kronrod extension and refined where the check fails.

- Twin parity: gqtorch ≡ gqref in float64 (same node counts, gradients to TWIN), hypothesis-driven.
- torchdiffeq's gradient-test problems at default settings (constant, linear, sine; the cubic spiral in float32
  and float64) within torchdiffeq's published bounds.
- Accuracy against direct backprop at tight tolerance: at most 10× the adjoint's error, on a cubic spiral, a
  time-dependent MLP with a fast sinusoidal forcing, and the g1d and nested-spheres fields at initial weights and
  after some training.
- The node budget: a warning naming the interval and the error reached, or QuadratureLimitError with strict.
- Rule objects and bad input.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gqref
import gqtorch
from gqref import problems as pr
from gqref.errors import InputError, QuadratureAccuracyWarning
from gqref.refinement import QuadratureLimitError
from gqref.rules import AdaptiveRule, AutoRule, IntervalRule, StepRule, quadrature_rule
from gqref.strategies import cotangents, tolerances
from tests.test_gqtorch_quadrature import assert_twin, gqref_twin, run
from tests.test_gqtorch_solve import problems_with_torch_fields, relative_error
from tests.test_gqtorch_torchdiffeq_problems import PAPER_BOUNDS, PROBLEMS, SPIRAL_BOUNDS, CubicSpiral, _problem

torch.set_num_threads(1)
F64 = torch.float64
# torchdiffeq's tests compare the adjoint methods with direct backprop; the acceptance asks GQ's default to be
# within this factor of the adjoint's own error against direct backprop at tight tolerance
ADJOINT_FACTOR = 10.0


# --- twin parity ----------------------------------------------------------------------------------------------------


@settings(max_examples=12)
@given(data=st.data(), problem=problems_with_torch_fields)
def test_auto_rule_equals_gqref(data, problem):
    rtol, atol = data.draw(tolerances)
    gtol = data.draw(st.sampled_from([None, 1e-3, 1e-6, 1e-9]))
    t_grad = data.draw(st.booleans())
    dl_dy = data.draw(cotangents(problem))
    options = {} if gtol is None else {"gtol": gtol}
    ours = run(problem, dl_dy, t_grad=t_grad, rtol=rtol, atol=atol, **options)  # the default rule
    assert ours[3].quadrature == "auto"
    ref = gqref_twin(problem, dl_dy, ours[3].nodes, quadrature="auto", rtol=rtol, atol=atol, t_grad=t_grad,
                     **options)
    assert_twin(ours, ref, t_grad, times=False)
    assert ours[3].quadrature_met is True and ref.diagnostics.quadrature_met is True
    # same steps, same panels, same nodes: only the summation order differs (VJP sums against per-node rows), a
    # few ulps of each gradient's scale; dL/dt's scale is that of the terms it is summed from (_time_gradient_scale)
    for x, y in zip(ours[:2], (ref.dL_dy0, ref.dL_dparams)):
        assert relative_error(x, y) <= 1e-12
    if t_grad:
        scale = max(np.max(np.abs(ref.dL_dt)), _time_gradient_scale(problem, dl_dy, rtol, atol))
        assert np.max(np.abs(ours[2] - ref.dL_dt)) <= 1e-12 * scale


def _time_gradient_scale(problem, dl_dy, rtol, atol) -> float:
    """The size of the terms dL/dt is made of. dL/dt_i = f(t_i, y_i)·dL/dy_i (and dL/dt_0 gathers them all), and
    inside f terms of size |f(t_i, 0)| + |∂f/∂y|·|y_i| (a linear field's |A||y| + |b|) may cancel to far less. The
    twins' forward states agree to roundoff, not bit for bit (numpy's and torch's arithmetic), so their dL/dt agree
    to roundoff of this scale, not of dL/dt's own: a drawn linear field with f ≈ 0.007 from O(1) terms gave a
    relative difference of 1.1e-12 on dL/dt with both twins exact to ~1e-15."""
    field, params = problem.field, problem.params
    ys = gqref.solve(field, problem.y0, problem.t, params, rtol=rtol, atol=atol).ys
    total = 0.0
    for t_i, y_i, cotangent in zip(problem.t, ys, np.asarray(dl_dy)):
        y_i = np.ravel(y_i)
        jacobian = np.array([np.ravel(field.vjp_y(t_i, y_i, params, e)) for e in np.eye(y_i.size)])  # rows: eⱼᵀJ
        terms = np.abs(np.ravel(field.f(t_i, np.zeros_like(y_i), params))) + np.abs(jacobian) @ np.abs(y_i)
        total += float(np.abs(np.ravel(cotangent)) @ terms)
    return total


def test_auto_first_round_is_the_papers_nodes_and_its_kronrod_extension():
    """Where the check passes at once, each interval evaluates max(n_i, 2) Gauß nodes (n_i the paper's) and their
    Kronrod extension; the estimate bounds the difference from those Gauß sums, the paper's rule on that count
    (on the same, warm-started backward solves)."""
    problem = pr.mlp(6, state_dim=2, t=np.linspace(0, 1, 4))
    dl_dy = np.ones((4, 2))
    paper = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, quadrature="interval",
                           gtol=0.1, rtol=1e-3, atol=1e-3)
    auto = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, rtol=1e-3, atol=1e-3,
                          quadrature=AutoRule(recheck_every=1))
    d = auto.diagnostics
    assert d.quadrature == "auto" and d.quadrature_met
    assert d.nodes == tuple(2 * max(n, 2) + 1 for n in paper.diagnostics.nodes)
    gauss = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, rtol=1e-3, atol=1e-3,
                           quadrature=IntervalRule(C=(d.nodes[0] // 2) * 3 / d.nfe_forward, warm_start=True))
    assert gauss.diagnostics.nodes == tuple(n // 2 for n in d.nodes)
    # E = |K − G| exactly, up to the roundoff of summing in a different order
    assert np.max(np.abs(auto.dL_dparams - gauss.dL_dparams)) <= d.quadrature_error * (1 + 1e-6) + \
        1e-14 * np.max(np.abs(gauss.dL_dparams))


# --- torchdiffeq's gradient tests at default settings -------------------------------------------------------------


def _grads(func, solve, y0, t, cotangent):
    y0 = y0.detach().clone().requires_grad_()
    t = t.detach().clone().requires_grad_()
    func.zero_grad(set_to_none=True)
    ys = solve(func, y0, t)
    ys.backward(cotangent)
    return {"y0": y0.grad, "t": t.grad, **{n: p.grad for n, p in func.named_parameters()}}


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_torchdiffeq_problems_at_default_settings(name):
    """test_adjoint's problems and bounds with odeint_adjoint_gq's defaults (only the tolerances of the test)."""
    func, y0, t = _problem(name)
    cotangent = torch.rand((len(t), *y0.shape), dtype=F64, generator=torch.Generator().manual_seed(0))
    opts = {"rtol": 1e-9, "atol": 1e-12}
    direct = _grads(func, lambda f, y, s: gqtorch.odeint(f, y, s, **opts), y0, t, cotangent)
    ours = _grads(func, lambda f, y, s: gqtorch.odeint_adjoint_gq(f, y, s, **opts), y0, t, cotangent)
    for key in direct:
        assert float((ours[key] - direct[key]).abs().max()) < PAPER_BOUNDS[name], key


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cubic_spiral_at_default_settings(dtype):
    """torchdiffeq's cubic spiral (t ∈ [0, 25], 10 points, default tolerances): the paper's rule with C = 0.1 is
    1e-2–3e-3 off here; the default must meet torchdiffeq's bounds and stay within 10× the adjoint's error."""
    torch.manual_seed(0)
    func = CubicSpiral().to(dtype)
    y0 = torch.tensor([[2.0, 0.0]], dtype=dtype)
    t = torch.linspace(0.0, 25.0, 10, dtype=dtype)
    cotangent = 0.1 * torch.rand((10, 1, 2), generator=torch.Generator().manual_seed(1)).to(dtype)
    direct = _grads(func, gqtorch.odeint, y0, t, cotangent)
    ours = _grads(func, gqtorch.odeint_adjoint_gq, y0, t, cotangent)
    adjoint = _grads(func, gqtorch.odeint_adjoint, y0, t, cotangent)
    for key, bound in SPIRAL_BOUNDS.items():
        assert float((ours[key] - direct[key]).abs().max()) < bound, key
    assert torch.equal(ours["unused_module.weight"], torch.zeros(5, 2))
    if dtype == torch.float32:
        # in float32 the nodes are read from a float32 backward dense output: GQ's error is set there (3.8e-5,
        # with any quadrature tolerance), while the adjoint, integrating θ's gradient inside its own state, happens
        # to reach 3e-6 — the 10× criterion below is for float64, where the quadrature is what GQ controls
        return
    tight = _grads(func.double(), lambda f, y, s: gqtorch.odeint(f, y, s, rtol=1e-12, atol=1e-12), y0.double(),
                   t.double(), cotangent.double())
    scale = float(tight["A"].abs().max())
    ours_error = float((ours["A"].double() - tight["A"]).abs().max()) / scale
    adjoint_error = float((adjoint["A"].double() - tight["A"]).abs().max()) / scale
    # a floor of a few ulps of the dtype, in case the adjoint is accurate to roundoff by luck
    assert ours_error <= ADJOINT_FACTOR * max(adjoint_error, 10 * torch.finfo(dtype).eps), (ours_error,
                                                                                           adjoint_error)


# --- accuracy against direct backprop on harder fields -----------------------------------------------------------


class ForcedMLP(torch.nn.Module):
    """An MLP field on [z, sin(ωt), cos(ωt)] with a fast forcing (ω = 40 over t ∈ [0, 1]): the parameter integrand
    oscillates faster than the state, which the paper's node budget (from the forward NFE) does not see."""

    def __init__(self, width: int = 32, omega: float = 40.0):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.omega = omega
        self.inner = torch.nn.Linear(4, width, dtype=F64)
        self.outer = torch.nn.Linear(width, 2, dtype=F64)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=F64))

    def forward(self, t, z):
        forcing = torch.stack((torch.sin(self.omega * t), torch.cos(self.omega * t))).expand(*z.shape[:-1], 2)
        return self.outer(torch.tanh(self.inner(torch.cat((z, forcing), dim=-1))))


TRAINING_STEPS = 40  # Adam steps (lr 1e-2, direct backprop at tol 1e-3) that move the weights well off their start


def _task_field(task: str, trained: bool = False):
    from validation.bench.steps import training_step

    step = training_step(task, 64)
    if trained:
        optimiser = torch.optim.Adam(step.field.parameters(), lr=1e-2)
        start = [p.detach().clone() for p in step.field.parameters()]
        for _ in range(TRAINING_STEPS):
            step.step(lambda f, y0, t: gqtorch.odeint(f, y0, t, rtol=1e-3, atol=1e-3))
            optimiser.step()
        moved = max(float((p.detach() - p0).abs().max()) for p, p0 in zip(step.field.parameters(), start))
        assert moved > 0.1  # the weights really are elsewhere
    step.field.double()
    return step.field, step.y0.double(), torch.linspace(0.0, 1.0, 5, dtype=F64)


FIELDS = {
    "cubic-spiral": lambda: (CubicSpiral().double(), torch.tensor([[2.0, 0.0]], dtype=F64),
                             torch.linspace(0.0, 10.0, 6, dtype=F64)),
    "forced-mlp": lambda: (ForcedMLP(), torch.tensor([[0.5, -0.3]], dtype=F64), torch.linspace(0.0, 1.0, 3,
                                                                                                dtype=F64)),
    "g1d": lambda: _task_field("g1d"),
    "nested-spheres": lambda: _task_field("nested-spheres"),
    "g1d-trained": lambda: _task_field("g1d", trained=True),
    "nested-spheres-trained": lambda: _task_field("nested-spheres", trained=True),
}


def _parameter_gradient(func, solve, y0, t, cotangent) -> torch.Tensor:
    grads = _grads(func, solve, y0, t, cotangent)
    # direct backprop leaves an unused parameter's gradient None, the adjoint methods make it zero
    return torch.cat([torch.zeros(p.numel(), dtype=F64) if grads[n] is None else grads[n].reshape(-1)
                      for n, p in func.named_parameters()])


@pytest.mark.parametrize("name", list(FIELDS))
def test_default_gq_within_ten_times_the_adjoint_error(name):
    func, y0, t = FIELDS[name]()
    cotangent = torch.randn((len(t), *y0.shape), dtype=F64, generator=torch.Generator().manual_seed(2))
    opts = {"rtol": 1e-6, "atol": 1e-8}
    tight = _parameter_gradient(func, lambda f, y, s: gqtorch.odeint(f, y, s, rtol=1e-12, atol=1e-12), y0, t,
                                cotangent)
    scale = float(tight.abs().max())

    def error(solve):
        return float((_parameter_gradient(func, solve, y0, t, cotangent) - tight).abs().max()) / scale

    adjoint = error(lambda f, y, s: gqtorch.odeint_adjoint(f, y, s, **opts))
    ours = error(lambda f, y, s: gqtorch.odeint_adjoint_gq(f, y, s, **opts))
    # 1e-14: float64 roundoff of the sums, in case the adjoint happens to be exact
    assert ours <= ADJOINT_FACTOR * max(adjoint, 1e-14), (ours, adjoint)


def test_forced_mlp_is_where_the_papers_rule_falls_short():
    """The forcing is what the default is for: the paper's rule misses it, the default does not."""
    func, y0, t = FIELDS["forced-mlp"]()
    cotangent = torch.randn((len(t), *y0.shape), dtype=F64, generator=torch.Generator().manual_seed(2))
    tight = _parameter_gradient(func, lambda f, y, s: gqtorch.odeint(f, y, s, rtol=1e-12, atol=1e-12), y0, t,
                                cotangent)
    opts = {"rtol": 1e-6, "atol": 1e-8}
    def paper_rule(f, y, s):
        return gqtorch.odeint_adjoint_gq(f, y, s, quadrature="interval", **opts)

    paper = _parameter_gradient(func, paper_rule, y0, t, cotangent)
    ours = _parameter_gradient(func, lambda f, y, s: gqtorch.odeint_adjoint_gq(f, y, s, **opts), y0, t, cotangent)
    assert float((ours - tight).abs().max()) < float((paper - tight).abs().max())


# --- the node budget ----------------------------------------------------------------------------------------------


def _budget_problem():
    return pr.mlp(8, state_dim=2, time_dependent=True, t=np.linspace(0.0, 2.0, 3))


def test_budget_exhausted_warns_naming_the_interval_and_the_error():
    problem = _budget_problem()
    dl_dy = np.ones((3, 2))
    with pytest.warns(QuadratureAccuracyWarning, match=r"max_nodes = 1 .*\[t_\d, t_\d\].*× its tolerance"):
        g = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, gtol=1e-13, max_nodes=1)
    assert g.diagnostics.quadrature_met is False
    from tests.test_gqtorch_quadrature import Twin

    func = Twin(problem)  # the torch twin warns the same way
    y0 = torch.tensor(problem.y0, dtype=F64)
    with pytest.warns(QuadratureAccuracyWarning, match=r"\[t_\d, t_\d\]"):
        ys, stats = gqtorch.odeint_adjoint_gq(func, y0, torch.tensor(problem.t), gtol=1e-13, max_nodes=1,
                                              return_stats=True)
        ys.sum().backward()
    assert stats.quadrature_met is False


def test_budget_exhausted_raises_when_strict():
    problem = _budget_problem()
    with pytest.raises(QuadratureLimitError, match="node budget"):
        gqref.gradient(problem.field, problem.y0, problem.t, problem.params, np.ones((3, 2)), gtol=1e-13,
                       max_nodes=1, strict=True)


def test_met_tolerance_gives_no_warning():
    problem = _budget_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuadratureAccuracyWarning)
        g = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, np.ones((3, 2)),
                           quadrature=AutoRule(recheck_every=1))  # a fresh estimate on every call
    assert g.diagnostics.quadrature_met is True and g.diagnostics.quadrature_error is not None


# --- rule objects and bad input -----------------------------------------------------------------------------------


def test_rule_objects_equal_their_string_shortcuts():
    assert quadrature_rule("auto", 1e-6, 0.0, 500, True) == AutoRule(rtol=1e-6, atol=0.0, max_nodes=500, strict=True)
    assert quadrature_rule("interval", 0.2, None, 10) == IntervalRule(C=0.2, max_nodes=10)
    assert quadrature_rule("step") == StepRule()
    numpy_scalars = quadrature_rule(np.str_("auto"), np.float32(1e-3), None, np.int64(7))
    assert numpy_scalars == AutoRule(rtol=np.float32(1e-3), max_nodes=7)
    problem = _budget_problem()
    a = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, np.ones((3, 2)),
                       quadrature=IntervalRule(C=0.2))
    b = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, np.ones((3, 2)),
                       quadrature="interval", gtol=0.2)
    assert np.array_equal(a.dL_dparams, b.dL_dparams) and a.diagnostics.rule == IntervalRule(C=0.2)


@pytest.mark.parametrize("kwargs, match", [
    ({"quadrature": "auto", "gtol": 0.0}, "rtol"),
    ({"quadrature": "auto", "gtol": math.nan}, "rtol"),
    ({"quadrature": "auto", "gtol": True}, "rtol"),
    ({"quadrature": "auto", "gatol": -1.0}, "atol"),
    ({"quadrature": "auto", "max_nodes": 0}, "max_nodes"),
    ({"quadrature": "auto", "max_nodes": 2.5}, "max_nodes"),
    ({"quadrature": "auto", "strict": 1}, "strict"),
    ({"quadrature": "interval", "strict": True}, "strict does not apply"),
    ({"quadrature": "interval", "gatol": 1e-3}, "gatol does not apply"),
    ({"quadrature": "step", "gtol": 0.1}, "gtol does not apply"),
    ({"quadrature": "simpson"}, "quadrature must be one of"),
    ({"quadrature": AutoRule(), "gtol": 1e-3}, "cannot be combined with a rule object"),
    ({"quadrature": "interval", "gtol": 1e300}, None),  # a huge C is the cap, not an overflow
])
@pytest.mark.parametrize("twin", ["gqref", "gqtorch"])
def test_bad_quadrature_arguments_name_the_argument(kwargs, match, twin):
    problem = _budget_problem()
    if twin == "gqref":
        call = lambda: gqref.gradient(problem.field, problem.y0, problem.t, problem.params,  # noqa: E731
                                      np.ones((3, 2)), **kwargs)
    else:
        from tests.test_gqtorch_quadrature import Twin

        def call():
            ys = gqtorch.odeint_adjoint_gq(Twin(problem), torch.tensor(problem.y0, dtype=F64),
                                           torch.tensor(problem.t), **kwargs)
            ys.sum().backward()
    if match is None:
        call()
    else:
        with pytest.raises(InputError, match=match):
            call()


# --- reusing a check across calls (training) ---------------------------------------------------------------------


def _reuse_problem():
    return pr.mlp(6, state_dim=2, t=np.linspace(0, 1, 4))


def _python_field(problem):
    return gqref.VectorField(*(getattr(problem.field, r).py_func for r in ("f", "vjp_t", "vjp_y", "vjp_p")))


def test_a_check_with_margin_is_reused_then_repeated():
    problem = _reuse_problem()
    field, dl_dy = _python_field(problem), np.ones((4, 2))
    kwargs = {"rtol": 1e-3, "atol": 1e-3, "quadrature": AutoRule(recheck_every=4)}
    first = gqref.gradient(field, problem.y0, problem.t, problem.params, dl_dy, **kwargs)
    d = first.diagnostics
    assert d.quadrature_checked and d.quadrature_met
    # the check passed in its first round (else nothing is reused, and the test would be moot); a reused call is
    # the paper's rule on the checked counts, here 2 per interval (the paper's C = 2/NFE·(number of intervals))
    assert d.nodes == (5, 5, 5)
    paper = gqref.gradient(field, problem.y0, problem.t, problem.params, dl_dy,
                           quadrature=IntervalRule(C=2 * 3 / d.nfe_forward, warm_start=True), rtol=1e-3, atol=1e-3)
    assert paper.diagnostics.nodes == (2, 2, 2)
    checked = [True]
    for _ in range(8):
        g = gqref.gradient(field, problem.y0, problem.t, problem.params, dl_dy, **kwargs)
        checked.append(g.diagnostics.quadrature_checked)
        if not g.diagnostics.quadrature_checked:  # a reused call is the paper's rule (warm-started), bit for bit
            assert g.diagnostics.nodes == paper.diagnostics.nodes and g.diagnostics.quadrature_error is None
            assert np.array_equal(g.dL_dparams, paper.dL_dparams) and np.array_equal(g.dL_dt, paper.dL_dt)
    assert checked == [True, False, False, False, True, False, False, False, True]
    # other settings or other output times are checked afresh
    other = gqref.gradient(field, problem.y0, problem.t, problem.params, dl_dy, rtol=1e-3, atol=1e-3,
                           quadrature=AutoRule(recheck_every=4, rtol=1e-2))
    assert other.diagnostics.quadrature_checked
    moved = gqref.gradient(field, problem.y0, problem.t * 1.01, problem.params, dl_dy, **kwargs)
    assert moved.diagnostics.quadrature_checked


def test_a_check_is_not_reused_once_the_parameters_change():
    # a margin does not cover training: in g1d (Adam, lr 0.01) the paper's nodes went from 5e-7 off at a passed
    # check to 1.7e-3 off (tolerance 1e-3) nine steps later. Another state at the same parameters may reuse it.
    problem = _reuse_problem()
    field, dl_dy = _python_field(problem), np.ones((4, 2))
    kwargs = {"rtol": 1e-3, "atol": 1e-3, "quadrature": AutoRule(recheck_every=4)}
    params = problem.params.copy()
    assert gqref.gradient(field, problem.y0, problem.t, params, dl_dy, **kwargs).diagnostics.quadrature_checked
    batch = gqref.gradient(field, problem.y0 * 0.9, problem.t, params, dl_dy, **kwargs)
    assert not batch.diagnostics.quadrature_checked
    params[0] = np.nextafter(params[0], np.inf)  # one ulp of one parameter, changed in place (as an optimizer does)
    stepped = gqref.gradient(field, problem.y0, problem.t, params, dl_dy, **kwargs)
    assert stepped.diagnostics.quadrature_checked


def test_every_call_is_checked_when_asked_or_when_the_papers_nodes_fall_short():
    problem = _reuse_problem()
    field, dl_dy = _python_field(problem), np.ones((4, 2))
    for _ in range(3):
        g = gqref.gradient(field, problem.y0, problem.t, problem.params, dl_dy, rtol=1e-3, atol=1e-3,
                           quadrature=AutoRule(recheck_every=1))
        assert g.diagnostics.quadrature_checked
    spiral = pr.cubic_spiral(t=np.linspace(0.0, 10.0, 4))
    field = _python_field(spiral)
    for _ in range(3):  # the paper's nodes need refinement here: no reuse
        g = gqref.gradient(field, spiral.y0, spiral.t, spiral.params, np.ones((4, 2)))
        assert g.diagnostics.quadrature_checked and sum(g.diagnostics.nodes) > len(spiral.t) * 3


def test_torch_twin_reuses_its_checks_alike():
    from tests.test_gqtorch_quadrature import Twin

    problem = _reuse_problem()
    func = Twin(problem)
    y0, t = torch.tensor(problem.y0, dtype=F64), torch.tensor(problem.t)
    checked = []
    for _ in range(5):
        ys, stats = gqtorch.odeint_adjoint_gq(func, y0, t, rtol=1e-3, atol=1e-3, return_stats=True,
                                              quadrature=AutoRule(recheck_every=4))
        ys.sum().backward()
        checked.append(stats.quadrature_checked)
    assert checked == [True, False, False, False, True]
    # an optimizer's in-place update ends the reuse (the parameters' version counters move); zero_grad does not
    optimizer = torch.optim.SGD(func.parameters(), lr=1e-6)
    for _ in range(3):
        ys, stats = gqtorch.odeint_adjoint_gq(func, y0, t, rtol=1e-3, atol=1e-3, return_stats=True,
                                              quadrature=AutoRule(recheck_every=4))
        ys.sum().backward()
        checked.append(stats.quadrature_checked)
        optimizer.step()
        optimizer.zero_grad()
    assert checked[5:] == [False, True, True]


@pytest.mark.parametrize("fields, match", [
    ({"recheck_every": 0}, "recheck_every"), ({"recheck_every": 1.5}, "recheck_every"),
    ({"C": -0.1}, r"AutoRule: C"), ({"strict": "yes"}, "strict"), ({"rtol": np.inf}, "rtol"),
])
def test_rule_fields_are_validated_where_they_are_set(fields, match):
    with pytest.raises(InputError, match=match):
        AutoRule(**fields)


@pytest.mark.parametrize("rule", [AutoRule, IntervalRule, StepRule, AdaptiveRule])
def test_warm_start_is_a_flag_on_every_rule(rule):
    """Off only for the paper's rule (its backward solves stay the original implementation's)."""
    assert rule().warm_start is (rule is not IntervalRule)
    with pytest.raises(InputError, match=f"{rule.__name__}: warm_start"):
        rule(warm_start="yes")
