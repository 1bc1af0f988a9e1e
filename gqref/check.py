"""``gqref.check_gradient``: hold another solver's gradients against gqref's oracle and report the differences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gqref.errors import InputError
from gqref.gradient import gradient

# The tight reference when a problem has no closed form: the frozen-step derivative at tolerances near roundoff,
# which differs from the exact gradient by the solver's own error at these tolerances (~1e-11 relative).
REFERENCE_RTOL = 1e-12
REFERENCE_ATOL = 1e-12


@dataclass(frozen=True)
class ComponentError:
    name: str
    max_abs_error: float
    reference_scale: float

    @property
    def relative(self) -> float:
        """max |candidate − reference| / max |reference| (0 when both are 0)."""
        if self.reference_scale == 0.0:
            return 0.0 if self.max_abs_error == 0.0 else np.inf
        return self.max_abs_error / self.reference_scale


@dataclass(frozen=True)
class GradientReport:
    problem: str
    reference: str
    components: tuple[ComponentError, ...]

    @property
    def worst(self) -> float:
        return max(c.relative for c in self.components)

    def passed(self, tolerance: float) -> bool:
        return self.worst <= tolerance

    def __str__(self) -> str:
        lines = [f"gradient check on {self.problem!r} against the {self.reference}",
                 "| component | relative error | max abs error | reference scale |", "|---|---|---|---|"]
        lines += [f"| {c.name} | {c.relative:.3e} | {c.max_abs_error:.3e} | {c.reference_scale:.3e} |"
                  for c in self.components]
        return "\n".join(lines)


def check_gradient(candidate: Callable, problem, dL_dy=None) -> GradientReport:
    """Compare ``candidate(field, y0, t, params, dL_dy) -> (dL_dy0, dL_dparams, dL_dt or None)`` with gqref.

    ``problem`` is a :class:`gqref.problems.Problem`. The reference is its closed form when it has one, else the
    frozen-step derivative at rtol = atol = 1e-12. ``dL_dy`` defaults to ones (the loss Σ y(t_i)).
    """
    y0, t, params = np.asarray(problem.y0), np.asarray(problem.t), np.asarray(problem.params)
    dL_dy = np.ones((len(t), *y0.shape)) if dL_dy is None else np.asarray(dL_dy, dtype=np.float64)
    if problem.exact_gradient is not None:
        reference = problem.exact_gradient(y0, params, t, dL_dy)
        source = "closed form"
    else:
        g = gradient(problem.field, y0, t, params, dL_dy, method="discrete", rtol=REFERENCE_RTOL,
                     atol=REFERENCE_ATOL)
        reference = (g.dL_dy0, g.dL_dparams, g.dL_dt)
        source = f"frozen-step derivative at rtol = atol = {REFERENCE_RTOL:g}"
    result = candidate(problem.field, y0, t, params, dL_dy)
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise InputError("candidate must return (dL_dy0, dL_dparams, dL_dt or None)")
    components = []
    for name, got, want in zip(("dL_dy0", "dL_dparams", "dL_dt"), result, reference):
        if got is None:
            continue
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            raise InputError(f"candidate's {name} has shape {got.shape}; expected {want.shape}")
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        error = float(np.max(np.abs(got - want))) if want.size else 0.0
        components.append(ComponentError(name, error, scale))
    return GradientReport(problem=problem.name, reference=source, components=tuple(components))
