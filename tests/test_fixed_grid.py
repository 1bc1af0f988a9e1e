"""Fixed-grid methods against torchdiffeq's euler / midpoint / rk4, and their convergence orders."""

import numpy as np
import pytest
import torch
import torchdiffeq
from hypothesis import given
from hypothesis import strategies as st

import gqref
from gqref.strategies import linear_problems
from tests.fields import decay_oscillator
from tests.test_lockstep import torch_linear

torch.set_num_threads(1)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@given(problem=linear_problems(max_dim=4), step_size=st.one_of(st.none(), st.floats(0.01, 0.7)))
def test_matches_torchdiffeq_fixed_grid(method, problem, step_size):
    y0, t = problem.y0, problem.t
    ours = gqref.solve(problem.field, y0, t, problem.params, method=method, step_size=step_size)
    options = {} if step_size is None else {"step_size": step_size}
    theirs = torchdiffeq.odeint(torch_linear(problem), torch.tensor(y0), torch.tensor(t), method=method,
                                options=options).numpy()
    # identical grids and formulas; only the grouping of the stage sums differs (a few ulps per step)
    # the last grid point is the last output time, where the interpolation returns the step's end state exactly
    assert np.array_equal(ours.steps.ys[-1], ours.ys[-1])
    steps = ours.stats.n_accepted
    assert np.max(np.abs(ours.ys - theirs)) <= 64 * steps * np.finfo(float).eps * max(1.0, np.max(np.abs(theirs)))


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_fixed_grid_convergence_order(method, order):
    reference = gqref.solve(gqref.VectorField(decay_oscillator), [1.0, 0.0], [0.0, 2.0], rtol=1e-13, atol=1e-13)
    errors = []
    for h in [0.02, 0.01, 0.005]:
        sol = gqref.solve(gqref.VectorField(decay_oscillator), [1.0, 0.0], [0.0, 2.0], method=method, step_size=h)
        errors.append(np.max(np.abs(sol.ys[-1] - reference.ys[-1])))
    observed = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    # asymptotic regime: within 0.15 of the order (the O(h) correction at these step sizes is smaller)
    assert np.all(np.abs(observed - order) < 0.15), observed
