"""Adams–Bashforth and Adams–Bashforth–Moulton on a fixed grid, on flat tensors: the twin of :mod:`gqref.adams`.

Every coefficient comes from :mod:`gqref.adams` (exact rationals rounded once to float64 there; Hairer, Nørsett &
Wanner I, §III.1); so does the algorithm's description: f0 at each step's start enters a history of at most
``max_order − 1`` values; the first steps (history shorter than 3) are rk4 steps reusing f0; then the
Adams–Bashforth predictor, and for implicit_adams the Adams–Moulton corrector iterated at t1 until successive
increments agree to rtol/atol (at most ``max_iters`` evaluations; a miss warns and drops the oldest value).

The explicit method never reads a value back to the host. The corrector's stopping test must (the number of
evaluations depends on it): one host sync per corrector evaluation, as in torchdiffeq.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch

from gqref.adams import BASHFORTH, IMPLICIT, MIN_ORDER, MOULTON, corrector_warning


def weighted_sum(weights, values, scale: float) -> torch.Tensor:
    """Σ_i (scale·w_i)·v_i over zip(weights, values) (the shorter decides), as one chain of fused adds."""
    terms = iter(zip(weights, values))
    w, v = next(terms)
    total = v * (scale * w)
    for w, v in terms:
        total = torch.add(total, v, alpha=scale * w)
    return total


@torch.no_grad()
def corrector_converged(dy_old: torch.Tensor, dy: torch.Tensor, rtol: float, atol: torch.Tensor) -> bool:
    """Every component of the change within atol + rtol·max(|dy_old|, |dy|) (one host sync; NaN: False)."""
    scale = atol + rtol * torch.maximum(dy_old.abs(), dy.abs())
    return bool(((dy_old - dy).abs() / scale).max() < 1)


class AdamsStepper:
    """The Adams method's memory across the steps of one solve, and its step (see :class:`gqref.adams.AdamsStepper`).

    ``evaluate(s, nudge, y)`` returns the field (caller's time derivative) at solver time s, perturbed when the solve
    perturbs; ``startup(s0, s1, direction, y0, f0)`` is the rk4 step reusing f0 (from :mod:`gqtorch.fixed_grid`).
    """

    def __init__(self, method: str, max_order: int, max_iters: int, rtol: float, atol: torch.Tensor,
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

    def _remember(self, s: float, f: torch.Tensor) -> None:
        if self.last_s != s:
            self.history.appendleft(f)
            self.last_s = s

    def step(self, s0: float, s1: float, direction: float, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y1, f0) for the step from s0 to s1."""
        h = direction * (s1 - s0)  # the signed step in the caller's time
        f0 = self.evaluate(s0, 1, y0)
        self._remember(s0, f0)
        order = min(len(self.history), self.max_order - 1)
        if order < MIN_ORDER - 1:
            return self.startup(s0, s1, direction, y0, f0), f0
        dy = weighted_sum(BASHFORTH[order], self.history, h)
        if self.implicit:
            weights = MOULTON[order + 1]
            delta = weighted_sum(weights[1:], self.history, 1.0) * h
            converged = False
            for _ in range(self.max_iters):
                dy_old = dy
                f1 = self.evaluate(s1, -1, y0 + dy)
                dy = torch.add(delta, f1, alpha=h * weights[0])
                converged = corrector_converged(dy_old, dy, self.rtol, self.atol)
                if converged:
                    break
            if not converged:
                with torch.no_grad():
                    finite = bool(torch.isfinite(dy).all())
                if finite:  # a non-finite field is reported by the solve, not as a convergence failure
                    corrector_warning(self.max_iters, direction * s1)
                self.history.pop()
        return y0 + dy, f0
