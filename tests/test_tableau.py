"""Exact (rational) properties of the tableaux and the dense output."""

from fractions import Fraction as F

import numpy as np
import pytest

from gqref import tableau as T


def test_rooted_tree_counts():
    # OEIS A000081: 1, 1, 2, 4, 9, 20 rooted trees with 1..6 nodes
    assert [len(T.rooted_trees(n)) for n in range(1, 7)] == [1, 1, 2, 4, 9, 20]


@pytest.mark.parametrize("tab", [T.DOPRI5, T.DOPRI5_SCIPY])
def test_dopri5_order_conditions_exact(tab):
    assert all(r == 0 for r in T.order_residuals(tab.a, tab.b, 5).values())
    # the propagated solution is not accidentally of order 6
    assert any(r != 0 for r in T.order_residuals(tab.a, tab.b, 6).values())


@pytest.mark.parametrize("tab", [T.DOPRI5, T.DOPRI5_SCIPY])
def test_embedded_order_exactly_four(tab):
    residuals = T.order_residuals(tab.a, tab.b_low, 5)
    assert all(r == 0 for tree, r in residuals.items() if T.tree_order(tree) <= 4)
    assert any(r != 0 for tree, r in residuals.items() if T.tree_order(tree) == 5)


@pytest.mark.parametrize("tab", [T.DOPRI5, T.DOPRI5_SCIPY, T.EULER, T.MIDPOINT, T.RK4])
def test_row_sum_and_explicit(tab):
    for i, row in enumerate(tab.a):
        assert sum(row) == tab.c[i]
        assert all(x == 0 for x in row[i:])  # explicit: strictly lower triangular


@pytest.mark.parametrize("tab", [T.EULER, T.MIDPOINT, T.RK4])
def test_fixed_grid_orders(tab):
    assert all(r == 0 for r in T.order_residuals(tab.a, tab.b, tab.order).values())
    assert any(r != 0 for r in T.order_residuals(tab.a, tab.b, tab.order + 1).values())


def test_fsal():
    assert T.DOPRI5.fsal and T.DOPRI5_SCIPY.fsal
    assert T.DOPRI5.a[-1][:6] == T.DOPRI5.b[:6] and T.DOPRI5.b[-1] == 0


def _dense_weights(theta: F) -> list[F]:
    """b_j(θ): the dense output at x = θ written as y0 + dt·Σ_j b_j(θ) k_j, exactly."""
    tab = T.DOPRI5
    stages = tab.stages
    # basis vectors [y0, y1, y_mid, dt f0, dt f1] as (coefficient of y0, stage weights)
    basis = [
        (F(1), [F(0)] * stages),
        (F(1), list(tab.b)),
        (F(1), list(tab.b_mid)),
        (F(0), [F(1)] + [F(0)] * (stages - 1)),
        (F(0), [F(0)] * (stages - 1) + [F(1)]),
    ]
    y0_coeff = F(0)
    weights = [F(0)] * stages
    for power, row in enumerate(T.INTERP_FIT):
        for w, (c0, stage_w) in zip(row, basis):
            y0_coeff += w * c0 * theta**power
            for j in range(stages):
                weights[j] += w * stage_w[j] * theta**power
    assert y0_coeff == 1  # the interpolant is y0 + dt·(...)
    return weights


def test_dense_output_interpolates_exactly():
    fit = T.INTERP_FIT
    def p(x, basis):
        return sum(sum(w * b for w, b in zip(row, basis)) * x**k for k, row in enumerate(fit))
    def dp(x, basis):
        return sum(k * sum(w * b for w, b in zip(row, basis)) * x ** (k - 1) for k, row in enumerate(fit) if k)
    for i in range(5):
        unit = [F(int(i == j)) for j in range(5)]  # the basis element alone
        assert p(F(0), unit) == unit[0]
        assert p(F(1), unit) == unit[1]
        assert p(F(1, 2), unit) == unit[2]
        assert dp(F(0), unit) == unit[3]
        assert dp(F(1), unit) == unit[4]


@pytest.mark.parametrize("theta", [F(1, 7), F(1, 3), F(1, 2), F(4, 5), F(1)])
def test_dense_output_is_a_fourth_order_continuous_extension(theta):
    # Continuous order conditions: Σ_j b_j(θ) Φ_j(t) = θ^|t| / γ(t) for all trees up to order 4.
    weights = _dense_weights(theta)
    for n in range(1, 5):
        for tree in T.rooted_trees(n):
            phi = T.elementary_weights(T.DOPRI5.a, tree)
            lhs = sum(w * ph for w, ph in zip(weights, phi))
            assert lhs == theta ** T.tree_order(tree) / T.tree_density(tree)


def test_dense_output_endpoints_and_midpoint_in_stage_weights():
    assert _dense_weights(F(1)) == list(T.DOPRI5.b)
    assert _dense_weights(F(1, 2)) == list(T.DOPRI5.b_mid)
    assert _dense_weights(F(0)) == [F(0)] * 7


def test_float_arrays_are_the_rationals_rounded_once():
    ft = T.float_tableau(T.DOPRI5)
    for i, row in enumerate(T.DOPRI5.a):
        for j, x in enumerate(row):
            assert ft.a[i, j] == float(x)
    assert np.array_equal(ft.e, [float(x) for x in T.DOPRI5.error_weights])
    assert np.array_equal(ft.b_mid, [float(x) for x in T.DOPRI5.b_mid])
