"""Step-size control: presets that reproduce torchdiffeq and scipy, error norms, the initial step.

Every constant of the adaptive controllers lives here. A preset is plain data; the kernels read it as numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from gqref._numba import jitable
from gqref.errors import InputError
from gqref.field import evaluate as evaluate_field
from gqref.tableau import DOPRI5, DOPRI5_SCIPY, Tableau

# Kernel codes for the two controller families and the three norms.
TORCHDIFFEQ = 0
SCIPY = 1
NORM_RMS = 0
NORM_MAX = 1
NORM_MIXED = 2


# The step-size update's safety factor and growth/shrink limits (torchdiffeq's and scipy's defaults alike).
# torchdiffeq's default tolerances, the default of every solve and gradient in both twins
DEFAULT_RTOL = 1e-7
DEFAULT_ATOL = 1e-9
SAFETY = 0.9
IFACTOR = 10.0
DFACTOR = 0.2


@dataclass(frozen=True)
class Controller:
    """An adaptive step-size controller preset.

    ``torchdiffeq`` (0.2.5's adaptive RK solvers): accept when ratio ≤ 1 (or the step is at ``min_step``);
    factor = min(ifactor, max(safety / ratio^(1/order), d)) with d = 1 after an accepted step (accepted steps never
    shrink the next) and d = dfactor after a rejection; steps overshoot the last output time; underflow when
    t + dt == t. Its ``tableau`` is used for method "dopri5"; :func:`gqref.solve` takes the other pairs' tableaux
    from :data:`gqref.tableau.ADAPTIVE_TABLEAUX`, and ``options`` may override safety/ifactor/dfactor.
    ``scipy`` (solve_ivp RK45): accept when ratio < 1; growth capped at 1 right after a rejection; steps are
    clipped to land on the last output time; the initial step is capped by the interval; underflow when a rejected
    step falls below 10 ulps of t. Each uses its library's embedded error weights.
    """

    name: str
    kind: int
    tableau: Tableau
    safety: float = SAFETY
    ifactor: float = IFACTOR
    dfactor: float = DFACTOR


CONTROLLERS = {
    "torchdiffeq": Controller(name="torchdiffeq", kind=TORCHDIFFEQ, tableau=DOPRI5),
    "scipy": Controller(name="scipy", kind=SCIPY, tableau=DOPRI5_SCIPY),
}

# Hairer–Nørsett–Wanner II.4 initial step constants (identical in torchdiffeq and scipy).
INITIAL_STEP_SMALL_NORM = 1e-5
INITIAL_STEP_FALLBACK = 1e-6
INITIAL_STEP_FRACTION = 0.01
INITIAL_STEP_TINY_DERIVATIVE = 1e-15
INITIAL_STEP_TINY_FRACTION = 1e-3
INITIAL_STEP_GROWTH_LIMIT = 100.0
# scipy refuses steps below this many ulps of the current time.
SCIPY_MIN_STEP_ULPS = 10.0


@dataclass(frozen=True)
class ErrorNorm:
    """How the scaled error vector is reduced to one number.

    ``"rms"`` (default) and ``"max"`` act on the whole state. ``"mixed"`` splits the flattened state into
    consecutive ``blocks`` (their sizes) and takes the maximum of the blocks' RMS values (torchdiffeq's norm for
    tuple states); ``mask`` (one bool per block) drops blocks from the norm — the adjoint's seminorm.
    """

    kind: Literal["rms", "max", "mixed"] = "rms"
    blocks: tuple[int, ...] = ()
    mask: tuple[bool, ...] = ()

    def kernel_data(self, size: int) -> tuple[int, np.ndarray, int]:
        """(norm code, block id per element with −1 = excluded, number of blocks) for a state of ``size``."""
        if self.kind == "rms":
            return NORM_RMS, np.zeros(size, dtype=np.int64), 1
        if self.kind == "max":
            return NORM_MAX, np.zeros(size, dtype=np.int64), 1
        if self.kind != "mixed":
            raise InputError(f"norm kind must be 'rms', 'max' or 'mixed', got {self.kind!r}")
        blocks = self.blocks or (size,)
        if any(b <= 0 for b in blocks) or sum(blocks) != size:
            raise InputError(f"norm blocks {blocks} must be positive sizes summing to the state size {size}")
        mask = self.mask or (True,) * len(blocks)
        if len(mask) != len(blocks) or not any(mask):
            raise InputError(f"norm mask {mask} must have one bool per block ({len(blocks)}) and keep at least one")
        ids = np.concatenate([np.full(b, j if keep else -1, dtype=np.int64)
                              for j, (b, keep) in enumerate(zip(blocks, mask))])
        return NORM_MIXED, ids, len(blocks)


def as_norm(norm: str | ErrorNorm) -> ErrorNorm:
    if isinstance(norm, ErrorNorm):
        return norm
    if norm in ("rms", "max"):
        return ErrorNorm(kind=norm)
    raise InputError(f"norm must be 'rms', 'max' or a gqref.ErrorNorm, got {norm!r}")


def as_controller(controller: str | Controller) -> Controller:
    if isinstance(controller, Controller):
        return controller
    if controller not in CONTROLLERS:
        raise InputError(f"controller must be one of {sorted(CONTROLLERS)}, got {controller!r}")
    return CONTROLLERS[controller]


@jitable
def scaled_norm(x, scale, norm_kind, block_id, n_blocks):
    """norm(x / scale) for the chosen norm (see :class:`ErrorNorm`)."""
    n = x.shape[0]
    if norm_kind == NORM_MAX:
        largest = 0.0
        for i in range(n):
            v = abs(x[i] / scale[i])
            if v > largest:
                largest = v
        return largest
    if norm_kind == NORM_RMS:
        total = 0.0
        for i in range(n):
            v = x[i] / scale[i]
            total += v * v
        return np.sqrt(total / n)
    sums = np.zeros(n_blocks)
    counts = np.zeros(n_blocks)
    for i in range(n):
        j = block_id[i]
        if j >= 0:
            v = x[i] / scale[i]
            sums[j] += v * v
            counts[j] += 1.0
    largest = 0.0
    for j in range(n_blocks):
        if counts[j] > 0.0:
            v = np.sqrt(sums[j] / counts[j])
            if v > largest:
                largest = v
    return largest


@jitable
def error_ratio(err, y0, y1, rtol, atol, scale, norm_kind, block_id, n_blocks):
    """norm(err / (atol + rtol·max(|y0|, |y1|))); ``scale`` is scratch space."""
    for i in range(y0.shape[0]):
        scale[i] = atol[i] + rtol * max(abs(y0[i]), abs(y1[i]))
    return scaled_norm(err, scale, norm_kind, block_id, n_blocks)


@jitable
def accepts(kind, ratio):
    return ratio <= 1.0 if kind == TORCHDIFFEQ else ratio < 1.0


@jitable
def next_step(kind, dt, ratio, accepted, rejected_before, safety, ifactor, dfactor, order_low):
    """The next step size after a step of size ``dt`` with error ``ratio`` (each library's own arithmetic)."""
    if kind == TORCHDIFFEQ:
        if ratio == 0.0:
            return dt * ifactor
        shrink_limit = 1.0 if ratio < 1.0 else dfactor
        return dt * min(ifactor, max(safety / ratio ** (1.0 / (order_low + 1)), shrink_limit))
    exponent = -1.0 / (order_low + 1)
    if accepted:
        factor = ifactor if ratio == 0.0 else min(ifactor, safety * ratio**exponent)
        if rejected_before:
            factor = min(1.0, factor)
        return dt * factor
    return dt * max(dfactor, safety * ratio**exponent)


@jitable
def initial_step(f, p, direction, s0, y0, f0, rtol, atol, order_low, norm_kind, block_id, n_blocks,
                 interval, kind, f1):
    """Hairer's initial step (one extra evaluation, written to ``f1``); scipy also caps it by the interval."""
    n = y0.shape[0]
    scale = np.empty(n)
    for i in range(n):
        scale[i] = atol[i] + abs(y0[i]) * rtol
    d0 = scaled_norm(y0, scale, norm_kind, block_id, n_blocks)
    d1 = scaled_norm(f0, scale, norm_kind, block_id, n_blocks)
    if d0 < INITIAL_STEP_SMALL_NORM or d1 < INITIAL_STEP_SMALL_NORM:
        h0 = INITIAL_STEP_FALLBACK
    else:
        h0 = INITIAL_STEP_FRACTION * d0 / d1
    if kind == SCIPY:
        h0 = min(h0, interval)
    y_probe = np.empty_like(y0)
    for i in range(n):
        y_probe[i] = y0[i] + h0 * f0[i]
    evaluate_field(f, direction, s0 + h0, y_probe, p, f1)
    diff = np.empty_like(y0)
    for i in range(n):
        diff[i] = f1[i] - f0[i]
    d2 = scaled_norm(diff, scale, norm_kind, block_id, n_blocks) / h0
    if d1 <= INITIAL_STEP_TINY_DERIVATIVE and d2 <= INITIAL_STEP_TINY_DERIVATIVE:
        h1 = max(INITIAL_STEP_FALLBACK, h0 * INITIAL_STEP_TINY_FRACTION)
    else:
        h1 = (INITIAL_STEP_FRACTION / max(d1, d2)) ** (1.0 / (order_low + 1))
    h = min(INITIAL_STEP_GROWTH_LIMIT * h0, h1)
    if kind == SCIPY:
        h = min(h, interval)
    return h

