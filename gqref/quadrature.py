"""Gauß–Legendre quadrature: nodes and weights from numpy (cached per n), mapped to an interval; the node rule."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numpy.polynomial.legendre import leggauss

from gqref.arguments import count, positive_float

DEFAULT_MAX_NODES = 64  # the paper's cap: exact for polynomials of degree ≤ 127


@cache
def _reference_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = leggauss(n)
    nodes.setflags(write=False)
    weights.setflags(write=False)
    return nodes, weights


def gauss_legendre(n: int, a: float = -1.0, b: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The n-point Gauß–Legendre rule on [a, b] (a > b allowed: nodes then run from a towards b).

    Exact for polynomials of degree ≤ 2n − 1; nodes are symmetric about the midpoint; weights sum to |b − a|.
    """
    nodes, weights = _reference_rule(count("n", n))
    half = 0.5 * (b - a)
    mid = 0.5 * (a + b)
    return mid + half * nodes, abs(half) * weights


def node_count(gtol: float, nfe: int, t_prev: float, t_next: float, t_first: float, t_last: float,
               max_nodes: int = DEFAULT_MAX_NODES) -> int:
    """The paper's rule: n = min(ceil(C·NFE·|t_i − t_{i−1}| / |T − t_0|), max_nodes), and at least one node.

    Evaluated in float64 in the paper's order (C·NFE·Δt / span), so it gives the paper's counts bit for bit,
    e.g. one interval, NFE 26, C 0.1 → 3 nodes.
    """
    gtol = positive_float("gtol", gtol)
    max_nodes = count("max_nodes", max_nodes)
    share = gtol * nfe * abs(t_next - t_prev) / abs(t_last - t_first)
    if not share < max_nodes:  # also a share that overflowed to inf (a huge C)
        return int(max_nodes)
    return int(max(1, math.ceil(share)))
