"""One algorithm source, two speeds: compiled and plain-Python runs agree bit for bit."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gqref
from gqref.strategies import stable_matrices, time_grids, tolerances, vectors
from tests.fields import linear, pack_linear, van_der_pol


def both(field, *args, **kwargs):
    compiled = gqref.solve(gqref.VectorField(field), *args, **kwargs)
    python = gqref.solve(gqref.VectorField(field.py_func), *args, **kwargs)
    return compiled, python


def assert_identical(a, b):
    assert a.stats == b.stats
    assert np.array_equal(a.ys, b.ys)
    assert np.array_equal(a.steps.ts, b.steps.ts)
    assert np.array_equal(a.steps.ys, b.steps.ys)


@pytest.mark.parametrize("controller", ["torchdiffeq", "scipy"])
@pytest.mark.parametrize("norm", ["rms", "max", gqref.ErrorNorm("mixed", blocks=(1, 1), mask=(True, False))])
def test_van_der_pol_bitwise(controller, norm):
    assert_identical(*both(van_der_pol, [2.0, 0.0], np.linspace(0, 6, 5), np.array([5.0]), rtol=1e-8, atol=1e-8,
                           controller=controller, norm=norm))


@given(data=st.data(), tols=tolerances, t=time_grids(), method=st.sampled_from(gqref.METHODS))
def test_linear_bitwise(data, tols, t, method):
    a = data.draw(stable_matrices())
    n = a.shape[0]
    y0, b = data.draw(vectors(n)), data.draw(vectors(n, -1.0, 1.0))
    kwargs = {"rtol": tols[0], "atol": tols[1]} if method == "dopri5" else {"step_size": 0.1}
    assert_identical(*both(linear, y0, t, pack_linear(a, b), method=method, **kwargs))
