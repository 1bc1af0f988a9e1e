"""One algorithm source, two speeds: compiled and plain-Python runs agree bit for bit."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gqref
from gqref import problems as P
from gqref.solve import ADAPTIVE_METHODS
from gqref.strategies import linear_problems, tolerances

VAN_DER_POL = P.van_der_pol(mu=5.0)


def both(field, *args, **kwargs):
    compiled = gqref.solve(field, *args, **kwargs)
    python = gqref.solve(gqref.VectorField(field.f.py_func), *args, **kwargs)
    return compiled, python


def assert_identical(a, b):
    assert a.stats == b.stats
    assert np.array_equal(a.ys, b.ys)
    assert np.array_equal(a.steps.ts, b.steps.ts)
    assert np.array_equal(a.steps.ys, b.steps.ys)


@pytest.mark.parametrize("controller", ["torchdiffeq", "scipy"])
@pytest.mark.parametrize("norm", ["rms", "max", gqref.ErrorNorm("mixed", blocks=(1, 1), mask=(True, False))])
def test_van_der_pol_bitwise(controller, norm):
    assert_identical(*both(VAN_DER_POL.field, [2.0, 0.0], np.linspace(0, 6, 5), VAN_DER_POL.params, rtol=1e-8,
                           atol=1e-8, controller=controller, norm=norm))


@given(problem=linear_problems(max_dim=4), tols=tolerances, method=st.sampled_from(gqref.METHODS))
def test_linear_bitwise(problem, tols, method):
    adaptive = method in ADAPTIVE_METHODS
    kwargs = {"rtol": tols[0], "atol": tols[1]} if adaptive else {"step_size": 0.1}
    assert_identical(*both(problem.field, problem.y0, problem.t, problem.params, method=method, **kwargs))
