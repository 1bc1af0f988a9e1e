"""gqref.problems: hand-derived VJPs against complex-step Jacobians, closed forms against a tight solve, exact
gradients against complex-step derivatives of the closed forms, compiled functions against their .py_func."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gqref
import gqref.strategies as gst
from gqref.errors import InputError
from gqref.problems import (
    PROBLEMS,
    Problem,
    linear,
    mlp,
    pack_mlp,
    time_dependent_scalar,
    toy,
    toy_loss_gradient,
    unpack_mlp,
)

EPS = np.finfo(float).eps
# Complex step: g(x + ih) = g(x) + ih g'(x) − h²/2 g''(x) + …, so Im g(x + ih)/h = g'(x) + O(h²) with no subtraction;
# with h = 1e-20 the O(h²) term is ~1e-40 relative and the derivative is as accurate as g itself.
H = 1e-20
NAMES = sorted(PROBLEMS)
CLOSED_FORM = [name for name in NAMES if PROBLEMS[name]().has_closed_form]


def unit(n, k, scale=1.0):
    e = np.zeros(n, dtype=complex)
    e[k] = scale
    return e


@st.composite
def points(draw, problem: Problem):
    """(t, y, a): a time in the problem's span, a state in [−2, 2]^S and a cotangent in [−1, 1]^S. The VJP identities
    hold at every point, so the state need not lie on a trajectory."""
    s = problem.state_dim
    t = draw(st.floats(float(problem.t.min()), float(problem.t.max()), **gst.finite))
    return t, draw(gst.initial_states(s)), draw(gst.cotangents((s,)))


def complex_step_jacobians(problem: Problem, t: float, y: np.ndarray):
    """(∂f/∂t, ∂f/∂y, ∂f/∂p) by complex steps through f.py_func."""
    f, p = problem.field.f.py_func, problem.params
    s, n_p = y.size, p.size
    df_dt = f(t + 1j * H, y, p).imag / H
    df_dy = np.stack([f(t, y + unit(s, k, 1j * H), p).imag / H for k in range(s)], axis=1)
    df_dp = np.stack([f(t, y, p + unit(n_p, k, 1j * H)).imag / H for k in range(n_p)], axis=1)
    return df_dt, df_dy, df_dp


def test_registry_and_strategies_cover_the_same_problems():
    assert set(gst.problem_strategies) == set(PROBLEMS)
    assert set(CLOSED_FORM) == {"linear", "forced_linear", "toy", "harmonic_oscillator", "time_dependent_scalar"}


@pytest.mark.parametrize("name", NAMES)
def test_default_instances(name):
    problem = PROBLEMS[name]()
    assert problem.name == name
    assert problem.field.compiled
    assert problem.y0.dtype == problem.params.dtype == problem.t.dtype == np.float64
    assert problem.field.f(problem.t[0], problem.y0, problem.params).shape == problem.y0.shape
    assert (problem.exact_solution is None) == (problem.exact_gradient is None)


# --- (a) VJPs = complex-step Jacobian products ------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_vjps_match_complex_step_jacobians(name, data):
    problem = data.draw(gst.problem_strategies[name])
    t, y, a = data.draw(points(problem))
    df_dt, df_dy, df_dp = complex_step_jacobians(problem, t, y)
    field, p = problem.field, problem.params
    # Both sides are exact derivatives up to rounding of the terms they sum (the complex step has no subtractive
    # cancellation). On the drawn, bounded inputs those terms are at most O(10²), i.e. rounding ≲ 1e-13 absolute;
    # 1e-12 relative to the result plus ‖a‖·(1 + max|J|) leaves a 10× margin and would still catch any wrong term.
    for vjp, reference, jac in ((field.vjp_t(t, y, p, a), a @ df_dt, df_dt),
                                (field.vjp_y(t, y, p, a), a @ df_dy, df_dy),
                                (field.vjp_p(t, y, p, a), a @ df_dp, df_dp)):
        vjp = np.asarray(vjp)
        assert vjp.shape == np.shape(reference)
        scale = np.max(np.abs(reference), initial=0.0) + np.max(np.abs(a)) * (1.0 + np.max(np.abs(jac), initial=0.0))
        assert np.max(np.abs(vjp - reference), initial=0.0) <= 1e-12 * scale


def along_t_y_p(function, t, y, p, a, dy, dp):
    """h ↦ function evaluated at t + h, at y + h·dy and at p + h·dp."""
    return (lambda h: function(t + h, y, p, a), lambda h: function(t, y + h * dy, p, a),
            lambda h: function(t, y, p + h * dp, a))


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_vjp_py_funcs_can_be_complex_stepped(name, data):
    """Callers complex-step through the VJPs (second derivatives): each VJP's .py_func must carry the imaginary part
    of complex t, y, p and a. Checked against central differences of the compiled, real VJP."""
    problem = data.draw(gst.problem_strategies[name])
    t, y, a = data.draw(points(problem))
    p = problem.params
    dy, dp = data.draw(gst.cotangents(y.shape)), data.draw(gst.cotangents(p.shape))
    eps = 1e-5
    for role in ("vjp_t", "vjp_y", "vjp_p"):
        compiled = getattr(problem.field, role)
        python = compiled.py_func
        # linear in a: the complex step in a is exact
        u = data.draw(gst.cotangents(y.shape))
        assert np.allclose(np.imag(python(t, y, p, a + 1j * H * u)) / H, compiled(t, y, p, u), rtol=1e-13, atol=1e-13)
        for stepped in along_t_y_p(python, t, y, p, a, dy, dp):
            complex_step = np.imag(stepped(1j * H)) / H
            # central difference with step 1e-5: truncation ε²/6·|g'''| ≲ 1e-9 (third derivatives here are at most
            # O(10²): |p1|³ ≤ 27 for the cosine field, bounded weights for the MLP), rounding ≲ 1e-16·|g|/ε ≈
            # 1e-11·|g|. 1e-7 separates that from a dropped imaginary part (an O(1) error) by two orders.
            central = (np.real(stepped(eps)) - np.real(stepped(-eps))) / (2 * eps)
            scale = 1.0 + np.max(np.abs(np.real(stepped(0.0))))
            assert np.max(np.abs(complex_step - central)) <= 1e-7 * scale


# --- (b) closed forms = a tight solve ------------------------------------------------------------------------------


def flow_gain(problem: Problem, start: float, end: float) -> float:
    """max ‖Φ(t, s)‖₂ over sampled s before t in [start, end]: how far an error made at s can grow by t. Every
    closed-form problem is affine in y0, so Φ(t, s) e_k = y(t; s, e_k) − y(t; s, 0)."""
    s_dim, gain = problem.state_dim, 1.0
    samples = np.linspace(start, end, 17)
    for j in range(samples.size - 1):
        grid = samples[j:]
        base = problem.exact_solution(np.zeros(s_dim), problem.params, grid)
        columns = [problem.exact_solution(np.eye(s_dim)[k], problem.params, grid) - base for k in range(s_dim)]
        flows = np.stack(columns, axis=-1)[1:]  # (later times, S, S)
        gain = max(gain, float(np.max(np.linalg.norm(flows, ord=2, axis=(1, 2)))))
    return gain


def assert_matches_tight_solve(problem: Problem, controller: str):
    rtol = atol = 1e-12
    t = problem.t
    sol = gqref.solve(problem.field, problem.y0, t, problem.params, rtol=rtol, atol=atol, controller=controller)
    exact = problem.exact_solution(problem.y0, problem.params, t)
    assert exact.shape == sol.ys.shape == (t.size, problem.state_dim)
    assert np.array_equal(exact[0], problem.y0)
    exact_steps = problem.exact_solution(problem.y0, problem.params, np.concatenate([t[:1], sol.steps.ts]))[1:]
    y_max = max(np.max(np.abs(sol.ys)), np.max(np.abs(sol.steps.ys)))
    reach = sol.steps.ts[-1] if abs(sol.steps.ts[-1] - t[0]) > abs(t[-1] - t[0]) else t[-1]  # last step may overshoot
    gain = flow_gain(problem, t[0], reach)
    tolerance = np.sqrt(problem.state_dim) * (atol + rtol * y_max)
    # At the accepted steps: each leaves a local error within √S·(atol + rtol·|y|) in the max norm (the controller's
    # estimate; the factor 2 covers it undershooting near roundoff); the flow carries it on multiplied by at most
    # `gain` and the errors at most add up. The last term is rounding in the closed form (scaling and squaring: a
    # few hundred ulps of the largest propagated entry).
    bound = 2 * gain * (sol.stats.n_accepted + 1) * tolerance + 1e3 * EPS * gain * y_max
    assert np.max(np.abs(sol.steps.ys - exact_steps)) <= bound
    # At the output times (torchdiffeq semantics: steps are not cut to land on them) the quartic dense output adds
    # its own O(h⁵) error, which the controller does not measure. Its constant differs from the error estimate's:
    # hypothesis found 26 tolerances on y' = cos(2.53 t) y over [0.613, 0.5625] in 3 steps, an error torchdiffeq
    # 0.2.5 reproduces to 3 digits (5.237e-11). 100 tolerances leaves room above that.
    assert np.max(np.abs(sol.ys - exact)) <= bound + 100 * gain * tolerance


@pytest.mark.parametrize("name", CLOSED_FORM)
@given(data=st.data(), controller=st.sampled_from(["torchdiffeq", "scipy"]))
def test_exact_solution_matches_tight_solve(name, data, controller):
    assert_matches_tight_solve(data.draw(gst.problem_strategies[name]), controller)


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_default_exact_solution_matches_tight_solve(name):
    assert_matches_tight_solve(PROBLEMS[name](), "torchdiffeq")


def test_dense_output_case_found_by_hypothesis():
    assert_matches_tight_solve(time_dependent_scalar(1.0, 2.53125, [1.0], [0.61328125, 0.5625]), "torchdiffeq")


# --- (c) exact gradients = complex-step derivatives of the closed form ----------------------------------------------


def complex_step_gradient(problem: Problem, dl_dy: np.ndarray):
    """(dL/dy0, dL/dparams, dL/dt) of L = Σ dL_dy·exact_solution, one complex step per coordinate."""
    y0, p, t = problem.y0, problem.params, problem.t
    # L is linear in dL_dy: step with a unit-size cotangent so h·dL_dy·y′ cannot underflow, then scale back
    size = np.max(np.abs(dl_dy))
    if size == 0.0:
        return np.zeros(y0.size), np.zeros(p.size), np.zeros(t.size)

    def derivative(y0_, p_, t_):
        return size * (np.sum(dl_dy / size * problem.exact_solution(y0_, p_, t_)).imag / H)

    g_y0 = np.array([derivative(y0 + unit(y0.size, k, 1j * H), p, t) for k in range(y0.size)])
    g_p = np.array([derivative(y0, p + unit(p.size, k, 1j * H), t) for k in range(p.size)])
    g_t = np.array([derivative(y0, p, t + unit(t.size, k, 1j * H)) for k in range(t.size)])
    return g_y0, g_p, g_t


def assert_exact_gradient(problem: Problem, dl_dy: np.ndarray):
    exact = problem.exact_gradient(problem.y0, problem.params, problem.t, dl_dy)
    stepped = complex_step_gradient(problem, dl_dy)
    # Both are derivatives of the same scaling-and-squaring exponential to rounding (the Fréchet derivative and
    # the complex step differ only in how the rounding of its ≲ 10 squarings enters, a few hundred ulps). Relative
    # to each block's largest entry, or to the whole gradient's for a block that cancels to ~0 (dL/dt0 can), 1e-10.
    whole = max(np.max(np.abs(block)) for block in stepped)
    for got, want, role in zip(exact, stepped, ("dL_dy0", "dL_dparams", "dL_dt")):
        assert np.shape(got) == want.shape, role
        scale = np.max(np.abs(want)) + 1e-3 * whole
        assert np.max(np.abs(got - want)) <= 1e-10 * scale, role


@pytest.mark.parametrize("name", CLOSED_FORM)
@given(data=st.data())
def test_exact_gradient_matches_complex_step(name, data):
    problem = data.draw(gst.problem_strategies[name])
    assert_exact_gradient(problem, data.draw(gst.cotangents(problem)))


@pytest.mark.parametrize("name", CLOSED_FORM)
def test_default_exact_gradient_matches_complex_step(name):
    problem = PROBLEMS[name]()
    dl_dy = np.cos(np.arange(problem.t.size * problem.state_dim)).reshape(problem.t.size, problem.state_dim)
    assert_exact_gradient(problem, dl_dy)


def test_toy_matches_the_papers_closed_form():
    problem = toy(a=0.2, z0=10.0, T=20.0)
    a, z0, big_t = 0.2, 10.0, 20.0
    dl_dy = toy_loss_gradient(problem)
    assert np.allclose(dl_dy, [[0.0], [2 * z0 * np.exp(a * big_t)]], rtol=1e-15)
    g_z0, g_a, g_t = problem.exact_gradient(problem.y0, problem.params, problem.t, dl_dy)
    assert np.allclose(g_z0, [2 * z0 * np.exp(2 * a * big_t)], rtol=1e-14)
    assert np.allclose(g_a, [2 * big_t * z0**2 * np.exp(2 * a * big_t)], rtol=1e-14)
    # dL/dT = 2 z(T)·a z(T), and moving t0 shifts the whole trajectory the other way
    assert np.allclose(g_t, [-2 * a * z0**2 * np.exp(2 * a * big_t), 2 * a * z0**2 * np.exp(2 * a * big_t)],
                       rtol=1e-14)


# --- (d) compiled = .py_func --------------------------------------------------------------------------------------

# Fields built from +, −, × only round identically in numba (no fastmath, so no FMA contraction) and numpy.
TRANSCENDENTAL = {"time_dependent_scalar", "mlp", "mlp_time_dependent"}


@pytest.mark.parametrize("name", NAMES)
@given(data=st.data())
def test_compiled_and_python_agree(name, data):
    problem = data.draw(gst.problem_strategies[name])
    t, y, a = data.draw(points(problem))
    field, p = problem.field, problem.params
    pairs = [(field.f(t, y, p), field.f.py_func(t, y, p))]
    pairs += [(fn(t, y, p, a), fn.py_func(t, y, p, a)) for fn in (field.vjp_t, field.vjp_y, field.vjp_p)]
    for compiled, python in pairs:
        compiled, python = np.asarray(compiled), np.asarray(python)
        assert compiled.shape == python.shape and compiled.dtype == python.dtype == np.float64
        if name in TRANSCENDENTAL:
            # exp/log1p/sin/cos come from libm under numba and from numpy's own loops under .py_func: each may
            # differ by an ulp, and the ulp enters sums of at most width·S bounded terms.
            assert np.max(np.abs(compiled - python), initial=0.0) <= 64 * EPS * (1.0 + np.max(np.abs(python)))
        else:
            assert np.array_equal(compiled, python)


# --- packing, validation, strategies ------------------------------------------------------------------------------


def test_mlp_packing_round_trips_and_is_validated():
    problem = mlp(width=3, seed=1, state_dim=2, time_dependent=True)
    w1, b1, w2, b2 = unpack_mlp(problem.params, 2, time_dependent=True)
    assert (w1.shape, b1.shape, w2.shape, b2.shape) == ((3, 3), (3,), (2, 3), (2,))
    assert np.array_equal(pack_mlp(w1, b1, w2, b2), problem.params)
    same = mlp(width=3, state_dim=2, time_dependent=True, weights=(w1, b1, w2, b2), y0=problem.y0)
    assert np.array_equal(same.params, problem.params)
    with pytest.raises(InputError):
        mlp(width=4, state_dim=2, time_dependent=True, weights=problem.params)
    with pytest.raises(InputError):
        linear(a=np.ones((2, 3)))


@given(problem=gst.problems())
def test_drawn_problems_are_valid(problem):
    steps = np.diff(problem.t)
    assert problem.t.size >= 2 and (np.all(steps > 0) or np.all(steps < 0))
    assert np.all(np.isfinite(problem.field.f(problem.t[0], problem.y0, problem.params)))


@given(problem=gst.problems(closed_form=False))
def test_closed_form_filter(problem):
    assert not problem.has_closed_form


def test_gqref_does_not_import_hypothesis():
    code = "import sys, gqref, gqref.problems; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
