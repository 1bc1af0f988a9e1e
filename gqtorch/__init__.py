"""gqtorch — the PyTorch implementation of gq: a drop-in for torchdiffeq's ``odeint`` (forward half so far).

``odeint(func, y0, t, *, rtol, atol, method, options, return_stats=False)`` has torchdiffeq 0.2.5's signature and
semantics (dopri5 with torchdiffeq's step control and dense output; fixed-grid euler, midpoint, rk4), raises
gqref's exception types, and reports solver statistics (:class:`Stats`) with ``return_stats=True``. Backprop
through it gives the exact derivative of the computed solution. The adjoint and GQ gradients are not built yet.
"""

from gqref.errors import (
    GQError,
    InputError,
    MaxStepsExceededError,
    NonFiniteFieldError,
    SolverError,
    StepSizeUnderflowError,
)
from gqref.solve import Stats
from gqtorch.solve import METHODS, odeint

__all__ = [
    "METHODS",
    "GQError",
    "InputError",
    "MaxStepsExceededError",
    "NonFiniteFieldError",
    "SolverError",
    "Stats",
    "StepSizeUnderflowError",
    "odeint",
]
