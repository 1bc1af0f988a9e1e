"""Test problems: vector fields with hand-derived VJPs, plus closed-form solutions and gradients where they exist.

Why: every gradient method in gq (GQ, the adjoint, backprop through the solver) is checked against the same fields,
and where a closed form exists against the exact answer rather than against another numerical method.

A :class:`Problem` bundles a compiled :class:`~gqref.VectorField`, default ``y0``, ``params`` and output times ``t``
(increasing or decreasing) and, when a closed form exists,

- ``exact_solution(y0, params, t) -> ys`` of shape ``(len(t), S)``;
- ``exact_gradient(y0, params, t, dL_dy) -> (dL_dy0, dL_dparams, dL_dt)``: the gradient of the linear functional
  ``L = Σ_i dL_dy[i]·y(t_i)`` (``dL_dy`` has the shape of ``ys``). ``dL_dt[i]`` is the true partial derivative
  with respect to the output time ``t_i`` with ``y0`` held fixed at ``t_0``: ``f(t_i, y_i)·dL_dy[i]`` for
  ``i ≥ 1`` and ``∫ a·∂f/∂t dt − Σ_{i≥1} f(t_i, y_i)·dL_dy[i]`` for ``i = 0`` (``a`` the adjoint state).

Both are ``None`` when no closed form exists. ``exact_solution`` accepts complex ``y0``, ``params`` and ``t`` (so
it can be complex-stepped); ``exact_gradient`` takes real inputs.

Every field function is compiled with :func:`gqref.njit` and written so that its ``.py_func`` also accepts complex
``t``, ``y``, ``p`` and ``a`` (outputs take the promoted dtype; branches test only real parts), so that callers can
complex-step through the fields and their VJPs. :data:`PROBLEMS` maps names to factories of default instances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from numpy.typing import ArrayLike
from scipy.linalg import expm, expm_frechet

from gqref._numba import jitable, njit
from gqref.errors import InputError
from gqref.field import VectorField

__all__ = [
    "PROBLEMS",
    "Problem",
    "cubic_spiral",
    "forced_linear",
    "harmonic_oscillator",
    "linear",
    "lotka_volterra",
    "mlp",
    "pack_linear",
    "pack_mlp",
    "time_dependent_scalar",
    "toy",
    "toy_loss_gradient",
    "unpack_mlp",
    "van_der_pol",
]


@dataclass(frozen=True, eq=False)
class Problem:
    """A field with default data and, where known, its exact solution and gradient (see the module docstring).

    ``eq=False``: problems hold arrays, so they compare and hash by identity.
    """

    name: str
    field: VectorField
    y0: np.ndarray
    params: np.ndarray
    t: np.ndarray
    exact_solution: Callable | None = None
    exact_gradient: Callable | None = None
    description: str = ""

    def __post_init__(self):
        for role in ("y0", "params", "t"):
            value = np.array(getattr(self, role), dtype=np.float64)
            if value.ndim != 1:
                raise InputError(f"Problem.{role} must be 1-D, got shape {value.shape}")
            if not np.all(np.isfinite(value)):
                raise InputError(f"Problem.{role} must be finite")
            object.__setattr__(self, role, value)
        if self.y0.size == 0 or self.t.size == 0:
            raise InputError("Problem.y0 and Problem.t need at least one entry")

    @property
    def state_dim(self) -> int:
        """S, the length of y0 (ys has shape (len(t), S))."""
        return int(self.y0.shape[0])

    @property
    def has_closed_form(self) -> bool:
        """True when exact_solution and exact_gradient are available."""
        return self.exact_solution is not None and self.exact_gradient is not None


# ---------------------------------------------------------------------------------------------------------------
# Compiled building blocks. `_zeros(n, like)` allocates with the dtype of the scalar `like` (float64 when compiled,
# complex under .py_func with complex inputs): numba has no np.result_type, but np.full infers from its fill value.


@jitable
def _zeros(n, like):
    return np.full(n, 0.0 * like)


@jitable
def _softplus(x):
    """log(1 + eˣ) without overflow; the branch tests the real part so the formula stays analytic (complex step)."""
    if x.real > 0.0:
        return x + np.log1p(np.exp(-x))
    return np.log1p(np.exp(x))


@jitable
def _logistic(x):
    """softplus′(x) = 1/(1 + e⁻ˣ), evaluated on the side where the exponential cannot overflow."""
    if x.real >= 0.0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@jitable
def _row_dot(acc, p, start, x, n):
    """acc + Σ_j p[start + j]·x[j], summed in order from acc: one row of a row-major matrix stored in p, times x."""
    for j in range(n):
        acc = acc + p[start + j] * x[j]
    return acc


@jitable
def _second_order(y, p, acceleration):
    """[x′, x″] for a state y = [x, x′] of a second-order equation x″ = ``acceleration``."""
    out = _zeros(2, y[0] + p[0])
    out[0] = y[1]
    out[1] = acceleration
    return out


@njit
def _autonomous_vjp_t(t, y, p, a):
    """aᵀ ∂f/∂t for every field below that does not read t."""
    return 0.0


# --- linear: y' = A y + b, p = [A.ravel() (row-major), b] -------------------------------------------------------


@njit
def _linear_f(t, y, p):
    n = y.shape[0]
    out = _zeros(n, y[0] + p[0])
    for i in range(n):
        out[i] = _row_dot(p[n * n + i], p, i * n, y, n)
    return out


@njit
def _linear_vjp_y(t, y, p, a):
    n = y.shape[0]
    out = _zeros(n, a[0] + p[0])
    for j in range(n):
        acc = 0.0 * out[j]
        for i in range(n):
            acc = acc + a[i] * p[i * n + j]
        out[j] = acc
    return out


@njit
def _linear_vjp_p(t, y, p, a):
    n = y.shape[0]
    out = _zeros(p.shape[0], a[0] + y[0] + p[0])
    for i in range(n):
        for j in range(n):
            out[i * n + j] = a[i] * y[j]
        out[n * n + i] = a[i]
    return out


LINEAR_FIELD = VectorField(_linear_f, _autonomous_vjp_t, _linear_vjp_y, _linear_vjp_p, name="linear")


# --- forced linear: y' = A y + b·cos(ω t), p = [A.ravel() (row-major), b, ω] ---------------------------------------


@njit
def _forced_f(t, y, p):
    n = y.shape[0]
    out = _zeros(n, t + y[0] + p[0])
    forcing = np.cos(p[n * n + n] * t)
    for i in range(n):
        out[i] = _row_dot(p[n * n + i] * forcing, p, i * n, y, n)
    return out


@njit
def _forced_vjp_t(t, y, p, a):
    n = y.shape[0]
    omega = p[n * n + n]
    acc = 0.0 * (t + y[0] + p[0] + a[0])
    for i in range(n):
        acc = acc + a[i] * p[n * n + i]
    return -omega * np.sin(omega * t) * acc


@njit
def _forced_vjp_p(t, y, p, a):
    n = y.shape[0]
    omega = p[n * n + n]
    out = _zeros(p.shape[0], t + a[0] + y[0] + p[0])
    forcing = np.cos(omega * t)
    ab = 0.0 * out[0]
    for i in range(n):
        for j in range(n):
            out[i * n + j] = a[i] * y[j]
        out[n * n + i] = a[i] * forcing
        ab = ab + a[i] * p[n * n + i]
    out[n * n + n] = -t * np.sin(omega * t) * ab
    return out


# vjp_y is the linear field's: Aᵀa reads only the leading n² entries of p
FORCED_LINEAR_FIELD = VectorField(_forced_f, _forced_vjp_t, _linear_vjp_y, _forced_vjp_p, name="forced_linear")


# --- scale: y' = p0·y (the paper's toy, any state size) ----------------------------------------------------------


@jitable  # compiled below, and inlined as the vjp_y
def _scale(t, y, p):
    out = _zeros(y.shape[0], y[0] + p[0])
    for i in range(y.shape[0]):
        out[i] = p[0] * y[i]
    return out


@njit
def _scale_vjp_y(t, y, p, a):
    return _scale(t, a, p)  # the field is linear in y: aᵀ ∂f/∂y = p0·a


@njit
def _scale_vjp_p(t, y, p, a):
    out = _zeros(1, a[0] + y[0] + p[0])
    for i in range(y.shape[0]):
        out[0] = out[0] + a[i] * y[i]
    return out


SCALE_FIELD = VectorField(njit(_scale), _autonomous_vjp_t, _scale_vjp_y, _scale_vjp_p, name="toy")


# --- harmonic oscillator: x'' = −ω² x − γ x', y = [x, x'], p = [ω, γ] -------------------------------------------


@njit
def _oscillator_f(t, y, p):
    return _second_order(y, p, -p[0] * p[0] * y[0] - p[1] * y[1])


@njit
def _oscillator_vjp_y(t, y, p, a):
    out = _zeros(2, a[0] + p[0])
    out[0] = -p[0] * p[0] * a[1]
    out[1] = a[0] - p[1] * a[1]
    return out


@njit
def _oscillator_vjp_p(t, y, p, a):
    out = _zeros(2, a[0] + y[0] + p[0])
    out[0] = -2.0 * p[0] * y[0] * a[1]
    out[1] = -y[1] * a[1]
    return out


OSCILLATOR_FIELD = VectorField(_oscillator_f, _autonomous_vjp_t, _oscillator_vjp_y, _oscillator_vjp_p,
                               name="harmonic_oscillator")


# --- time-dependent scalar: y' = p0·cos(p1·t)·y (componentwise) --------------------------------------------------


@jitable  # compiled below, and inlined as the vjp_y
def _cosine(t, y, p):
    out = _zeros(y.shape[0], t + y[0] + p[0])
    rate = p[0] * np.cos(p[1] * t)
    for i in range(y.shape[0]):
        out[i] = rate * y[i]
    return out


@njit
def _cosine_vjp_t(t, y, p, a):
    acc = 0.0 * (t + y[0] + p[0] + a[0])
    for i in range(y.shape[0]):
        acc = acc + a[i] * y[i]
    return -p[0] * p[1] * np.sin(p[1] * t) * acc


@njit
def _cosine_vjp_y(t, y, p, a):
    return _cosine(t, a, p)  # the field is linear in y: aᵀ ∂f/∂y = p0·cos(p1·t)·a


@njit
def _cosine_vjp_p(t, y, p, a):
    out = _zeros(2, t + a[0] + y[0] + p[0])
    ay = 0.0 * out[0]
    for i in range(y.shape[0]):
        ay = ay + a[i] * y[i]
    out[0] = np.cos(p[1] * t) * ay
    out[1] = -p[0] * t * np.sin(p[1] * t) * ay
    return out


COSINE_FIELD = VectorField(njit(_cosine), _cosine_vjp_t, _cosine_vjp_y, _cosine_vjp_p, name="time_dependent_scalar")


# --- cubic spiral: y' = (y³) @ A, p = A.ravel() (row-major), f_j = Σ_k y_k³ A_kj ----------------------------------


@njit
def _cubic_f(t, y, p):
    n = y.shape[0]
    out = _zeros(n, y[0] + p[0])
    for k in range(n):
        cube = y[k] * y[k] * y[k]
        for j in range(n):
            out[j] = out[j] + cube * p[k * n + j]
    return out


@njit
def _cubic_vjp_y(t, y, p, a):
    n = y.shape[0]
    out = _zeros(n, a[0] + y[0] + p[0])
    for k in range(n):
        acc = 0.0 * out[k]
        for j in range(n):
            acc = acc + a[j] * p[k * n + j]
        out[k] = 3.0 * y[k] * y[k] * acc
    return out


@njit
def _cubic_vjp_p(t, y, p, a):
    n = y.shape[0]
    out = _zeros(n * n, a[0] + y[0] + p[0])
    for k in range(n):
        cube = y[k] * y[k] * y[k]
        for j in range(n):
            out[k * n + j] = cube * a[j]
    return out


CUBIC_FIELD = VectorField(_cubic_f, _autonomous_vjp_t, _cubic_vjp_y, _cubic_vjp_p, name="cubic_spiral")


# --- Lotka–Volterra: x' = αx − βxy, y' = δxy − γy, p = [α, β, δ, γ] -------------------------------------------------


@njit
def _lotka_f(t, y, p):
    out = _zeros(2, y[0] + p[0])
    xy = y[0] * y[1]
    out[0] = p[0] * y[0] - p[1] * xy
    out[1] = p[2] * xy - p[3] * y[1]
    return out


@njit
def _lotka_vjp_y(t, y, p, a):
    out = _zeros(2, a[0] + y[0] + p[0])
    out[0] = a[0] * (p[0] - p[1] * y[1]) + a[1] * p[2] * y[1]
    out[1] = -a[0] * p[1] * y[0] + a[1] * (p[2] * y[0] - p[3])
    return out


@njit
def _lotka_vjp_p(t, y, p, a):
    out = _zeros(4, a[0] + y[0] + p[0])
    xy = y[0] * y[1]
    out[0] = a[0] * y[0]
    out[1] = -a[0] * xy
    out[2] = a[1] * xy
    out[3] = -a[1] * y[1]
    return out


LOTKA_FIELD = VectorField(_lotka_f, _autonomous_vjp_t, _lotka_vjp_y, _lotka_vjp_p, name="lotka_volterra")


# --- Van der Pol: x'' = μ(1 − x²)x' − x, y = [x, x'], p = [μ] -------------------------------------------------------


@njit
def _vdp_f(t, y, p):
    return _second_order(y, p, p[0] * (1.0 - y[0] * y[0]) * y[1] - y[0])


@njit
def _vdp_vjp_y(t, y, p, a):
    out = _zeros(2, a[0] + y[0] + p[0])
    out[0] = a[1] * (-2.0 * p[0] * y[0] * y[1] - 1.0)
    out[1] = a[0] + a[1] * p[0] * (1.0 - y[0] * y[0])
    return out


@njit
def _vdp_vjp_p(t, y, p, a):
    out = _zeros(1, a[0] + y[0] + p[0])
    out[0] = a[1] * (1.0 - y[0] * y[0]) * y[1]
    return out


VAN_DER_POL_FIELD = VectorField(_vdp_f, _autonomous_vjp_t, _vdp_vjp_y, _vdp_vjp_p, name="van_der_pol")


# --- softplus MLP: f(t, y) = W2·softplus(W1·u + b1) + b2 with u = y or [y, t] -------------------------------------
# p = [W1.ravel() (width × d_in, row-major), b1 (width), W2.ravel() (S × width, row-major), b2 (S)]; the width is
# recovered from len(p) = width·(d_in + 1 + S) + S, so one compiled function serves every width. The time-dependent
# and autonomous variants are separate compiled functions (a flag in p would receive a gradient).


@jitable
def _mlp_layout(y, p, time_dependent):
    """(s, d_in, width); blocks start at 0 (W1), width·d_in (b1), width·(d_in + 1) (W2), width·(d_in + 1 + s) (b2)."""
    s = y.shape[0]
    d_in = s + 1 if time_dependent else s
    return s, d_in, (p.shape[0] - s) // (d_in + 1 + s)


@jitable
def _mlp_preactivation(t, y, p, time_dependent):
    s, d_in, width = _mlp_layout(y, p, time_dependent)
    z = _zeros(width, t + y[0] + p[0])
    for k in range(width):
        acc = _row_dot(p[width * d_in + k] + 0.0 * z[k], p, k * d_in, y, s)
        if time_dependent:
            acc = acc + p[k * d_in + s] * t
        z[k] = acc
    return z


@jitable
def _mlp_forward(t, y, p, time_dependent):
    s, d_in, width = _mlp_layout(y, p, time_dependent)
    z = _mlp_preactivation(t, y, p, time_dependent)
    h = _zeros(width, z[0])
    for k in range(width):
        h[k] = _softplus(z[k])
    out = _zeros(s, z[0])
    for i in range(s):
        out[i] = _row_dot(p[width * (d_in + 1 + s) + i] + 0.0 * z[0], p, width * (d_in + 1) + i * width, h, width)
    return out


@jitable
def _mlp_hidden_cotangent(t, y, p, a, time_dependent):
    """gz = (W2ᵀ a) ⊙ softplus′(z): the cotangent of the pre-activation z, shared by every VJP."""
    s, d_in, width = _mlp_layout(y, p, time_dependent)
    z = _mlp_preactivation(t, y, p, time_dependent)
    gz = _zeros(width, z[0] + a[0])
    for k in range(width):
        acc = 0.0 * gz[k]
        for i in range(s):
            acc = acc + a[i] * p[width * (d_in + 1) + i * width + k]
        gz[k] = acc * _logistic(z[k])
    return z, gz


@jitable
def _mlp_vjp_t(t, y, p, a, time_dependent):
    if not time_dependent:
        return 0.0 * (t + y[0] + p[0] + a[0])
    s, d_in, width = _mlp_layout(y, p, time_dependent)
    gz = _mlp_hidden_cotangent(t, y, p, a, time_dependent)[1]
    acc = 0.0 * gz[0]
    for k in range(width):
        acc = acc + p[k * d_in + s] * gz[k]
    return acc


@jitable
def _mlp_vjp_y(t, y, p, a, time_dependent):
    s, d_in, width = _mlp_layout(y, p, time_dependent)
    gz = _mlp_hidden_cotangent(t, y, p, a, time_dependent)[1]
    out = _zeros(s, gz[0])
    for j in range(s):
        acc = 0.0 * gz[0]
        for k in range(width):
            acc = acc + p[k * d_in + j] * gz[k]
        out[j] = acc
    return out


@jitable
def _mlp_vjp_p(t, y, p, a, time_dependent):
    s, d_in, width = _mlp_layout(y, p, time_dependent)
    z, gz = _mlp_hidden_cotangent(t, y, p, a, time_dependent)
    out = _zeros(p.shape[0], gz[0] + y[0])
    for k in range(width):
        for j in range(s):
            out[k * d_in + j] = gz[k] * y[j]
        if time_dependent:
            out[k * d_in + s] = gz[k] * t
        out[width * d_in + k] = gz[k]
        hk = _softplus(z[k])
        for i in range(s):
            out[width * (d_in + 1) + i * width + k] = a[i] * hk
    for i in range(s):
        out[width * (d_in + 1 + s) + i] = a[i]
    return out


def _mlp_field(time_dependent: bool, name: str) -> VectorField:
    """The MLP field with ``time_dependent`` fixed at compile time; numba caches each version (the closed-over
    flag is part of its cache key)."""

    @njit
    def f(t, y, p):
        return _mlp_forward(t, y, p, time_dependent)

    @njit
    def vjp_t(t, y, p, a):
        return _mlp_vjp_t(t, y, p, a, time_dependent)

    @njit
    def vjp_y(t, y, p, a):
        return _mlp_vjp_y(t, y, p, a, time_dependent)

    @njit
    def vjp_p(t, y, p, a):
        return _mlp_vjp_p(t, y, p, a, time_dependent)

    return VectorField(f, vjp_t, vjp_y, vjp_p, name=name)


MLP_FIELD = _mlp_field(False, "mlp")
MLP_TIME_FIELD = _mlp_field(True, "mlp_time_dependent")


# ---------------------------------------------------------------------------------------------------------------
# Closed forms (plain numpy/scipy).


def _vector(name: str, value, size: int | None = None) -> np.ndarray:
    value = np.array(value, dtype=np.float64)
    if value.ndim != 1 or (size is not None and value.shape[0] != size):
        expected = "a 1-D array" if size is None else f"shape ({size},)"
        raise InputError(f"{name} must have {expected}, got shape {value.shape}")
    return value


def _times(t) -> np.ndarray:
    t = _vector("t", t)
    if t.size == 0:
        raise InputError("t needs at least one time")
    return t


def _cotangent(dl_dy, shape: tuple[int, int]) -> np.ndarray:
    dl_dy = np.asarray(dl_dy, dtype=np.float64)
    if dl_dy.shape != shape:
        raise InputError(f"dL_dy must have the shape of ys, {shape}; got {dl_dy.shape}")
    return dl_dy


def _affine_block(a, b, y0) -> tuple[np.ndarray, np.ndarray]:
    """M = [[A, b], [0, 0]] and z0 = [y0, 1]: the affine flow y(t) = [exp((t − t0)M) z0]_{:n} as one exponential."""
    n = y0.shape[0]
    dtype = np.result_type(a, b, y0, np.float64)
    m = np.zeros((n + 1, n + 1), dtype=dtype)
    m[:n, :n] = a
    m[:n, n] = b
    z0 = np.ones(n + 1, dtype=dtype)
    z0[:n] = y0
    return m, z0


def _affine_solution(a, b, y0, t) -> np.ndarray:
    y0, t = np.asarray(y0), np.asarray(t)
    n = y0.shape[0]
    m, z0 = _affine_block(a, b, y0)
    ys = np.empty((t.shape[0], n), dtype=np.result_type(m, t))
    ys[0] = y0  # exactly, and independent of t0
    for i in range(1, t.shape[0]):
        ys[i] = (expm((t[i] - t[0]) * m) @ z0)[:n]
    return ys


def _affine_gradient(a, b, y0, t, dl_dy) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(dL/dy0, dL/dA, dL/db, dL/dt) for y' = Ay + b.

    With τ_i = t_i − t0 and L_i = [c_i; 0]ᵀ exp(τ_i M) z0: dL_i/dy0 = exp(τ_i Aᵀ) c_i, and dL_i/dM = τ_i·L(τ_i Mᵀ, G_i)
    with G_i = [c_i; 0] z0ᵀ, because the adjoint of the Fréchet derivative L(X, ·) is L(Xᵀ, ·).
    """
    n = y0.shape[0]
    ys = _affine_solution(a, b, y0, t)
    m, z0 = _affine_block(a, b, y0)
    g_y0 = np.array(dl_dy[0], dtype=np.float64)
    g_m = np.zeros_like(m)
    g_t = np.zeros(t.shape[0])
    for i in range(1, t.shape[0]):
        tau = t[i] - t[0]
        g_y0 += expm(tau * a.T) @ dl_dy[i]
        g_m += tau * expm_frechet(tau * m.T, np.outer(np.append(dl_dy[i], 0.0), z0), compute_expm=False)
        g_t[i] = dl_dy[i] @ (a @ ys[i] + b)
    g_t[0] = -np.sum(g_t[1:])  # autonomous: y_i depends on t_i − t0 only
    return g_y0, g_m[:n, :n], g_m[:n, n], g_t


def _forced_parts(y0, params) -> tuple[np.ndarray, np.ndarray, float]:
    n = np.shape(y0)[0]
    params = np.asarray(params)
    if params.shape != (n * n + n + 1,):
        raise InputError(f"forced_linear params must be [A.ravel(), b, omega] of length {n * n + n + 1}, got shape "
                         f"{params.shape}")
    return params[: n * n].reshape(n, n), params[n * n: n * n + n], params[-1]


def _forced_block(a, b, omega, y0, t0) -> tuple[np.ndarray, np.ndarray]:
    """The forcing b·cos(ωt) is the first of u = [cos ωt, sin ωt], u' = [[0, −ω], [ω, 0]] u: with M = [[A, b, 0],
    [0, 0, −ω], [0, ω, 0]] and z0 = [y0, cos ωt0, sin ωt0], y(t) = [exp((t − t0)M) z0]_{:n}."""
    n = y0.shape[0]
    dtype = np.result_type(a, b, omega, y0, t0, np.float64)
    m = np.zeros((n + 2, n + 2), dtype=dtype)
    m[:n, :n] = a
    m[:n, n] = b
    m[n, n + 1] = -omega
    m[n + 1, n] = omega
    z0 = np.empty(n + 2, dtype=dtype)
    z0[:n] = y0
    z0[n], z0[n + 1] = np.cos(omega * t0), np.sin(omega * t0)
    return m, z0


def _forced_exact_solution(y0, params, t) -> np.ndarray:
    y0, params, t = np.asarray(y0), np.asarray(params), np.asarray(t)
    a, b, omega = _forced_parts(y0, params)
    m, z0 = _forced_block(a, b, omega, y0, t[0])
    n = y0.shape[0]
    ys = np.empty((t.shape[0], n), dtype=np.result_type(m, t))
    ys[0] = y0
    for i in range(1, t.shape[0]):
        ys[i] = (expm((t[i] - t[0]) * m) @ z0)[:n]
    return ys


def _forced_exact_gradient(y0, params, t, dl_dy):
    """With τ_i = t_i − t0 and L_i = [c_i; 0; 0]ᵀ exp(τ_i M) z0: dL/dM = Σ τ_i L(τ_i Mᵀ, G_i), G_i = [c_i; 0; 0] z0ᵀ
    (as for y' = Ay + b); ω enters M (at [n, n+1] and [n+1, n]) and z0 (∂z0/∂ω = t0·[0, −sin ωt0, cos ωt0]);
    dL/dt_i = c_i·f(t_i, y_i) for i ≥ 1, and dL/dt0 = −(dL/dy0 − c_0)·f(t0, y0), since moving t0 moves the
    forcing's phase with it, so y_i depends on t0 only through the start of the flow."""
    y0, params, t = _vector("y0", y0), _vector("params", params), _times(t)
    n = y0.shape[0]
    a, b, omega = _forced_parts(y0, params)
    dl_dy = _cotangent(dl_dy, (t.size, n))
    m, z0 = _forced_block(a, b, omega, y0, t[0])
    ys = _forced_exact_solution(y0, params, t)
    g_m = np.zeros_like(m)
    g_z0 = np.zeros(n + 2)
    g_t = np.zeros(t.shape[0])
    for i in range(1, t.shape[0]):
        tau = t[i] - t[0]
        c = np.concatenate([dl_dy[i], [0.0, 0.0]])
        g_z0 += expm(tau * m.T) @ c
        g_m += tau * expm_frechet(tau * m.T, np.outer(c, z0), compute_expm=False)
        g_t[i] = dl_dy[i] @ (a @ ys[i] + b * np.cos(omega * t[i]))
    g_y0 = dl_dy[0] + g_z0[:n]
    g_omega = g_m[n + 1, n] - g_m[n, n + 1] + t[0] * (g_z0[n + 1] * np.cos(omega * t[0])
                                                       - g_z0[n] * np.sin(omega * t[0]))
    g_t[0] = -g_z0[:n] @ (a @ y0 + b * np.cos(omega * t[0]))
    return g_y0, np.concatenate([g_m[:n, :n].ravel(), g_m[:n, n], [g_omega]]), g_t


def _linear_parts(y0, params) -> tuple[np.ndarray, np.ndarray]:
    n = np.shape(y0)[0]
    params = np.asarray(params)
    if params.shape != (n * n + n,):
        raise InputError(f"linear params must be [A.ravel(), b] of length {n * n + n}, got shape {params.shape}")
    return params[: n * n].reshape(n, n), params[n * n:]


def _linear_exact_solution(y0, params, t) -> np.ndarray:
    a, b = _linear_parts(y0, params)
    return _affine_solution(a, b, np.asarray(y0), np.asarray(t))


def _linear_exact_gradient(y0, params, t, dl_dy):
    y0, t = _vector("y0", y0), _times(t)
    a, b = _linear_parts(y0, _vector("params", params))
    g_y0, g_a, g_b, g_t = _affine_gradient(a, b, y0, t, _cotangent(dl_dy, (t.size, y0.size)))
    return g_y0, np.concatenate([g_a.ravel(), g_b]), g_t


def _oscillator_matrix(params) -> np.ndarray:
    omega, gamma = params[0], params[1]
    a = np.zeros((2, 2), dtype=np.result_type(np.asarray(params), np.float64))
    a[0, 1] = 1.0
    a[1, 0] = -omega * omega
    a[1, 1] = -gamma
    return a


def _oscillator_exact_solution(y0, params, t) -> np.ndarray:
    return _affine_solution(_oscillator_matrix(params), np.zeros(2), np.asarray(y0), np.asarray(t))


def _oscillator_exact_gradient(y0, params, t, dl_dy):
    y0, params, t = _vector("y0", y0, 2), _vector("params", params, 2), _times(t)
    g_y0, g_a, _, g_t = _affine_gradient(_oscillator_matrix(params), np.zeros(2), y0, t,
                                         _cotangent(dl_dy, (t.size, 2)))
    # chain rule through A(ω, γ): ∂A/∂ω = −2ω e₂e₁ᵀ, ∂A/∂γ = −e₂e₂ᵀ
    return g_y0, np.array([-2.0 * params[0] * g_a[1, 0], -g_a[1, 1]]), g_t


def _scale_exact_solution(y0, params, t) -> np.ndarray:
    y0, t = np.asarray(y0), np.asarray(t)
    growth = np.exp(params[0] * (t - t[0]))
    growth[0] = 1.0
    return growth[:, None] * y0[None, :]


def _scale_exact_gradient(y0, params, t, dl_dy):
    """y_i = y0·e^{a τ_i}: with s_i = c_i·y_i, dL/da = Σ s_i τ_i, dL/dt_i = a s_i (i ≥ 1), dL/dt0 = −a Σ_{i≥1} s_i."""
    y0, params, t = _vector("y0", y0), _vector("params", params, 1), _times(t)
    dl_dy = _cotangent(dl_dy, (t.size, y0.size))
    rate = params[0]
    growth = np.exp(rate * (t - t[0]))
    s = np.sum(dl_dy * growth[:, None] * y0[None, :], axis=1)
    g_t = rate * s
    g_t[0] = -np.sum(g_t[1:])
    return growth @ dl_dy, np.array([np.sum(s * (t - t[0]))]), g_t


def _cosine_exponent(params, t):
    """E(t) = p0/p1·(sin(p1 t) − sin(p1 t0)), so y(t) = y0·e^{E(t)}."""
    return params[0] / params[1] * (np.sin(params[1] * t) - np.sin(params[1] * t[0]))


def _cosine_exact_solution(y0, params, t) -> np.ndarray:
    y0, params, t = np.asarray(y0), np.asarray(params), np.asarray(t)
    growth = np.exp(_cosine_exponent(params, t))
    growth[0] = 1.0
    return growth[:, None] * y0[None, :]


def _cosine_exact_gradient(y0, params, t, dl_dy):
    """With s_i = c_i·y_i: dL/dp0 = Σ s_i ΔS_i/p1, dL/dp1 = Σ s_i (−p0 ΔS_i/p1² + p0 ΔC_i/p1), where
    ΔS_i = sin(p1 t_i) − sin(p1 t0) and ΔC_i = t_i cos(p1 t_i) − t0 cos(p1 t0); dL/dt_i = s_i p0 cos(p1 t_i) for
    i ≥ 1 and dL/dt0 = −p0 cos(p1 t0) Σ_{i≥1} s_i (y_0 = y0 does not move with t0)."""
    y0, params, t = _vector("y0", y0), _vector("params", params, 2), _times(t)
    dl_dy = _cotangent(dl_dy, (t.size, y0.size))
    p0, p1 = params
    growth = np.exp(_cosine_exponent(params, t))
    growth[0] = 1.0
    s = np.sum(dl_dy * growth[:, None] * y0[None, :], axis=1)
    d_sin = np.sin(p1 * t) - np.sin(p1 * t[0])
    d_tcos = t * np.cos(p1 * t) - t[0] * np.cos(p1 * t[0])
    g_p = np.array([np.sum(s * d_sin) / p1, np.sum(s * (-p0 * d_sin / p1**2 + p0 * d_tcos / p1))])
    g_t = s * p0 * np.cos(p1 * t)
    g_t[0] = -p0 * np.cos(p1 * t[0]) * np.sum(s[1:])
    return growth @ dl_dy, g_p, g_t


# ---------------------------------------------------------------------------------------------------------------
# Factories.


def pack_linear(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """The linear field's parameter vector [A.ravel() (row-major), b]."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64)])


def linear(a: ArrayLike | None = None, b: ArrayLike | None = None, y0: ArrayLike | None = None,
           t: ArrayLike | None = None) -> Problem:
    """y' = A y + b. ``params = [A.ravel() (row-major), b]`` (n² + n entries).

    Defaults: a damped rotation A = [[−0.5, 1], [−1, −0.3]], b = [0.2, −0.1], y0 = [1, 0.5], t = 0, 0.5, …, 2.
    Exact solution and gradients by (Fréchet derivatives of) the augmented matrix exponential.
    """
    a = np.array([[-0.5, 1.0], [-1.0, -0.3]]) if a is None else np.array(a, dtype=np.float64)
    n = a.shape[0]
    if a.shape != (n, n) or n == 0:
        raise InputError(f"A must be a non-empty square matrix, got shape {a.shape}")
    b = (np.array([0.2, -0.1]) if n == 2 else np.zeros(n)) if b is None else _vector("b", b, n)
    y0 = (np.array([1.0, 0.5]) if n == 2 else np.ones(n)) if y0 is None else _vector("y0", y0, n)
    t = np.linspace(0.0, 2.0, 5) if t is None else _times(t)
    return Problem("linear", LINEAR_FIELD, y0, pack_linear(a, b), t, _linear_exact_solution, _linear_exact_gradient,
                   f"y' = A y + b, {n}-D; params = [A.ravel(), b]")


def forced_linear(a: ArrayLike | None = None, b: ArrayLike | None = None, omega: float = 1.5,
                  y0: ArrayLike | None = None, t: ArrayLike | None = None) -> Problem:
    """y' = A y + b·cos(ω t): a linear system with a periodic forcing, non-autonomous, so ∂f/∂t enters dL/dt0 and
    an equilibrium start (y0 = 0) still moves. ``params = [A.ravel() (row-major), b, ω]`` (n² + n + 1 entries).

    Defaults: A = [[−0.5, 1], [−1, −0.3]], b = [1, −0.5], ω = 1.5, y0 = [0, 0] (the state at rest, driven only by
    the forcing), t = 0, 0.5, …, 3. Exact through a matrix exponential that carries [cos ωt, sin ωt] along.
    """
    a = np.array([[-0.5, 1.0], [-1.0, -0.3]]) if a is None else np.array(a, dtype=np.float64)
    n = a.shape[0]
    if a.shape != (n, n) or n == 0:
        raise InputError(f"A must be a non-empty square matrix, got shape {a.shape}")
    b = (np.array([1.0, -0.5]) if n == 2 else np.ones(n)) if b is None else _vector("b", b, n)
    y0 = np.zeros(n) if y0 is None else _vector("y0", y0, n)
    t = np.linspace(0.0, 3.0, 7) if t is None else _times(t)
    params = np.concatenate([a.ravel(), b, [float(omega)]])
    return Problem("forced_linear", FORCED_LINEAR_FIELD, y0, params, t, _forced_exact_solution,
                   _forced_exact_gradient, f"y' = A y + b cos(omega t), {n}-D; params = [A.ravel(), b, omega]")


def toy(a: float = 0.2, z0: float = 10.0, T: float = 20.0) -> Problem:
    """The paper's toy problem dz/dt = a·z, ``params = [a]``, ``y0 = [z0]``, ``t = [0, T]``.

    The paper's loss is L = z(T)²; :func:`toy_loss_gradient` gives its cotangent dL_dy = [[0], [2 z(T)]]. With it,
    dL/dz0 = 2 z0 e^{2aT} and dL/da = 2 T z0² e^{2aT}.
    """
    return Problem("toy", SCALE_FIELD, [z0], [a], [0.0, T], _scale_exact_solution, _scale_exact_gradient,
                   "dz/dt = a z (Norcliffe & Deisenroth's toy); params = [a]; loss z(T)^2")


def toy_loss_gradient(problem: Problem) -> np.ndarray:
    """∂L/∂ys for the toy's loss L = z(t_last)²: the cotangent ``dL_dy`` (shape of ys) to pass to a gradient."""
    if problem.exact_solution is None:
        raise InputError(f"toy_loss_gradient needs a closed-form problem; {problem.name!r} has none")
    ys = problem.exact_solution(problem.y0, problem.params, problem.t)
    dl_dy = np.zeros_like(ys)
    dl_dy[-1] = 2.0 * ys[-1]
    return dl_dy


def harmonic_oscillator(omega: float = 2.0, gamma: float = 0.1, y0: ArrayLike = (1.0, 0.0),
                        t: ArrayLike | None = None) -> Problem:
    """x'' = −ω² x − γ x' as y = [x, x'], ``params = [omega, gamma]``; default t = 0, 1, …, 10.

    Exact through the linear machinery with A = [[0, 1], [−ω², −γ]] and the chain rule for ω and γ.
    """
    t = np.linspace(0.0, 10.0, 11) if t is None else _times(t)
    return Problem("harmonic_oscillator", OSCILLATOR_FIELD, _vector("y0", y0, 2), [omega, gamma], t,
                   _oscillator_exact_solution, _oscillator_exact_gradient,
                   "damped harmonic oscillator x'' = -omega^2 x - gamma x'; y = [x, x']; params = [omega, gamma]")


def time_dependent_scalar(p0: float = 1.0, p1: float = 2.0, y0: ArrayLike = (1.0,), t: ArrayLike | None = None
                          ) -> Problem:
    """y' = p0·cos(p1·t)·y (componentwise), ``params = [p0, p1]`` (p1 ≠ 0); default y0 = [1], t = 0, 0.5, …, 3.

    Non-autonomous, so ∂f/∂t enters dL/dt0: y(t) = y0·exp(p0/p1·(sin(p1 t) − sin(p1 t0))).
    """
    if p1 == 0.0:
        raise InputError("time_dependent_scalar needs p1 != 0 (the closed form divides by it)")
    t = np.linspace(0.0, 3.0, 7) if t is None else _times(t)
    return Problem("time_dependent_scalar", COSINE_FIELD, _vector("y0", y0), [p0, p1], t, _cosine_exact_solution,
                   _cosine_exact_gradient, "y' = p0 cos(p1 t) y; params = [p0, p1]")


CUBIC_SPIRAL_A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def cubic_spiral(a: ArrayLike | None = None, y0: ArrayLike = (2.0, 0.0), t: ArrayLike | None = None) -> Problem:
    """torchdiffeq's ``ode_demo``: y' = (y³) @ A, ``params = A.ravel()`` (row-major), A = [[−0.1, 2], [−2, −0.1]].

    Default y0 = [2, 0], t = linspace(0, 25, 1000) as in the demo. Works for any n with an n×n A.
    """
    a = CUBIC_SPIRAL_A if a is None else np.array(a, dtype=np.float64)
    y0 = _vector("y0", y0)
    if a.shape != (y0.size, y0.size):
        raise InputError(f"A must be {y0.size}x{y0.size} for y0 of size {y0.size}, got shape {a.shape}")
    t = np.linspace(0.0, 25.0, 1000) if t is None else _times(t)
    return Problem("cubic_spiral", CUBIC_FIELD, y0, a.ravel(), t, None, None,
                   "torchdiffeq's spiral y' = (y**3) @ A; params = A.ravel()")


def lotka_volterra(alpha: float = 1.5, beta: float = 1.0, delta: float = 1.0, gamma: float = 3.0,
                   y0: ArrayLike = (10.0, 5.0), t: ArrayLike | None = None) -> Problem:
    """Predator–prey x' = αx − βxy, y' = δxy − γy, ``params = [alpha, beta, delta, gamma]``; t = 0, 0.5, …, 15."""
    t = np.linspace(0.0, 15.0, 31) if t is None else _times(t)
    return Problem("lotka_volterra", LOTKA_FIELD, _vector("y0", y0, 2), [alpha, beta, delta, gamma], t, None, None,
                   "Lotka-Volterra; params = [alpha, beta, delta, gamma]")


def van_der_pol(mu: float = 1.0, y0: ArrayLike = (2.0, 0.0), t: ArrayLike | None = None) -> Problem:
    """x'' = μ(1 − x²)x' − x as y = [x, x'], ``params = [mu]``; default t = 0, 1, …, 10."""
    t = np.linspace(0.0, 10.0, 11) if t is None else _times(t)
    return Problem("van_der_pol", VAN_DER_POL_FIELD, _vector("y0", y0, 2), [mu], t, None, None,
                   "Van der Pol oscillator; params = [mu]")


def pack_mlp(w1: ArrayLike, b1: ArrayLike, w2: ArrayLike, b2: ArrayLike) -> np.ndarray:
    """The MLP parameter vector [W1.ravel(), b1, W2.ravel(), b2] (row-major; W1 is width × d_in, W2 is S × width)."""
    w1, w2 = np.asarray(w1, dtype=np.float64), np.asarray(w2, dtype=np.float64)
    b1, b2 = np.asarray(b1, dtype=np.float64), np.asarray(b2, dtype=np.float64)
    width, s = w1.shape[0], w2.shape[0]
    if w1.ndim != 2 or b1.shape != (width,) or w2.shape != (s, width) or b2.shape != (s,):
        raise InputError(f"inconsistent MLP shapes: W1 {w1.shape}, b1 {b1.shape}, W2 {w2.shape}, b2 {b2.shape}")
    return np.concatenate([w1.ravel(), b1, w2.ravel(), b2])


def unpack_mlp(params: ArrayLike, state_dim: int, time_dependent: bool = False) -> tuple[np.ndarray, ...]:
    """(W1, b1, W2, b2) from an MLP parameter vector; the inverse of :func:`pack_mlp`."""
    params = np.asarray(params)
    d_in = state_dim + int(time_dependent)
    width, rest = divmod(params.size - state_dim, d_in + 1 + state_dim)
    if rest or width < 1:
        raise InputError(f"{params.size} parameters are not an MLP with state {state_dim} and d_in {d_in}")
    o_b1, o_w2 = width * d_in, width * d_in + width
    o_b2 = o_w2 + state_dim * width
    return (params[:o_b1].reshape(width, d_in), params[o_b1:o_w2], params[o_w2:o_b2].reshape(state_dim, width),
            params[o_b2:])


def mlp(width: int | None = None, seed: int = 0, state_dim: int = 2, time_dependent: bool = False,
        weights: ArrayLike | Sequence[ArrayLike] | None = None, y0: ArrayLike | None = None,
        t: ArrayLike | None = None) -> Problem:
    """The paper's model family f(t, y) = W2·softplus(W1·u + b1) + b2, u = y or [y, t] (``time_dependent``).

    ``params = [W1.ravel(), b1, W2.ravel(), b2]`` (row-major; W1 is width × d_in with d_in = S (+ 1), W2 is
    S × width), see :func:`pack_mlp`. ``weights``: that flat vector or a (W1, b1, W2, b2) tuple (the width follows
    from it); otherwise drawn from ``seed`` like torch.nn.Linear, U(±1/√fan_in), with width 16 by default. Default
    y0 ~ N(0, 1) from the same generator, t = 0, 0.25, …, 1. The VJPs are hand-derived (softplus′ = logistic).
    """
    if state_dim < 1 or (width is not None and width < 1):
        raise InputError(f"width and state_dim must be positive, got {width} and {state_dim}")
    d_in = state_dim + int(time_dependent)
    rng = np.random.default_rng(seed)
    if weights is None:
        width = 16 if width is None else width
        bound1, bound2 = 1.0 / np.sqrt(d_in), 1.0 / np.sqrt(width)
        params = pack_mlp(rng.uniform(-bound1, bound1, (width, d_in)), rng.uniform(-bound1, bound1, width),
                          rng.uniform(-bound2, bound2, (state_dim, width)), rng.uniform(-bound2, bound2, state_dim))
    elif isinstance(weights, np.ndarray) and weights.ndim == 1:
        params = np.array(weights, dtype=np.float64)
    elif isinstance(weights, Sequence) and len(weights) == 4:
        params = pack_mlp(*weights)
    else:
        raise InputError("weights must be a flat parameter vector or a (W1, b1, W2, b2) tuple")
    drawn_width = unpack_mlp(params, state_dim, time_dependent)[0].shape[0]
    if width is not None and drawn_width != width:
        raise InputError(f"weights describe width {drawn_width}, not {width}")
    y0 = rng.standard_normal(state_dim) if y0 is None else _vector("y0", y0, state_dim)
    t = np.linspace(0.0, 1.0, 5) if t is None else _times(t)
    name = "mlp_time_dependent" if time_dependent else "mlp"
    return Problem(name, MLP_TIME_FIELD if time_dependent else MLP_FIELD, y0, params, t, None, None,
                   f"softplus MLP, state {state_dim}, width {drawn_width}; params = [W1.ravel(), b1, W2.ravel(), b2]")


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "linear": linear,
    "forced_linear": forced_linear,
    "toy": toy,
    "harmonic_oscillator": harmonic_oscillator,
    "time_dependent_scalar": time_dependent_scalar,
    "cubic_spiral": cubic_spiral,
    "lotka_volterra": lotka_volterra,
    "van_der_pol": van_der_pol,
    "mlp": mlp,
    "mlp_time_dependent": partial(mlp, time_dependent=True),
}
