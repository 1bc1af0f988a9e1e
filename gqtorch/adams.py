"""Adams–Bashforth and Adams–Bashforth–Moulton on a fixed grid, on flat tensors: the twin of :mod:`gqref.adams`.

Every coefficient comes from :mod:`gqref.adams` (exact rationals rounded once to float64 there; Hairer, Nørsett &
Wanner I, §III.1), and so does the algorithm itself (:class:`gqref.adams.AdamsStepper`; only its array arithmetic is
overridden here): f0 at each step's start enters a history of at most
``max_order − 1`` values; the first steps (history shorter than 3) are rk4 steps reusing f0; then the
Adams–Bashforth predictor, and for implicit_adams the Adams–Moulton corrector iterated at t1 until successive
increments agree to rtol/atol (at most ``max_iters`` evaluations; a miss warns and drops the oldest value).

The explicit method never reads a value back to the host. The corrector's stopping test must (the number of
evaluations depends on it): one host sync per corrector evaluation, as in torchdiffeq.
"""

from __future__ import annotations

import torch

from gqref import adams


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


class AdamsStepper(adams.AdamsStepper):
    """:class:`gqref.adams.AdamsStepper`'s algorithm on flat tensors: only the array arithmetic differs."""

    @staticmethod
    def weighted_sum(weights, values, scale: float) -> torch.Tensor:
        return weighted_sum(weights, values, scale)

    @staticmethod
    def add_scaled(y: torch.Tensor, x: torch.Tensor, alpha: float) -> torch.Tensor:
        return torch.add(y, x, alpha=alpha)

    def converged(self, dy_old: torch.Tensor, dy: torch.Tensor) -> bool:
        return corrector_converged(dy_old, dy, self.rtol, self.atol)

    @staticmethod
    @torch.no_grad()
    def all_finite(x: torch.Tensor) -> bool:
        return bool(torch.isfinite(x).all())
