"""gqtorch — the PyTorch implementation of gq: drop-ins for torchdiffeq's ``odeint`` and ``odeint_adjoint``.

``odeint(func, y0, t, *, rtol, atol, method, options, return_stats=False)`` has torchdiffeq 0.2.5's signature and
semantics (dopri5 with torchdiffeq's step control and dense output; fixed-grid euler, midpoint, rk4), raises
gqref's exception types, and reports solver statistics (:class:`Stats`) with ``return_stats=True``. Backprop
through it gives the exact derivative of the computed solution. ``odeint_adjoint_gq`` differentiates by the GQ
method (Norcliffe & Deisenroth 2023), ``odeint_adjoint`` by torchdiffeq's backsolve adjoint (full norm or
``adjoint_options=dict(norm="seminorm")``); both report :class:`GradientStats` with ``return_stats=True``.
Neural SDEs train as ODEs driven by smooth noise (:class:`SmoothNoise`, :class:`WongZakaiODE`) and sample with
torchsde through :class:`StratonovichSDE` (``gqtorch.sde.sdeint``). :func:`advise` measures the methods on the
caller's own model and recommends the fastest whose gradient agrees.
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
from gqtorch import testing
from gqtorch.adjoint import odeint_adjoint
from gqtorch.advise import Advice, advise
from gqtorch.backsolve import GradientStats
from gqtorch.dense import odeint_dense
from gqtorch.events import odeint_event
from gqtorch.gq import odeint_adjoint_gq
from gqtorch.sde import SmoothNoise, StratonovichSDE, WongZakaiODE
from gqtorch.solve import METHODS, odeint

__all__ = [
    "METHODS",
    "Advice",
    "GQError",
    "GradientStats",
    "InputError",
    "MaxStepsExceededError",
    "NonFiniteFieldError",
    "SmoothNoise",
    "SolverError",
    "Stats",
    "StepSizeUnderflowError",
    "StratonovichSDE",
    "WongZakaiODE",
    "advise",
    "odeint",
    "odeint_adjoint",
    "odeint_adjoint_gq",
    "odeint_dense",
    "odeint_event",
    "testing",
]
