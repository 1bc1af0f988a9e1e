"""gqref.solve against the closed form of linear systems, y' = Ay + b, for hypothesis-generated stable A."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import expm

import gqref
from gqref.strategies import stable_matrices, time_grids, tolerances, vectors
from tests.fields import linear, linear_py, pack_linear


def exact_linear(a, b, y0, t):
    """y(t) = exp((t − t0)·[[A, b], [0, 0]]) [y0; 1] (the affine flow as one matrix exponential)."""
    n = len(y0)
    block = np.zeros((n + 1, n + 1))
    block[:n, :n] = a
    block[:n, n] = b
    return np.array([(expm((ti - t[0]) * block) @ np.append(y0, 1.0))[:n] for ti in t])


def global_error_bound(sol, rtol, atol, n):
    """The controller keeps every step's local error estimate within atol + rtol·|y| (RMS over n components);
    A's symmetric part is negative definite, so the flow contracts and local errors at most add up. One more
    term covers the dense output at the output times (4th order, same size as a local error)."""
    y_max = np.max(np.abs(sol.ys))
    return (sol.stats.n_accepted + 1) * np.sqrt(n) * (atol + rtol * y_max)


@given(data=st.data(), tols=tolerances, t=time_grids(), controller=st.sampled_from(["torchdiffeq", "scipy"]))
def test_linear_system_matches_matrix_exponential(data, tols, t, controller):
    a = data.draw(stable_matrices())
    n = a.shape[0]
    y0 = data.draw(vectors(n))
    b = data.draw(vectors(n, -1.0, 1.0))
    rtol, atol = tols
    sol = gqref.solve(gqref.VectorField(linear), y0, t, pack_linear(a, b), rtol=rtol, atol=atol,
                      controller=controller)
    exact = exact_linear(a, b, y0, t)
    assert sol.ys.shape == (len(t), n)
    assert np.array_equal(sol.ys[0], y0)
    assert np.max(np.abs(sol.ys - exact)) <= global_error_bound(sol, rtol, atol, n)


@given(a=stable_matrices(n=2), tols=tolerances)
def test_error_shrinks_with_tolerance(a, tols):
    # tightening both tolerances 1000-fold reduces the actual error (until roundoff takes over)
    y0, b, t = np.array([1.0, -0.5]), np.array([0.3, 0.1]), np.array([0.0, 0.7, 2.0])
    exact = exact_linear(a, b, y0, t)
    rtol, atol = tols
    loose = gqref.solve(gqref.VectorField(linear), y0, t, pack_linear(a, b), rtol=rtol, atol=atol)
    tight = gqref.solve(gqref.VectorField(linear), y0, t, pack_linear(a, b), rtol=rtol * 1e-3, atol=atol * 1e-3)
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
    assert np.allclose(sol.ys[-1], expm(a) @ y0, rtol=0, atol=1e-8)
    assert np.allclose(linear_py(0.0, y0[:, 0], pack_linear(a, np.zeros(2))), a @ y0[:, 0])
