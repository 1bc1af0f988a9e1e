"""Hypothesis strategies for gqref: stable linear systems, MLP fields, states, time grids, tolerances, cotangents and
complete :class:`gqref.problems.Problem` instances. Why: so gq's tests (and other projects') draw the same valid inputs.

Usage::

    from hypothesis import given, strategies as st
    import gqref.strategies as gst

    @given(gst.problems())                         # any problem, with or without a closed form
    def test_solves(problem): ...

    @given(st.data())
    def test_gradient(data):
        problem = data.draw(gst.problems(closed_form=True))     # exact_solution / exact_gradient available
        dl_dy = data.draw(gst.cotangents(problem))              # shaped like ys, (len(problem.t), S)
        rtol, atol = data.draw(gst.tolerances)

What is drawn: every float has explicit bounds and no NaN, inf or subnormal (the problem, state and cotangent
strategies also draw magnitudes below :data:`TINY` as exactly 0, so products such as a complex step h·x cannot
underflow); no draw is degenerate: initial states and cotangents are away from 0 (an equilibrium start zeroes the
parameter gradient and every time term), the time-dependent scalar's rate |p0| ≥ 0.2, MLP weight matrices nonzero;
objects are built valid by construction (no ``assume``/filtering), so shrinking works and no health check
trips. Linear systems have A = −(MᵀM + εI) + (S − Sᵀ) (negative definite symmetric part: the flow contracts); MLP
weights are bounded by 1/√fan_in; time grids have K ≥ 1 strictly monotone intervals, increasing or decreasing, and
a span of at most 7.5 (2 for MLPs). Dissipative problems are drawn dissipative in the direction of integration (on a
decreasing grid the linear and spiral matrices, the oscillator's damping and Van der Pol's μ change sign), so
backward grids never blow up. The problems stay non-stiff and bounded over their grids, so a tight ``gqref.solve`` is
cheap; the toy keeps the paper's sign freedom (a z may grow, by at most e⁶).
:data:`problem_strategies` maps each name in :data:`gqref.problems.PROBLEMS` to a strategy for that kind.

Requires hypothesis (a test dependency); ``import gqref`` does not import this module.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from gqref import problems as pr

__all__ = [
    "TINY",
    "cotangents",
    "cubic_spirals",
    "finite",
    "harmonic_oscillators",
    "initial_states",
    "linear_problems",
    "lotka_volterras",
    "mlp_params",
    "mlp_problems",
    "nonzero_states",
    "problem_strategies",
    "problems",
    "stable_matrices",
    "time_dependent_scalars",
    "time_grids",
    "tolerances",
    "toy_problems",
    "van_der_pols",
    "vectors",
]

finite = {"allow_nan": False, "allow_infinity": False, "allow_subnormal": False}


TINY = 1e-12
"""Drawn magnitudes below TINY become exactly 0: values like 1e-300 would only exercise underflow (a complex step
h·x, a product of two of them), not the problems."""


def _floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, **finite).map(lambda x: 0.0 if abs(x) < TINY else x)


def _arrays(n: int, lo: float, hi: float) -> st.SearchStrategy[np.ndarray]:
    return st.lists(_floats(lo, hi), min_size=n, max_size=n).map(lambda v: np.array(v, dtype=np.float64))


@st.composite
def stable_matrices(draw, n: int | None = None) -> np.ndarray:
    """A = −(MᵀM + εI) + (S − Sᵀ): its symmetric part is negative definite, so y' = Ay contracts in the 2-norm."""
    n = n or draw(st.integers(1, 4))
    m = np.array(draw(st.lists(st.floats(-1, 1, **finite), min_size=n * n, max_size=n * n))).reshape(n, n)
    s = np.array(draw(st.lists(st.floats(-2, 2, **finite), min_size=n * n, max_size=n * n))).reshape(n, n)
    eps = draw(st.floats(0.1, 1.0))
    return -(m.T @ m + eps * np.eye(n)) + (s - s.T)


def vectors(n: int, lo: float = -2.0, hi: float = 2.0) -> st.SearchStrategy[np.ndarray]:
    """Float arrays of shape (n,) with entries in [lo, hi]."""
    return st.lists(st.floats(lo, hi, **finite), min_size=n, max_size=n).map(np.array)


def initial_states(n: int, bound: float = 2.0) -> st.SearchStrategy[np.ndarray]:
    """Initial states y0 of shape (n,) with entries in [−bound, bound] (0 or of magnitude ≥ TINY)."""
    return _arrays(n, -bound, bound)


NONZERO_FLOOR = 0.1
"""The problem strategies draw y0 (and cotangents) with max |entry| ≥ this fraction of their bound."""


def _away_from_zero(v: np.ndarray, bound: float) -> np.ndarray:
    """v, or v with its first entry moved to ±bound/2 when every entry is below NONZERO_FLOOR·bound: a map, not a
    filter, so shrinking still works. Why: y0 = 0 is an equilibrium of every problem here except the forced ones,
    where the parameter gradient and every time term vanish identically and a dropped term goes unseen."""
    if v.size and np.max(np.abs(v)) < NONZERO_FLOOR * bound:
        v = v.copy()
        v.flat[0] = bound / 2 if v.flat[0] >= 0 else -bound / 2
    return v


def nonzero_states(n: int, bound: float = 2.0) -> st.SearchStrategy[np.ndarray]:
    """:func:`initial_states` away from the origin: max |y0_i| ≥ NONZERO_FLOOR·bound."""
    return initial_states(n, bound).map(lambda v: _away_from_zero(v, bound))


@st.composite
def time_grids(draw, max_intervals: int = 5, max_gap: float = 1.5) -> np.ndarray:
    """K ≥ 1 strictly monotone intervals, increasing or decreasing: t0 ∈ [−1, 1], gaps in [0.05, max_gap]."""
    t0 = draw(st.floats(-1.0, 1.0, **finite))
    gaps = draw(st.lists(st.floats(0.05, max_gap, **finite), min_size=1, max_size=max_intervals))
    t = t0 + np.concatenate([[0.0], np.cumsum(gaps)])
    return t if draw(st.booleans()) else t[::-1].copy()


tolerances = st.tuples(st.floats(1e-10, 1e-3), st.floats(1e-12, 1e-4))
"""(rtol, atol) pairs."""


def cotangents(shape_or_problem: tuple[int, ...] | pr.Problem, bound: float = 1.0) -> st.SearchStrategy[np.ndarray]:
    """dL_dy arrays shaped like ys, ``(len(t), S)`` for a Problem (or any given shape), entries in [−bound, bound]
    (0 or of magnitude ≥ TINY), never all zero (max |entry| ≥ NONZERO_FLOOR·bound: a zero loss has no gradient)."""
    if isinstance(shape_or_problem, pr.Problem):
        shape = (shape_or_problem.t.size, shape_or_problem.state_dim)
    else:
        shape = tuple(shape_or_problem)
    return _arrays(int(np.prod(shape)), -bound, bound).map(lambda v: _away_from_zero(v, bound).reshape(shape))


def _direction(t: np.ndarray) -> float:
    return 1.0 if t[-1] > t[0] else -1.0


@st.composite
def linear_problems(draw, max_dim: int = 3) -> pr.Problem:
    """y' = Ay + b with ±A from :func:`stable_matrices` (−A on a decreasing grid, so the flow contracts in the
    direction of integration), b ∈ [−1, 1]ⁿ, y0 ∈ [−2, 2]ⁿ away from 0 (:func:`nonzero_states`)."""
    a = draw(stable_matrices(n=draw(st.integers(1, max_dim))))
    n = a.shape[0]
    b, y0, t = draw(_arrays(n, -1.0, 1.0)), draw(nonzero_states(n)), draw(time_grids())
    return pr.linear(_direction(t) * a, b, y0, t)


@st.composite
def forced_linear_problems(draw, max_dim: int = 3) -> pr.Problem:
    """y' = Ay + b·cos(ωt) with ±A from :func:`stable_matrices` (as :func:`linear_problems`), b ∈ [−1, 1]ⁿ away
    from 0 and ω ∈ ±[0.3, 3] (so the time term ∂f/∂t = −ω sin(ωt)·b never vanishes identically), y0 ∈ [−2, 2]ⁿ —
    0 included: the forcing moves even a state at rest."""
    a = draw(stable_matrices(n=draw(st.integers(1, max_dim))))
    n = a.shape[0]
    b = _away_from_zero(draw(_arrays(n, -1.0, 1.0)), 1.0)
    omega = draw(_floats(0.3, 3.0)) * draw(st.sampled_from([1.0, -1.0]))
    y0 = draw(st.one_of(st.just(np.zeros(n)), initial_states(n)))
    t = draw(time_grids())
    return pr.forced_linear(_direction(t) * a, b, omega, y0, t)


@st.composite
def toy_problems(draw) -> pr.Problem:
    """The paper's toy dz/dt = a z with a ∈ [−0.3, 0.3], z0 ∈ [0.1, 10], T ∈ ±[0.1, 20] (t = [0, T])."""
    big_t = draw(_floats(0.1, 20.0)) * draw(st.sampled_from([1.0, -1.0]))
    return pr.toy(draw(_floats(-0.3, 0.3)), draw(_floats(0.1, 10.0)), big_t)


@st.composite
def harmonic_oscillators(draw) -> pr.Problem:
    """ω ∈ [0.2, 3], |γ| ≤ 1 (damped or undamped; γ ≤ 0 on a decreasing grid, so the energy never grows in the
    direction of integration), y0 ∈ [−2, 2]² away from the equilibrium 0."""
    omega, gamma, y0, t = draw(_floats(0.2, 3.0)), draw(_floats(0.0, 1.0)), draw(nonzero_states(2)), draw(time_grids())
    return pr.harmonic_oscillator(omega, _direction(t) * gamma, y0, t)


@st.composite
def time_dependent_scalars(draw) -> pr.Problem:
    """y' = p0 cos(p1 t) y with |p0| ∈ [0.2, 1], |p1| ∈ [0.5, 3] (away from the closed form's 1/p1; |y| changes by
    at most e^{2|p0/p1|} ≤ e⁴), S ∈ {1, 2}, y0 away from 0. The time term ∂f/∂t = −p0·p1·sin(p1 t)·y is never
    identically zero: p0 = 0 or y0 = 0 would remove it (and the parameter gradient) from every draw they hit."""
    p0 = draw(_floats(0.2, 1.0)) * draw(st.sampled_from([1.0, -1.0]))
    p1 = draw(_floats(0.5, 3.0)) * draw(st.sampled_from([1.0, -1.0]))
    return pr.time_dependent_scalar(p0, p1, draw(nonzero_states(draw(st.integers(1, 2)))), draw(time_grids()))


@st.composite
def cubic_spirals(draw) -> pr.Problem:
    """y' = (y³) @ A with A the demo's matrix or a stable 2×2, negated on a decreasing grid: Σ y⁴ then decreases in
    the direction of integration (backwards, the stable spiral blows up in finite time). y0 ∈ [−1.5, 1.5]² away
    from the equilibrium 0."""
    a = draw(st.one_of(st.just(pr.CUBIC_SPIRAL_A), stable_matrices(n=2)))
    y0, t = draw(nonzero_states(2, 1.5)), draw(time_grids())
    return pr.cubic_spiral(_direction(t) * a, y0, t)


@st.composite
def lotka_volterras(draw) -> pr.Problem:
    """Rates α, β, δ, γ ∈ [0.5, 2], positive populations y0 ∈ [0.5, 3]² (periodic orbits, either direction)."""
    rates = [draw(_floats(0.5, 2.0)) for _ in range(4)]
    return pr.lotka_volterra(*rates, y0=draw(_arrays(2, 0.5, 3.0)), t=draw(time_grids()))


@st.composite
def van_der_pols(draw) -> pr.Problem:
    """|μ| ≤ 3 (non-stiff), y0 ∈ [−2, 2]² away from the equilibrium 0; μ ≤ 0 on a decreasing grid, which is the
    attracting limit cycle seen backwards (with μ > 0, backwards, large states escape in finite time)."""
    mu, y0, t = draw(_floats(0.0, 3.0)), draw(nonzero_states(2)), draw(time_grids())
    return pr.van_der_pol(_direction(t) * mu, y0, t)


@st.composite
def mlp_params(draw, state_dim: int, width: int, time_dependent: bool = False) -> np.ndarray:
    """MLP parameter vectors (layout of :func:`gqref.problems.pack_mlp`) with |W1|, |b1| ≤ 1/√d_in and
    |W2|, |b2| ≤ 1/√width, torch.nn.Linear's init range: the field's Lipschitz constant stays ≤ √(S·width).
    Neither W1 nor W2 is all zero."""
    d_in = state_dim + int(time_dependent)
    b1, b2 = 1.0 / np.sqrt(d_in), 1.0 / np.sqrt(width)
    # neither weight matrix all zero: W2 = 0 cuts the hidden layer off, W1 = 0 the state (both leave gradients
    # that vanish identically)
    w1 = _away_from_zero(draw(_arrays(width * d_in, -b1, b1)), b1).reshape(width, d_in)
    w2 = _away_from_zero(draw(_arrays(state_dim * width, -b2, b2)), b2).reshape(state_dim, width)
    return pr.pack_mlp(w1, draw(_arrays(width, -b1, b1)), w2, draw(_arrays(state_dim, -b2, b2)))


@st.composite
def mlp_problems(draw, time_dependent: bool | None = None, max_state_dim: int = 3, max_width: int = 8) -> pr.Problem:
    """Softplus MLP fields with bounded weights (:func:`mlp_params`), y0 ∈ [−1, 1]^S away from 0, grids spanning
    at most 2."""
    if time_dependent is None:
        time_dependent = draw(st.booleans())
    s, width = draw(st.integers(1, max_state_dim)), draw(st.integers(1, max_width))
    params = draw(mlp_params(s, width, time_dependent))
    return pr.mlp(width, state_dim=s, time_dependent=time_dependent, weights=params, y0=draw(nonzero_states(s, 1.0)),
                  t=draw(time_grids(max_gap=0.4)))


problem_strategies: dict[str, st.SearchStrategy[pr.Problem]] = {
    "linear": linear_problems(),
    "forced_linear": forced_linear_problems(),
    "toy": toy_problems(),
    "harmonic_oscillator": harmonic_oscillators(),
    "time_dependent_scalar": time_dependent_scalars(),
    "cubic_spiral": cubic_spirals(),
    "lotka_volterra": lotka_volterras(),
    "van_der_pol": van_der_pols(),
    "mlp": mlp_problems(time_dependent=False),
    "mlp_time_dependent": mlp_problems(time_dependent=True),
}

_CLOSED_FORM = ("linear", "forced_linear", "toy", "harmonic_oscillator", "time_dependent_scalar")


def problems(closed_form: bool | None = None) -> st.SearchStrategy[pr.Problem]:
    """Complete problems of every kind; ``closed_form=True`` only those with exact_solution/exact_gradient,
    ``False`` only those without, ``None`` (default) all."""
    names = [name for name in problem_strategies if closed_form is None or (name in _CLOSED_FORM) == closed_form]
    return st.one_of(*(problem_strategies[name] for name in names))
