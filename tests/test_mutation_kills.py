"""GQ's quadrature rules against closed forms, with the expected quadrature error computed here, from scratch.

The problem: y' = P(t) = Σ_k θ_k t^k (one state component, degree 6), L = Σ_i w_i y(t_i). Then ∂f/∂y = 0, so the
adjoint a is constant on each interval, a_i = Σ_{j≥i} w_j, and the GQ integrand for θ_k is a_i·t^k: a polynomial
read exactly from any backward solve (a is constant, the node time is exact). So every rule's result is a sum of
Gauß or Kronrod sums of monomials, known in closed form:

- dL/dθ_k = Σ_i a_i ∫_{t_{i−1}}^{t_i} t^k dt, dL/dy0 = Σ_{i≥1} w_i, dL/dt_0 = −P(t_0)·Σ_{i≥1} w_i, dL/dt_i = w_i P(t_i);
- the n-point Gauß–Legendre rule on a panel of width h errs on t^(2n) by exactly h^(2n+1)(n!)^4/((2n+1)((2n)!)^3)
  ·(2n)! (the remainder formula; the (2n)-th derivative is constant), so the step rule (3 nodes per backward step)
  is exact for k ≤ 5 and misses ∫t^6 by h^7/2800 per step;
- the (2n+1)-point Kronrod extension is exact to degree 3n+1 ≥ 7 (n ≥ 2): the auto rule's K is exact, and the
  adaptive rule's estimate |K − G| is G's actual error.

The closed-form tests import neither gqref.panels, gqref.refinement nor gqref.kronrod: the Gauß rules come from
numpy, the panel widths from the node times the solver reports, the expected values from the formulas above.

Later sections pin what those end-to-end results do not see (each found by a mutant that survived them): the
torchdiffeq controller's accept test at an error ratio of exactly 1; the auto rule's panel logic (splits, child
node counts, the node budget, the split choice, the tolerance targets and roundoff floor, the reuse margin), driven
directly with hand-made panels and sums; adaptive Gauß–Kronrod of both twins on integrands whose Gauß errors are
known (cancelling panel errors, a tolerance near the roundoff floor, the refinement budget); and the backward
evaluation count of every rule.
"""

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from numpy.polynomial.legendre import leggauss

import gqref
import gqtorch

THETA = np.array([0.3, -0.2, 0.5, 0.1, -0.4, 0.2, 0.05])  # P(t), degree 6
T = np.array([0.0, 0.8, 2.0])
W = np.array([[0.0], [0.7], [1.0]])  # dL/dy_i
A = np.array([1.7, 1.0])  # the adjoint on [t_0, t_1] and [t_1, t_2]
DEGREE = len(THETA) - 1
TOL = 1e-6
# Sums of ~10² node terms of size ≤ 2^6·1.7 ≈ 10², each with relative roundoff ε: 1e-12 absolute is ~50× that.
ROUNDOFF = 1e-12


def P(t):
    return sum(c * t**k for k, c in enumerate(THETA))


def dP(t):
    return sum(k * c * t ** (k - 1) for k, c in enumerate(THETA) if k)


def f(t, y, p):
    return np.full(y.shape, sum(c * t**k for k, c in enumerate(p)))


def vjp_p(t, y, p, a):
    return np.sum(a) * t ** np.arange(p.size, dtype=float)


def vjp_y(t, y, p, a):
    return np.zeros_like(y)


def vjp_t(t, y, p, a):
    return np.sum(a) * sum(k * c * t ** (k - 1) for k, c in enumerate(p) if k)


FIELD = gqref.VectorField(f, vjp_t=vjp_t, vjp_y=vjp_y, vjp_p=vjp_p)


def exact_dtheta():
    return np.array([sum(A[i] * (T[i + 1] ** (k + 1) - T[i] ** (k + 1)) / (k + 1) for i in range(2))
                     for k in range(DEGREE + 1)])


def exact_dt():
    return np.array([-P(T[0]) * W[1:].sum(), W[1, 0] * P(T[1]), W[2, 0] * P(T[2])])


def gauss(n, lo, hi, g):
    x, w = leggauss(n)
    return 0.5 * (hi - lo) * np.dot(w, g(0.5 * (lo + hi) + 0.5 * (hi - lo) * x))


def gradient(quadrature, **options):
    return gqref.gradient(FIELD, [0.5], T, THETA, W, quadrature=quadrature, rtol=TOL, atol=TOL, t_grad=True,
                          **options)


def test_step_rule_misses_t6_by_the_gauss_remainder():
    g = gradient("step")
    expected = exact_dtheta()
    # the remainder of 3-point Gauß on t^6 over a step of width h: h^7·(3!)^4/(7·(6!)^3)·6! = h^7/2800
    missed = 0.0
    for i, times in enumerate(g.diagnostics.node_times):
        triples = np.asarray(times).reshape(-1, 3)  # one backward step each: mid ∓ (h/2)·√(3/5)
        widths = np.abs(triples[:, 2] - triples[:, 0]) / math.sqrt(0.6)
        assert widths.sum() == pytest.approx(T[i + 1] - T[i], rel=1e-12)  # the steps tile the interval
        missed += A[i] * np.sum(widths**7) / 2800.0
    assert missed > 1e3 * ROUNDOFF  # the steps are long enough for the remainder to show
    expected[DEGREE] -= missed
    np.testing.assert_allclose(g.dL_dparams, expected, rtol=0.0, atol=ROUNDOFF)
    np.testing.assert_allclose(g.dL_dt, exact_dt(), rtol=0.0, atol=ROUNDOFF)  # ∫a·P' has degree 5: exact
    np.testing.assert_allclose(g.dL_dy0, [W[1:].sum()], rtol=0.0, atol=ROUNDOFF)


def test_adaptive_rule_returns_gauss_and_estimates_its_exact_error():
    gtol = 1e-10
    g = gradient("adaptive", gtol=gtol)
    expected = exact_dtheta()
    actual = expected - g.dL_dparams
    np.testing.assert_allclose(actual[:DEGREE], 0.0, atol=ROUNDOFF)  # G3 is exact to degree 5
    # K7 is exact to degree 11, so |K − G| is G's actual error on t^6 (positive: Gauß underestimates even powers)
    assert actual[DEGREE] > 0.0
    assert g.diagnostics.quadrature_error == pytest.approx(actual[DEGREE], rel=1e-6, abs=ROUNDOFF)
    assert actual[DEGREE] <= gtol * np.max(np.abs(expected)) + ROUNDOFF  # and it met the tolerance
    np.testing.assert_allclose(g.dL_dt, exact_dt(), rtol=0.0, atol=ROUNDOFF)


def test_auto_rule_returns_the_exact_kronrod_sum():
    g = gradient("auto")
    # the auto rule returns K of n ≥ 2 Gauß nodes' Kronrod extension, exact to degree 3n + 1 ≥ 7
    np.testing.assert_allclose(g.dL_dparams, exact_dtheta(), rtol=0.0, atol=ROUNDOFF)
    np.testing.assert_allclose(g.dL_dt, exact_dt(), rtol=0.0, atol=ROUNDOFF)
    assert g.diagnostics.quadrature_met


def test_interval_rule_is_the_papers_gauss_sums():
    g = gradient("interval")
    nfe = gqref.solve(FIELD, [0.5], T, THETA, rtol=TOL, atol=TOL).stats.nfe
    # the paper's node rule, n_i = min(⌈0.1·NFE·Δt_i/(T − t_0)⌉, 64), at least one node
    counts = [max(1, min(math.ceil(0.1 * nfe * (T[i + 1] - T[i]) / (T[-1] - T[0])), 64)) for i in range(2)]
    assert tuple(g.diagnostics.nodes) == tuple(counts)
    expected = [sum(A[i] * gauss(counts[i], T[i], T[i + 1], lambda s, k=k: s**k) for i in range(2))
                for k in range(DEGREE + 1)]
    np.testing.assert_allclose(g.dL_dparams, expected, rtol=0.0, atol=ROUNDOFF)
    dt0 = -P(T[0]) * W[1:].sum() - sum(A[i] * (P(T[i + 1]) - P(T[i])) for i in range(2)) \
        + sum(A[i] * gauss(counts[i], T[i], T[i + 1], dP) for i in range(2))
    assert g.dL_dt[0] == pytest.approx(dt0, rel=0.0, abs=ROUNDOFF)


def test_every_rule_counts_its_node_evaluations():
    """nfe_backward = the backward solves' evaluations (+ one f(t_i, y_i) per interval for dL/dt_i) + one per
    quadrature node. The backward solves take the same steps under every rule (output times never change them), so
    nfe_backward − Σ nodes is the same number for all four rules (all warm-started, as the paper's rule is not by
    default)."""
    solver_calls = set()
    for quadrature in ("step", "adaptive", "auto", gqref.IntervalRule(warm_start=True)):
        d = gradient(quadrature).diagnostics
        assert sum(d.nodes) > 0
        solver_calls.add(d.nfe_backward - sum(d.nodes))
    assert len(solver_calls) == 1


class Polynomial(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(THETA, dtype=torch.float64))

    def forward(self, t, y):
        return sum(c * t**k for k, c in enumerate(self.theta)) * torch.ones_like(y)


@pytest.mark.parametrize("quadrature", ["step", "adaptive", "auto", "interval"])
def test_gqtorch_rules_equal_the_closed_forms(quadrature):
    func = Polynomial()
    t = torch.tensor(T, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    options = {"gtol": 1e-10} if quadrature == "adaptive" else {}
    ys = gqtorch.odeint_adjoint_gq(func, y0, t, rtol=TOL, atol=TOL, quadrature=quadrature, **options)
    (ys * torch.tensor(W)).sum().backward()
    reference = gradient(quadrature, **options)  # gqref checked above against the closed forms
    np.testing.assert_allclose(func.theta.grad.numpy(), reference.dL_dparams, rtol=0.0, atol=ROUNDOFF)
    np.testing.assert_allclose(t.grad.numpy(), reference.dL_dt, rtol=0.0, atol=ROUNDOFF)
    np.testing.assert_allclose(y0.grad.numpy(), [W[1:].sum()], rtol=0.0, atol=ROUNDOFF)
    if quadrature in ("auto", "adaptive"):  # the error-controlled rules reach the closed form itself
        tol = 1e-10 * np.max(np.abs(exact_dtheta())) if quadrature == "adaptive" else 0.0
        np.testing.assert_allclose(func.theta.grad.numpy(), exact_dtheta(), rtol=0.0, atol=tol + ROUNDOFF)


@pytest.mark.parametrize("n", range(1, 7))
def test_kronrod_degree_is_the_exact_degree(n):
    """The (2n+1)-point Kronrod rule is exact exactly up to kronrod_degree(n): 3n+1 (n even), 3n+2 (n odd; the
    rule is symmetric, so the odd degree after the even one comes free), and not at the next (even) degree."""
    from gqref.kronrod import gauss_kronrod, kronrod_degree

    x, wk, _ = gauss_kronrod(n)
    degree = kronrod_degree(n)
    assert degree == (3 * n + 1 if n % 2 == 0 else 3 * n + 2)
    for d in (degree - 1, degree):
        exact = (1.0 - (-1.0) ** (d + 1)) / (d + 1)
        assert wk @ x**d == pytest.approx(exact, rel=0.0, abs=1e-14)
    d = degree + 1  # even: ∫_{-1}^{1} t^d = 2/(d+1), missed by 6e-8 (n = 6) or more, far above roundoff (1e-15)
    assert abs(wk @ x**d - 2.0 / (d + 1)) > 1e-12


# --- the accept test at an error ratio of exactly 1 ------------------------------------------------------------------

class Growth(torch.nn.Module):
    """y' = y, logging every attempted step through torchdiffeq's callbacks."""

    def __init__(self):
        super().__init__()
        self.log = []

    def forward(self, t, y):
        return y.clone()

    def callback_accept_step(self, t0, y0, dt):
        self.log.append((float(t0), float(dt), True))

    def callback_reject_step(self, t0, y0, dt):
        self.log.append((float(t0), float(dt), False))


def test_torchdiffeq_controller_accepts_an_error_ratio_of_exactly_one():
    """adaptive_heun (Heun–Euler) on y' = y from y(0) = 1 with one step dt = 1: the stages are k = (1, 2), the
    error estimate dt·(k1 − k0)/2 = 0.5 and y1 = 1 + (1 + 2)/2 = 2.5, all exact in binary (an autonomous field, so
    the last stage's time, nudged one ulp before the step's end, does not enter); with rtol = 1/8, atol = 3/16 the
    scale is 3/16 + 2.5/8 = 1/2, so the ratio is exactly 1. torchdiffeq accepts at ratio ≤ 1 (its
    ``error_ratio <= 1``); a strict < would reject and retry the step."""
    rtol, atol = 0.125, 0.1875
    for solver in (torchdiffeq.odeint, gqtorch.odeint):
        func = Growth()
        with torch.no_grad():
            ys = solver(func, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64),
                        rtol=rtol, atol=atol, method="adaptive_heun", options={"first_step": 1.0})
        assert func.log == [(0.0, 1.0, True)], solver
        assert ys[-1].item() == pytest.approx(2.5, rel=1e-14, abs=0.0)  # read off the dense output at t = 1: a few ulps
    growth = gqref.solve(lambda t, y, p: y.copy(), [1.0], [0.0, 1.0], rtol=rtol, atol=atol, method="adaptive_heun",
                         first_step=1.0)
    assert (growth.stats.n_accepted, growth.stats.n_rejected, growth.stats.nfe) == (1, 0, 2)


# --- the auto rule's panel logic (gqref.panels), driven directly with hand-made panels and sums ---------------------

def test_panel_split_at_the_middle_step_end_with_capped_children():
    """A panel holding 4 backward steps (3 cuts) splits at its middle cut, each child keeping its 2 steps' cuts; a
    child keeps its parent's n capped at 3 per step it holds, and at least 3 (module docstring, step 4)."""
    from gqref.panels import Panel

    parent = Panel(0, 0.0, 4.0, 10, (1.0, 2.0, 3.0))
    left, right = parent.split()
    assert (left.lo, left.hi, left.cuts, left.n) == (0.0, 2.0, (1.0,), 6)  # min(10, 3·2 steps)
    assert (right.lo, right.hi, right.cuts, right.n) == (2.0, 4.0, (3.0,), 6)
    left, right = Panel(0, 0.0, 8.0, 4, (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)).split()
    assert (left.cuts, left.n, right.cuts, right.n) == ((1.0, 2.0, 3.0), 4, (5.0, 6.0, 7.0), 4)  # the parent's n
    left, right = Panel(1, 3.0, 2.0, 8).split()  # inside one step: bisected, 3 nodes (the step rule's count)
    assert (left.lo, left.hi, left.n, right.lo, right.hi, right.n) == (3.0, 2.5, 3, 2.5, 2.0, 3)
    assert left.width == 7  # the (2n+1)-point Kronrod extension


def test_first_round_counts_are_the_papers_at_least_two():
    from gqref.panels import first_round_counts
    from gqref.rules import AutoRule

    rule = AutoRule()
    # n_i = ⌈0.1·NFE·Δt_i/T⌉: NFE 10 on [0, 0.5, 1] gives 1 per interval, raised to 2; NFE 200 gives 10
    assert first_round_counts(rule, 10, [0.0, 0.5, 1.0]) == [2, 2]
    assert first_round_counts(rule, 200, [0.0, 0.5, 1.0]) == [10, 10]


class NeverMet:
    """Panel sums whose check always fails, every kept panel with share 1: refine() splits every panel each round."""

    def __init__(self):
        self.n = 0

    def add(self, panels):
        self.n += len(panels)

    def keep(self, indices):
        self.n = len(indices)

    def assess(self, rtol, atol, blocks, scales):
        from gqref.panels import Assessment

        return Assessment(True, False, np.ones(self.n), 2.0)


def test_refine_budget_allows_exactly_max_nodes():
    """One 3-node panel (7 nodes) split into two 3-node children (7 each) costs exactly 14 refinement nodes: a
    budget of 14 allows that round (the budget is 'more than max_nodes'), 13 does not."""
    from gqref.errors import QuadratureAccuracyWarning
    from gqref.panels import Panel, refine

    for max_nodes, rounds, nodes in ((14, 2, 21), (13, 1, 7)):
        with pytest.warns(QuadratureAccuracyWarning):
            done = refine(NeverMet(), [Panel(0, 0.0, 1.0, 3)], n_groups=1, rtol=1e-3, atol=0.0,
                          blocks=[slice(0, 1)], max_nodes=max_nodes, strict=False)
        assert (done.rounds, done.nodes, done.met) == (rounds, (nodes,), False)


def test_chosen_panels_leave_at_most_half_the_tolerance():
    """Shares (1.0, 0.4, 0.3): splitting the first leaves 0.7 > 0.5 of the tolerance, the first two leave 0.3."""
    from gqref.refinement import SPLIT_BUDGET, panels_to_split  # the rule of both adaptive integrators

    assert SPLIT_BUDGET == 0.5
    assert panels_to_split(np.array([0.4, 1.0, 0.3])) == [0, 1]
    assert panels_to_split(np.array([0.2, 0.6, 0.1])) == [1]  # splitting the largest leaves 0.3
    assert panels_to_split(np.array([0.2, 0.1])) == [0]  # within budget: still split the largest (the check failed)


def test_tolerance_targets_use_the_larger_of_tolerance_and_roundoff_and_the_scale_floor():
    from gqref.panels import tolerance_targets

    integral = np.array([2.0, -4.0, 1e-3])
    roundoff = np.array([1e-9, 1e-2, 0.0])
    blocks = [slice(0, 2), slice(2, 3)]
    # block 0: atol + rtol·max(‖I‖∞ = 4, floor 1) = 1e-6 + 4e-4; block 1: the floor 10 exceeds |I| = 1e-3
    got = tolerance_targets(integral, roundoff, 1e-4, 1e-6, blocks, [1.0, 10.0])
    np.testing.assert_allclose(got, [1e-6 + 4e-4, 1e-2, 1e-6 + 1e-3], rtol=1e-15)


def test_check_memory_reuses_only_checks_passed_with_the_margin():
    """A check passed in one round with E ≤ 0.1 × tolerance is reused; one passed with E = 0.5 × tolerance is not."""
    from gqref.panels import CheckMemory, Refinement
    from gqref.rules import REUSE_MARGIN

    assert REUSE_MARGIN == 0.1

    class Field:
        pass

    for worst, reused in ((0.1, True), (0.5, False)):
        memory, field = CheckMemory(), Field()
        done = Refinement(nodes=(7,), node_times=(np.zeros(7),), panels=(1,), rounds=1, met=True, worst=worst)
        memory.record(field, ("context",), [3], done, recheck_every=4)
        assert memory.trusted(field, ("context",), [3]) is reused


def test_numpy_panel_sums_error_and_roundoff_floor():
    """NumpyPanelSums on g(t) = (t^6, 1) over one 3-node panel [0, 1]: K7 is exact (degree 11), G3 misses ∫t^6 by
    the Gauß remainder 1/2800, so I = (1/7, 1) and E = (1/2800, ~0). The second component's E is roundoff (K and G
    both integrate a constant exactly up to rounding): with rtol = atol = 0 it is judged against the roundoff floor
    100·ε·Σ|w·g| ≥ 2e-14, and only the first component fails."""
    from gqref.panels import NumpyPanelSums, Panel

    sums = NumpyPanelSums(lambda groups, t: np.stack([t**6, np.ones_like(t)], axis=1), 2)
    sums.add([Panel(0, 0.0, 1.0, 3)])
    integral, error = sums.totals()
    np.testing.assert_allclose(integral, [1.0 / 7.0, 1.0], rtol=1e-14)
    assert error[0] == pytest.approx(1.0 / 2800.0, rel=1e-12, abs=0.0)
    assert error[1] <= 1e-15
    verdict = sums.assess(0.0, 0.0, [slice(0, 2)], [0.0])
    assert not verdict.met and verdict.worst == pytest.approx(error[0] / (100 * np.finfo(float).eps / 7), rel=1e-6)
    verdict = sums.assess(0.0, 1.0 / 2800.0 * (1 + 1e-9), [slice(0, 2)], [0.0])
    assert verdict.met


# --- adaptive Gauß–Kronrod (integrate_panels, both twins), on integrands with known errors ------------------------

def adaptive(backend, g, panels, **options):
    """integrate_panels of gqref or gqtorch (float64 tensors) on the numpy integrand g(t) -> (len(t), 1); the
    result's vectors as numpy arrays."""
    if backend == "gqref":
        from gqref.refinement import integrate_panels

        return integrate_panels(lambda groups, t: g(t)[:, None], panels, n_groups=1, dimension=1, **options)
    from gqtorch.refinement import integrate_panels

    done = integrate_panels(lambda groups, t: torch.from_numpy(g(t)[:, None]), panels, n_groups=1, dimension=1,
                              dtype=torch.float64, device="cpu", **options)
    return done.__class__(**{**done.__dict__, **{k: getattr(done, k).numpy()
                                                 for k in ("integral", "error", "error_sum", "roundoff")}})


BACKENDS = ["gqref", "gqtorch"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_integrate_panels_error_is_the_error_of_the_sum(backend):
    """(t − 1)^7 over the panels [0, 1] and [1, 2]: G3 misses each by the same amount with opposite signs (odd about
    1), K7 is exact (degree 11). E = |Σ_p (K_p − G_p)| cancels to roundoff; Σ_p |K_p − G_p| does not. With a
    tolerance between the two the first round stops (E is what is tested)."""
    x, w = leggauss(3)
    miss = 1.0 / 8.0 - 0.5 * np.dot(w, (0.5 * (x + 1.0)) ** 7)  # G3's error on ∫_1^2 (t − 1)^7 = 1/8
    assert miss > 1e-6
    done = adaptive(backend, lambda t: (t - 1.0) ** 7, [(0, 0.0, 1.0), (0, 1.0, 2.0)], rtol=0.0, atol=1e-9)
    assert done.rounds == 1 and done.nodes == (14,)
    assert done.error[0] <= 1e-15  # sums of terms ≤ 1/8 cancelling: a few ε
    assert done.error_sum[0] == pytest.approx(2.0 * miss, rel=1e-9, abs=0.0)
    assert done.integral[0] == pytest.approx(0.0, abs=1e-15)  # G's sum: the two misses cancel too


@pytest.mark.parametrize("backend", BACKENDS)
def test_integrate_panels_returns_gauss_bisects_and_reaches_tight_tolerances(backend):
    """t^6 on [0, 1] at rtol 1e-13: G3 on a panel of width h misses ∫t^6 by at most h^7/2800, so the run must bisect
    until the missed amount is ≤ 1e-13/7 (panels of width ≤ 1/64). The first round's nodes are the 7 Kronrod nodes
    of [0, 1], the second's those of [0, 1/2] and [1/2, 1] (bisection at the middle), and the result is Σ G, whose
    error is the estimate (K7 is exact)."""
    from gqref.kronrod import gauss_kronrod

    done = adaptive(backend, lambda t: t**6, [(0, 0.0, 1.0)], rtol=1e-13, atol=0.0)
    x, _, _ = gauss_kronrod(3)
    times = done.node_times[0]
    np.testing.assert_allclose(times[:7], 0.5 + 0.5 * x, rtol=0, atol=1e-16)
    np.testing.assert_allclose(times[7:21], np.concatenate([0.25 + 0.25 * x, 0.75 + 0.25 * x]), rtol=0, atol=1e-16)
    assert done.rounds > 2 and done.nodes == (times.size,)
    actual = 1.0 / 7.0 - done.integral[0]
    # G, not K (exact up to rounding), is returned: its actual error is the estimate, ~5e-15 here, up to the roundoff
    # of summing ~10² panel sums of size ≤ 1/7 (≲ 1e-15; measured 1.4e-16)
    assert done.error[0] > 3e-15
    assert done.error[0] == pytest.approx(actual, rel=0.0, abs=1e-15)
    assert actual <= 1e-13 / 7.0  # the tolerance is met (the roundoff floor, 100·ε/7 = 3.2e-15, is below it)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integrate_panels_budget_counts_refinement_nodes_only(backend):
    """Twenty 7-node panels meet the tolerance in the first round (a cubic, exact for G3): their 140 nodes are not
    refinement nodes, so a budget of 10 does not stop them."""
    panels = [(0, k / 20.0, (k + 1) / 20.0) for k in range(20)]
    done = adaptive(backend, lambda t: t**3, panels, rtol=1e-10, atol=0.0, max_refinement_nodes=10)
    assert done.nodes == (140,) and done.rounds == 1
    assert done.integral[0] == pytest.approx(0.25, rel=1e-14, abs=0.0)


# --- Hairer's initial step and scipy's minimum step, against the libraries themselves ---------------------------


def _initial_step(kind: int, y0: np.ndarray, interval: float, rtol: float, atol: float) -> float:
    """gqref's initial step (its Python form) for y' = y from t = 0, under the rms norm and dopri5's order 4."""
    from gqref.controller import NORM_RMS, initial_step

    def field(t, y, p):
        return y.copy()

    return initial_step(field, np.empty(0), 1.0, 0.0, y0, y0.copy(), rtol, np.full(y0.size, atol), 4, NORM_RMS,
                        np.zeros(y0.size, dtype=np.int64), 1, interval, kind, np.empty_like(y0))


# |y0|/atol spans the three branches of the d0, d1 test (< 1e-5: fixed 1e-6; 1e-5..1e-4 and 1: 0.01·d0/d1), and the
# scipy cases a short interval where both of scipy's caps bind (h0 = 0.01 > 1e-3, then 100·h0 > 1e-3).
@pytest.mark.parametrize("size", [3e-6, 5e-5, 1.0])
def test_initial_step_equals_torchdiffeqs(size):
    from torchdiffeq._impl.misc import _rms_norm, _select_initial_step

    from gqref.controller import TORCHDIFFEQ

    y0 = np.full(3, size)
    theirs = float(_select_initial_step(lambda t, y: y, torch.tensor(0.0, dtype=torch.float64), torch.tensor(y0),
                                        4, 1e-6, 1.0, _rms_norm))
    # the same operations in a different summation order inside the norm: a few ulps at most
    assert math.isclose(_initial_step(TORCHDIFFEQ, y0, 10.0, 1e-6, 1.0), theirs, rel_tol=1e-14)


@pytest.mark.parametrize("size,interval", [(3e-6, 10.0), (5e-5, 10.0), (1.0, 10.0), (1.0, 1e-3)])
def test_initial_step_equals_scipys(size, interval):
    from scipy.integrate._ivp.common import select_initial_step

    from gqref.controller import SCIPY

    y0 = np.full(3, size)
    theirs = select_initial_step(lambda t, y: y, 0.0, y0, interval, np.inf, y0.copy(), 1.0, 4, 1e-6, 1.0)
    assert math.isclose(_initial_step(SCIPY, y0, interval, 1e-6, 1.0), theirs, rel_tol=1e-14)


def test_scipy_controller_gives_up_where_scipy_does():
    """At t ≈ 1e12 one ulp is 1.2e-4 and RK45's minimum step is 10 of them; y' = cos(20 (t − t0)) at tolerance 1e-8
    asks for steps between the two, so scipy stops after a few steps ("Required step size is less than spacing
    between numbers") and gqref's scipy controller must stop on the same step (a 1-ulp minimum would go on)."""
    from scipy.integrate import solve_ivp

    t0 = 1e12
    ref = solve_ivp(lambda t, y: np.cos(20.0 * (t - t0)) + 0.0 * y, (t0, t0 + 0.5), [0.0], method="RK45",
                    rtol=1e-8, atol=1e-8)
    assert ref.status == -1 and "spacing" in ref.message and len(ref.t) > 2
    with pytest.raises(gqref.errors.StepSizeUnderflowError) as failure:
        gqref.solve(lambda t, y, p: np.cos(20.0 * (t - t0)) + 0.0 * y, np.array([0.0]), np.array([t0, t0 + 0.5]),
                    rtol=1e-8, atol=1e-8, controller="scipy")
    assert failure.value.t == ref.t[-1]  # times here lie on a grid of 1.2e-4: roundoff cannot move them


# --- the adjoint's norm: its blocks and the seminorm's mask, seen in the backward step count ---------------------


def _linear_adjoint_nfe(method: str) -> tuple[int, int]:
    """(gqref's, torchdiffeq's) backward evaluations of the adjoint on y' = A y, the 4 entries of A the parameters.

    dL/dA grows along the backward solve, so whether its block is in the norm changes the steps taken."""
    A = np.array([[-0.3, 1.2], [-1.5, -0.1]])
    y0, t = np.array([1.0, 0.5]), np.array([0.0, 1.0, 3.0])
    dl_dy = np.array([[0.0, 0.0], [0.7, -0.2], [1.1, 0.4]])
    ref = gqref.gradient(lambda t, y, p: p.reshape(2, 2) @ y, y0, t, A.ravel(), dl_dy, method=method, rtol=1e-6,
                         atol=1e-8, t_grad=False)

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(torch.tensor(A))
            self.calls = 0

        def forward(self, t, y):
            self.calls += 1
            return self.A @ y

    func = Linear()
    options = {"norm": "seminorm"} if method == "seminorm" else None
    ys = torchdiffeq.odeint_adjoint(func, torch.tensor(y0), torch.tensor(t), rtol=1e-6, atol=1e-8,
                                    adjoint_options=options)
    func.calls = 0
    (ys * torch.tensor(dl_dy)).sum().backward()
    return ref.diagnostics.nfe_backward, func.calls


def test_adjoint_norms_take_torchdiffeqs_backward_steps():
    full, semi = _linear_adjoint_nfe("adjoint"), _linear_adjoint_nfe("seminorm")
    assert full[0] == full[1] and semi[0] == semi[1]
    assert semi[0] < full[0]  # the problem sees the mask: leaving dL/dA out of the norm saves steps
