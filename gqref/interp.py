"""Dense output: the quartic through y0, y1, y_mid and the slopes f0, f1 of one step (torchdiffeq's _interp_fit)."""

from __future__ import annotations

import numpy as np

from gqref._numba import jitable
from gqref.tableau import INTERP_FIT_FLOAT


@jitable
def interp_fit(coeffs, fit, y0, y1, y_mid, f0, f1, dt):
    """Fill ``coeffs[k]`` (the coefficient of x**k) from the basis [y0, y1, y_mid, dt·f0, dt·f1]."""
    for i in range(y0.shape[0]):
        b0 = y0[i]
        b1 = y1[i]
        b2 = y_mid[i]
        b3 = dt * f0[i]
        b4 = dt * f1[i]
        for power in range(5):
            w = fit[power]
            coeffs[power, i] = w[0] * b0 + w[1] * b1 + w[2] * b2 + w[3] * b3 + w[4] * b4


@jitable
def interp_evaluate(coeffs, t0, t1, t, out):
    """Evaluate the step's quartic at ``t`` in [t0, t1] into ``out`` (powers accumulated as torchdiffeq does)."""
    x = (t - t0) / (t1 - t0)
    for i in range(out.shape[0]):
        total = coeffs[0, i] + x * coeffs[1, i]
        x_power = x
        for power in range(2, 5):
            x_power = x_power * x
            total = total + x_power * coeffs[power, i]
        out[i] = total


def fit_matrix() -> np.ndarray:
    """The float64 fit matrix the kernels use (derived from the exact rationals in :mod:`gqref.tableau`)."""
    return INTERP_FIT_FLOAT
