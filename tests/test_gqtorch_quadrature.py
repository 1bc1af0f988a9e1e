"""gqtorch's error-controlled GQ: odeint_adjoint_gq(quadrature="step" | "adaptive") against gqref's, the
torch refinement loop against gqref's, the recorded dense output, "interval" unchanged, bad arguments, and a smoke
run of ``validation/bench/quadrature.py``.

Twins of gqref problems are built as in test_gqtorch_gradients; most runs use an ``nn.Module`` twin (the batched
per-node VJP path), a few the plain closure (the per-node fallback). gqref runs its fields' ``.py_func`` versions
(the compiled kernels' arithmetic bit for bit, see test_compiled_vs_python) so that no kernel compiles here.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gqref
import gqtorch
from gqref import problems as pr
from gqref.adaptive import AdaptiveOptions
from gqref.controller import CONTROLLERS
from gqref.errors import InputError, NonFiniteFieldError
from gqref.refinement import QuadratureLimitError
from gqref.refinement import integrate_panels as gqref_integrate_panels
from gqref.solve import output_times
from gqref.strategies import cotangents, tolerances
from gqtorch.adaptive import integrate_adaptive as solver_loop
from gqtorch.controller import as_norm
from gqtorch.dense import dense_output
from gqtorch.refinement import integrate_panels
from gqtorch.tableau import torch_tableau
from tests.test_gqtorch_solve import problems_with_torch_fields, relative_error, torch_field

torch.set_num_threads(1)
F64 = torch.float64
TWIN = 1e-9  # same steps, same nodes: only summation order differs
# Perturbing gtol by this much moves no decision unless one sits within rounding of its threshold ("borderline").
NUDGE = 1e-7
ESTIMATE_FACTOR = 2.0  # the twin's error estimate vs gqref's (same panels: equal up to roundoff in K − G)


class Twin(torch.nn.Module):
    """A gqref problem's torch field as an ``nn.Module`` owning its parameters (so per-node VJPs run batched);
    counts its calls."""

    def __init__(self, problem: pr.Problem, dtype=F64):
        super().__init__()
        self.problem = problem
        self.params = torch.nn.Parameter(torch.tensor(problem.params, dtype=dtype))
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return torch_field(self.problem, self.params)(t, y)


def run(problem, dl_dy, *, module=True, t_grad=True, dtype=F64, **kwargs):
    """(dL/dy0, dL/dparams, dL/dt, stats, func calls during backward) on the problem's torch twin."""
    y0 = torch.tensor(problem.y0, dtype=dtype, requires_grad=True)
    t = torch.tensor(problem.t, requires_grad=t_grad)
    if module:
        func = Twin(problem, dtype)
        params, extra = func.params, {}
    else:
        params = torch.tensor(problem.params, dtype=dtype, requires_grad=True)
        func, extra = torch_field(problem, params), {"adjoint_params": (params,)}
    ys, stats = gqtorch.odeint_adjoint_gq(func, y0, t, return_stats=True, **extra, **kwargs)
    before = getattr(func, "calls", 0)
    (torch.from_numpy(np.asarray(dl_dy)).to(dtype) * ys).sum().backward()
    calls = getattr(func, "calls", 0) - before
    return (y0.grad.double().numpy(), params.grad.double().numpy(), t.grad.numpy() if t_grad else None, stats,
            calls)


def python_field(field: gqref.VectorField) -> gqref.VectorField:
    return gqref.VectorField(*(getattr(field, r).py_func for r in ("f", "vjp_t", "vjp_y", "vjp_p")))


def gqref_twin(problem, dl_dy, nodes, **kwargs):
    """gqref's gradient with the same options; if its node counts differ from ``nodes``, the same with gtol nudged
    by ±NUDGE (relative): a decision that flips under such a nudge was borderline, and the nudged run is the twin."""
    field = python_field(problem.field)
    ref = gqref.gradient(field, problem.y0, problem.t, problem.params, dl_dy, method="gq", **kwargs)
    if ref.diagnostics.nodes == nodes or kwargs.get("quadrature") not in ("adaptive", "auto"):
        return ref
    gtol = kwargs.pop("gtol", None) or kwargs.get("adjoint_rtol") or kwargs["rtol"]
    for factor in (1 - NUDGE, 1 + NUDGE):
        nudged = gqref.gradient(field, problem.y0, problem.t, problem.params, dl_dy, method="gq",
                                gtol=gtol * factor, **kwargs)
        if nudged.diagnostics.nodes == nodes:
            return nudged
    return ref  # not borderline: the node assertion below reports the difference


def assert_twin(ours, ref, t_grad=True, times=True):
    dy0, dp, dt, stats, _ = ours
    d = ref.diagnostics
    assert stats.nodes == d.nodes
    assert (stats.nfe_backward, stats.steps_backward) == (d.nfe_backward, d.steps_backward)
    assert relative_error(dy0, ref.dL_dy0) <= TWIN
    assert relative_error(dp, ref.dL_dparams) <= TWIN
    if t_grad:
        assert relative_error(dt, ref.dL_dt) <= TWIN
    assert stats.quadrature == d.quadrature
    assert [len(ts) for ts in stats.node_times] == list(stats.nodes)
    # Same panels, so the same node times up to the step sizes' differences. Only where the steps are not steered
    # by roundoff: at tolerances near it (hypothesis draws rtol down to 1e-10) the error estimate is noise and the
    # step ends of the twins drift apart (seen: 4e-7 relative) while the gradients still agree.
    span = np.ptp(d.forward.ts)
    for ours_t, ref_t in zip(stats.node_times, d.node_times) if times else ():
        assert np.allclose(np.sort(ours_t), np.sort(ref_t), rtol=0.0, atol=1e-9 * span)
    if d.quadrature in ("adaptive", "auto"):
        check_estimate(stats.quadrature_error, d.quadrature_error, np.max(np.abs(ref.dL_dparams), initial=0.0))
        if t_grad:
            check_estimate(stats.quadrature_error_dt0, d.quadrature_error_dt0, abs(ref.dL_dt[0]))
    else:
        assert stats.quadrature_error is None and stats.quadrature_error_dt0 is None


def check_estimate(ours, theirs, scale):
    """Equal within ESTIMATE_FACTOR, unless both are roundoff (E = |Σ(K − G)| is a difference of sums)."""
    floor = 1e-12 * max(scale, 1e-300)
    if max(ours, theirs) > floor:
        assert theirs / ESTIMATE_FACTOR <= ours <= ESTIMATE_FACTOR * theirs, (ours, theirs)


# --- parity with gqref --------------------------------------------------------------------------------------------


@settings(max_examples=12)
@given(data=st.data(), problem=problems_with_torch_fields)
def test_step_rule_equals_gqref(data, problem):
    rtol, atol = data.draw(tolerances)
    t_grad = data.draw(st.booleans())
    dl_dy = data.draw(cotangents(problem))
    ours = run(problem, dl_dy, t_grad=t_grad, quadrature="step", rtol=rtol, atol=atol)
    ref = gqref_twin(problem, dl_dy, ours[3].nodes, quadrature="step", rtol=rtol, atol=atol, t_grad=t_grad)
    assert_twin(ours, ref, t_grad, times=False)
    assert ours[3].batched_nodes is True and sum(ours[3].nodes) == 3 * ours[3].steps_backward


@settings(max_examples=15)
@given(data=st.data(), problem=problems_with_torch_fields)
def test_adaptive_equals_gqref(data, problem):
    rtol, atol = data.draw(tolerances)
    gtol = data.draw(st.sampled_from([None, 1e-3, 1e-6, 1e-9]))
    gatol = data.draw(st.sampled_from([None, 0.0, 1e-8]))
    t_grad = data.draw(st.booleans())
    dl_dy = data.draw(cotangents(problem))
    options = {k: v for k, v in (("gtol", gtol), ("gatol", gatol)) if v is not None}
    ours = run(problem, dl_dy, t_grad=t_grad, quadrature="adaptive", rtol=rtol, atol=atol, **options)
    ref = gqref_twin(problem, dl_dy, ours[3].nodes, quadrature="adaptive", rtol=rtol, atol=atol, t_grad=t_grad,
                     **options)
    assert_twin(ours, ref, t_grad, times=False)
    assert ours[3].batched_nodes is True


NAMED = [pr.linear(), pr.mlp(12, state_dim=3, time_dependent=True), pr.mlp(6, state_dim=2, t=np.linspace(0, 2, 3)),
         pr.mlp(8, state_dim=2, time_dependent=True, t=[1.5, 0.9, 0.2, -0.5])]


@pytest.mark.parametrize("problem", NAMED, ids=["linear", "mlp_t", "mlp", "mlp_t_decreasing"])
@pytest.mark.parametrize("quadrature, options", [("step", {}), ("adaptive", {}), ("adaptive", {"gtol": 1e-10}),
                                                 ("adaptive", {"gtol": 1e-4, "gatol": 1e-6})])
def test_named_problems_equal_gqref(problem, quadrature, options):
    dl_dy = np.random.default_rng(1).standard_normal((len(problem.t), problem.state_dim))
    kwargs = {"quadrature": quadrature, "rtol": 1e-6, "atol": 1e-7, "adjoint_rtol": 1e-5, **options}
    ours = run(problem, dl_dy, **kwargs)
    assert_twin(ours, gqref_twin(problem, dl_dy, ours[3].nodes, **kwargs))
    # the plain closure (per-node fallback) computes the same rows node by node
    loop = run(problem, dl_dy, module=False, **kwargs)
    assert loop[3].batched_nodes is (quadrature == "step") and loop[3].nodes == ours[3].nodes
    for x, y in zip(loop[:3], ours[:3]):
        assert relative_error(x, y) <= 1e-12


def test_refinement_twin_on_an_analytic_integrand():
    """The torch loop makes gqref's decisions on the same integrand, with one integrand call per round."""

    def numpy_integrand(groups, t):
        t = t - (groups == 1)
        return np.stack([np.sin(3 * t), np.exp(t), 1 / (1 + 25 * t**2)], axis=1)

    calls = []

    def torch_integrand(groups, t):
        calls.append(t.size)
        return torch.from_numpy(numpy_integrand(groups, t))

    panels = [(0, 0.7, -1.3), (1, 0.2, 1.9), (1, 1.9, 2.4)]
    for rtol in (1e-3, 1e-8, 1e-13):
        calls.clear()
        blocks = [slice(0, 2), slice(2, 3)]
        ref = gqref_integrate_panels(numpy_integrand, panels, n_groups=2, dimension=3, rtol=rtol, atol=0.0,
                                       blocks=blocks)
        ours = integrate_panels(torch_integrand, panels, n_groups=2, dimension=3, rtol=rtol, atol=0.0,
                                  blocks=blocks, dtype=F64, device="cpu")
        assert (ours.nodes, ours.panels, ours.rounds) == (ref.nodes, ref.panels, ref.rounds)
        assert len(calls) == ours.rounds > 1 and sum(calls) == sum(ours.nodes)
        for g in range(2):
            assert np.array_equal(ours.node_times[g], ref.node_times[g])  # same panels: same times, bit for bit
        assert relative_error(ours.integral.numpy(), ref.integral) <= 1e-14
        for x, y in ((ours.error, ref.error), (ours.roundoff, ref.roundoff), (ours.error_sum, ref.error_sum)):
            assert np.allclose(x.numpy(), y, rtol=1e-6, atol=1e-15)
    with pytest.raises(QuadratureLimitError, match="max_nodes = 50"):
        integrate_panels(lambda g, t: torch.from_numpy(np.abs(t)[:, None] ** 0.5), [(0, -1.0, 1.3)], n_groups=1,
                           dimension=1, rtol=1e-14, atol=0.0, max_refinement_nodes=50, dtype=F64, device="cpu")
    with pytest.raises(NonFiniteFieldError, match="not finite"):
        integrate_panels(lambda g, t: torch.from_numpy(np.where(t > 0, 1.0, np.nan)[:, None]), [(0, -1.0, 1.0)],
                           n_groups=1, dimension=1, rtol=1e-6, atol=0.0, dtype=F64, device="cpu")


def test_adaptive_refinement_is_one_batched_call_per_round():
    """A field whose G3-per-step is far from gtol (gqref's refinement example): several rounds, each one func call
    for all its nodes; the closure twin calls func once per node."""
    base = pr.mlp(width=8, seed=0, state_dim=3, time_dependent=True)
    problem = pr.mlp(width=8, state_dim=3, time_dependent=True, weights=3 * base.params, y0=base.y0, t=[0.0, 2.0])
    kwargs = {"quadrature": "adaptive", "rtol": 1e-4, "atol": 1e-4}
    counts = []
    for gtol in (1e-6, 1e-10):
        ours = run(problem, np.ones((2, 3)), gtol=gtol, **kwargs)
        stats = ours[3]
        solver_calls = stats.nfe_backward - sum(stats.nodes)  # the backward solve and dL/dt's f(t_1, y_1)
        rounds = ours[4] - solver_calls
        assert stats.batched_nodes is True and 2 <= rounds <= 8 and sum(stats.nodes) > 7 * stats.steps_backward
        assert_twin(ours, gqref_twin(problem, np.ones((2, 3)), stats.nodes, gtol=gtol, **kwargs))
        counts.append(sum(stats.nodes))
    assert counts[0] < counts[1]


# --- the rules among themselves -----------------------------------------------------------------------------------


def test_interval_rule_defaults_are_the_papers():
    """quadrature="interval" alone is C = 0.1 and the cap 64; the default rule is now "auto"."""
    problem = pr.mlp(8, state_dim=2, time_dependent=True, t=[0.0, 0.7, 1.5])
    dl_dy = np.random.default_rng(5).standard_normal((3, 2))
    plain = run(problem, dl_dy, rtol=1e-6, atol=1e-7, quadrature="interval")
    explicit = run(problem, dl_dy, gtol=0.1, rtol=1e-6, atol=1e-7, quadrature="interval", max_nodes=64)
    for x, y in zip(plain[:3], explicit[:3]):
        assert np.array_equal(x, y)
    for stats in (plain[3], explicit[3]):
        assert stats.quadrature == "interval" and stats.quadrature_error is None and stats.nodes == plain[3].nodes
        assert [len(ts) for ts in stats.node_times] == list(stats.nodes)
    assert run(problem, dl_dy, rtol=1e-6, atol=1e-7)[3].quadrature == "auto"


@pytest.mark.parametrize("quadrature", ["step", "adaptive", "auto"])
def test_backward_solves_are_the_interval_rules(quadrature):
    """Output times never change the steps: dL/dy0 and dL/dt[1:] are the (warm-started) interval rule's, bit for
    bit."""
    problem = pr.mlp(6, state_dim=3, time_dependent=True, t=[0.0, 0.5, 1.2])
    dl_dy = np.random.default_rng(6).standard_normal((3, 3))
    interval = run(problem, dl_dy, rtol=1e-6, atol=1e-7, quadrature=gqref.IntervalRule(warm_start=True))
    ours = run(problem, dl_dy, rtol=1e-6, atol=1e-7, quadrature=quadrature)
    assert np.array_equal(ours[0], interval[0]) and np.array_equal(ours[2][1:], interval[2][1:])
    assert ours[3].steps_backward == interval[3].steps_backward


def test_warm_start_is_the_forward_last_step_as_first_step():
    """A warm-started backward solve is the cold one given the forward solve's last accepted step as
    ``adjoint_options["first_step"]``: same gradients bit for bit, and the probe's evaluation saved."""
    problem = pr.mlp(6, state_dim=3, time_dependent=True, t=[0.0, 1.2])
    dl_dy = np.random.default_rng(7).standard_normal((2, 3))
    twin = Twin(problem, F64)
    _, forward = gqtorch.odeint(twin, torch.tensor(problem.y0), torch.tensor(problem.t), rtol=1e-6, atol=1e-7,
                                return_stats=True)
    reference = gqref.solve(problem.field, problem.y0, problem.t, problem.params, rtol=1e-6, atol=1e-7)
    # the twins' forward steps agree to roundoff (rtol 1e-6 is far above it, so the controller is not steered by it)
    assert reference.stats.last_step == abs(reference.steps.hs[-1])
    assert math.isclose(forward.last_step, reference.stats.last_step, rel_tol=TWIN)
    kwargs = {"rtol": 1e-6, "atol": 1e-7}
    warm = run(problem, dl_dy, quadrature=gqref.IntervalRule(warm_start=True), **kwargs)
    seeded = run(problem, dl_dy, quadrature="interval", adjoint_options={"first_step": forward.last_step}, **kwargs)
    for x, y in zip(warm[:3], seeded[:3]):
        assert np.array_equal(x, y)
    assert warm[3].nfe_backward == seeded[3].nfe_backward and warm[3].nodes == seeded[3].nodes
    assert warm[3].rule.warm_start and not seeded[3].rule.warm_start


class Decay(torch.nn.Module):
    """y' = −θ·y, recording each attempted backward step as (t0, dt)."""

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(0.7, dtype=F64))
        self.attempts = []

    def forward(self, t, y):
        return -self.theta * y

    def callback_step_adjoint(self, t0, y0, dt):
        self.attempts.append((float(t0), abs(float(dt))))


def test_warm_start_is_at_most_the_interval():
    """A step carried from a long interval into a short one is cut to the short one's length (steps are never cut
    at the last output, so an uncut one would evaluate the field far before t_0)."""
    func = Decay()
    t = torch.tensor([0.0, 1e-3, 2.0], dtype=F64)
    ys = gqtorch.odeint_adjoint_gq(func, torch.tensor([1.0, 2.0], dtype=F64), t, rtol=1e-6, atol=1e-8)
    ys.sum().backward()
    long_steps = [dt for t0, dt in func.attempts if t0 > 1e-3]
    first_short = next(dt for t0, dt in func.attempts if t0 == 1e-3)
    assert long_steps[-1] > 1e-3 and first_short == 1e-3


@pytest.mark.parametrize("cut", ["step_t", "jump_t"])
def test_last_step_is_the_last_uncut_one(cut):
    """A step cut short to end on a step_t/jump_t time says little about the step size the solve wants, so
    ``last_step`` (where a warm start begins) is the last step not cut; the same in both twins."""
    problem = pr.mlp(6, state_dim=3, time_dependent=True, t=[0.0, 1.2])
    reference = gqref.solve(problem.field, problem.y0, problem.t, problem.params, rtol=1e-6, atol=1e-7,
                            options={cut: [1.2]})
    assert reference.steps.ts[-1] == 1.2  # the last step was cut to end on the prescribed time
    assert reference.stats.last_step == abs(reference.steps.hs[-2]) != abs(reference.steps.hs[-1])
    _, ours = gqtorch.odeint(Twin(problem, F64), torch.tensor(problem.y0), torch.tensor(problem.t), rtol=1e-6,
                             atol=1e-7, options={cut: torch.tensor([1.2], dtype=F64)}, return_stats=True)
    assert math.isclose(ours.last_step, reference.stats.last_step, rel_tol=TWIN)


def test_adaptive_defaults_and_accuracy():
    """gtol defaults to the adjoint rtol; at a tight adjoint tolerance the gradient meets it against the truth."""
    a_val, z0_val, big_t = 0.2, 10.0, 10.0  # the paper's toy dz/dt = a·z, L = z(T)²

    def toy(t_grad=True, **kwargs):
        a = torch.tensor(a_val, dtype=F64, requires_grad=True)
        z0 = torch.tensor([z0_val], dtype=F64, requires_grad=True)
        t = torch.tensor([0.0, big_t], dtype=F64, requires_grad=t_grad)
        ys, stats = gqtorch.odeint_adjoint_gq(lambda t, z: a * z, z0, t, adjoint_params=(a,), return_stats=True,
                                              quadrature="adaptive", **kwargs)
        (ys[-1] ** 2).sum().backward()
        return [z0.grad.item(), a.grad.item()] + (t.grad.tolist() if t_grad else []), stats

    default, stats = toy(rtol=1e-10, atol=1e-10, adjoint_rtol=1e-8)
    explicit, _ = toy(rtol=1e-10, atol=1e-10, adjoint_rtol=1e-8, gtol=1e-8, gatol=0.0, max_nodes=10_000)
    assert default == explicit
    growth = math.exp(2 * a_val * big_t)
    truth = [2 * z0_val * growth, 2 * big_t * z0_val**2 * growth, -2 * a_val * z0_val**2 * growth,
             2 * a_val * z0_val**2 * growth]
    assert stats.quadrature_error <= 1e-8 * abs(default[1])
    assert relative_error(default, truth) <= 1e-6
    _, no_time = toy(t_grad=False)
    assert no_time.quadrature_error_dt0 is None and no_time.quadrature_error is not None


@pytest.mark.parametrize("quadrature", ["step", "adaptive"])
def test_tuple_state_and_no_parameters(quadrature):
    """A tuple state without parameters: only the time integral (or, without t_grad, nothing) is integrated."""

    def field(t, y):
        a, b = y
        return -a * torch.cos(t), torch.sin(3 * t) * b

    y0_data = (torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[0.3], [-1.2]], dtype=F64))
    grads = {}
    for rule in (quadrature, "direct"):
        y0 = tuple(b.clone().requires_grad_() for b in y0_data)
        t = torch.linspace(0.0, 2.0, 3, dtype=F64).requires_grad_()
        if rule == "direct":
            ys = gqtorch.odeint(field, y0, t, rtol=1e-11, atol=1e-12)
        else:
            ys, stats = gqtorch.odeint_adjoint_gq(field, y0, t, rtol=1e-11, atol=1e-12, adjoint_params=(),
                                                  quadrature=quadrature, return_stats=True)
        (ys[0].square().sum() + ys[1].sin().sum()).backward()
        grads[rule] = [y0[0].grad, y0[1].grad, t.grad]
    # both converge to the true gradient as tol → 0; the frozen-step time derivative of direct backprop the slowest
    for ours, theirs, bound in zip(grads[quadrature], grads["direct"], (1e-8, 1e-8, 1e-7)):
        assert relative_error(ours.numpy(), theirs.numpy()) <= bound
    assert stats.batched_nodes is True and len(stats.nodes) == 2
    y0 = y0_data[0].clone().requires_grad_()  # no parameters, no time gradient: no nodes at all
    ys, stats = gqtorch.odeint_adjoint_gq(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                          adjoint_params=(), quadrature=quadrature, return_stats=True)
    ys[-1].sum().backward()
    assert stats.nodes == (0,) and stats.batched_nodes is None
    assert torch.allclose(y0.grad, torch.full((2,), math.exp(-1.0), dtype=F64))


def test_float32_uses_its_own_roundoff_floor():
    """In float32 a gtol below float32's resolution stops at the float32 roundoff floor, not at max_nodes."""
    problem = pr.mlp(8, state_dim=2, time_dependent=True)
    dl_dy = np.random.default_rng(4).standard_normal((len(problem.t), 2))
    exact = run(problem, dl_dy, rtol=1e-10, atol=1e-10, quadrature="adaptive")
    ours = run(problem, dl_dy, rtol=1e-6, atol=1e-7, quadrature="adaptive", gtol=1e-12, max_nodes=500,
               dtype=torch.float32)
    assert relative_error(ours[0], exact[0]) <= 1e-4 and relative_error(ours[1], exact[1]) <= 1e-4


def test_nonfinite_integrand_raises():
    """∂f/∂p = y/(2√p) is infinite at p = 0 while the solve itself (f = √p·y = 0) is finite."""
    p = torch.zeros(1, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64)
    ys = gqtorch.odeint_adjoint_gq(lambda t, y: torch.sqrt(p) * y, y0, torch.tensor([0.0, 1.0], dtype=F64),
                                   adjoint_params=(p,), quadrature="adaptive")
    with pytest.raises(NonFiniteFieldError, match="not finite"):
        ys.sum().backward()


# --- the recorded dense output ------------------------------------------------------------------------------------


def test_recording_leaves_the_solve_unchanged_and_reproduces_it():
    problem = pr.mlp(6, state_dim=2, time_dependent=True)
    field = torch_field(problem)
    y0 = torch.tensor(problem.y0)
    s_out, direction = output_times(np.linspace(1.5, -0.5, 7))
    control = CONTROLLERS["torchdiffeq"]
    common = (y0, s_out.tolist(), direction, 1e-6, torch.full((2,), 1e-7, dtype=F64), as_norm(None, None, None, F64,
              "cpu"), torch_tableau(control.tableau, F64, "cpu"), AdaptiveOptions(max_num_steps=10_000))
    with torch.no_grad():
        plain, plain_counts = solver_loop(field, *common)
        record = []
        recorded, recorded_counts = solver_loop(field, *common, record=record)
    assert plain_counts == recorded_counts
    assert torch.equal(plain, recorded) and len(record) == plain_counts.n_accepted
    dense = dense_output(record, direction)
    assert np.array_equal(dense.starts[1:], [end for _, end, _ in record])
    values = dense.evaluate(direction * s_out)
    assert float((values - plain).abs().max()) <= 1e-14 * float(plain.abs().max())
    with pytest.raises(InputError, match="outside"):
        dense.evaluate([10.0])


# --- arguments ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"quadrature": "simpson"}, InputError, "quadrature must be one of"),
    ({"quadrature": 3}, InputError, "quadrature must be one of"),
    ({"quadrature": "step", "gtol": 1e-6}, InputError, "gtol does not apply to quadrature='step'"),
    ({"quadrature": "step", "gatol": 1e-6}, InputError, "gatol does not apply to quadrature='step'"),
    ({"quadrature": "step", "max_nodes": 10}, InputError, "max_nodes does not apply"),
    ({"quadrature": "interval", "gatol": 1e-9}, InputError, "gatol does not apply to quadrature='interval'"),
    ({"quadrature": "adaptive", "gatol": -1.0}, InputError, r"gatol\) must be a non-negative"),
    ({"quadrature": "adaptive", "gatol": math.nan}, InputError, r"gatol\) must be a non-negative"),
    ({"quadrature": "adaptive", "gtol": 0.0}, InputError, r"gtol\) must be a positive"),
    ({"quadrature": "adaptive", "max_nodes": 0}, InputError, "max_nodes must be a positive integer"),
    ({"quadrature": "adaptive", "max_nodes": 7, "gtol": 1e-13}, QuadratureLimitError, "max_nodes = 7"),
])
def test_bad_quadrature_arguments(change, error, match):
    problem = pr.linear(t=[0.0, 2.0])
    with pytest.raises(error, match=match):
        run(problem, np.ones((2, 2)), **change)


def test_benchmark_smoke(tmp_path):
    from validation.bench import quadrature as bench_quadrature

    out = tmp_path / "bench_quadrature.json"
    assert bench_quadrature.run(repeats=1, quick=True, out=out) == 0
    assert out.exists() and out.with_suffix(".png").exists()
