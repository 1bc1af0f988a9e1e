"""Exception types and the status codes that compiled kernels return instead of raising.

Kernels never raise: they return a status code and the time at which they stopped. :func:`raise_for_status`
turns that into an exception whose message names the time, as scipy and diffrax do. gqtorch raises the same types.
An exception raised by the field itself inside a compiled kernel is re-raised as it is
(:func:`gqref.solve.run_kernel`).
"""

from __future__ import annotations

SUCCESS = 0
NONFINITE_FIELD = 1
STEP_SIZE_UNDERFLOW = 2
MAX_STEPS_EXCEEDED = 3


class GQError(Exception):
    """Base class of every error gq raises on purpose."""


class InputError(GQError, ValueError):
    """An argument is invalid; the message names it and says what was expected."""


class QuadratureAccuracyWarning(UserWarning):
    """GQ's error-controlled quadrature stopped at its node budget before its tolerance: the message names the
    intervals and the error reached (``strict=True`` raises :class:`gqref.refinement.QuadratureLimitError`)."""


class SolverError(GQError, RuntimeError):
    """The integration could not be completed. ``t`` is the (original, unnegated) time where it stopped."""

    def __init__(self, message: str, t: float):
        super().__init__(message)
        self.t = t


class NonFiniteFieldError(SolverError):
    """The vector field returned NaN or inf."""


class StepSizeUnderflowError(SolverError):
    """The step size became too small to advance time (or non-finite)."""


class MaxStepsExceededError(SolverError):
    """More steps were attempted than ``max_steps`` allows."""


def raise_for_status(status: int, t: float, *, max_steps: int) -> None:
    """Raise the exception for a kernel's status code; do nothing on success."""
    if status == SUCCESS:
        return
    if status == NONFINITE_FIELD:
        raise NonFiniteFieldError(f"the vector field returned a non-finite value (NaN or inf) at t = {t!r}", t)
    if status == STEP_SIZE_UNDERFLOW:
        raise StepSizeUnderflowError(
            f"step size underflow at t = {t!r}: the step became too small to advance time "
            "(the problem may be stiff or singular there; try looser tolerances or a stiff solver)",
            t,
        )
    if status == MAX_STEPS_EXCEEDED:
        raise MaxStepsExceededError(
            f"max_steps = {max_steps} exceeded at t = {t!r} (raise max_steps or loosen rtol/atol)", t
        )
    raise GQError(f"unknown kernel status {status} at t = {t!r}")
