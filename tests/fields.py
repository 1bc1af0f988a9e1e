"""Small compiled vector fields for solver tests (the public problem zoo is gqref.problems)."""

import numpy as np

import gqref


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
def decay_oscillator(t, y, p):
    """A smooth non-autonomous 2-D field: damped rotation with a time-dependent forcing."""
    out = np.empty(2)
    out[0] = -0.5 * y[0] + y[1] + np.sin(t)
    out[1] = -y[0] - 0.3 * y[1] + 0.5 * np.cos(2.0 * t)
    return out


class Counted:
    """Counts evaluations, so two solvers' step/rejection sequences can be compared through their NFE."""

    def __init__(self, f):
        self.f = f
        self.nfe = 0

    def __call__(self, t, y):
        self.nfe += 1
        return self.f(t, y)
