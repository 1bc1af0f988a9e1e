"""gqref.check_gradient: a user's gradient function held against the oracle."""

import numpy as np
import pytest

import gqref
from gqref import problems as P
from gqref.errors import InputError


def adjoint_candidate(field, y0, t, params, dL_dy):
    g = gqref.gradient(field, y0, t, params, dL_dy, method="adjoint", rtol=1e-10, atol=1e-10)
    return g.dL_dy0, g.dL_dparams, g.dL_dt


@pytest.mark.parametrize("problem", [P.linear(), P.mlp(width=4, time_dependent=True)], ids=lambda p: p.name)
def test_a_correct_candidate_passes(problem):
    report = gqref.check_gradient(adjoint_candidate, problem)
    # the adjoint at 1e-10 against the closed form (linear) or the frozen-step derivative at 1e-12 (mlp):
    # both sides are within (steps)·tol of the truth, a few dozen steps here
    assert report.passed(1e-7), str(report)
    assert [c.name for c in report.components] == ["dL_dy0", "dL_dparams", "dL_dt"]
    assert ("closed form" in report.reference) == problem.has_closed_form


def test_a_wrong_candidate_fails_and_the_report_says_where():
    def off_by_a_factor(*args):
        dy0, dp, _ = adjoint_candidate(*args)
        return dy0, 1.01 * dp, None  # a 1% error in the parameter gradient; no time gradient offered

    report = gqref.check_gradient(off_by_a_factor, P.linear())
    assert not report.passed(1e-3)
    worst = max(report.components, key=lambda c: c.relative)
    assert worst.name == "dL_dparams" and 0.005 < worst.relative < 0.02
    assert "dL_dt" not in str(report) and "| dL_dparams |" in str(report)


def test_candidate_with_wrong_shapes_is_rejected():
    with pytest.raises(InputError, match="dL_dparams has shape"):
        gqref.check_gradient(lambda *a: (np.zeros(2), np.zeros(1), None), P.linear())
    with pytest.raises(InputError, match="must return"):
        gqref.check_gradient(lambda *a: np.zeros(2), P.linear())
