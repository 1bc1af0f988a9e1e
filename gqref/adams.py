"""Adams–Bashforth (explicit) and Adams–Bashforth–Moulton (predictor–corrector) on a fixed grid.

The methods torchdiffeq calls ``explicit_adams`` and ``implicit_adams`` (alias ``fixed_adams``), step for step.

Coefficients (Hairer, Nørsett & Wanner I, §III.1): with u = (t − t_n)/h, the k-step Adams–Bashforth weights are
β_j = ∫_0^1 ℓ_j(u) du for the Lagrange basis ℓ_j on the nodes u = 0, −1, …, −(k−1) (f_n, f_{n−1}, …), the k-value
Adams–Moulton weights the same integrals on the nodes 1, 0, …, −(k−2) (f_{n+1}, f_n, …). They are derived here
in exact rationals (:func:`bashforth`, :func:`moulton`) and rounded to float64 once (:data:`BASHFORTH`,
:data:`MOULTON`, indexed by the number of weights; entry 0 is empty).

The algorithm (torchdiffeq 0.2.5's, including its quirks, so that solutions and evaluation counts agree):

- every step first evaluates f0 = f(t0, y0) and pushes it onto a history of at most ``max_order − 1`` values
  (newest first); ``order = min(len(history), max_order − 1)``;
- while ``order < MIN_ORDER − 1`` (the first two steps, or always when ``max_order < MIN_ORDER``) the step is an
  rk4 step (Kutta's 3/8 rule) reusing f0: 3 more evaluations;
- otherwise the predictor is the ``order``-step Adams–Bashforth formula (no further evaluation: explicit_adams
  stops here). implicit_adams then corrects with the (order+1)-value Adams–Moulton formula by functional
  iteration at t1, at most ``max_iters`` evaluations, stopping once successive increments dy agree:
  max_i |Δdy_i| / (atol_i + rtol·max(|dy_old_i|, |dy_i|)) < 1;
- the corrector's values never enter the history (only each step's f0 does); a corrector that has not converged
  after ``max_iters`` evaluations warns and drops the oldest history entry.

:class:`AdamsStepper` is that algorithm on NumPy arrays; :mod:`gqtorch.adams` is its twin.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from functools import cache

import numpy as np

ADAMS_METHODS = ("explicit_adams", "implicit_adams", "fixed_adams")
IMPLICIT = {"explicit_adams": False, "implicit_adams": True, "fixed_adams": True}
MIN_ORDER = 4  # below this many history values the step is rk4
MAX_ORDER = 12
DEFAULT_MAX_ITERS = 4


class CorrectorWarning(UserWarning):
    """implicit_adams' functional iteration did not converge within ``max_iters`` evaluations."""


def _lagrange_integrals(nodes: tuple[int, ...]) -> tuple[Fraction, ...]:
    """∫_0^1 ℓ_j(u) du for the Lagrange basis polynomials ℓ_j on ``nodes``, exactly."""
    weights = []
    for j, xj in enumerate(nodes):
        poly = [Fraction(1)]  # coefficients of u**0, u**1, …
        for m, xm in enumerate(nodes):
            if m == j:
                continue
            scale = Fraction(1, xj - xm)
            shifted = [Fraction(0)] * (len(poly) + 1)  # poly · (u − xm) / (xj − xm)
            for power, coef in enumerate(poly):
                shifted[power + 1] += coef * scale
                shifted[power] -= coef * xm * scale
            poly = shifted
        weights.append(sum((coef / (power + 1) for power, coef in enumerate(poly)), Fraction(0)))
    return tuple(weights)


@cache
def bashforth(k: int) -> tuple[Fraction, ...]:
    """The k-step Adams–Bashforth weights of f_n, f_{n−1}, …, f_{n−k+1} (k ≥ 1; k = 1 is Euler)."""
    return _lagrange_integrals(tuple(-j for j in range(k)))


@cache
def moulton(k: int) -> tuple[Fraction, ...]:
    """The k-value Adams–Moulton weights of f_{n+1}, f_n, …, f_{n−k+2} (k ≥ 1; k = 1 is backward Euler, k = 2
    the trapezoidal rule)."""
    return _lagrange_integrals(tuple(1 - j for j in range(k)))


BASHFORTH: tuple[tuple[float, ...], ...] = ((), *(tuple(map(float, bashforth(k))) for k in range(1, MAX_ORDER + 1)))
MOULTON: tuple[tuple[float, ...], ...] = ((), *(tuple(map(float, moulton(k))) for k in range(1, MAX_ORDER + 1)))


def corrector_converged(dy_old: np.ndarray, dy: np.ndarray, rtol: float, atol: np.ndarray) -> bool:
    """The corrector's stopping test: every component of the change within atol + rtol·max(|dy_old|, |dy|)."""
    scale = atol + rtol * np.maximum(np.abs(dy_old), np.abs(dy))
    return bool(np.max(np.abs(dy_old - dy) / scale) < 1)  # NaN compares False: not converged


def corrector_warning(max_iters: int, t1: float) -> None:
    warnings.warn(f"implicit_adams: the corrector did not converge in max_iters = {max_iters} evaluations at "
                  f"t = {t1!r}; the solution may be inaccurate (use a smaller step or a larger max_iters)",
                  CorrectorWarning, stacklevel=4)


class AdamsStepper:
    """The Adams method's memory across the steps of one solve, and its step: the algorithm once, for both twins.

    ``evaluate(s, nudge, y)`` returns the field (caller's time derivative) at solver time ``s`` (perturbed by one
    ulp in the direction ``nudge`` when the solve perturbs); ``startup(s0, s1, direction, y0, f0)`` is the rk4 step that
    reuses ``f0``. Both come from :mod:`gqref.fixed_grid` (or gqtorch's), which owns the stage times and the rk4
    tableau. The array arithmetic is in four small methods, NumPy's here; :class:`gqtorch.adams.AdamsStepper`
    overrides them for tensors and inherits the rest.
    """

    def __init__(self, method: str, max_order: int, max_iters: int, rtol: float, atol,
                 evaluate: Callable, startup: Callable):
        self.implicit = IMPLICIT[method]
        self.max_order = max_order
        self.max_iters = max_iters
        self.rtol = rtol
        self.atol = atol
        self.evaluate = evaluate
        self.startup = startup
        self.history: deque = deque(maxlen=max_order - 1)  # newest first
        self.last_s: float | None = None

    # --- the array arithmetic (NumPy) ----------------------------------------------------------------------------

    @staticmethod
    def weighted_sum(weights, values, scale: float):
        """Σ_i (scale·w_i)·v_i over zip(weights, values) (the shorter decides)."""
        return sum((scale * w) * v for w, v in zip(weights, values))

    @staticmethod
    def add_scaled(y, x, alpha: float):
        """y + alpha·x."""
        return y + alpha * x

    def converged(self, dy_old, dy) -> bool:
        return corrector_converged(dy_old, dy, self.rtol, self.atol)

    @staticmethod
    def all_finite(x) -> bool:
        return bool(np.all(np.isfinite(x)))

    # --- the algorithm ---------------------------------------------------------------------------------------------

    def _remember(self, s: float, f) -> None:
        if self.last_s != s:
            self.history.appendleft(f)
            self.last_s = s

    def step(self, s0: float, s1: float, direction: float, y0):
        """(y1, f0) for the step from s0 to s1."""
        h = direction * (s1 - s0)  # the signed step in the caller's time
        f0 = self.evaluate(s0, 1, y0)
        self._remember(s0, f0)
        order = min(len(self.history), self.max_order - 1)
        if order < MIN_ORDER - 1:
            return self.startup(s0, s1, direction, y0, f0), f0
        dy = self.weighted_sum(BASHFORTH[order], self.history, h)
        if self.implicit:
            weights = MOULTON[order + 1]
            delta = self.weighted_sum(weights[1:], self.history, 1.0) * h
            converged = False
            for _ in range(self.max_iters):
                dy_old = dy
                f1 = self.evaluate(s1, -1, y0 + dy)
                dy = self.add_scaled(delta, f1, h * weights[0])
                converged = self.converged(dy_old, dy)
                if converged:
                    break
            if not converged:
                if self.all_finite(dy):  # a non-finite field is reported by the solve, not as a convergence failure
                    corrector_warning(self.max_iters, direction * s1)
                self.history.pop()
        return y0 + dy, f0
