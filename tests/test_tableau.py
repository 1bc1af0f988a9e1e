"""Exact (rational) properties of the tableaux and the dense output.

Orders each tableau's weights reach (rooted-tree conditions, checked below; θ = 1/2 for b_mid):

    tableau        b   b_low   b_mid    observed slope of log(error) vs log(h), y' = y·cos t on [0, 1]
    dopri5         5   4       4        b 5.15 (h = 1/4 … 1/32)       b_low 3.94 (h = 1/64 … 1/256)
    dopri5-scipy   5   4       4        (same b)
    dopri8         8   7       5        b 7.87 (h = 1 … 1/8)          b_low 6.94 (h = 1 … 1/8)
    bosh3          3   2       1        b 3.02 (h = 1/16 … 1/256)     b_low 2.00 (h = 1/16 … 1/256)
    fehlberg2      2   1       1        b 1.94 (h = 1/16 … 1/256)     b_low 0.97 (h = 1/512 … 1/4096)
    adaptive_heun  2   1       1        b 2.00 (h = 1/16 … 1/256)     b_low 0.98 (h = 1/32 … 1/512)
    tsit5          4   5       4        b 3.91 (h = 1/8 … 1/128)      b_low 5.22 (h = 1/8 … 1/64)
    tsit5-paper    5   4       4        (b and b_low of tsit5 swapped)
    euler          1                    1.00 (h = 1/16 … 1/256)
    midpoint       2                    1.95 (h = 1/16 … 1/256)
    rk4            4                    3.93 (h = 1/16 … 1/256)
    heun2          2                    2.00 (h = 1/16 … 1/256)
    heun3          3                    2.97 (h = 1/16 … 1/256)

The step sizes are chosen per method so that the errors stay above roundoff (~1e-15 here; the smallest is 2e-14)
and past the pre-asymptotic range; dopri5's b_low error changes sign near h = 1/16 on this problem, fehlberg2's b_low
has a first-order error constant of only 1/512 and needs small h. tsit5's b is torchdiffeq's propagated solution,
which is Tsitouras's fourth-order one (see gqref.tableau).
"""

import math
from dataclasses import replace
from fractions import Fraction as F

import numpy as np
import pytest

from gqref import tableau as T

ALL = [*T.ADAPTIVE_TABLEAUX.values(), T.DOPRI5_SCIPY, T.TSIT5_PAPER, *T.FIXED_GRID_TABLEAUX.values()]
ADAPTIVE = [*T.ADAPTIVE_TABLEAUX.values(), T.DOPRI5_SCIPY, T.TSIT5_PAPER]

# (order of b, order of b_low, order of b_mid at θ = 1/2), as measured by the tests below.
TRUE_ORDERS = {
    "dopri5": (5, 4, 4),
    "dopri5-scipy": (5, 4, 4),
    "dopri8": (8, 7, 5),
    "bosh3": (3, 2, 1),
    "fehlberg2": (2, 1, 1),
    "adaptive_heun": (2, 1, 1),
    "tsit5": (4, 5, 4),
    "tsit5-paper": (5, 4, 4),
    "euler": (1, None, None),
    "midpoint": (2, None, None),
    "rk4": (4, None, None),
    "heun2": (2, None, None),
    "heun3": (3, None, None),
}

# Relative precision δ of the stored coefficients where they are not the method's exact values:
# - dopri8: Prince & Dormand published rational approximations (about 18 significant digits) of irrational
#   coefficients; the conditions they leave unsatisfied are off by at most ~5e-18 relative to their terms.
# - tsit5: decimals given to at least 78 places, the error weights (and so b_low) being the shortest.
DELTA = {"dopri8": F(1, 10**17), "tsit5": F(1, 10**75), "tsit5-paper": F(1, 10**75)}
# b_mid of tsit5 is built from Tsitouras's interpolant constants (16–20 significant digits) with the one that
# torchdiffeq misprints in its 13th digit (see test_tsit5_mid_point_misprint), hence a looser δ.
DELTA_MID = {"dopri8": F(1, 10**17), "tsit5": F(1, 10**12), "tsit5-paper": F(1, 10**12)}

UNIT_ROUNDOFF = 2.0**-53


def _abs_matrix(a):
    return tuple(tuple(abs(x) for x in row) for row in a)


def _check_order(tab: T.Tableau, b, order: int, delta: F, theta: F = F(1)) -> None:
    """b meets every tree condition up to ``order`` within the perturbation bound, and fails one of order + 1.

    If every coefficient is off by a relative δ at most, a term b_i·a_ij·a_jk⋯ of Σ_i b_i Φ_i(τ) (|τ| factors)
    moves by at most |τ|·δ·|term|, so the residual is bounded by |τ|·δ·(Σ_i |b_i| Φ_i(τ; |a|) + θ^|τ|/γ(τ)).
    δ = 0 demands exact equality.
    """
    residuals = T.order_residuals(tab.a, b, order + 1, theta)
    abs_a, memo = _abs_matrix(tab.a), {}
    for tree, r in residuals.items():
        n = T.tree_order(tree)
        phi = T.elementary_weights(abs_a, tree, memo)
        scale = sum((abs(bi) * p for bi, p in zip(b, phi)), F(0)) + theta**n / T.tree_density(tree)
        if n <= order:
            assert abs(r) <= n * delta * scale, (tab.name, tree, float(r))
    # the next order fails by far more than the coefficients' imprecision: the order is not higher
    assert max(abs(r) for tree, r in residuals.items() if T.tree_order(tree) == order + 1) > F(1, 10**6)


def test_rooted_tree_counts():
    # OEIS A000081: 1, 1, 2, 4, 9, 20, 48, 115 rooted trees with 1..8 nodes
    assert [len(T.rooted_trees(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]


def test_registries():
    assert list(T.ADAPTIVE_TABLEAUX) == ["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5"]
    assert list(T.FIXED_GRID_TABLEAUX) == ["euler", "midpoint", "rk4", "heun2", "heun3"]
    assert T.ADAPTIVE_TABLEAUX["dopri5"] is T.DOPRI5
    for name, tab in {**T.ADAPTIVE_TABLEAUX, **T.FIXED_GRID_TABLEAUX}.items():
        assert tab.name == name
    assert set(TRUE_ORDERS) == {t.name for t in ALL}


@pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)
def test_row_sum_and_explicit(tab):
    n = tab.stages
    assert len(tab.a) == n and all(len(row) == n for row in tab.a) and len(tab.c) == n
    for i, row in enumerate(tab.a):
        assert all(x == 0 for x in row[i:])  # explicit: strictly lower triangular
        defect = sum(row, F(0)) - tab.c[i]
        if tab.name == "dopri8":  # published rational approximations; same δ-bound as the order conditions
            assert abs(defect) <= DELTA["dopri8"] * (sum(abs(x) for x in row) + tab.c[i])
        else:
            assert defect == 0


def test_dopri8_row_sums_are_not_exact():
    # Rows 6–13 of the published coefficients miss c_i by 3e-19 … 1e-17: they are approximations, not typos.
    defects = [float(abs(sum(row, F(0)) - c)) for row, c in zip(T.DOPRI8.a, T.DOPRI8.c)]
    assert all(d == 0 for d in defects[:6]) and all(0 < d < 2e-17 for d in defects[6:])


@pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)
def test_order_conditions(tab):
    order_b, order_low, _ = TRUE_ORDERS[tab.name]
    delta = DELTA.get(tab.name, F(0))
    _check_order(tab, tab.b, order_b, delta)
    if tab.b_low is not None:
        _check_order(tab, tab.b_low, order_low, delta)


@pytest.mark.parametrize("tab", ADAPTIVE, ids=lambda t: t.name)
def test_controller_orders(tab):
    # The step-size control reads order (exponent 1/order) and order_low = order − 1, as torchdiffeq does.
    assert tab.order_low == tab.order - 1
    order_b, order_low, _ = TRUE_ORDERS[tab.name]
    if tab is T.TSIT5:
        # torchdiffeq propagates Tsitouras's fourth-order weights but controls the step as for order 5
        assert (order_b, order_low) == (4, 5) and tab.order == 5
    else:
        assert (order_b, order_low) == (tab.order, tab.order_low)


@pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)
def test_fixed_grid_have_no_embedded_weights(tab):
    if tab.name in T.FIXED_GRID_TABLEAUX:
        assert tab.b_low is None and tab.b_mid is None and tab.order_low is None
    else:
        assert tab.b_low is not None and tab.b_mid is not None


def test_fsal():
    # torchdiffeq's test: the last weight of b is zero and the last stage row equals the other weights
    for tab in ALL:
        assert tab.fsal == (tab.b[-1] == 0 and tab.a[-1][:-1] == tab.b[:-1])
    fsal = {t.name for t in ALL if t.fsal}
    assert fsal == {"dopri5", "dopri5-scipy", "dopri8", "bosh3", "tsit5-paper"}
    assert T.DOPRI5.a[-1][:6] == T.DOPRI5.b[:6] and T.DOPRI5.b[-1] == 0
    for tab in (T.DOPRI5, T.DOPRI8, T.BOSH3, T.TSIT5, T.TSIT5_PAPER):
        assert tab.c[-1] == 1  # the last stage sits at t1 (torchdiffeq steps exactly to t1 for c = 1)


def test_embedded_weights():
    # exact error weights: b − b_low as the pairs define them
    assert T.BOSH3.error_weights == (F(2, 9) - F(7, 24), F(1, 3) - F(1, 4), F(4, 9) - F(1, 3), F(-1, 8))
    assert T.FEHLBERG2.error_weights == (F(-1, 512), F(0), F(1, 512))
    assert T.ADAPTIVE_HEUN.error_weights == (F(1, 2), F(-1, 2))
    assert T.DOPRI8.error_weights[12:] == (F(1, 4), F(0))
    assert T.DOPRI8.b_low[11] == F(2, 45)
    # tsit5: the error weights are stored exactly; b_low = b − e is the fifth-order last stage row to ~1e-77
    assert T.TSIT5.error_weights[-1] == F(1, 66)
    row = (*T.TSIT5.a[-1][:6], F(0))
    assert max(abs(x - y) for x, y in zip(T.TSIT5.b_low, row)) < F(1, 10**76)
    assert T.TSIT5_PAPER.b == row and T.TSIT5_PAPER.b_low == T.TSIT5.b


@pytest.mark.parametrize("tab", ADAPTIVE, ids=lambda t: t.name)
def test_mid_point_order(tab):
    # Continuous order conditions at θ = 1/2: Σ_j b_mid_j Φ_j(τ) = θ^|τ| / γ(τ) up to the order b_mid reaches.
    # dopri5 (Shampine) and tsit5 reach order 4, dopri8's interpolant order 5; the low-order pairs only take
    # half a step along one stage (first order), which limits their quartic dense output.
    _, _, order_mid = TRUE_ORDERS[tab.name]
    _check_order(tab, tab.b_mid, order_mid, DELTA_MID.get(tab.name, F(0)), theta=F(1, 2))


def test_tsit5_mid_point_misprint():
    # torchdiffeq's root 1.329989018975412 of b_1(θ) drops a digit of Tsitouras's 1.3299890189751412. b_1 is
    # linear in that root, so the first condition is off by exactly its change; with Tsitouras's digits the mid-point
    # weights meet the conditions to the constants' own precision (δ = 1e-16, 16–20 significant digits).
    published = T._tsit5_dense(F(1, 2), b1_root=F("1.3299890189751412"))
    _check_order(replace(T.TSIT5, b_mid=published), published, 4, F(1, 10**16), theta=F(1, 2))
    shift = sum(T.TSIT5.b_mid) - sum(published)
    assert F(3, 10**14) < abs(shift) < F(4, 10**14)
    assert sum(T.TSIT5.b_mid) - F(1, 2) == shift + (sum(published) - F(1, 2))


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


# --- Observed convergence order --------------------------------------------------------------------------------

# (tableau, which weights, step counts n = 1/h): errors above roundoff and past the pre-asymptotic range.
FINE = (16, 32, 64, 128, 256)
CONVERGENCE = [
    ("dopri5", "b", (4, 8, 16, 32)),
    ("dopri5", "b_low", (64, 128, 256)),
    ("dopri8", "b", (1, 2, 4, 8)),
    ("dopri8", "b_low", (1, 2, 4, 8)),
    ("bosh3", "b", FINE),
    ("bosh3", "b_low", FINE),
    ("fehlberg2", "b", FINE),
    ("fehlberg2", "b_low", (512, 1024, 2048, 4096)),
    ("adaptive_heun", "b", FINE),
    ("adaptive_heun", "b_low", (32, 64, 128, 256, 512)),
    ("tsit5", "b", (8, 16, 32, 64, 128)),
    ("tsit5", "b_low", (8, 16, 32, 64)),
    ("euler", "b", FINE),
    ("midpoint", "b", FINE),
    ("rk4", "b", FINE),
    ("heun2", "b", FINE),
    ("heun3", "b", FINE),
]


def _integrate(a: list[list[float]], c: list[float], w: list[float], n: int) -> float:
    """n fixed steps of y' = y·cos t, y(0) = 1 on [0, 1]; the error against y(1) = exp(sin 1)."""
    h, y = 1.0 / n, 1.0
    for step in range(n):
        t, k = step * h, []
        for i in range(len(w)):
            yi = y + h * sum(a[i][j] * k[j] for j in range(i))
            k.append(yi * math.cos(t + c[i] * h))
        y += h * sum(wj * kj for wj, kj in zip(w, k))
    return abs(y - math.exp(math.sin(1.0)))


@pytest.mark.parametrize(("name", "which", "steps"), CONVERGENCE, ids=lambda x: x if isinstance(x, str) else None)
def test_observed_convergence_order(name, which, steps):
    tab = {**T.ADAPTIVE_TABLEAUX, **T.FIXED_GRID_TABLEAUX}[name]
    ft = T.float_tableau(tab)
    w = ft.b if which == "b" else ft.b - ft.e
    errors = [_integrate(ft.a.tolist(), ft.c.tolist(), w.tolist(), n) for n in steps]
    slope = np.polyfit(np.log(1.0 / np.array(steps)), np.log(errors), 1)[0]
    order_b, order_low, _ = TRUE_ORDERS[name]
    # ±0.3: the next error term (relative size ~h) still tilts the fit a little at the coarsest h
    assert abs(slope - (order_b if which == "b" else order_low)) < 0.3, slope


# --- Float arrays ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tab", ALL, ids=lambda t: t.name)
def test_float_arrays_are_the_rationals_rounded_once(tab):
    ft = T.float_tableau(tab)
    for i, row in enumerate(tab.a):
        for j, x in enumerate(row):
            assert ft.a[i, j] == float(x)
    assert np.array_equal(ft.b, [float(x) for x in tab.b])
    assert np.array_equal(ft.c, [float(x) for x in tab.c])
    if tab.b_low is not None:
        assert np.array_equal(ft.e, [float(x) for x in tab.error_weights])
        assert np.array_equal(ft.b_mid, [float(x) for x in tab.b_mid])


def test_tsit5_internal_consistency():
    # tsit5 is not in the installed torchdiffeq: check the stored numbers against their own structure instead.
    ft = T.float_tableau(T.TSIT5)
    assert ft.c.tolist()[:4] == [0.0, 0.161, 0.327, 0.9] and ft.c[5] == ft.c[6] == 1.0
    assert T.TSIT5.c[5] == T.TSIT5.c[6] == 1  # exactly: the last stages sit at t1
    assert abs(sum(T.TSIT5.b) - 1) < F(1, 10**80) and abs(sum(T.TSIT5.b_low) - 1) < F(1, 10**76)
    assert np.array_equal(ft.b - ft.e, np.array([float(x) for x in T.TSIT5.a[-1][:6]] + [0.0]))
    assert T.TSIT5.a[6][1] == F(1, 100) and T.TSIT5.a[1][0] == F(161, 1000)


def _torchdiffeq_adaptive(name: str):
    pytest.importorskip("torchdiffeq")
    from torchdiffeq._impl import adaptive_heun, bosh3, dopri5, dopri8, fehlberg2

    return {
        "dopri5": (dopri5._DORMAND_PRINCE_SHAMPINE_TABLEAU, dopri5.DPS_C_MID, dopri5.Dopri5Solver),
        "dopri8": (dopri8._DOPRI8_TABLEAU, dopri8._C_mid, dopri8.Dopri8Solver),
        "bosh3": (bosh3._BOGACKI_SHAMPINE_TABLEAU, bosh3._BS_C_MID, bosh3.Bosh3Solver),
        "fehlberg2": (fehlberg2._FEHLBERG2_TABLEAU, fehlberg2._FE_C_MID, fehlberg2.Fehlberg2),
        "adaptive_heun": (adaptive_heun._ADAPTIVE_HEUN_TABLEAU, adaptive_heun._AH_C_MID,
                          adaptive_heun.AdaptiveHeunSolver),
    }[name]


@pytest.mark.parametrize("name", ["dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"])
def test_float_parity_with_torchdiffeq(name):
    tab = T.ADAPTIVE_TABLEAUX[name]
    ft = T.float_tableau(tab)
    theirs, mid, solver = _torchdiffeq_adaptive(name)
    assert solver.order == tab.order
    # Nodes, stage rows and b: torchdiffeq writes each as one int/int division, which Python rounds correctly,
    # exactly as float(Fraction) does — so these agree bitwise.
    a = np.zeros_like(ft.a)
    for i, row in enumerate(theirs.beta):
        a[i + 1, : len(row)] = row.numpy()
    assert np.array_equal(ft.a, a)
    assert np.array_equal(ft.c, np.r_[0.0, theirs.alpha.numpy()])
    assert np.array_equal(ft.b, theirs.c_sol.numpy())
    # The error weights: torchdiffeq subtracts two rounded ratios (each within u·|x| of the exact one, u = 2^-53),
    # then rounds the difference; ours is the exact difference rounded once. Hence the bound u·(|b| + |b_low| + 2|e|).
    bound = UNIT_ROUNDOFF * (np.abs(ft.b) + np.abs(T.as_float(tab.b_low)) + 2 * np.abs(ft.e))
    assert np.all(np.abs(ft.e - theirs.c_error.numpy()) <= bound)
    # b_mid: bitwise except dopri8's, which torchdiffeq evaluates as float polynomials in θ; the error of summing
    # m rounded terms p_k θ^k (constants rounded too) is at most about (m + 2)·u·Σ|p_k θ^k|.
    if name == "dopri8":
        half = F(1, 2)
        sizes = np.array([
            float(sum(abs(F(p)) * half ** (6 - k) for k, p in enumerate(T._DOPRI8_DENSE[j]))) if j in T._DOPRI8_DENSE
            else 0.0 for j in range(tab.stages)
        ])
        assert np.all(np.abs(ft.b_mid - mid.numpy()) <= 8 * UNIT_ROUNDOFF * sizes)
    else:
        assert np.array_equal(ft.b_mid, mid.numpy())


def _probe_fixed_grid(solver_cls, stages: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read off the tableau torchdiffeq's fixed-grid step uses: one step with dt = 1 from y0 = 0, where the i-th
    evaluation returns the unit vector e_i, so stage i sees y = Σ_j a_ij e_j at t = c_i and the step is Σ_j b_j e_j.
    """
    import torch

    a, c = np.zeros((stages, stages)), np.zeros(stages)

    def f(t, y, perturb=None):
        i = f.calls
        c[i], a[i] = float(t), y.numpy()
        f.calls += 1
        return torch.eye(stages, dtype=torch.float64)[i]

    f.calls = 0
    y0 = torch.zeros(stages, dtype=torch.float64)
    solver = solver_cls(func=f, y0=y0, atol=1e-9)
    zero, one = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    dy, _ = solver._step_func(f, zero, one, one, y0)
    assert f.calls == stages
    return a, c, dy.numpy()


@pytest.mark.parametrize("name", ["euler", "midpoint", "rk4", "heun2", "heun3"])
def test_fixed_grid_parity_with_torchdiffeq(name):
    pytest.importorskip("torchdiffeq")
    from torchdiffeq._impl.odeint import SOLVERS

    tab = T.FIXED_GRID_TABLEAUX[name]
    ft = T.float_tableau(tab)
    assert SOLVERS[name].order == tab.order
    a, c, b = _probe_fixed_grid(SOLVERS[name], tab.stages)
    # dt = 1 and y0 = 0 make every product and sum in torchdiffeq's step exact, so the probe returns its float
    # constants themselves, and each of those is a correctly rounded int/int division: bitwise equal.
    assert np.array_equal(ft.a, a) and np.array_equal(ft.c, c) and np.array_equal(ft.b, b)
