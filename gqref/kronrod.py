"""Gauß–Kronrod rules: the (2n+1)-point Kronrod extension of the n-point Gauß–Legendre rule, computed for any n.

The Kronrod rule keeps the n Gauß nodes and adds n + 1 nodes chosen so that the combined rule integrates the
highest possible degree exactly: 3n + 1 for even n, 3n + 2 for odd n (the rule is symmetric, so the next odd
degree comes free). Evaluating the integrand once at the 2n + 1 nodes gives two estimates, the Gauß sum G and the
Kronrod sum K; |K − G| estimates the error of G (K is far more accurate for smooth integrands).

Source: Laurie's algorithm (D. P. Laurie, "Calculation of Gauss–Kronrod quadrature rules", Math. Comp. 66, 1997)
computes the Jacobi matrix of the Kronrod rule from the Legendre recurrence coefficients in O(n²); its eigenvalues
are the nodes and the squared first components of its eigenvectors (times the weight function's mass, 2) the
weights (Golub–Welsch). The Gauß nodes inside the rule are then replaced by numpy's Gauß–Legendre nodes (those of
:func:`gqref.quadrature.gauss_legendre`, to which they agree to rounding), so G is exactly the n-point rule that
gqref uses elsewhere. Tests check exactness up to the degree above, inexactness at the next even degree, and agreement
with scipy's tabulated 15- and 21-point rules (QUADPACK's).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from gqref.arguments import count
from gqref.errors import InputError
from gqref.quadrature import gauss_legendre

MAX_KRONROD_N = 100  # beyond this the O(n²) recurrence still works, but nobody needs a 201-point panel here


def kronrod_degree(n: int) -> int:
    """The polynomial degree the (2n+1)-point Kronrod rule integrates exactly: 3n + 1 (n even), 3n + 2 (n odd)."""
    return 3 * n + 1 if n % 2 == 0 else 3 * n + 2


def _legendre_recurrence(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(α, β) of the monic Legendre polynomials, k = 0..count−1: α_k = 0, β_0 = 2 (the mass), β_k = k²/(4k² − 1)."""
    k = np.arange(count, dtype=np.float64)
    beta = np.empty(count)
    beta[0] = 2.0
    beta[1:] = k[1:] ** 2 / (4.0 * k[1:] ** 2 - 1.0)
    return np.zeros(count), beta


def _kronrod_jacobi(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Laurie's algorithm: the recurrence coefficients (a_0..a_2n, b_0..b_2n) of the Kronrod–Jacobi matrix.

    The first ⌊3n/2⌋ + 1 of a and ⌈3n/2⌉ + 1 of b are the weight's own; the rest come from a mixed moment
    recurrence (arrays s, t of length ⌊n/2⌋ + 2, swapped each round), written with slices as in Laurie's paper.
    """
    alpha, beta = _legendre_recurrence(2 * n + 2)
    a = np.zeros(2 * n + 1)
    b = np.zeros(2 * n + 1)
    a[: 3 * n // 2 + 1] = alpha[: 3 * n // 2 + 1]
    b[: (3 * n + 1) // 2 + 1] = beta[: (3 * n + 1) // 2 + 1]
    s = np.zeros(n // 2 + 2)
    t = np.zeros(n // 2 + 2)
    t[1] = b[n + 1]
    for m in range(n - 1):
        k = np.arange((m + 1) // 2, -1, -1)
        ell = m - k
        s[k + 1] = np.cumsum((a[k + n + 1] - a[ell]) * t[k + 1] + b[k + n + 1] * s[k] - b[ell] * s[k + 1])
        s, t = t, s
    j = np.arange(n // 2, -1, -1)
    s[j + 1] = s[j]
    for m in range(n - 1, 2 * n - 2):
        k = np.arange(m + 1 - n, (m - 1) // 2 + 1)
        ell = m - k
        j = n - 1 - ell
        s[j + 1] = np.cumsum(-(a[k + n + 1] - a[ell]) * t[j + 1] - b[k + n + 1] * s[j + 1] + b[ell] * s[j + 2])
        j_last = j[-1]
        k_mid = (m + 1) // 2
        if m % 2 == 0:
            a[k_mid + n + 1] = a[k_mid] + (s[j_last + 1] - b[k_mid + n + 1] * s[j_last + 2]) / t[j_last + 2]
        else:
            b[k_mid + n + 1] = s[j_last + 1] / s[j_last + 2]
        s, t = t, s
    a[2 * n] = a[n - 1] - b[2 * n] * s[1] / t[1]
    return a, b


@cache
def _reference_kronrod(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = _kronrod_jacobi(n)
    if np.any(b[1:] <= 0):  # a Kronrod rule with real nodes exists for Legendre; this guards the recurrence
        raise InputError(f"the Kronrod extension of the {n}-point Gauss rule has no real nodes (recurrence failed)")
    jacobi = np.diag(a) + np.diag(np.sqrt(b[1:]), 1) + np.diag(np.sqrt(b[1:]), -1)
    values, vectors = np.linalg.eigh(jacobi)
    order = np.argsort(values)
    nodes = values[order]
    weights = b[0] * vectors[0, order] ** 2
    # Exact symmetry about 0 (the middle node is 0), then the Gauß nodes from the tested GL source.
    nodes = 0.5 * (nodes - nodes[::-1])
    weights = 0.5 * (weights + weights[::-1])
    gauss_nodes, gauss_weights = gauss_legendre(n)
    if np.max(np.abs(nodes[1::2] - gauss_nodes)) > 1e-12:
        raise InputError(f"Kronrod nodes for n = {n} do not interlace the Gauss nodes (recurrence failed)")
    nodes[1::2] = gauss_nodes
    gauss = np.zeros(2 * n + 1)
    gauss[1::2] = gauss_weights
    for array in (nodes, weights, gauss):
        array.setflags(write=False)
    return nodes, weights, gauss


def gauss_kronrod(n: int, a: float = -1.0, b: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Gauß–Kronrod pair built on the n-point Gauß–Legendre rule, mapped to [a, b].

    Returns ``(nodes, kronrod_weights, gauss_weights)``, each of length 2n + 1, nodes in increasing order on
    [−1, 1] mapped affinely (a > b allowed: nodes then run from a towards b). ``gauss_weights`` is zero at the n + 1
    Kronrod-only nodes and equals the n-point Gauß–Legendre weights at the others (the odd positions 1, 3, …), so
    ``G = gauss_weights @ f(nodes)`` and ``K = kronrod_weights @ f(nodes)`` share the evaluations. Weights are
    positive and sum to |b − a| (integrals run from min(a, b) to max(a, b), as for :func:`gauss_legendre`).
    """
    nodes, kronrod, gauss = _reference_kronrod(count("n", n, 1, MAX_KRONROD_N))
    half = 0.5 * (b - a)
    mid = 0.5 * (a + b)
    return mid + half * nodes, abs(half) * kronrod, abs(half) * gauss
