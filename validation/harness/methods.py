"""The four ways to differentiate a neural-ODE solve, as one callable each, with their evaluation counts.

``Solver(method, tol, gtol)(func, y0, t)`` solves with gqtorch's dopri5 at rtol = atol = ``tol`` and records the
forward (and, once backward has run, backward) number of function evaluations from the solver's own statistics —
nothing is asked of ``func`` (the paper's code needs a ``func.nfe`` attribute).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

import gqtorch
from gqref.rules import PAPER_C

METHODS = ("direct", "adjoint", "seminorm", "gq")


class Solver:
    """A solve for one gradient method; ``nfe()`` sums the counts of the solves since the last ``reset()``."""

    def __init__(self, method: str, tol: float, gtol: float = PAPER_C):
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        self.method, self.tol, self.gtol = method, tol, gtol
        self._stats: list = []

    def __call__(self, func: Callable, y0: torch.Tensor, t: torch.Tensor):
        opts = {"rtol": self.tol, "atol": self.tol, "return_stats": True}
        if self.method == "direct" or not torch.is_grad_enabled():
            ys, stats = gqtorch.odeint(func, y0, t, **opts)
        elif self.method == "gq":
            ys, stats = gqtorch.odeint_adjoint_gq(func, y0, t, quadrature="interval", gtol=self.gtol, **opts)
        else:
            options = {"norm": "seminorm"} if self.method == "seminorm" else None
            ys, stats = gqtorch.odeint_adjoint(func, y0, t, adjoint_options=options, **opts)
        self._stats.append(stats)
        return ys

    def reset(self) -> None:
        self._stats = []

    def nfe(self) -> tuple[int, int | None]:
        """(forward evaluations, backward evaluations or None for direct backprop, which evaluates no field)."""
        forward = sum(getattr(s, "nfe_forward", getattr(s, "nfe", 0)) for s in self._stats)
        backward = [getattr(s, "nfe_backward", None) for s in self._stats]
        known = [b for b in backward if b is not None]
        return forward, (sum(known) if known else None)
