"""The in-place field form f(t, y, p, out): the same solve, bit for bit, as the returning form, in every path."""

from __future__ import annotations

import numpy as np
import pytest

import gqref
from gqref.field import VectorField, writes_into


@gqref.njit
def van_der_pol(t, y, p):
    return np.array([y[1], p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]])


@gqref.njit
def van_der_pol_into(t, y, p, out):
    out[0] = y[1]
    out[1] = p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]


def van_der_pol_into_python(t, y, p, out):
    out[0] = y[1]
    out[1] = p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]


Y0, P = np.array([2.0, 0.0]), np.array([1.5])


def test_the_form_is_read_off_the_signature():
    assert writes_into(van_der_pol_into) and writes_into(van_der_pol_into_python)
    assert not writes_into(van_der_pol) and not writes_into(lambda t, y, p, scale=2.0: y)
    assert not writes_into(lambda *args: args[1]) and not writes_into(np.sin)
    field = VectorField(van_der_pol_into)
    assert field.f_into is van_der_pol_into and field.compiled
    np.testing.assert_array_equal(field.f(0.3, Y0, P), van_der_pol(0.3, Y0, P))


@pytest.mark.parametrize("into", [van_der_pol_into, van_der_pol_into_python], ids=["compiled", "python"])
@pytest.mark.parametrize("t", [[0.0, 0.7, 3.0], [3.0, 1.0, 0.0]], ids=["forward", "reverse"])
@pytest.mark.parametrize("controller", ["torchdiffeq", "scipy"])
def test_in_place_solves_equal_returning_ones_bit_for_bit(into, t, controller):
    t = np.array(t)
    ours = gqref.solve(into, Y0, t, P, rtol=1e-9, atol=1e-10, controller=controller)
    theirs = gqref.solve(van_der_pol, Y0, t, P, rtol=1e-9, atol=1e-10, controller=controller)
    np.testing.assert_array_equal(ours.ys, theirs.ys)
    np.testing.assert_array_equal(ours.steps.ys, theirs.steps.ys)
    assert ours.stats == theirs.stats


def van_der_pol_python(t, y, p):
    return np.array([y[1], p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]])


@pytest.mark.parametrize("method", ["gq", "adjoint", "discrete"])
@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.slow), False],
                         ids=["compiled", "python"])  # compiled: ~1 min of compiling the gradient kernels
def test_in_place_gradients_equal_returning_ones(method, compiled):
    t = np.array([0.0, 0.5, 1.5])
    dl_dy = np.array([[0.0, 0.0], [1.0, -0.5], [0.3, 2.0]])
    into, returning = (van_der_pol_into, van_der_pol) if compiled else (van_der_pol_into_python,
                                                                         van_der_pol_python)
    ours = gqref.gradient(into, Y0, t, P, dl_dy, method=method)  # VJPs by complex step, through the wrapper
    theirs = gqref.gradient(returning, Y0, t, P, dl_dy, method=method)
    for name in ("dL_dy0", "dL_dparams", "dL_dt"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(theirs, name))


def test_a_nan_written_in_place_is_reported():
    @gqref.njit
    def blows_up(t, y, p, out):
        out[0] = np.nan if t > 0.5 else -y[0]

    with pytest.raises(gqref.errors.NonFiniteFieldError):
        gqref.solve(blows_up, np.array([1.0]), np.array([0.0, 1.0]))


@pytest.mark.parametrize("method", ["rk4", "explicit_adams", "bosh3"])
def test_in_place_fields_run_every_method(method):
    t = np.linspace(0.0, 1.0, 5)
    ours = gqref.solve(van_der_pol_into, Y0, t, P, method=method)
    theirs = gqref.solve(van_der_pol, Y0, t, P, method=method)
    np.testing.assert_array_equal(ours.ys, theirs.ys)


def test_in_place_dense_output_equals_returning():
    from gqref.dense import dense_output

    t = np.array([0.0, 1.0])
    ours = dense_output(VectorField(van_der_pol_into), gqref.solve(van_der_pol_into, Y0, t, P), P)
    theirs = dense_output(VectorField(van_der_pol), gqref.solve(van_der_pol, Y0, t, P), P)
    np.testing.assert_array_equal(ours.evaluate(0.37), theirs.evaluate(0.37))
