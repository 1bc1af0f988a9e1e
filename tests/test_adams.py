"""Adams coefficients (exact, from integrals of the Lagrange basis) and the Adams steppers' bookkeeping."""

from __future__ import annotations

import warnings
from fractions import Fraction as F

import numpy as np
import pytest
import torch
from torchdiffeq._impl import fixed_adams as torchdiffeq_adams

from gqref.adams import BASHFORTH, MAX_ORDER, MOULTON, CorrectorWarning, bashforth, moulton
from gqref.fixed_grid import fixed_options
from gqref.fixed_grid import solve_fixed as ref_solve_fixed
from gqtorch.adams import weighted_sum
from gqtorch.fixed_grid import solve_fixed
from gqtorch.solve import FlatField

# Hairer, Nørsett & Wanner I, §III.1, Tables 1.1 and 1.2: the weights of f_n, f_{n-1}, … (explicit) and of
# f_{n+1}, f_n, … (implicit), as integers over a common denominator.
TEXTBOOK_BASHFORTH = {
    1: ([1], 1),
    2: ([3, -1], 2),
    3: ([23, -16, 5], 12),
    4: ([55, -59, 37, -9], 24),
    5: ([1901, -2774, 2616, -1274, 251], 720),
    6: ([4277, -7923, 9982, -7298, 2877, -475], 1440),
}
TEXTBOOK_MOULTON = {
    1: ([1], 1),
    2: ([1, 1], 2),
    3: ([5, 8, -1], 12),
    4: ([9, 19, -5, 1], 24),
    5: ([251, 646, -264, 106, -19], 720),
    6: ([475, 1427, -798, 482, -173, 27], 1440),
}


@pytest.mark.parametrize("k", sorted(TEXTBOOK_BASHFORTH))
def test_coefficients_match_the_textbook_tables(k):
    numerators, denominator = TEXTBOOK_BASHFORTH[k]
    assert bashforth(k) == tuple(F(n, denominator) for n in numerators)
    numerators, denominator = TEXTBOOK_MOULTON[k]
    assert moulton(k) == tuple(F(n, denominator) for n in numerators)


@pytest.mark.parametrize("k", range(1, MAX_ORDER + 1))
def test_coefficients_integrate_polynomials_exactly(k):
    """A k-point quadrature of ∫_0^1 p(u) du is exact for every polynomial of degree < k (here in rationals)."""
    for weights, nodes in ((bashforth(k), [-j for j in range(k)]), (moulton(k), [1 - j for j in range(k)])):
        for degree in range(k):
            assert sum(w * F(x) ** degree for w, x in zip(weights, nodes)) == F(1, degree + 1)


@pytest.mark.parametrize("k", range(1, MAX_ORDER + 1))
def test_floats_are_the_rationals_rounded_once(k):
    assert BASHFORTH[k] == tuple(float(x) for x in bashforth(k))
    assert MOULTON[k] == tuple(float(x) for x in moulton(k))


@pytest.mark.parametrize("k", range(1, MAX_ORDER + 1))
def test_coefficients_equal_torchdiffeqs(k):
    """torchdiffeq's integer tables over its divisors, compared as exact rationals. Its one-weight Moulton row
    reads 1/11 (a misprint that its algorithm never reaches: the corrector always has ≥ 4 weights)."""
    divisor = torchdiffeq_adams._DIVISOR[k]
    assert bashforth(k) == tuple(F(n, divisor) for n in torchdiffeq_adams._BASHFORTH_COEFFICIENTS[k])
    assert list(BASHFORTH[k]) == torchdiffeq_adams._BASHFORTH_DIVISOR[k].tolist()
    if k > 1:
        assert moulton(k) == tuple(F(n, divisor) for n in torchdiffeq_adams._MOULTON_COEFFICIENTS[k])
        assert list(MOULTON[k]) == torchdiffeq_adams._MOULTON_DIVISOR[k].tolist()


def test_weighted_sum_groups_like_a_dot_product():
    values = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, -1.0], dtype=torch.float64)]
    assert torch.equal(weighted_sum((0.5, 0.25, 9.0), values, 2.0), torch.tensor([2.5, 1.5], dtype=torch.float64))


def _decay(t, y):
    return -y + torch.sin(t)


def _solve(method: str, options: dict, rtol=1e-7, atol=1e-9):
    calls: list[float] = []

    def func(t, y):
        calls.append(float(t))
        return _decay(t, y)

    y0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    t = np.linspace(0.0, 1.0, 11)
    result = solve_fixed(FlatField(func, [y0.shape], False), y0, t.tolist(), 1.0, method,
                         fixed_options(method, options), rtol, torch.full_like(y0, atol))
    return result, calls


def test_explicit_adams_ramps_up_with_two_rk4_steps():
    """Steps 1 and 2 are rk4 (4 evaluations, the first at the step's start), every later step one evaluation."""
    result, calls = _solve("explicit_adams", {"step_size": 0.1})
    assert result.n_steps == 10
    assert result.nfe == 4 + 4 + 8 * 1
    grid = [0.1 * j for j in range(10)]
    assert calls[8:] == pytest.approx(grid[2:], abs=1e-15)  # each Adams step evaluates at its start only


def test_implicit_adams_iterates_until_increments_agree():
    loose, _ = _solve("implicit_adams", {"step_size": 0.1}, rtol=1e-2, atol=1e-2)
    tight, _ = _solve("implicit_adams", {"step_size": 0.1, "max_iters": 50}, rtol=1e-13, atol=1e-13)
    # loose: the first corrected increment already agrees with the predictor's (f0 + 1 corrector evaluation per
    # step); tight: more
    assert loose.nfe == 8 + 8 * (1 + 1)
    assert tight.nfe > loose.nfe


def test_implicit_adams_warns_when_the_corrector_does_not_converge():
    with pytest.warns(CorrectorWarning, match="max_iters = 1"):
        result, _ = _solve("implicit_adams", {"step_size": 0.1, "max_iters": 1}, rtol=1e-15, atol=1e-18)
    assert result.nfe == 8 + 8 * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _solve("implicit_adams", {"step_size": 0.1}, rtol=1e-3, atol=1e-3)  # converges: no warning


def test_adams_twins_agree_with_per_component_atol():
    """atol enters the corrector test per component (gqref with a NumPy array, gqtorch with a tensor)."""
    atol = np.array([1e-12, 1e-3])
    y0 = np.array([1.0, -0.5])
    t = np.linspace(0.0, 1.0, 11)
    opts = fixed_options("implicit_adams", {"step_size": 0.05, "max_order": 6})
    ref = ref_solve_fixed(lambda t, y, p: -y + np.sin(t), None, y0, t, 1.0, "implicit_adams", opts, 1e-6, atol)
    ours = solve_fixed(FlatField(_decay, [torch.Size([2])], False), torch.tensor(y0), t.tolist(), 1.0,
                       "implicit_adams", opts, 1e-6, torch.tensor(atol))
    assert ours.nfe == ref.nfe
    assert np.max(np.abs(ours.ys.numpy() - ref.ys)) <= 1e-13  # same arithmetic up to the grouping of sums
