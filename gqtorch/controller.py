"""Step-size control on torch tensors: error norms, the error ratio, the initial step (twin of gqref.controller).

The constants and the step-size update itself are gqref's (:func:`gqref.controller.next_step` runs on Python floats,
the same arithmetic as the reference). Everything here runs without recording a graph: step sizes are not
differentiated. Norms return 0-d tensors so a step needs just one host transfer (the accept/reject decision).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from gqref.controller import (
    INITIAL_STEP_FALLBACK,
    INITIAL_STEP_FRACTION,
    INITIAL_STEP_GROWTH_LIMIT,
    INITIAL_STEP_SMALL_NORM,
    INITIAL_STEP_TINY_DERIVATIVE,
    INITIAL_STEP_TINY_FRACTION,
)
from gqref.errors import InputError

Norm = Callable[[torch.Tensor], torch.Tensor]


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x).mul_(1.0 / math.sqrt(x.numel()))


def max_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, ord=math.inf)


class BlockRmsNorm:
    """max over consecutive blocks of each block's RMS, in 4 ops: torchdiffeq's default norm for tuple states and,
    with ``keep`` leaving blocks out, its mixed norm and seminorm of the augmented backward state."""

    def __init__(self, sizes: Sequence[int], dtype: torch.dtype, device: torch.device,
                 keep: Sequence[bool] | None = None):
        rows = [j for j in range(len(sizes)) if keep is None or keep[j]]
        weights = torch.zeros(len(rows), sum(sizes), dtype=dtype)
        starts = [sum(sizes[:j]) for j in range(len(sizes))]
        for r, j in enumerate(rows):
            weights[r, starts[j]:starts[j] + sizes[j]] = 1.0 / sizes[j]
        self.weights = weights.to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mv(self.weights, x.square()).max().sqrt()


class UserNorm:
    """A caller's norm, given the scaled error in the caller's layout (a tensor of y0's shape or a tuple)."""

    def __init__(self, norm: Callable, split: Callable[[torch.Tensor], object]):
        self.norm = norm
        self.split = split

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        value = self.norm(self.split(x))
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(float(value), dtype=x.dtype, device=x.device)
        return value.reshape(()).to(dtype=x.dtype)


def as_norm(norm, block_sizes: Sequence[int] | None, split, dtype: torch.dtype, device: torch.device) -> Norm:
    """``None`` (torchdiffeq's default: RMS, or the max of the blocks' RMS for a tuple state), ``"rms"``, ``"max"``
    or a callable taking the scaled error in the caller's layout and returning a scalar."""
    if norm is None:
        return rms_norm if block_sizes is None else BlockRmsNorm(block_sizes, dtype, device)
    if isinstance(norm, str):
        if norm == "rms":
            return rms_norm
        if norm == "max":
            return max_norm
        raise InputError(f"options['norm'] must be 'rms', 'max' or a callable, got {norm!r}")
    if callable(norm):
        return UserNorm(norm, split)
    raise InputError(f"options['norm'] must be 'rms', 'max' or a callable, got {type(norm).__name__}")


def error_ratio(err: torch.Tensor, y0_abs: torch.Tensor, y1: torch.Tensor, rtol: float, atol: torch.Tensor,
                norm: Norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(norm(err / (atol + rtol·max(|y0|, |y1|))) as a 0-d tensor, |y1|); |y1| is the next step's |y0|."""
    with torch.no_grad():
        y1_abs = y1.abs()
        scale = torch.add(atol, torch.maximum(y0_abs, y1_abs), alpha=rtol)
        return norm(err / scale), y1_abs


def initial_step(f, t0: float, direction: float, y0: torch.Tensor, f0: torch.Tensor, rtol: float,
                 atol: torch.Tensor, order_low: int, norm: Norm) -> tuple[float, bool, bool]:
    """Hairer's initial step in the solver's increasing time (one extra evaluation, under no_grad).

    Returns (h, f0 finite, probe finite); h is a positive float. The arithmetic on the norms is gqref's, on floats.
    """
    with torch.no_grad():
        scale = torch.add(atol, y0.abs(), alpha=rtol)
        d0, d1 = torch.stack((norm(y0 / scale), norm(f0 / scale))).tolist()
        if not math.isfinite(d1):
            return math.nan, False, True
        if d0 < INITIAL_STEP_SMALL_NORM or d1 < INITIAL_STEP_SMALL_NORM:
            h0 = INITIAL_STEP_FALLBACK
        else:
            h0 = INITIAL_STEP_FRACTION * d0 / d1
        y_probe = torch.add(y0, f0, alpha=direction * h0)
        t_probe = torch.full((), t0 + direction * h0, dtype=y0.dtype, device=y0.device)
        f1 = f(t_probe, y_probe)
        d2 = norm((f1 - f0) / scale).item() / h0
        if not math.isfinite(d2):
            return h0, True, False
        if d1 <= INITIAL_STEP_TINY_DERIVATIVE and d2 <= INITIAL_STEP_TINY_DERIVATIVE:
            h1 = max(INITIAL_STEP_FALLBACK, h0 * INITIAL_STEP_TINY_FRACTION)
        else:
            h1 = (INITIAL_STEP_FRACTION / max(d1, d2)) ** (1.0 / (order_low + 1))
        return min(INITIAL_STEP_GROWTH_LIMIT * h0, h1), True, True
