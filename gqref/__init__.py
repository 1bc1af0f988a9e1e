"""gqref — the NumPy/SciPy/Numba reference implementation of gq: a correctness oracle for ODE solvers and gradients.

``gqref.strategies`` (hypothesis strategies for problems, grids, tolerances) is imported on its own, since it needs
hypothesis.
"""

from gqref import problems
from gqref._numba import njit
from gqref.check import GradientReport, UnreliableReferenceError, check_gradient, reference_gradient
from gqref.controller import CONTROLLERS, Controller, ErrorNorm
from gqref.dense import DenseOutput, dense_output
from gqref.errors import (
    GQError,
    InputError,
    MaxStepsExceededError,
    NonFiniteFieldError,
    QuadratureAccuracyWarning,
    SolverError,
    StepSizeUnderflowError,
)
from gqref.events import NoEventError, event_gradient, solve_until_event
from gqref.field import VectorField
from gqref.gradient import GRADIENT_METHODS, Diagnostics, Gradient, gradient
from gqref.kronrod import gauss_kronrod
from gqref.quadrature import gauss_legendre, node_count
from gqref.refinement import QuadratureLimitError
from gqref.rules import QUADRATURES, AdaptiveRule, AutoRule, IntervalRule, StepRule, quadrature_rule
from gqref.solve import METHODS, Solution, Stats, Steps, solve
from gqref.tableau import ADAPTIVE_TABLEAUX, DOPRI5, DOPRI5_SCIPY, EULER, FIXED_GRID_TABLEAUX, MIDPOINT, RK4, Tableau

__all__ = [
    "ADAPTIVE_TABLEAUX",
    "CONTROLLERS",
    "DOPRI5",
    "DOPRI5_SCIPY",
    "EULER",
    "FIXED_GRID_TABLEAUX",
    "GRADIENT_METHODS",
    "METHODS",
    "MIDPOINT",
    "QUADRATURES",
    "RK4",
    "AdaptiveRule",
    "AutoRule",
    "Controller",
    "DenseOutput",
    "Diagnostics",
    "ErrorNorm",
    "GQError",
    "Gradient",
    "GradientReport",
    "InputError",
    "IntervalRule",
    "MaxStepsExceededError",
    "NoEventError",
    "NonFiniteFieldError",
    "QuadratureAccuracyWarning",
    "QuadratureLimitError",
    "Solution",
    "SolverError",
    "Stats",
    "StepRule",
    "StepSizeUnderflowError",
    "Steps",
    "Tableau",
    "UnreliableReferenceError",
    "VectorField",
    "check_gradient",
    "dense_output",
    "event_gradient",
    "gauss_kronrod",
    "gauss_legendre",
    "gradient",
    "njit",
    "node_count",
    "problems",
    "quadrature_rule",
    "reference_gradient",
    "solve",
    "solve_until_event",
]
