"""Error-controlled GQ: Gauß–Kronrod rules, the backward dense output, adaptive refinement, and the three
quadrature rules of gqref.gradient(method="gq") — "interval" (the paper's, frozen bit for bit), "step", "adaptive".

Most problems run through their fields' ``.py_func`` versions: the same arithmetic as the compiled kernels (bit for
bit, see test_compiled_vs_python) without numba compiling a kernel per field, which would dominate this file's time.
One test runs a compiled field to exercise the compiled dense-output replay.
"""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import gqref
from gqref import problems as P
from gqref import strategies as S
from gqref.augmented import backward_dynamics
from gqref.controller import ErrorNorm
from gqref.dense import dense_output
from gqref.errors import InputError, NonFiniteFieldError
from gqref.gq import gq_gradient
from gqref.kronrod import gauss_kronrod, kronrod_degree
from gqref.quadrature import gauss_legendre, node_count
from gqref.refinement import QuadratureLimitError, integrate_panels

EPS = np.finfo(float).eps
GTOLS = (1e-4, 1e-7, 1e-10)  # loose, near the solver's tolerance, far below it (refinement must work)
SOLVER_TOL = 1e-6
# The estimate E = |K − G| is within this factor of the actual quadrature error |G − exact| (both directions):
# on a panel inside one backward step the integrand is smooth and K7 is ~h⁶ more accurate than G3, so E is G's
# error up to K's (measured ratios 0.9–1.1 on the problem zoo; 10 leaves room for a Kronrod error of the same size).
ESTIMATE_FACTOR = 10.0
# The actual error may exceed the tolerance by K's own error at most (see above): a factor 2 covers it.
TOLERANCE_SLACK = 2.0
# Below this (relative to the gradient's size) errors are summation roundoff over up to ~10⁴ nodes, not quadrature.
ROUNDOFF = 1e-12


def python_field(field: gqref.VectorField) -> gqref.VectorField:
    return gqref.VectorField(*(getattr(field, r).py_func for r in ("f", "vjp_t", "vjp_y", "vjp_p")))


def norm(x) -> float:
    return float(np.max(np.abs(x), initial=0.0))


# --- Gauß–Kronrod rules ------------------------------------------------------------------------------------------


def exact_integral(coeffs, a, b):
    powers = np.arange(1, len(coeffs) + 1)
    return np.sum(np.asarray(coeffs) * (b**powers - a**powers) / powers)


@given(n=st.integers(1, 40), data=st.data())
def test_kronrod_exact_up_to_its_degree(n, data):
    degree = data.draw(st.integers(0, kronrod_degree(n)))
    coeffs = np.array(data.draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=degree + 1,
                                         max_size=degree + 1)))
    x, wk, wg = gauss_kronrod(n)
    approx = np.sum(wk * np.polynomial.polynomial.polyval(x, coeffs))
    # Roundoff as in test_quadrature's Gauss test: Horner errs by ≤ 2·deg·ε·Σ|c| per node, node errors of a few
    # ulps move p by ≤ deg²·ε·Σ|c| (Markov), the weights sum to 2; plus the (2n+1)-term sum.
    size = np.sum(np.abs(coeffs))
    bound = 2 * (2 * degree + 4 * degree**2 + 2 * n + 1) * EPS * size + EPS
    assert abs(approx - exact_integral(coeffs, -1.0, 1.0)) <= bound
    if degree <= 2 * n - 1:  # the embedded Gauß rule, on the same nodes
        assert abs(np.sum(wg * np.polynomial.polynomial.polyval(x, coeffs)) - exact_integral(coeffs, -1, 1)) <= bound


@pytest.mark.parametrize("n", range(1, 21))
def test_kronrod_not_exact_beyond_its_degree(n):
    x, wk, _ = gauss_kronrod(n)
    # the next degree is even (odd ones integrate to 0 by symmetry); the defect shrinks like ~(1/4)^n
    k = kronrod_degree(n) + 1 + kronrod_degree(n) % 2
    assert abs(np.sum(wk * x**k) - 2 / (k + 1)) > 1e-3 * 0.25**n


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 25])
def test_kronrod_structure(n):
    x, wk, wg = gauss_kronrod(n)
    gx, gw = gauss_legendre(n)
    assert x.size == 2 * n + 1 and np.all(np.diff(x) > 0) and np.all(wk > 0)
    assert np.array_equal(x[1::2], gx) and np.array_equal(wg[1::2], gw) and np.all(wg[::2] == 0)  # G is GL, exactly
    assert np.array_equal(x, -x[::-1]) and np.array_equal(wk, wk[::-1])
    assert abs(np.sum(wk) - 2) <= 4 * n * EPS
    xm, wkm, wgm = gauss_kronrod(n, 3.0, 1.0)  # mapped, reversed: nodes from 3 towards 1, weights positive
    assert np.all(np.diff(xm) < 0) and np.allclose(wkm, wk) and np.allclose(wgm, wg)


@pytest.mark.parametrize("points", [15, 21])
def test_kronrod_matches_quadpack_tables(points):
    rules = pytest.importorskip("scipy.integrate._rules")  # scipy's hard-coded QUADPACK GK15/GK21 (private)
    table = rules.GaussKronrodQuadrature(points)
    nodes, weights = (np.asarray(v, dtype=float).ravel() for v in table.nodes_and_weights)
    order = np.argsort(nodes)
    x, wk, _ = gauss_kronrod((points - 1) // 2)
    assert np.max(np.abs(x - nodes[order])) <= 2 * EPS
    assert np.max(np.abs(wk - weights[order])) <= 8 * EPS


def test_bad_kronrod_n():
    for bad in (0, -2, 2.5, True, 101):
        with pytest.raises(InputError, match="n must be an integer"):
            gauss_kronrod(bad)


# --- adaptive refinement of a vector integral ------------------------------------------------------------------


def analytic_integrand(groups, t):
    """[sin 3t, eᵗ, Runge 1/(1+25t²)] on group 0, the same shifted by 1 on group 1."""
    t = t - (groups == 1)
    return np.stack([np.sin(3 * t), np.exp(t), 1 / (1 + 25 * t**2)], axis=1)


def analytic_exact(a, b):
    antiderivative = lambda t: np.array([-np.cos(3 * t) / 3, np.exp(t), np.arctan(5 * t) / 5])  # noqa: E731
    return antiderivative(b) - antiderivative(a)


@given(rtol=st.sampled_from([1e-2, 1e-4, 1e-6, 1e-8, 1e-10, 1e-12]), lo=st.floats(-2, 0), span=st.floats(0.1, 3),
       backwards=st.booleans())
@example(rtol=1e-2, lo=-2.0, span=1.9344058250644278, backwards=False)  # computed integral 1% below the exact one
@example(rtol=1e-2, lo=0.0, span=1.79296875, backwards=False)  # a lucky G3 on an unresolved panel
@example(rtol=1e-2, lo=-1.15625, span=1.3984375, backwards=False)  # G3 and K7 fooled alike
def test_refinement_meets_tolerance_and_estimates_its_error(rtol, lo, span, backwards):
    hi = lo + span
    a, b = (hi, lo) if backwards else (lo, hi)
    # group 0 over [a, b]; group 1 (the shifted copy) over [a + 1, b + 1]: the same integral again
    result = integrate_panels(analytic_integrand, [(0, a, b), (1, a + 1, b + 1)], n_groups=2, dimension=3,
                                rtol=rtol, atol=0.0, blocks=[slice(0, 2), slice(2, 3)])
    exact = 2 * analytic_exact(a, b)
    actual = np.abs(result.integral - exact)
    for block in (slice(0, 2), slice(2, 3)):
        # the stopping rule (relative to the computed integral, which is all the algorithm knows)
        target = np.maximum(rtol * norm(result.integral[block]), result.roundoff[block])
        assert np.all(result.error[block] <= target * (1 + 1e-12))
        if rtol <= 1e-4:
            assert np.all(actual[block] <= TOLERANCE_SLACK * target + 4 * result.roundoff[block])
    assert np.all(result.error <= result.error_sum * (1 + 1e-12))
    assert sum(len(ts) for ts in result.node_times) == sum(result.nodes)
    if rtol <= 1e-4:
        # The estimate presumes panels that resolve the integrand (K far better than G). At 1e-2 a single 7-point
        # panel on the Runge function (poles 0.2 from the axis) need not: G and K can agree by luck (actual 2.6x the
        # estimate on [−1.16, 0.24]) or G alone can be lucky (the estimate 19x the actual on [0, 1.79]).
        floor = 4 * result.roundoff  # at roundoff both numbers are noise
        assert np.all((actual <= floor) | (result.error >= actual / ESTIMATE_FACTOR))
        assert np.all((actual <= floor) | (result.error <= ESTIMATE_FACTOR * actual))


def test_refinement_safety_limit():
    with pytest.raises(QuadratureLimitError, match="max_nodes = 50"):  # a cusp converges slowly
        integrate_panels(lambda g, t: np.abs(t)[:, None] ** 0.5, [(0, -1.0, 1.3)], n_groups=1, dimension=1,
                           rtol=1e-14, atol=0.0, max_refinement_nodes=50)
    # the first round is never limited: a thousand panels of 7 nodes each with a limit of 0
    panels = [(0, k / 1000, (k + 1) / 1000) for k in range(1000)]
    result = integrate_panels(lambda g, t: np.exp(t)[:, None], panels, n_groups=1, dimension=1, rtol=1e-6,
                                atol=0.0, max_refinement_nodes=0)
    assert result.nodes == (7000,) and result.rounds == 1
    with pytest.raises(NonFiniteFieldError, match="not finite"):
        integrate_panels(lambda g, t: np.where(t > 0, 1.0, np.nan)[:, None], [(0, -1.0, 1.0)], n_groups=1,
                           dimension=1, rtol=1e-6, atol=0.0)


# --- dense output of a finished solve ---------------------------------------------------------------------------


def backward_solve(problem, field, t_out, tol=SOLVER_TOL):
    """GQ's backward [z, a] solve of the problem's last interval, with extra output times ``t_out``."""
    forward = gqref.solve(field, problem.y0, problem.t, problem.params, rtol=tol, atol=tol)
    n = problem.state_dim
    dynamics = backward_dynamics(field, (n,), full=False)
    state = np.concatenate([forward.ys[-1], np.ones(n)])
    back = gqref.solve(dynamics, state, t_out, problem.params, rtol=tol, atol=tol,
                       norm=ErrorNorm("mixed", blocks=(n, n)))
    return dynamics, back


@pytest.mark.parametrize("problem", [P.harmonic_oscillator(t=[0.0, 4.0]), P.van_der_pol(t=[3.0, 0.0]),
                                     P.mlp(width=6, seed=2, state_dim=2, time_dependent=True, t=[0.0, 1.5])],
                         ids=lambda p: p.name)
def test_dense_output_reproduces_the_solver_bit_for_bit(problem):
    field = python_field(problem.field)
    t_out = np.linspace(problem.t[-1], problem.t[0], 9)
    dynamics, back = backward_solve(problem, field, t_out)
    dense = dense_output(dynamics, back, problem.params)
    assert np.array_equal(dense.evaluate(back.ts[1:]), back.ys[1:])
    assert np.array_equal(dense.step_times[1:], back.steps.ts)
    assert dense.nfe == 1 + 6 * len(back.steps.hs)
    with pytest.raises(InputError, match="does not reproduce"):
        dense_output(dynamics, back, problem.params * 1.01)
    with pytest.raises(InputError, match="outside"):
        dense.evaluate([dense.step_times[-1] + 2 * (dense.step_times[-1] - dense.step_times[0])])


def test_compiled_field_dense_output_and_gq():
    """The compiled replay kernel agrees with the Python one bit for bit, and so do all three GQ rules."""
    problem = P.toy(T=5.0)
    cot = P.toy_loss_gradient(problem)
    t_out = np.linspace(problem.t[-1], problem.t[0], 5)
    dyn_c, back_c = backward_solve(problem, problem.field, t_out)
    dyn_p, back_p = backward_solve(problem, python_field(problem.field), t_out)
    dense_c = dense_output(dyn_c, back_c, problem.params)
    dense_p = dense_output(dyn_p, back_p, problem.params)
    assert np.array_equal(dense_c.coeffs, dense_p.coeffs)
    assert np.array_equal(dense_c.evaluate(back_c.ts[1:]), back_c.ys[1:])
    for quadrature in gqref.QUADRATURES:
        a, b = (gqref.gradient(f, problem.y0, problem.t, problem.params, cot, quadrature=quadrature, rtol=1e-6,
                               atol=1e-7) for f in (problem.field, python_field(problem.field)))
        for x, y in zip((a.dL_dy0, a.dL_dparams, a.dL_dt), (b.dL_dy0, b.dL_dparams, b.dL_dt)):
            assert np.array_equal(x, y)
        assert a.diagnostics.nodes == b.diagnostics.nodes
        assert a.diagnostics.quadrature_error == b.diagnostics.quadrature_error


# --- "interval" stays the paper's method, bit for bit -----------------------------------------------------------


def paper_gq(field, y0, t, params, dL_dy, *, rtol, atol, gtol, max_nodes=64):
    """The original gqref GQ loop (before the error-controlled rules), frozen here: GL nodes as output times of the
    backward solve."""
    forward = gqref.solve(field, y0, t, params, rtol=rtol, atol=atol)
    ys = forward.ys
    size = ys.shape[1]
    dynamics = backward_dynamics(field, (size,), full=False)
    state = np.concatenate([ys[-1], dL_dy[-1]])
    dL_dparams, dL_dt, dL_dt0 = np.zeros(params.size), np.zeros(len(t)), 0.0
    for i in range(len(t) - 1, 0, -1):
        incoming = float(np.vdot(np.asarray(field.f(t[i], ys[i], params)), dL_dy[i]))
        dL_dt[i] = incoming
        dL_dt0 -= incoming
        n = node_count(gtol, forward.stats.nfe, t[i - 1], t[i], t[0], t[-1], max_nodes)
        nodes, weights = gauss_legendre(n, t[i], t[i - 1])
        orientation = np.sign(t[i] - t[i - 1])
        back = gqref.solve(dynamics, state, np.concatenate([[t[i]], nodes, [t[i - 1]]]), params, rtol=rtol,
                           atol=atol, norm=ErrorNorm("mixed", blocks=(size, size)))
        for tau, weight, node_state in zip(nodes, weights, back.ys[1:-1]):
            z, a = node_state[:size], node_state[size:]
            dL_dparams += orientation * weight * np.asarray(field.vjp_p(tau, z, params, a))
            dL_dt0 += orientation * weight * float(field.vjp_t(tau, z, params, a))
        state = np.concatenate([ys[i - 1], back.ys[-1][size:] + dL_dy[i - 1]])
    dL_dt[0] = dL_dt0
    return state[size:], dL_dparams, dL_dt


@settings(max_examples=15)
@given(data=st.data(), problem=S.problems(), gtol=st.sampled_from([0.1, 0.4, 1.0, 3.0]))
def test_interval_rule_is_the_paper_method_bit_for_bit(data, problem, gtol):
    cot = data.draw(S.cotangents(problem))
    field = python_field(problem.field)
    explicit = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="interval", gtol=gtol,
                              rtol=1e-6, atol=1e-7)
    frozen = paper_gq(field, problem.y0, problem.t, problem.params, cot, rtol=1e-6, atol=1e-7, gtol=gtol)
    for x, y in zip((explicit.dL_dy0, explicit.dL_dparams, explicit.dL_dt), frozen):
        assert np.array_equal(x, y)
    rule = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature=gqref.IntervalRule(C=gtol),
                          rtol=1e-6, atol=1e-7)
    for x, y in zip((explicit.dL_dy0, explicit.dL_dparams, explicit.dL_dt),
                    (rule.dL_dy0, rule.dL_dparams, rule.dL_dt)):
        assert np.array_equal(x, y)
    d = explicit.diagnostics
    assert d.quadrature == "interval" and d.quadrature_error is None and d.nfe_dense_replay == 0
    assert tuple(len(ts) for ts in d.node_times) == d.nodes


# --- "step" and "adaptive" against closed forms and tight references --------------------------------------------


def dense_reference(field, problem, cot, tol=SOLVER_TOL):
    """The forward solve, and the exact integral of the dense-output integrand at that backward solve: 12
    Gauß nodes on every backward step (error ~h²⁵ per step: roundoff)."""
    forward = gqref.solve(field, problem.y0, problem.t, problem.params, rtol=tol, atol=tol)
    _, dp, dt, counters = gq_gradient(field, forward, problem.params, cot, rule=gqref.StepRule(), rtol=tol,
                                      atol=tol, t_grad=True, step_nodes=12)
    return forward, dp, dt, counters


def check_adaptive(field, problem, cot, truth):
    """``truth`` = (dL_dy0, dL_dparams, dL_dt): the closed form or a tight reference."""
    truth_dp, truth_dt0 = truth[1], truth[2][0]
    _, hi_dp, hi_dt, _ = dense_reference(field, problem, cot)
    scale = norm(truth_dp)
    if scale == 0.0:  # e.g. a zero cotangent or initial state: nothing to be relative to
        return
    # The solver's own error, which no quadrature removes, is measured rather than bounded: the exact integral of
    # the dense-output integrand (hi) against the truth. (test_gradients bounds it by the tolerance times the steps
    # taken, for contracting flows; the scalar time-dependent problems here need not contract.)
    solver_error = norm(hi_dp - truth_dp)
    interval = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, rtol=SOLVER_TOL, atol=SOLVER_TOL,
                              quadrature=gqref.IntervalRule(warm_start=True))
    for gtol in GTOLS:
        g = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="adaptive", gtol=gtol,
                           rtol=SOLVER_TOL, atol=SOLVER_TOL)
        d = g.diagnostics
        # the same (warm-started) backward solves as the interval rule (output times never change the steps)
        assert np.array_equal(g.dL_dy0, interval.dL_dy0) and np.array_equal(g.dL_dt[1:], interval.dL_dt[1:])
        target = gtol * norm(g.dL_dparams)
        floor = ROUNDOFF * scale
        actual = norm(g.dL_dparams - hi_dp)  # the true quadrature error at this backward solve
        assert d.quadrature_error <= max(target, floor)
        assert actual <= TOLERANCE_SLACK * target + floor
        assert norm(g.dL_dparams - truth_dp) <= solver_error + TOLERANCE_SLACK * target + floor
        if actual > floor:
            assert actual / ESTIMATE_FACTOR <= d.quadrature_error <= ESTIMATE_FACTOR * actual
        else:
            assert d.quadrature_error <= ESTIMATE_FACTOR * floor
        # the time integral I_t = ∫a·∂f/∂t is controlled in its own block; dL_dt[0] = I_t − Σ_{i≥1} dL_dt[i]
        actual_dt0 = abs(g.dL_dt[0] - hi_dt[0])
        time_integral = abs(np.sum(g.dL_dt))
        floor_dt0 = ROUNDOFF * max(abs(truth_dt0), time_integral, scale)
        assert actual_dt0 <= TOLERANCE_SLACK * gtol * time_integral + floor_dt0
        if actual_dt0 > floor_dt0:
            assert actual_dt0 / ESTIMATE_FACTOR <= d.quadrature_error_dt0 <= ESTIMATE_FACTOR * actual_dt0
        assert sum(d.nodes) >= 7 * d.steps_backward  # every step is a G3/K7 panel at least
        assert tuple(len(ts) for ts in d.node_times) == d.nodes


@settings(max_examples=30)
@given(data=st.data(), problem=S.problems(closed_form=True))
def test_adaptive_meets_gtol_on_closed_forms(data, problem):
    cot = data.draw(S.cotangents(problem))
    truth = problem.exact_gradient(problem.y0, problem.params, problem.t, cot)
    check_adaptive(python_field(problem.field), problem, cot, truth)


@settings(max_examples=20)
@given(data=st.data(), problem=S.mlp_problems())
def test_adaptive_meets_gtol_on_mlps(data, problem):
    cot = data.draw(S.cotangents(problem))
    field = python_field(problem.field)
    # no closed form: the frozen-step derivative at 1e-12 is within ~1e-11 of the exact gradient (gqref.check)
    truth = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, method="discrete", rtol=1e-12,
                           atol=1e-12)
    check_adaptive(field, problem, cot, (truth.dL_dy0, truth.dL_dparams, truth.dL_dt))


def test_adaptive_refines_where_the_quadrature_limits():
    """A field whose steps are long at a loose solver tolerance: G3 per step is far from 1e-10, so the rule must
    bisect (and its estimate must follow the actual error down)."""
    base = P.mlp(width=8, seed=0, state_dim=3, time_dependent=True)
    problem = P.mlp(width=8, state_dim=3, time_dependent=True, weights=3 * base.params, y0=base.y0, t=[0.0, 2.0])
    field, cot = python_field(problem.field), np.ones((2, 3))
    _, hi_dp, _, counters = dense_reference(field, problem, cot, tol=1e-4)
    nodes, actual = [], []
    for gtol in (1e-6, 1e-8, 1e-10):
        g = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="adaptive", gtol=gtol,
                           rtol=1e-4, atol=1e-4)
        nodes.append(sum(g.diagnostics.nodes))
        actual.append(norm(g.dL_dparams - hi_dp))
        assert actual[-1] <= TOLERANCE_SLACK * gtol * norm(g.dL_dparams)
        assert actual[-1] / ESTIMATE_FACTOR <= g.diagnostics.quadrature_error <= ESTIMATE_FACTOR * actual[-1]
    assert nodes[0] < nodes[1] < nodes[2] and nodes[-1] > 7 * counters["steps_backward"]


@settings(max_examples=10)
@given(data=st.data(), problem=S.problems())
def test_step_rule(data, problem):
    cot = data.draw(S.cotangents(problem))
    field = python_field(problem.field)
    g = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="step", rtol=SOLVER_TOL,
                       atol=SOLVER_TOL)
    d = g.diagnostics
    assert sum(d.nodes) == 3 * d.steps_backward and d.quadrature_error is None
    t = problem.t
    for i, ts in enumerate(d.node_times):  # every node inside its interval
        assert np.all((ts - t[i]) * (ts - t[i + 1]) < 0)
    # the same Gauß sums as the adaptive rule's coarsest panels (G3 on every step), summed in another order
    loose = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="adaptive", gtol=1.0,
                           rtol=SOLVER_TOL, atol=SOLVER_TOL)
    assert loose.diagnostics.nodes == tuple(7 * n // 3 for n in d.nodes)
    assert norm(loose.dL_dparams - g.dL_dparams) <= 1e-13 * max(norm(g.dL_dparams), 1e-300) + 1e-300
    # so that rule's estimate is the step rule's error. (The step rule itself has no error bound: the steps follow
    # the state, and an integrand that varies faster — y' = 0·cos(p1 t)·y, found by hypothesis — is missed.)
    _, hi_dp, _, _ = dense_reference(field, problem, cot)
    actual, floor = norm(g.dL_dparams - hi_dp), ROUNDOFF * norm(hi_dp)
    if actual > floor:
        assert actual / ESTIMATE_FACTOR <= loose.diagnostics.quadrature_error <= ESTIMATE_FACTOR * actual


# --- the API -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"quadrature": "simpson"}, InputError, "quadrature must be one of"),
        ({"method": "adjoint", "quadrature": "adaptive"}, InputError, "applies to method='gq'"),
        ({"quadrature": "step", "gtol": 1e-6}, InputError, "gtol does not apply to quadrature='step'"),
        ({"quadrature": "step", "max_nodes": 10}, InputError, "max_nodes does not apply"),
        ({"quadrature": "interval", "gatol": 1e-9}, InputError, "gatol does not apply to quadrature='interval'"),
        ({"quadrature": "adaptive", "gatol": -1.0}, InputError, r"gatol\) must be a non-negative"),
        ({"quadrature": "adaptive", "gtol": 0.0}, InputError, r"gtol\) must be a positive"),
        ({"quadrature": "adaptive", "max_nodes": 0}, InputError, "max_nodes must be a positive integer"),
        ({"quadrature": "adaptive", "max_nodes": 7, "gtol": 1e-13}, QuadratureLimitError, "max_nodes = 7"),
    ],
)
def test_bad_quadrature_input(overrides, error, match):
    problem = P.linear(t=[0.0, 2.0])
    kwargs = {"field": python_field(problem.field), "y0": problem.y0, "t": problem.t, "params": problem.params,
              "dL_dy": np.ones((2, 2))}
    kwargs.update(overrides)
    with pytest.raises(error, match=match):
        gqref.gradient(**kwargs)


def test_adaptive_defaults_and_diagnostics():
    problem = P.linear()
    field, cot = python_field(problem.field), np.ones((len(problem.t), 2))
    default = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="adaptive", rtol=1e-5,
                             atol=1e-7, adjoint_rtol=1e-8)
    explicit = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="adaptive", rtol=1e-5,
                              atol=1e-7, adjoint_rtol=1e-8, gtol=1e-8, gatol=0.0, max_nodes=10_000)
    assert np.array_equal(default.dL_dparams, explicit.dL_dparams)  # gtol defaults to the adjoint rtol
    d = default.diagnostics
    assert d.quadrature == "adaptive" and d.quadrature_error is not None and d.quadrature_error_dt0 is not None
    assert d.nfe_dense_replay == len(d.nodes) + 6 * d.steps_backward  # one FSAL slope per interval, 6 per step
    no_time = gqref.gradient(field, problem.y0, problem.t, problem.params, cot, quadrature="adaptive",
                             t_grad=False)
    assert no_time.dL_dt is None and no_time.diagnostics.quadrature_error_dt0 is None
    assert gqref.gradient(field, problem.y0, problem.t, problem.params, cot, method="adjoint").diagnostics.quadrature \
        is None
