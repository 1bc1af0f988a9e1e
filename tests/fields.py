"""Small vector fields for solver tests, each compiled (gqref.njit) with a plain-numpy twin."""

import numpy as np

import gqref


@gqref.njit
def linear(t, y, p):
    """y' = A y + b with p = [A.ravel(), b] (n² + n entries)."""
    n = y.shape[0]
    out = np.empty(n)
    for i in range(n):
        acc = p[n * n + i]
        for j in range(n):
            acc += p[i * n + j] * y[j]
        out[i] = acc
    return out


def linear_py(t, y, p):
    n = y.shape[0]
    return p[: n * n].reshape(n, n) @ y + p[n * n:]


@gqref.njit
def polynomial_in_t(t, y, p):
    """y' = Σ_k p_k t^k for every component (quadrature of a polynomial)."""
    acc = 0.0
    power = 1.0
    for k in range(p.shape[0]):
        acc += p[k] * power
        power *= t
    return np.full(y.shape[0], acc)


@gqref.njit
def van_der_pol(t, y, p):
    out = np.empty(2)
    out[0] = y[1]
    out[1] = p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0]
    return out


def van_der_pol_py(t, y, p):
    return np.array([y[1], p[0] * (1.0 - y[0] ** 2) * y[1] - y[0]])


@gqref.njit
def decay_oscillator(t, y, p):
    """A smooth non-autonomous 2-D field: damped rotation with a time-dependent forcing."""
    out = np.empty(2)
    out[0] = -0.5 * y[0] + y[1] + np.sin(t)
    out[1] = -y[0] - 0.3 * y[1] + 0.5 * np.cos(2.0 * t)
    return out


def pack_linear(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([a.ravel(), b])
