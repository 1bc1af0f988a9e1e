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

Nothing here imports gqref.panels, gqref.refinement or gqref.kronrod: the Gauß rules come from numpy, the panel
widths from the node times the solver reports, the expected values from the formulas above.
"""

import math

import numpy as np
import pytest
import torch
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
