"""Small benchmark ODEs, each as a compiled in-place gqref field and an array-agnostic twin for scipy, torchdiffeq
and diffrax.

The gqref fields take the in-place form ``f(t, y, p, out)``, so a compiled solve allocates nothing per evaluation.

A twin ``rhs(t, y, p, stack)`` takes numpy arrays (scipy) or torch tensors (torchdiffeq) for ``y`` and ``p`` and
builds its result with ``stack`` (``np.array`` or ``torch.stack``); ``p`` is the same flat parameter vector the
compiled field gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg

import gqref

DEFAULT_TOL = 1e-8


@dataclass(frozen=True)
class Problem:
    """An initial value problem: a compiled field, its twin, y0 on ``t_span``, and tolerances."""

    name: str
    title: str
    field: Callable  # gqref.njit f(t, y, p, out): writes dy/dt into out
    rhs: Callable  # rhs(t, y, p, stack), see the module docstring
    y0: np.ndarray
    t_span: tuple[float, float]
    params: np.ndarray
    rtol: float = DEFAULT_TOL
    atol: float = DEFAULT_TOL
    exact: Callable[[float], np.ndarray] | None = None  # closed-form y(t), where there is one


# Van der Pol, p = [mu].
@gqref.njit
def van_der_pol_field(t, y, p, out):
    out[0] = y[1]
    out[1] = p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]


def van_der_pol_rhs(t, y, p, stack):
    return stack([y[1], p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]])


# Lotka–Volterra x' = a x − b x y, y' = d x y − c y, p = [a, b, c, d].
@gqref.njit
def lotka_volterra_field(t, y, p, out):
    out[0] = p[0] * y[0] - p[1] * y[0] * y[1]
    out[1] = p[3] * y[0] * y[1] - p[2] * y[1]


def lotka_volterra_rhs(t, y, p, stack):
    return stack([p[0] * y[0] - p[1] * y[0] * y[1], p[3] * y[0] * y[1] - p[2] * y[1]])


# y' = A y, p = A.ravel() (row-major).
@gqref.njit
def linear_field(t, y, p, out):
    n = y.shape[0]
    for i in range(n):
        acc = 0.0
        for j in range(n):
            acc += p[i * n + j] * y[j]
        out[i] = acc


def linear_rhs(t, y, p, stack):
    n = y.shape[0]
    return p.reshape(n, n) @ y


# Arenstorf orbit (restricted three-body problem), y = [x, y, x', y'], p = [mu].
@gqref.njit
def arenstorf_field(t, y, p, out):
    mu = p[0]
    nu = 1.0 - mu
    d1 = ((y[0] + mu) ** 2 + y[1] ** 2) ** 1.5
    d2 = ((y[0] - nu) ** 2 + y[1] ** 2) ** 1.5
    out[0] = y[2]
    out[1] = y[3]
    out[2] = y[0] + 2.0 * y[3] - nu * (y[0] + mu) / d1 - mu * (y[0] - nu) / d2
    out[3] = y[1] - 2.0 * y[2] - nu * y[1] / d1 - mu * y[1] / d2


def arenstorf_rhs(t, y, p, stack):
    mu = p[0]
    nu = 1.0 - mu
    d1 = ((y[0] + mu) ** 2 + y[1] ** 2) ** 1.5
    d2 = ((y[0] - nu) ** 2 + y[1] ** 2) ** 1.5
    return stack([
        y[2],
        y[3],
        y[0] + 2.0 * y[3] - nu * (y[0] + mu) / d1 - mu * (y[0] - nu) / d2,
        y[1] - 2.0 * y[2] - nu * y[1] / d1 - mu * y[1] / d2,
    ])


# A stable, non-normal 4-D matrix: two damped rotations (eigenvalues ≈ −0.50 ± 2.00i, −0.20 ± 0.99i), coupled.
LINEAR_A = np.array([
    [-0.5, 2.0, 0.0, 0.1],
    [-2.0, -0.5, 0.3, 0.0],
    [0.0, 0.0, -0.2, 1.0],
    [0.1, 0.0, -1.0, -0.2],
])
LINEAR_Y0 = np.array([1.0, 0.0, -1.0, 0.5])
ARENSTORF_MU = 0.012277471
ARENSTORF_PERIOD = 17.0652165601579625588917206249


def linear_exact(t: float) -> np.ndarray:
    """The closed form y(t) = expm(A t) y0 of the linear problem."""
    return scipy.linalg.expm(LINEAR_A * t) @ LINEAR_Y0


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in (
        Problem("van_der_pol", "Van der Pol, μ = 5, t ∈ [0, 20]", van_der_pol_field, van_der_pol_rhs,
                np.array([2.0, 0.0]), (0.0, 20.0), np.array([5.0])),
        Problem("lotka_volterra", "Lotka–Volterra (a, b, c, d) = (1.5, 1, 3, 1), t ∈ [0, 15]",
                lotka_volterra_field, lotka_volterra_rhs, np.array([10.0, 5.0]), (0.0, 15.0),
                np.array([1.5, 1.0, 3.0, 1.0])),
        Problem("linear", "Linear 4-D y' = Ay (stable, non-normal), t ∈ [0, 10]", linear_field, linear_rhs,
                LINEAR_Y0, (0.0, 10.0), LINEAR_A.ravel(), exact=linear_exact),
        Problem("arenstorf", "Arenstorf orbit, one period t ∈ [0, 17.065…]", arenstorf_field, arenstorf_rhs,
                np.array([0.994, 0.0, 0.0, -2.00158510637908252240537862224]), (0.0, ARENSTORF_PERIOD),
                np.array([ARENSTORF_MU])),
    )
}


def numpy_rhs(problem: Problem) -> Callable[[float, np.ndarray], np.ndarray]:
    """``f(t, y)`` for scipy: the problem's twin on numpy arrays."""
    rhs, params = problem.rhs, problem.params

    def f(t, y):
        return rhs(t, y, params, np.array)

    return f


def check_twins(problem: Problem, atol: float = 1e-12) -> None:
    """Raise if the compiled field and its numpy twin disagree (a guard against editing only one of them)."""
    t0 = problem.t_span[0]
    twin, field = numpy_rhs(problem), gqref.VectorField(problem.field).f  # .f: the returning form
    for y in (problem.y0, problem.y0 + 0.1 * np.arange(1, problem.y0.size + 1)):
        compiled, plain = field(t0, y, problem.params), twin(t0, y)
        if not np.allclose(compiled, plain, rtol=0.0, atol=atol):
            raise AssertionError(f"{problem.name}: compiled field {compiled} and numpy twin {plain} disagree at {y}")
