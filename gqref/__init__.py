"""gqref — the NumPy/SciPy/Numba reference implementation of gq: a correctness oracle for ODE solvers and gradients."""

from gqref._numba import njit
from gqref.controller import CONTROLLERS, Controller, ErrorNorm
from gqref.errors import (
    GQError,
    InputError,
    MaxStepsExceededError,
    NonFiniteFieldError,
    SolverError,
    StepSizeUnderflowError,
)
from gqref.field import VectorField
from gqref.solve import METHODS, Solution, Stats, Steps, solve
from gqref.tableau import DOPRI5, DOPRI5_SCIPY, EULER, MIDPOINT, RK4, Tableau

__all__ = [
    "CONTROLLERS",
    "DOPRI5",
    "DOPRI5_SCIPY",
    "EULER",
    "METHODS",
    "MIDPOINT",
    "RK4",
    "Controller",
    "ErrorNorm",
    "GQError",
    "InputError",
    "MaxStepsExceededError",
    "NonFiniteFieldError",
    "Solution",
    "SolverError",
    "Stats",
    "StepSizeUnderflowError",
    "Steps",
    "Tableau",
    "VectorField",
    "njit",
    "solve",
]
