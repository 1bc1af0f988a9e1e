"""Hypothesis strategies for solver tests (gqref.strategies, public, arrives with the gradient issue)."""

import numpy as np
from hypothesis import strategies as st

finite = {"allow_nan": False, "allow_infinity": False, "allow_subnormal": False}


@st.composite
def stable_matrices(draw, n=None):
    """A = −(MᵀM + εI) + (S − Sᵀ): its symmetric part is negative definite, so y' = Ay contracts in the 2-norm."""
    n = n or draw(st.integers(1, 4))
    m = np.array(draw(st.lists(st.floats(-1, 1, **finite), min_size=n * n, max_size=n * n))).reshape(n, n)
    s = np.array(draw(st.lists(st.floats(-2, 2, **finite), min_size=n * n, max_size=n * n))).reshape(n, n)
    eps = draw(st.floats(0.1, 1.0))
    return -(m.T @ m + eps * np.eye(n)) + (s - s.T)


def vectors(n, lo=-2.0, hi=2.0):
    return st.lists(st.floats(lo, hi, **finite), min_size=n, max_size=n).map(np.array)


@st.composite
def time_grids(draw, max_intervals=5):
    """K ≥ 1 strictly monotone intervals, increasing or decreasing."""
    t0 = draw(st.floats(-1.0, 1.0, **finite))
    gaps = draw(st.lists(st.floats(0.05, 1.5, **finite), min_size=1, max_size=max_intervals))
    t = t0 + np.concatenate([[0.0], np.cumsum(gaps)])
    return t if draw(st.booleans()) else t[::-1].copy()


tolerances = st.tuples(st.floats(1e-10, 1e-3), st.floats(1e-12, 1e-4))
