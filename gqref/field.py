"""VectorField: a right-hand side f(t, y, p) and its vector–Jacobian products.

Conventions (shared by every gqref algorithm):

- ``f(t, y, p) -> dy/dt`` with ``y`` the state and ``p`` a parameter array (empty when the field has none).
- ``vjp_t(t, y, p, a) -> a·∂f/∂t`` (a scalar), ``vjp_y(t, y, p, a) -> aᵀ∂f/∂y`` (shape of ``y``),
  ``vjp_p(t, y, p, a) -> aᵀ∂f/∂p`` (shape of ``p``). The solver needs only ``f``; the gradient methods use the VJPs.

When every function given is a numba ``@njit`` function (see :func:`gqref.njit`), whole integrations run compiled;
otherwise the same algorithm runs as plain Python. Compiled fields see the state as a 1-D array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gqref._numba import is_compiled, jitable
from gqref.errors import InputError


@dataclass(frozen=True)
class VectorField:
    """A right-hand side and (optionally) its VJPs; see the module docstring for the signatures."""

    f: Callable
    vjp_t: Callable | None = None
    vjp_y: Callable | None = None
    vjp_p: Callable | None = None
    name: str = ""

    def __post_init__(self):
        for role in ("f", "vjp_t", "vjp_y", "vjp_p"):
            function = getattr(self, role)
            if function is not None and not callable(function):
                raise InputError(f"VectorField.{role} must be callable, got {type(function).__name__}")

    @property
    def compiled(self) -> bool:
        """True when every function given is numba-compiled, so kernels can run compiled."""
        given = [fn for fn in (self.f, self.vjp_t, self.vjp_y, self.vjp_p) if fn is not None]
        return all(is_compiled(fn) for fn in given)


def as_field(field: VectorField | Callable) -> VectorField:
    """Accept a VectorField or a bare ``f(t, y, p)``."""
    if isinstance(field, VectorField):
        return field
    if callable(field):
        return VectorField(f=field)
    raise InputError(f"field must be a gqref.VectorField or a callable f(t, y, p), got {type(field).__name__}")


def flat_python_function(function: Callable, shape: tuple[int, ...], dtype, role: str) -> Callable:
    """Wrap a plain-Python ``f(t, y, p)`` so kernels can call it on flat arrays; checks the returned shape."""
    size = int(np.prod(shape, dtype=np.int64))

    def flat(t, y, p):
        out = np.asarray(function(t, y.reshape(shape), p), dtype=dtype)
        if out.size != size or (out.shape != shape and out.ndim != 1):
            raise InputError(
                f"field.{role} returned shape {out.shape} at t = {float(t)!r}; expected the state's {shape}"
            )
        return out.reshape(size)

    return flat


@jitable
def evaluate(f, direction, s, y, p, out):
    """out ← direction·f(direction·s, y, p): the field in the solver's increasing time s = direction·t."""
    value = f(direction * s, y, p)
    if direction == 1.0:
        for i in range(out.shape[0]):
            out[i] = value[i]
    else:
        for i in range(out.shape[0]):
            out[i] = -value[i]


@jitable
def all_finite(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True
