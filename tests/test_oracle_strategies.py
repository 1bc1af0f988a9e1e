"""The strategies draw no degenerate problems, so a planted bug in a time term is found within the CI examples."""

from unittest import mock

import numpy as np
import pytest
from hypothesis import Phase, given, seed, settings

import gqref
import gqref.adjoint
import gqref.strategies as S
from gqref.augmented import backward_dynamics

CI_EXAMPLES = 25  # the "ci" profile's max_examples (tests/conftest.py)


def ones(problem):
    return np.ones((len(problem.t), problem.state_dim))


@given(S.problems(closed_form=True))
def test_closed_form_draws_have_a_parameter_gradient_and_a_time_term(problem):
    _, dp, dt = problem.exact_gradient(problem.y0, problem.params, problem.t, ones(problem))
    assert np.any(dp != 0.0), "all-zero parameter gradient"
    if problem.name == "time_dependent_scalar" and len(problem.t) > 1:
        # dL/dt0 = ∫ a·∂f/∂t dt − Σ_{i≥1} dL/dt_i, so the time integral is dL/dt0 + Σ_{i≥1} dL/dt_i
        assert dt[0] + np.sum(dt[1:]) != 0.0, "the time term vanishes"


@given(S.problems())
def test_no_draw_starts_at_the_origin(problem):
    if problem.name == "forced_linear":  # may start at rest by design: its forcing b·cos(ωt), b away from 0, moves it
        assert np.max(np.abs(problem.params[-1 - problem.state_dim:-1])) >= S.NONZERO_FLOOR
        return
    assert np.max(np.abs(problem.y0)) >= S.NONZERO_FLOOR * 1.0  # the smallest bound any kind uses is 1


def adjoint_candidate(field, y0, t, params, dL_dy):
    g = gqref.gradient(field, y0, t, params, dL_dy, method="adjoint", rtol=1e-10, atol=1e-10)
    return g.dL_dy0, g.dL_dparams, g.dL_dt


def without_time_term(field, shape, full, time=True, **kwargs):
    """The planted bug: the adjoint's adj_t no longer integrates a·∂f/∂t, so dL/dt0 keeps only −Σ f·dL/dy."""
    return backward_dynamics(field, shape, full, time=False, **kwargs)


# one seed in the default suite (≈35 s on 2 cores); all six with -m slow
@pytest.mark.parametrize("run_seed", [0, *(pytest.param(s, marks=pytest.mark.slow) for s in (1, 2, 3, 4, 5))])
def test_a_dropped_time_term_is_found_within_the_ci_examples_for_any_seed(run_seed):
    examples = []

    @seed(run_seed)
    @settings(max_examples=CI_EXAMPLES, derandomize=False, database=None, phases=(Phase.generate,))
    @given(S.problems(closed_form=True))
    def correct_adjoint_passes(problem):
        examples.append(problem.name)
        report = gqref.check_gradient(adjoint_candidate, problem)
        # the adjoint at rtol = atol = 1e-10 is within (steps)·1e-10 ≪ 1e-6 of the flow's gradient scale
        assert report.passed(1e-6), str(report)

    with mock.patch.object(gqref.adjoint, "backward_dynamics", without_time_term):
        with pytest.raises(AssertionError, match="dL_dt"):
            correct_adjoint_passes()
    assert examples[-1] == "time_dependent_scalar" and len(examples) <= CI_EXAMPLES
    print(f"seed {run_seed}: found after {len(examples)} examples")


def test_the_unpatched_adjoint_passes_the_same_examples():
    """The bug-finding test above is meaningful only if the correct adjoint passes where the patched one fails."""

    @seed(0)
    @settings(max_examples=CI_EXAMPLES, derandomize=False, database=None, phases=(Phase.generate,))
    @given(S.problems(closed_form=True))
    def correct_adjoint_passes(problem):
        assert gqref.check_gradient(adjoint_candidate, problem).passed(1e-6)

    correct_adjoint_passes()
