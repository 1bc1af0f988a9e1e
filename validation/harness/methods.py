"""The ways to differentiate a neural-ODE solve, as one callable each, with their evaluation counts.

``Solver(method, tol, gtol)(func, y0, t)`` solves with gqtorch's dopri5 at rtol = atol = ``tol`` and records the
forward (and, once backward has run, backward) number of function evaluations from the solver's own statistics —
nothing is asked of ``func`` (the paper's code needs a ``func.nfe`` attribute).

Two GQ variants: ``gq`` is the paper's rule (``quadrature="interval"``, n_i = ⌈C·NFE_fwd·Δt/T⌉ nodes with C =
``gtol``; Norcliffe & Deisenroth, TMLR 2023, §3), so that comparisons with the baselines are the paper's; ``gq-auto``
is the library's default, ``gqtorch.odeint_adjoint_gq`` called without ``quadrature`` or ``gtol`` (the
error-controlled rule), which ignores ``gtol``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import gqtorch
from gqref.rules import PAPER_C

PAPER_METHODS = ("direct", "adjoint", "seminorm", "gq")  # the paper's four
GQ_METHODS = ("gq", "gq-auto")
METHODS = (*PAPER_METHODS, "gq-auto")


def solve(method: str, func: Callable, y0: torch.Tensor, t: torch.Tensor, *, rtol: float, atol: float,
          gtol: float = PAPER_C) -> tuple[torch.Tensor, Any]:
    """(solution at ``t``, solver statistics) by ``method``'s gradient path; dopri5 at ``rtol``/``atol``."""
    opts = {"rtol": rtol, "atol": atol, "return_stats": True}
    if method == "direct":
        return gqtorch.odeint(func, y0, t, **opts)
    if method == "gq":
        return gqtorch.odeint_adjoint_gq(func, y0, t, quadrature="interval", gtol=gtol, **opts)
    if method == "gq-auto":
        return gqtorch.odeint_adjoint_gq(func, y0, t, **opts)
    if method in ("adjoint", "seminorm"):
        options = {"norm": "seminorm"} if method == "seminorm" else None
        return gqtorch.odeint_adjoint(func, y0, t, adjoint_options=options, **opts)
    raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")


class Solver:
    """A solve for one gradient method; ``nfe()`` sums the counts of the solves since the last ``reset()``."""

    def __init__(self, method: str, tol: float, gtol: float = PAPER_C):
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        self.method, self.tol, self.gtol = method, tol, gtol
        self._stats: list = []

    def __call__(self, func: Callable, y0: torch.Tensor, t: torch.Tensor):
        # no gradient wanted (evaluation): a plain forward solve whatever the method
        method = self.method if torch.is_grad_enabled() else "direct"
        ys, stats = solve(method, func, y0, t, rtol=self.tol, atol=self.tol, gtol=self.gtol)
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
