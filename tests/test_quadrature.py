"""Gauß–Legendre rules: polynomial exactness, symmetry, weights; the paper's node-count rule."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gqref.errors import InputError
from gqref.quadrature import gauss_legendre, node_count

EPS = np.finfo(float).eps


def exact_integral(coeffs, a, b):
    powers = np.arange(1, len(coeffs) + 1)
    return np.sum(np.asarray(coeffs) * (b**powers - a**powers) / powers)


@given(n=st.integers(1, 80), data=st.data())
def test_exact_for_degree_up_to_2n_minus_1(n, data):
    degree = data.draw(st.integers(0, 2 * n - 1))
    coeffs = np.array(data.draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=degree + 1,
                                         max_size=degree + 1)))
    x, w = gauss_legendre(n)
    approx = np.sum(w * np.polynomial.polynomial.polyval(x, coeffs))
    # Roundoff: Horner evaluation errs by ≤ 2·deg·ε·Σ|c_k| per node; the nodes themselves are accurate to a few
    # ulps, which by Markov's inequality (|p'| ≤ deg²·max|p| on [−1, 1]) moves p by ≤ deg²·ε·Σ|c_k|. The weights
    # sum to 2, so the sum's error is at most twice the worst per-node error (plus the summation's n·ε).
    size = np.sum(np.abs(coeffs))
    bound = 2 * (2 * degree + 4 * degree**2 + n) * EPS * size + EPS
    assert abs(approx - exact_integral(coeffs, -1.0, 1.0)) <= bound


def test_not_exact_for_degree_2n():
    for n in range(1, 20):
        x, w = gauss_legendre(n)
        assert abs(np.sum(w * x ** (2 * n)) - 2 / (2 * n + 1)) > 1e-6 * (0.5**n)


@given(n=st.integers(1, 80), a=st.floats(-5, 5), length=st.floats(1e-3, 10))
def test_mapped_rule_weights_nodes_and_symmetry(n, a, length):
    b = a + length
    x, w = gauss_legendre(n, a, b)
    assert np.all(w > 0)
    # reference weights sum to 2 within n·ε; the map scales them by (b − a)/2 exactly
    assert abs(np.sum(w) - (b - a)) <= 4 * n * EPS * (b - a)
    assert np.all((x > a) & (x < b))
    # symmetric about the midpoint (to the roundoff of the affine map)
    assert np.allclose(x + x[::-1], a + b, rtol=0, atol=8 * EPS * (abs(a) + abs(b) + length))
    assert np.allclose(w, w[::-1], rtol=16 * EPS, atol=0)


def test_reversed_interval_runs_backwards_with_positive_weights():
    x, w = gauss_legendre(5, 1.0, 0.0)
    assert np.all(np.diff(x) < 0) and np.all(w > 0) and np.isclose(np.sum(w), 1.0)


def test_bad_node_count():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="n must be a positive integer"):
            gauss_legendre(bad)


@pytest.mark.parametrize(
    ("gtol", "nfe", "interval", "expected"),
    [
        (0.1, 26, (0.0, 1.0), 3),  # the paper's example: one interval, NFE 26, C = 0.1
        (0.4, 98, (0.0, 1.0), 40),  # toy problem, lower end of the NFE range (the NumPy check in docs/paper.md §4)
        (0.4, 140, (0.0, 1.0), 56),
        (0.1, 26, (0.0, 0.01), 1),  # never zero: the midpoint rule at worst
        (0.1, 10**6, (0.0, 1.0), 64),  # capped
    ],
)
def test_paper_node_counts(gtol, nfe, interval, expected):
    assert node_count(gtol, nfe, *interval, 0.0, 1.0) == expected


def test_node_rule_never_zero_and_capped():
    for nfe in range(1, 400, 7):
        for frac in (1e-9, 0.01, 0.3, 1.0):
            n = node_count(0.1, nfe, 0.0, frac, 0.0, 1.0, max_nodes=17)
            assert 1 <= n <= 17
