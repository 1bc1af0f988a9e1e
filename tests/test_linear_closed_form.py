"""gqref.solve against the closed form of linear systems, y' = Ay + b, for hypothesis-generated stable A."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import expm

import gqref
from gqref import problems as P
from gqref.strategies import linear_problems, stable_matrices, tolerances


def global_error_bound(sol, rtol, atol, n):
    """The controller keeps every step's local error estimate within atol + rtol·|y| (RMS over n components);
    the strategy makes the flow contract in the direction of integration, so local errors at most add up. One more
    term covers the dense output at the output times (4th order, same size as a local error)."""
    y_max = np.max(np.abs(sol.ys))
    return (sol.stats.n_accepted + 1) * np.sqrt(n) * (atol + rtol * y_max)


@given(problem=linear_problems(max_dim=4), tols=tolerances, controller=st.sampled_from(["torchdiffeq", "scipy"]))
def test_linear_system_matches_matrix_exponential(problem, tols, controller):
    rtol, atol = tols
    sol = gqref.solve(problem.field, problem.y0, problem.t, problem.params, rtol=rtol, atol=atol,
                      controller=controller)
    exact = problem.exact_solution(problem.y0, problem.params, problem.t)
    n = problem.state_dim
    assert sol.ys.shape == (len(problem.t), n)
    assert np.array_equal(sol.ys[0], problem.y0)
    assert np.max(np.abs(sol.ys - exact)) <= global_error_bound(sol, rtol, atol, n)


@given(a=stable_matrices(n=2), tols=tolerances)
def test_error_shrinks_with_tolerance(a, tols):
    # tightening both tolerances 1000-fold reduces the actual error (until roundoff takes over)
    problem = P.linear(a, [0.3, 0.1], [1.0, -0.5], [0.0, 0.7, 2.0])
    exact = problem.exact_solution(problem.y0, problem.params, problem.t)
    rtol, atol = tols
    loose = gqref.solve(problem.field, problem.y0, problem.t, problem.params, rtol=rtol, atol=atol)
    tight = gqref.solve(problem.field, problem.y0, problem.t, problem.params, rtol=rtol * 1e-3, atol=atol * 1e-3)
    e_loose = np.max(np.abs(loose.ys - exact))
    e_tight = np.max(np.abs(tight.ys - exact))
    roundoff = 1e3 * np.finfo(float).eps * np.max(np.abs(exact))
    assert e_tight <= max(e_loose, roundoff)
    assert tight.stats.n_accepted >= loose.stats.n_accepted


def test_plain_python_field_any_shape():
    # a plain callable on a (2, 2) state: the solver flattens internally and hands f the state's shape
    a = np.array([[-1.0, 0.5], [-0.5, -1.0]])
    y0 = np.array([[1.0, 2.0], [0.5, -1.0]])
    sol = gqref.solve(lambda t, y, p: a @ y, y0, [0.0, 1.0], rtol=1e-10, atol=1e-12)
    assert sol.ys.shape == (2, 2, 2)
    # the global error bound above with 1e-10/1e-12 tolerances and a handful of steps
    assert np.allclose(sol.ys[-1], expm(a) @ y0, rtol=0, atol=1e-8)
