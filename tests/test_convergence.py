"""Polynomial exactness and measured convergence orders of the Dormand–Prince step and its dense output."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import gqref
from gqref.interp import fit_matrix, interp_evaluate, interp_fit
from gqref.runge_kutta import combine, dopri5_step
from gqref.tableau import DOPRI5, float_tableau
from tests.fields import polynomial_in_t

EPS = np.finfo(float).eps
TAB = float_tableau(DOPRI5)


def poly_antiderivative(coeffs, t):
    return sum(c * t ** (k + 1) / (k + 1) for k, c in enumerate(coeffs))


def fixed_steps(f, y0, t0, t1, n, p=None, weights=None):
    """Fixed-step Dormand–Prince; returns the states at the grid and the quartic coefficients per step."""
    p = np.empty(0) if p is None else p
    dt = (t1 - t0) / n
    y = np.array(y0, dtype=float)
    k = np.empty((7, y.size))
    y1, err, y_mid = (np.empty_like(y) for _ in range(3))
    states, fits = [y.copy()], []
    for j in range(n):
        t = t0 + j * dt
        k[0] = f(t, y, p)
        assert dopri5_step(f, p, 1.0, t, dt, y, k, y1, err, TAB.a, TAB.c, TAB.e) == -1
        if weights is not None:  # propagate another weight set (the embedded method) instead of b
            combine(y1, y, k, weights, 7, dt)
        combine(y_mid, y, k, TAB.b_mid, 7, dt)
        coeffs = np.empty((5, y.size))
        interp_fit(coeffs, fit_matrix(), y, y1, y_mid, k[0], f(t + dt, y1, p), dt)
        fits.append((t, t + dt, coeffs))
        y = y1.copy()
        states.append(y.copy())
    return np.array(states), fits


@given(
    coeffs=st.lists(st.floats(-3, 3), min_size=1, max_size=5),
    t_end=st.floats(0.1, 3.0),
    n_steps=st.integers(1, 6),
)
def test_quadrature_of_degree_4_is_exact_at_step_ends(coeffs, t_end, n_steps):
    p = np.array(coeffs)
    states, _ = fixed_steps(polynomial_in_t.py_func, [0.0], 0.0, t_end, n_steps, p)
    grid = np.linspace(0.0, t_end, n_steps + 1)
    exact = np.array([poly_antiderivative(coeffs, t) for t in grid])
    # roundoff: each step sums 7 stage terms of size ≤ dt·max|p(t)|; errors add over the steps
    scale = np.sum(np.abs(p) * np.maximum(t_end, 1.0) ** np.arange(p.size)) * t_end
    assert np.max(np.abs(states[:, 0] - exact)) <= 64 * EPS * (scale + np.max(np.abs(exact)))


@given(coeffs=st.lists(st.floats(-3, 3), min_size=1, max_size=4), t_end=st.floats(0.1, 3.0))
def test_dense_output_exact_for_degree_3(coeffs, t_end):
    # a 4th-order continuous extension integrates y' = p(t), deg p ≤ 3, exactly at every point of the step
    p = np.array(coeffs)
    _, fits = fixed_steps(polynomial_in_t.py_func, [0.0], 0.0, t_end, 2, p)
    scale = np.sum(np.abs(p) * np.maximum(t_end, 1.0) ** np.arange(p.size)) * t_end
    for t0, t1, c in fits:
        for x in np.linspace(t0, t1, 7):
            out = np.empty(1)
            interp_evaluate(c, t0, t1, x, out)
            assert abs(out[0] - poly_antiderivative(coeffs, x)) <= 64 * EPS * (scale + 1.0)


def test_adaptive_solver_exact_for_degree_4():
    # the adaptive driver (any steps it likes) is exact at its step ends for a quartic right-hand side
    p = np.array([1.0, -2.0, 0.5, 0.25, -0.125])
    sol = gqref.solve(gqref.VectorField(polynomial_in_t), np.zeros(1), [0.0, 2.0], p, rtol=1e-3, atol=1e-3)
    exact = poly_antiderivative(p, sol.steps.ts)
    assert np.max(np.abs(sol.steps.ys[:, 0] - exact)) <= 64 * EPS * 10.0


def nonlinear(t, y, p):
    return np.array([-y[0] * y[0] + np.cos(t), y[0] - 0.5 * y[1]])


def reference(t_grid):
    sol = solve_ivp(lambda t, y: nonlinear(t, y, None), (0.0, t_grid[-1]), [1.0, 0.5], method="DOP853",
                    rtol=3e-14, atol=1e-15, dense_output=True)
    return sol.sol(t_grid).T


def observed_orders(errors):
    return np.log2(np.array(errors[:-1]) / np.array(errors[1:]))


# In the asymptotic regime halving the step divides the error by 2^p up to O(h) corrections, so the observed
# order of the finest halvings lies within 0.3 of p (the coarser ones approach it, which is not asserted).
ORDER_SLACK = 0.3
STEPS = [16, 32, 64, 128]
ASYMPTOTIC = slice(-2, None)


def test_solution_is_fifth_order():
    errors = []
    for n in STEPS:
        states, _ = fixed_steps(nonlinear, [1.0, 0.5], 0.0, 2.0, n)
        errors.append(np.max(np.abs(states[-1] - reference(np.array([2.0]))[0])))
    assert np.all(np.abs(observed_orders(errors)[ASYMPTOTIC] - 5) < ORDER_SLACK), observed_orders(errors)


def test_embedded_solution_is_fourth_order():
    errors = []
    for n in STEPS:
        states, _ = fixed_steps(nonlinear, [1.0, 0.5], 0.0, 2.0, n, weights=float_tableau(DOPRI5).b - TAB.e)
        errors.append(np.max(np.abs(states[-1] - reference(np.array([2.0]))[0])))
    assert np.all(np.abs(observed_orders(errors)[ASYMPTOTIC] - 4) < ORDER_SLACK), observed_orders(errors)


@pytest.mark.parametrize("x", [0.25, 0.5, 0.8])
def test_dense_output_is_fourth_order(x):
    # local error of the interpolant at a fixed fraction x of one step of size h is O(h^5)
    errors = []
    for h in [0.1, 0.05, 0.025, 0.0125]:
        _, fits = fixed_steps(nonlinear, [1.0, 0.5], 0.0, h, 1)
        t0, t1, c = fits[0]
        out = np.empty(2)
        interp_evaluate(c, t0, t1, t0 + x * h, out)
        errors.append(np.max(np.abs(out - reference(np.array([t0 + x * h]))[0])))
    assert np.all(np.abs(observed_orders(errors)[ASYMPTOTIC] - 5) < ORDER_SLACK), observed_orders(errors)
