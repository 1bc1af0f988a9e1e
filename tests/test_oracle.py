"""The oracle on any field: VJPs derived by complex step for bare fields, and a reference gradient that is right at
equilibria or says it is unsure, judged with a documented absolute floor."""

import math

import numpy as np
import pytest

import gqref
from gqref import problems as P
from gqref.check import (
    CLOSED_FORM_ERROR,
    Reference,
    UnreliableReferenceError,
    compare,
    reference_gradient,
)
from gqref.errors import InputError
from gqref.field import VectorField

METHODS = ("discrete", "adjoint", "seminorm", "gq")


def python_field(field: VectorField, with_vjps: bool = True) -> VectorField:
    """The plain-Python twin of a problem's compiled field (its .py_func's accept complex input): no compilation."""
    roles = ("vjp_t", "vjp_y", "vjp_p") if with_vjps else ()
    return VectorField(field.f.py_func, **{role: getattr(field, role).py_func for role in roles})


def ones(problem):
    return np.ones((len(problem.t), problem.state_dim))


def rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# --- bare fields --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_bare_field_matches_the_closed_form_for_every_method(method):
    problem = P.time_dependent_scalar(0.8, 1.7, (1.0, -0.5), np.linspace(0.0, 2.0, 5))
    bare = problem.field.f.py_func  # a plain f(t, y, p): every VJP, ∂f/∂t included, comes from complex step
    g = gqref.gradient(bare, problem.y0, problem.t, problem.params, ones(problem), method=method, rtol=1e-12,
                       atol=1e-12)
    exact = problem.exact_gradient(problem.y0, problem.params, problem.t, ones(problem))
    assert g.diagnostics.vjp_sources == {"vjp_y": "complex step", "vjp_p": "complex step", "vjp_t": "complex step"}
    # at rtol = atol = 1e-12 each method is within (steps)·tol ≈ 1e-10 of the flow's gradient, far inside 1e-8
    for got, want in zip((g.dL_dy0, g.dL_dparams, g.dL_dt), exact):
        assert rel(got, want) <= 1e-8


@pytest.mark.parametrize("name", sorted(P.PROBLEMS))
def test_bare_field_equals_hand_vjps_on_the_zoo(name):
    problem = P.PROBLEMS[name]()
    t = problem.t[:40]  # the cubic spiral's 1000 outputs are not needed to compare VJPs
    hand, bare = python_field(problem.field), problem.field.f.py_func
    args = (problem.y0, t, problem.params, np.ones((len(t), problem.state_dim)))
    for method in METHODS:
        a = gqref.gradient(hand, *args, method=method, rtol=1e-9, atol=1e-9)
        b = gqref.gradient(bare, *args, method=method, rtol=1e-9, atol=1e-9)
        scale = max(np.max(np.abs(v)) for v in (a.dL_dy0, a.dL_dparams, a.dL_dt))
        # the discrete derivative is a fixed sum of VJPs, and complex-step VJPs equal hand ones to roundoff:
        # 1e-12 of the scale. The adaptive methods run the same backward solve, whose accept/reject decisions
        # could flip on a roundoff difference only where an error ratio is within roundoff of 1; that never
        # happens on these problems, but a flip would move the result by up to the solver's tolerance.
        bound = 1e-12 if method == "discrete" else 1e-9
        for got, want in zip((b.dL_dy0, b.dL_dparams, b.dL_dt), (a.dL_dy0, a.dL_dparams, a.dL_dt)):
            assert np.max(np.abs(got - want)) <= bound * scale, method


def test_hand_written_vjps_win_and_the_diagnostics_say_which_were_derived():
    problem = P.van_der_pol()
    f, vjp_y = problem.field.f.py_func, problem.field.vjp_y.py_func

    def doubled_vjp_y(t, y, p, a):  # deliberately wrong: if it is used, the gradient changes
        return 2.0 * vjp_y(t, y, p, a)

    args = (problem.y0, problem.t, problem.params, ones(problem))
    right = gqref.gradient(VectorField(f, vjp_y=vjp_y), *args, method="discrete")
    wrong = gqref.gradient(VectorField(f, vjp_y=doubled_vjp_y), *args, method="discrete")
    assert right.diagnostics.vjp_sources == {"vjp_y": "given", "vjp_p": "complex step", "vjp_t": "complex step"}
    assert rel(wrong.dL_dy0, right.dL_dy0) > 0.1


def test_compiled_bare_field_stays_compiled_and_matches_hand_vjps():
    problem = P.van_der_pol()
    args = (problem.y0, problem.t, problem.params, ones(problem))
    g = gqref.gradient(problem.field.f, *args, method="discrete")
    assert g.diagnostics.vjp_sources["vjp_p"] == "complex step"
    field = gqref.field.complete_vjps(VectorField(problem.field.f), problem.t[0], problem.y0, problem.params)[0]
    assert field.compiled  # the derived VJPs are numba closures, so the gradient kernels run compiled
    hand = gqref.gradient(problem.field, *args, method="discrete")
    for got, want in zip((g.dL_dy0, g.dL_dparams), (hand.dL_dy0, hand.dL_dparams)):
        assert rel(got, want) <= 1e-12  # same frozen-step sum, VJPs equal to roundoff


def _raises_on_complex(t, y, p):
    return np.array([y[1], -math.cos(t) * y[0]])  # math.cos rejects complex t


def _drops_the_imaginary_part(t, y, p):
    return np.real(np.array([y[1], -p[0] * y[0]]))  # real output for complex input


def _partly_real(t, y, p):
    return np.array([y[1], -p[0] * y[0] - np.real(y[0]) ** 3])  # complex output, but the cubic term lost its Im


@pytest.mark.parametrize("field, message", [
    (_raises_on_complex, "f raised TypeError on complex input"),
    (_drops_the_imaginary_part, "returned real output"),
    (_partly_real, "differs from central differences"),
])
def test_a_field_that_cannot_be_complex_stepped_gets_an_input_error(field, message):
    with pytest.raises(InputError, match=message) as info:
        gqref.gradient(field, [1.0, 0.5], [0.0, 1.0], np.array([2.0]), np.ones((2, 2)), method="discrete")
    assert "gqref.VectorField(f, vjp_t=..., vjp_y=..., vjp_p=...)" in str(info.value)


def test_a_compiled_field_with_a_real_buffer_gets_an_input_error():
    @gqref.njit
    def real_buffer(t, y, p):
        out = np.empty(2)  # float64: numba refuses to store the complex values
        out[0] = y[1]
        out[1] = -p[0] * y[0]
        return out

    with pytest.raises(InputError, match="on complex input"):  # the probe gqref.gradient runs before any VJP
        gqref.field.complete_vjps(VectorField(real_buffer), 0.0, np.array([1.0, 0.5]), np.array([2.0]))


def test_time_vjp_is_not_derived_without_t_grad():
    g = gqref.gradient(lambda t, y, p: np.array([y[1], -p[0] * y[0]]), [1.0, 0.5], [0.0, 1.0], np.array([2.0]),
                       np.ones((2, 2)), method="discrete", t_grad=False)
    assert g.diagnostics.vjp_sources == {"vjp_y": "complex step", "vjp_p": "complex step"} and g.dL_dt is None


# --- the reference ---------------------------------------------------------------------------------------------


def van_der_pol_linearization(mu, y0, t, dl_dy):
    """Van der Pol's nonlinearity μx²x' is cubic, so near the origin its flow, its derivatives and ∂/∂μ equal those
    of y' = [[0, 1], [−1, μ]]y up to O(|y0|²) relative: exact at y0 = 0, ~1e-16 at |y0| = 1e-8."""
    linear = P.linear([[0.0, 1.0], [-1.0, mu]], [0.0, 0.0], y0, t)
    dy0, dp, dt = linear.exact_gradient(linear.y0, linear.params, linear.t, dl_dy)
    return dy0, dp[3:4], dt  # ∂f/∂μ is ∂f/∂A[1, 1]


@pytest.mark.parametrize("y0", [[0.0, 0.0], [1e-8, 0.0]], ids=["equilibrium", "near"])
def test_van_der_pol_reference_is_right_at_and_near_the_equilibrium(y0):
    problem = P.van_der_pol(1.0, y0)
    ref = reference_gradient(problem)
    exact = van_der_pol_linearization(1.0, y0, problem.t, ones(problem))
    scale = max(np.max(np.abs(v)) for v in exact)
    assert ref.trusted
    for got, want, stated in zip(ref.values, exact, ref.errors):
        error = np.max(np.abs(got - want))
        assert error <= 1e-8 * scale           # the acceptance bound
        assert error <= stated + 1e-15 * scale  # the stated accuracy is honest (the linearization is ~1e-16 off)
    # the frozen-step derivative, the former reference, is the derivative of steps sized for a state with no error
    frozen = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, ones(problem), method="discrete",
                            rtol=1e-12, atol=1e-12)
    if y0[0] == 0.0:
        assert rel(frozen.dL_dy0, exact[0]) > 1.0


@pytest.mark.parametrize("b", [[0.0, 0.0], [0.3, -0.2]], ids=["equilibrium", "forced"])
def test_numerical_reference_matches_the_linear_closed_form_from_zero(b):
    problem = P.linear([[-0.5, 1.0], [-1.0, -0.3]], b, [0.0, 0.0], np.linspace(0.0, 3.0, 4))
    ref = reference_gradient(problem, numerical=True)
    exact = problem.exact_gradient(problem.y0, problem.params, problem.t, ones(problem))
    scale = max(np.max(np.abs(v)) for v in exact)
    assert ref.trusted
    for got, want, stated in zip(ref.values, exact, ref.errors):
        error = np.max(np.abs(got - want))
        assert error <= 1e-8 * scale
        assert error <= stated + CLOSED_FORM_ERROR * scale  # honest, up to the closed form's own error


def test_numerical_reference_matches_the_forced_closed_form_from_rest():
    """y' = Ay + b·cos(ωt) from y0 = 0: the state at rest, moved only by a time-dependent forcing (so ∂f/∂t enters
    dL/dt0 and the controller's first error estimates are those of a zero state)."""
    problem = P.forced_linear(t=np.linspace(0.0, 3.0, 4))
    ref = reference_gradient(problem, numerical=True)
    exact = problem.exact_gradient(problem.y0, problem.params, problem.t, ones(problem))
    scale = max(np.max(np.abs(v)) for v in exact)
    assert ref.trusted and np.all(problem.y0 == 0.0)
    for got, want, stated in zip(ref.values, exact, ref.errors):
        error = np.max(np.abs(got - want))
        assert error <= 1e-8 * scale
        assert error <= stated + CLOSED_FORM_ERROR * scale


def test_a_reference_not_tight_enough_for_the_criterion_gives_no_verdict():
    problem = P.van_der_pol()
    ref = reference_gradient(problem)

    def exact_candidate(*args):
        return ref.values

    report = gqref.check_gradient(exact_candidate, problem, reference=ref)
    assert report.passed(1e-6)
    # the reference is good to ~1e-10 of G, so it cannot support a verdict at 1e-13
    assert report.verdict(1e-13) == "unsure"
    with pytest.raises(UnreliableReferenceError, match="only accurate to"):
        report.passed(1e-13)


def test_a_field_whose_vjps_contradict_it_makes_the_reference_unreliable():
    problem = P.van_der_pol()
    f = problem.field

    def wrong_vjp_p(t, y, p, a):
        return 1.01 * f.vjp_p.py_func(t, y, p, a)  # 1% off: the adjoint uses it, the sensitivity solve does not

    inconsistent = P.Problem("inconsistent", VectorField(f.f.py_func, f.vjp_t.py_func, f.vjp_y.py_func, wrong_vjp_p),
                             problem.y0, problem.params, problem.t)
    ref = reference_gradient(inconsistent)
    assert not ref.trusted and "dL_dparams" in ref.note
    report = gqref.check_gradient(lambda *a: ref.values, inconsistent, reference=ref)
    assert report.verdict(1e-3) == "unsure" and "UNRELIABLE" in str(report)
    with pytest.raises(UnreliableReferenceError, match="unreliable"):
        report.passed(1e-3)


# --- the absolute floor ------------------------------------------------------------------------------------------


def _reference(dy0, dp, dt):
    return Reference(np.array(dy0), np.array(dp), np.array(dt), errors=(0.0, 0.0, 0.0), source="test values")


def test_a_tiny_component_is_judged_against_the_gradient_scale():
    # y0 ≈ 1.7e-9 makes dL/dt ~6e-10; an error of 1.1e-10 there is 1e-10 of the gradient's scale G ≈ 1
    ref = _reference([1.0, -0.5], [0.3], [6e-10, -6e-10])
    report = compare("tiny dL/dt", ([1.0, -0.5], [0.3], [6e-10 + 1.1e-10, -6e-10]), ref)
    assert report.worst > 0.1          # purely relative, this component would fail at any useful rtol
    assert report.passed(1e-5)         # with the floor rtol·G it passes
    assert not report.passed(1e-5, atol=0.0)  # and the floor is what made the difference
    assert report.allowed(1e-5) == {"dL_dy0": 1e-5, "dL_dparams": 1e-5, "dL_dt": 1e-5}


def test_the_floor_does_not_hide_a_real_error():
    ref = _reference([1.0, -0.5], [0.3], [6e-10, -6e-10])
    report = compare("off", ([1.0 + 3e-5, -0.5], [0.3], [6e-10, -6e-10]), ref)
    assert not report.passed(1e-5)
    assert report.verdict(1e-5) == "fail"


@pytest.mark.parametrize("kwargs", [{"rtol": 0.0}, {"rtol": -1.0}, {"rtol": float("nan")},
                                    {"rtol": 1e-5, "atol": -1.0}])
def test_bad_criteria_are_rejected(kwargs):
    report = compare("x", ([1.0], [1.0], [1.0]), _reference([1.0], [1.0], [1.0]))
    with pytest.raises(InputError, match="tol must be"):
        report.passed(**kwargs)
