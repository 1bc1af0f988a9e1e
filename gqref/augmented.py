"""The backward dynamics of the adjoint methods, built once per field.

With a(t) = ∂L/∂z(t), the adjoint runs backwards in time with da/dt = −aᵀ∂f/∂z. The continuous adjoint also
integrates the parameter and time gradients, so its state is x = [adj_t (1), z (S), a (S), adj_p (P)] (torchdiffeq's
order) with dx/dt = [−a·∂f/∂t, f, −aᵀ∂f/∂z, −aᵀ∂f/∂p]. GQ integrates only x = [z, a]. Both are built from the
field's VJPs with the cotangent −a, as torchdiffeq does; compiled fields give compiled dynamics.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

from gqref._numba import njit, njit_closure
from gqref.errors import InputError
from gqref.field import VectorField, vjp_value


def require_vjps(field: VectorField, roles: tuple[str, ...]) -> None:
    missing = [role for role in roles if getattr(field, role) is None]
    if missing:
        raise InputError(f"this gradient method needs the field's {', '.join(missing)} (see gqref.VectorField; "
                         "gqref.gradient derives missing ones by complex step, gqref.field.complete_vjps does it here)")


@njit
def _no_time_vjp(t, y, p, a):
    return 0.0


def _probe_compiled_vjps(field: VectorField, roles: tuple[str, ...], t: float, z: np.ndarray, params: np.ndarray,
                         a: np.ndarray) -> None:
    """Check a compiled field's VJP outputs once per signature, as the Python path checks every call: the compiled
    dynamics copy them without looking, and numba broadcasts a wrong-length result (length 1) silently."""
    z, a = np.ascontiguousarray(z, dtype=np.float64).ravel(), np.ascontiguousarray(a, dtype=np.float64).ravel()
    for role in roles:
        function = getattr(field, role)
        key = (function, z.shape, params.shape)
        if key not in _PROBED:
            vjp_value(role, function(t, z, params, a), t, {"vjp_t": (), "vjp_y": z.shape, "vjp_p": params.shape}[role])
            _PROBED.add(key)


_PROBED: set[tuple] = set()  # (compiled VJP, state shape, params shape) whose output shape passed the probe


@cache
def _compiled_dynamics(f, vjp_t, vjp_y, vjp_p, full: bool) -> Callable:
    """One closure per (field, variant); numba resolves the captured functions at compile time."""
    if full:
        def dynamics(t, x, p):
            n = (x.shape[0] - 1 - p.shape[0]) // 2
            z = x[1:1 + n]
            neg_a = -x[1 + n:1 + 2 * n]
            out = np.empty_like(x)
            out[0] = vjp_t(t, z, p, neg_a)
            out[1:1 + n] = f(t, z, p)
            out[1 + n:1 + 2 * n] = vjp_y(t, z, p, neg_a)
            out[1 + 2 * n:] = vjp_p(t, z, p, neg_a)
            return out
    else:
        def dynamics(t, x, p):
            n = x.shape[0] // 2
            z = x[:n]
            out = np.empty_like(x)
            out[:n] = f(t, z, p)
            out[n:] = vjp_y(t, z, p, -x[n:])
            return out
    return njit_closure(dynamics)


def _python_dynamics(field: VectorField, shape: tuple[int, ...], full: bool, time: bool) -> Callable:
    n = int(np.prod(shape, dtype=np.int64))

    def state(v):
        return v.reshape(shape)

    def flat(v):
        return np.asarray(v).reshape(-1)

    # each VJP checked by name, so a wrong shape or a NaN names vjp_y/vjp_p/vjp_t rather than the augmented field
    if full:
        def dynamics(t, x, p):
            z, neg_a = state(x[1:1 + n]), state(-x[1 + n:1 + 2 * n])
            vjp_t = float(vjp_value("vjp_t", field.vjp_t(t, z, p, neg_a), t, ())) if time else 0.0
            return np.concatenate([[vjp_t], flat(field.f(t, z, p)),
                                   flat(vjp_value("vjp_y", field.vjp_y(t, z, p, neg_a), t, shape)),
                                   vjp_value("vjp_p", field.vjp_p(t, z, p, neg_a), t, p.shape)])
    else:
        def dynamics(t, x, p):
            z, neg_a = state(x[:n]), state(-x[n:])
            return np.concatenate([flat(field.f(t, z, p)),
                                   flat(vjp_value("vjp_y", field.vjp_y(t, z, p, neg_a), t, shape))])
    return dynamics


def backward_dynamics(field: VectorField, shape: tuple[int, ...], full: bool, time: bool = True, *,
                      at: tuple | None = None) -> VectorField:
    """The adjoint's augmented dynamics (``full``) or GQ's [z, a] dynamics, as a field on the flat state.

    Without ``time`` the adjoint's adj_t stays 0 (a field without ∂f/∂t; torchdiffeq integrates it whenever it can).
    ``at`` = (t, z, params, a), a point to check a compiled field's VJPs at (:func:`_probe_compiled_vjps`).
    """
    roles = (("vjp_t",) if time else ()) + ("vjp_y", "vjp_p") if full else ("vjp_y",)
    require_vjps(field, roles)
    if field.compiled:
        if at is not None:
            _probe_compiled_vjps(field, roles, *at)
        vjp_t = field.vjp_t if time else _no_time_vjp
        f = _compiled_dynamics(field.f, vjp_t, field.vjp_y, field.vjp_p, full)
    else:
        f = _python_dynamics(field, shape, full, time)
    return VectorField(f=f, name=f"{'adjoint' if full else 'gq'}-backward({field.name})", specialize=field.specialize)
