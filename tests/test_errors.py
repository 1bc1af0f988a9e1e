"""Every bad input raises its documented error, with a message naming the argument or the time."""

import numpy as np
import pytest

import gqref
from gqref import problems as P
from gqref.errors import InputError, MaxStepsExceededError, NonFiniteFieldError, StepSizeUnderflowError
from tests.test_inputs import decay_field


def decay(t, y, p):
    return -y


def solve(**overrides):
    kwargs = {"field": decay, "y0": [1.0, 2.0], "t": [0.0, 1.0]}
    kwargs.update(overrides)
    return gqref.solve(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"t": [0.0, 1.0, 1.0]}, "strictly increasing or strictly decreasing"),
        ({"t": [0.0, 2.0, 1.0]}, "strictly increasing or strictly decreasing"),
        ({"t": [0.0, np.nan]}, "t must be finite"),
        ({"t": [0.0, np.inf]}, "t must be finite"),
        ({"t": [[0.0, 1.0]]}, "t must be a 1-D array"),
        ({"t": []}, "t must be a 1-D array"),
        ({"y0": [1.0, np.nan]}, "y0 must be finite"),
        ({"y0": [np.inf, 0.0]}, "y0 must be finite"),
        ({"y0": ["a", "b"]}, "y0 must be a real floating-point array"),
        ({"y0": [1.0 + 1j, 0.0]}, "y0 must be a real floating-point array"),
        ({"rtol": 0.0}, "rtol must be a positive finite number"),
        ({"rtol": -1e-6}, "rtol must be a positive finite number"),
        ({"atol": 0.0}, "atol must be a positive finite number"),
        ({"atol": np.array([1e-9, -1.0])}, "atol must be positive"),
        ({"atol": np.ones(3)}, "does not broadcast"),
        ({"method": "rk45"}, "method must be one of"),
        ({"controller": "matlab"}, "controller must be one of"),
        ({"norm": "l1"}, "norm must be"),
        ({"norm": gqref.ErrorNorm("mixed", blocks=(1, 2))}, "summing to the state size"),
        ({"first_step": -0.1}, "first_step must be a positive finite number"),
        ({"step_size": 0.1}, "step_size applies to the fixed-grid methods"),
        ({"method": "rk4", "step_size": 0.0}, "step_size must be a positive finite number"),
        ({"method": "euler", "first_step": 0.1}, "first_step applies to adaptive methods"),
        ({"max_steps": 0}, "max_steps must be a positive integer"),
        ({"max_steps": 2.5}, "max_steps must be a positive integer"),
        ({"params": [1.0, np.nan]}, "params must be finite"),
        ({"field": 42}, "field must be a gqref.VectorField or a callable"),
        ({"field": lambda t, y, p: np.zeros(3)}, r"returned shape \(3,\) at t = 0.0; expected the state's \(2,\)"),
    ],
)
def test_bad_input(overrides, match):
    with pytest.raises(InputError, match=match):
        solve(**overrides)


def test_compiled_field_needs_flat_state():
    with pytest.raises(InputError, match="compiled field takes a 1-D state"):
        gqref.solve(P.linear().field, np.ones((2, 1)), [0.0, 1.0], P.linear().params)


def test_field_returning_nan_names_the_time():
    def blows_up(t, y, p):
        return -y if t < 0.5 else np.full_like(y, np.nan)

    with pytest.raises(NonFiniteFieldError, match=r"non-finite value .* at t = 0\.5") as info:
        solve(field=blows_up)
    assert 0.5 <= info.value.t <= 1.0


def test_field_returning_nan_in_decreasing_time_reports_original_time():
    def bad_below_zero(t, y, p):
        return -y if t > -0.25 else np.full_like(y, np.inf)

    with pytest.raises(NonFiniteFieldError) as info:
        solve(field=bad_below_zero, t=[1.0, -1.0])
    assert -1.0 <= info.value.t <= -0.25


def test_nan_at_the_initial_time():
    with pytest.raises(NonFiniteFieldError, match=r"at t = 0\.0"):
        solve(field=lambda t, y, p: np.full_like(y, np.nan))


@pytest.mark.parametrize("controller", ["torchdiffeq", "scipy"])
def test_step_size_underflow_names_the_time(controller):
    # y' = y² from y(0) = 1 blows up at t = 1: steps shrink until they cannot advance time
    with pytest.raises(StepSizeUnderflowError, match=r"step size underflow at t = 1\.0000") as info:
        solve(field=lambda t, y, p: y * y, y0=[1.0], t=[0.0, 2.0], controller=controller, max_steps=10**6)
    # the discrete solution's singularity sits within the tolerance of the true one
    assert abs(info.value.t - 1.0) < 1e-6


def test_max_steps_names_the_time():
    with pytest.raises(MaxStepsExceededError, match="max_steps = 5 exceeded at t = ") as info:
        solve(t=[0.0, 100.0], rtol=1e-10, atol=1e-12, max_steps=5)
    assert 0.0 < info.value.t < 100.0


def test_errors_are_value_and_runtime_errors():
    # callers that catch the standard types keep working
    assert issubclass(InputError, ValueError)
    assert issubclass(StepSizeUnderflowError, RuntimeError)


def test_single_time_returns_y0_without_stepping():
    sol = solve(t=[0.5])
    assert np.array_equal(sol.ys, [[1.0, 2.0]])
    assert sol.stats.n_accepted == 0


# --- a NaN from a VJP never becomes a silent NaN gradient; complex values are refused, never truncated ----------

def _nan(t, y, p, a):
    return np.full(np.shape(p) if np.size(p) > 1 else 1, np.nan)


GRADIENT_RUNS = [("gq", q) for q in ("interval", "step", "adaptive", "auto")] + [
    ("adjoint", "auto"), ("seminorm", "auto"), ("discrete", "auto")]


@pytest.mark.parametrize("role", ["vjp_p", "vjp_y", "vjp_t"])
@pytest.mark.parametrize(("method", "quadrature"), GRADIENT_RUNS)
def test_a_nan_vjp_raises_naming_the_time(role, method, quadrature):
    bad = {"vjp_p": _nan, "vjp_y": lambda t, y, p, a: a * np.nan, "vjp_t": lambda t, y, p, a: np.nan}[role]
    field = decay_field(**{role: bad})
    with pytest.raises(NonFiniteFieldError, match=rf"field\.{role} returned a non-finite value .* at t = ") as caught:
        gqref.gradient(field, [1.0, 2.0], [0.0, 0.5, 1.0], [0.5], np.ones((3, 2)), method=method,
                       **({"quadrature": quadrature} if method == "gq" else {}))
    assert caught.value.t >= 0.0  # in the span, or at a stage of the last step (steps are not cut at t[-1])


@pytest.mark.parametrize("method", ["gq", "adjoint", "discrete"])
def test_a_complex_vjp_is_refused(method):
    field = decay_field(vjp_p=lambda t, y, p, a: np.array([-np.sum(a * y) + 0j]))
    with pytest.raises(InputError, match=r"field\.vjp_p returned complex values"):
        gqref.gradient(field, [1.0, 2.0], [0.0, 1.0], [0.5], np.ones((2, 2)), method=method)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"params": [0.5 + 0.5j]}, "params must be real"),
    ({"dL_dy": np.ones((2, 2)) * (1 + 1j)}, "dL_dy must be real"),
    ({"y0": [1.0 + 1j, 2.0]}, "y0 must be a real floating-point array"),
    ({"field": lambda t, y, p: -y * (1 + 0j)}, r"field\.f returned complex values"),
])
def test_complex_inputs_are_refused_not_truncated(overrides, match):
    kwargs = {"field": lambda t, y, p: -p[0] * y, "y0": [1.0, 2.0], "t": [0.0, 1.0], "params": [0.5],
              "dL_dy": np.ones((2, 2))}
    kwargs.update(overrides)
    with pytest.raises(InputError, match=match):
        gqref.gradient(kwargs.pop("field"), kwargs.pop("y0"), kwargs.pop("t"), kwargs.pop("params"),
                       kwargs.pop("dL_dy"))


def test_complex_step_still_derives_thedecay_field():
    """The refusal of complex values is for the caller's: gqref's own complex-step evaluations keep working."""
    g = gqref.gradient(lambda t, y, p: -p[0] * y, [1.0, 2.0], [0.0, 1.0], [0.5], np.ones((2, 2)))
    assert g.diagnostics.vjp_sources["vjp_p"] == "complex step"
    np.testing.assert_allclose(g.dL_dparams, [-3.0 * np.exp(-0.5)], rtol=1e-6)


def test_a_compiled_field_returning_complex_is_refused():
    @gqref.njit
    def f(t, y, p):
        return -y * (1.0 + 0.0j)

    with pytest.raises(InputError, match=r"field\.f returned complex values"):
        gqref.solve(f, np.array([1.0]), [0.0, 1.0])
