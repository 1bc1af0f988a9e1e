"""Runge–Kutta tableaux as exact rationals, defined once; float arrays are derived from them.

The Dormand–Prince 5(4) pair with Shampine's mid-point weights (the "DPS" tableau of torchdiffeq and scipy's
RK45) is the adaptive method. Euler, the explicit midpoint rule and Kutta's 3/8 rule (torchdiffeq's ``rk4``) are
the fixed-grid methods. :func:`order_conditions` checks any tableau exactly against the rooted-tree conditions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction as F
from functools import cache

import numpy as np


@dataclass(frozen=True, eq=False)  # identity hashing: tableaux are singletons, and hashing Fractions is slow
class Tableau:
    """An explicit Runge–Kutta tableau in exact rational arithmetic.

    ``a`` is the full strictly lower-triangular stage matrix (row ``i`` holds the weights of the stages that
    build stage ``i``), ``b`` the propagated weights, ``c`` the stage nodes. ``b_low`` (embedded weights) and
    ``b_mid`` (weights of the solution at the step's mid-point, for dense output) are optional.
    """

    name: str
    order: int
    a: tuple[tuple[F, ...], ...]
    b: tuple[F, ...]
    c: tuple[F, ...]
    b_low: tuple[F, ...] | None = None
    order_low: int | None = None
    b_mid: tuple[F, ...] | None = None

    @property
    def stages(self) -> int:
        return len(self.b)

    @property
    def error_weights(self) -> tuple[F, ...]:
        """b − b_low: the weights of the local error estimate ``dt·Σ e_j k_j``."""
        if self.b_low is None:
            raise ValueError(f"tableau {self.name!r} has no embedded method")
        return tuple(x - y for x, y in zip(self.b, self.b_low))

    @property
    def fsal(self) -> bool:
        """First same as last: the last stage is evaluated at the propagated solution."""
        return self.c[-1] == 1 and self.a[-1][: self.stages - 1] == self.b[: self.stages - 1] and self.b[-1] == 0


def _lower(rows: list[list[F]], stages: int) -> tuple[tuple[F, ...], ...]:
    """Pad ragged lower-triangular rows (stage 2 onwards) into a full ``stages × stages`` matrix."""
    full = [[F(0)] * stages]
    for row in rows:
        full.append(list(row) + [F(0)] * (stages - len(row)))
    return tuple(tuple(r) for r in full)


DOPRI5 = Tableau(
    name="dopri5",
    order=5,
    c=(F(0), F(1, 5), F(3, 10), F(4, 5), F(8, 9), F(1), F(1)),
    a=_lower(
        [
            [F(1, 5)],
            [F(3, 40), F(9, 40)],
            [F(44, 45), F(-56, 15), F(32, 9)],
            [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
            [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
            [F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84)],
        ],
        7,
    ),
    b=(F(35, 384), F(0), F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), F(0)),
    # torchdiffeq's embedded 4th-order weights (Shampine 1986); scipy's RK45 uses DOPRI5_SCIPY's below.
    b_low=(F(1951, 21600), F(0), F(22642, 50085), F(451, 720), F(-12231, 42400), F(649, 6300), F(1, 60)),
    order_low=4,
    # Shampine (1986): the solution at the mid-point of the step, used by the quartic dense output.
    b_mid=tuple(
        F(1, 2) * w
        for w in (
            F(6025192743, 30085553152),
            F(0),
            F(51252292925, 65400821598),
            F(-2691868925, 45128329728),
            F(187940372067, 1594534317056),
            F(-1776094331, 19743644256),
            F(11237099, 235043384),
        )
    ),
)

# The same pair with Dormand & Prince's (1980) original embedded weights, as in Hairer's DOPRI5 and scipy's RK45.
DOPRI5_SCIPY = replace(
    DOPRI5,
    name="dopri5-scipy",
    b_low=(F(5179, 57600), F(0), F(7571, 16695), F(393, 640), F(-92097, 339200), F(187, 2100), F(1, 40)),
)

EULER = Tableau(name="euler", order=1, c=(F(0),), a=((F(0),),), b=(F(1),))

MIDPOINT = Tableau(name="midpoint", order=2, c=(F(0), F(1, 2)), a=_lower([[F(1, 2)]], 2), b=(F(0), F(1)))

# torchdiffeq's "rk4" is Kutta's 3/8 rule (its rk4_alt_step_func), not the classic 1/6-1/3 rule.
RK4 = Tableau(
    name="rk4",
    order=4,
    c=(F(0), F(1, 3), F(2, 3), F(1)),
    a=_lower([[F(1, 3)], [F(-1, 3), F(1)], [F(1), F(-1), F(1)]], 4),
    b=(F(1, 8), F(3, 8), F(3, 8), F(1, 8)),
)

FIXED_GRID_TABLEAUX = {t.name: t for t in (EULER, MIDPOINT, RK4)}

# Quartic dense output on one step, in the basis [y0, y1, y_mid, dt·f0, dt·f1]: row k holds the coefficient of
# x**k, x = (t − t0)/dt. It is the unique quartic with p(0) = y0, p(1) = y1, p(1/2) = y_mid, p'(0) = dt·f0,
# p'(1) = dt·f1 (torchdiffeq's _interp_fit).
INTERP_BASIS = ("y0", "y1", "y_mid", "dt_f0", "dt_f1")
INTERP_FIT = (
    (F(1), F(0), F(0), F(0), F(0)),
    (F(0), F(0), F(0), F(1), F(0)),
    (F(-11), F(-5), F(16), F(-4), F(1)),
    (F(18), F(14), F(-32), F(5), F(-3)),
    (F(-8), F(-8), F(16), F(-2), F(2)),
)


def as_float(values) -> np.ndarray:
    """Nested Fractions → float64 array (each entry rounded once, from the exact rational)."""
    return np.array([[float(x) for x in row] for row in values] if isinstance(values[0], tuple) else
                    [float(x) for x in values], dtype=np.float64)


@dataclass(frozen=True)
class FloatTableau:
    """The float64 arrays the kernels use, derived from a :class:`Tableau`."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    e: np.ndarray
    b_mid: np.ndarray


@cache
def float_tableau(tableau: Tableau) -> FloatTableau:
    empty = np.zeros(tableau.stages)
    return FloatTableau(
        a=as_float(tableau.a),
        b=as_float(tableau.b),
        c=as_float(tableau.c),
        e=as_float(tableau.error_weights) if tableau.b_low is not None else empty,
        b_mid=as_float(tableau.b_mid) if tableau.b_mid is not None else empty,
    )


INTERP_FIT_FLOAT = as_float(INTERP_FIT)


# --- Order conditions (Butcher's rooted trees) -----------------------------------------------------------------

Tree = tuple  # a rooted tree is the sorted tuple of its children's trees; () is the single node


@cache
def rooted_trees(order: int) -> tuple[Tree, ...]:
    """All rooted trees with ``order`` nodes (1, 1, 2, 4, 9, 20, … of them)."""
    if order == 1:
        return ((),)
    return tuple(sorted(_forests(order - 1)))


@cache
def _forests(nodes: int) -> frozenset:
    """Every multiset of trees with ``nodes`` nodes in total, each as a sorted tuple (its canonical form)."""
    if nodes == 0:
        return frozenset({()})
    return frozenset(
        tuple(sorted((child, *rest)))
        for size in range(1, nodes + 1)
        for child in rooted_trees(size)
        for rest in _forests(nodes - size)
    )


def tree_order(tree: Tree) -> int:
    return 1 + sum(tree_order(child) for child in tree)


def tree_density(tree: Tree) -> int:
    """γ(t) = |t| · Π γ(children)."""
    gamma = tree_order(tree)
    for child in tree:
        gamma *= tree_density(child)
    return gamma


def elementary_weights(a, tree: Tree) -> list[F]:
    """Φ_i(t) for every stage i: the product over children u of Σ_j a_ij Φ_j(u)."""
    stages = len(a)
    phi = [F(1)] * stages
    for child in tree:
        inner = elementary_weights(a, child)
        for i in range(stages):
            phi[i] *= sum((a[i][j] * inner[j] for j in range(stages)), F(0))
    return phi


def order_residuals(a, b, order: int) -> dict[Tree, F]:
    """Σ_i b_i Φ_i(t) − 1/γ(t) for every tree with at most ``order`` nodes; all zero iff order ≥ ``order``."""
    residuals = {}
    for n in range(1, order + 1):
        for tree in rooted_trees(n):
            phi = elementary_weights(a, tree)
            residuals[tree] = sum((bi * p for bi, p in zip(b, phi)), F(0)) - F(1, tree_density(tree))
    return residuals
