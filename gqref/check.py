"""``gqref.check_gradient``: hold another solver's gradients against gqref's oracle and report the differences.

The reference gradient, and how far it can be trusted:

- **Closed form** (linear, toy, oscillator, time-dependent scalar, …): exact up to the roundoff of the matrix
  exponential, stated as :data:`CLOSED_FORM_ERROR` times the gradient's scale.
- **Otherwise, two independent computations that must agree.** (1) A forward-sensitivity solve: y, ∂y/∂y0 and
  ∂y/∂p integrated together, their derivatives by complex step through f alone (J·v = Im f(y + i·h·v)/h, one
  evaluation per column, exact to roundoff), so the step control sees the sensitivities themselves; dL/dt_i =
  f(t_i, y_i)·dL/dy_i for i ≥ 1 and dL/dt_0 = −Σ_{i≥1} dL/dy_iᵀ·(∂y_i/∂y0)·f(t_0, y0), which needs no ∂f/∂t.
  (2) The continuous adjoint, a backward solve built from the field's VJPs. Each runs at rtol = atol =
  :data:`REFERENCE_RTOL` and 100× looser; the difference between the two estimates its error (the global error of
  dopri5 scales with the tolerance, so the looser run's error, ≈ 100× the tighter's, dominates the difference), and
  :data:`ESTIMATE_SAFETY` times that estimate is the stated bound, plus a roundoff floor of 100·ε·(steps + 10)·scale.
  The reference is the forward-sensitivity value with that error; if the adjoint disagrees with it by more than the
  two error bounds together, the reference is flagged unreliable and no verdict is given.

Why not the frozen-step ("discrete") derivative: it is the derivative of one discrete map, whose step sizes the
controller chose for the state alone. At an equilibrium the state has no error at all, the steps grow huge, and that
map's derivative is far from the flow's (Van der Pol from y0 = [0, 0]: dL/dy0 = [−3033.8, 2477.2] against the flow's
[−18.82, 4.75]). The forward-sensitivity solve controls the error of the derivatives themselves.

The verdict (:meth:`GradientReport.verdict`): a component passes when max |candidate − reference| ≤
max(rtol·scale_c, atol), with scale_c = max |reference_c| and atol defaulting to rtol·G, G = the largest
|reference| over all components. Why the floor: a solver run at relative tolerance rtol makes errors of order rtol
times the sensitivities it integrates, and G is their size, so a component that is small only by cancellation
(a tiny y0 makes dL/dt tiny) is not held to a precision no solver aims at. The reference must be 10× tighter than
that criterion on every component, or the verdict is "unsure" and :meth:`GradientReport.passed` raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gqref.arguments import finite_array, non_negative_float, positive_float
from gqref.errors import GQError, InputError
from gqref.field import COMPLEX_STEP, VectorField, complete_vjps, probe_complex_step
from gqref.gradient import gradient
from gqref.solve import solve

REFERENCE_RTOL = 1e-12
REFERENCE_ATOL = 1e-12
LOOSE_FACTOR = 100.0
"""The second run of each numerical reference is this much looser; their difference bounds the tight run's error."""
ESTIMATE_SAFETY = 10.0
"""|tight − loose| estimates the tight run's error only as far as the error is proportional to the tolerance; at
1e-12 that is not exact (drawn MLP problems showed the adjoint and the forward sensitivity 5× further apart than
their two estimates together), so the stated bound is this multiple of the estimate, plus roundoff. A wrong VJP is
off by O(1) of the gradient, far beyond it."""

CLOSED_FORM_ERROR = 1e-12
"""Stated error of a closed form relative to the gradient's scale: expm/expm_frechet are accurate to a modest
multiple of ε·‖τA‖·cond, far below this for the problems' bounded spans and matrices (they agree with the
forward-sensitivity reference to ~1e-11, tested)."""

REFERENCE_MARGIN = 10.0
"""A verdict needs the reference this many times more accurate than the criterion, so that its error cannot move
a measured error by more than 10% of the allowance."""

COMPONENTS = ("dL_dy0", "dL_dparams", "dL_dt")


class UnreliableReferenceError(GQError):
    """The reference cannot be trusted to the accuracy a verdict needs; the message says why and how far."""


@dataclass(frozen=True)
class Reference:
    """A reference gradient with a bound on its error per component (max-abs), where it came from, and whether
    its independent computations agreed (``trusted``; ``note`` says what disagreed otherwise)."""

    dL_dy0: np.ndarray
    dL_dparams: np.ndarray
    dL_dt: np.ndarray
    errors: tuple[float, float, float]
    source: str
    trusted: bool = True
    note: str = ""

    @property
    def values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.dL_dy0, self.dL_dparams, self.dL_dt


@dataclass(frozen=True)
class ComponentError:
    name: str
    max_abs_error: float
    reference_scale: float
    reference_error: float = 0.0

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
    reference_trusted: bool = True
    reference_note: str = ""
    gradient_scale: float = 0.0
    """G: the largest |reference| over every component of the reference (offered or not)."""

    @property
    def worst(self) -> float:
        """The largest per-component relative error (no floor)."""
        return max(c.relative for c in self.components)

    def allowed(self, rtol: float, atol: float | None = None) -> dict[str, float]:
        """The max-abs error each component may have: max(rtol·scale_c, atol), atol = rtol·G by default."""
        rtol = positive_float("rtol", rtol)
        atol = rtol * self.gradient_scale if atol is None else non_negative_float("atol", atol)
        return {c.name: max(rtol * c.reference_scale, atol) for c in self.components}

    def verdict(self, rtol: float, atol: float | None = None) -> str:
        """"pass", "fail", or "unsure" (the reference is not 10× tighter than the criterion, or it is unreliable)."""
        allowed = self.allowed(rtol, atol)
        if not self.reference_trusted or any(c.reference_error * REFERENCE_MARGIN > allowed[c.name]
                                             for c in self.components):
            return "unsure"
        return "pass" if all(c.max_abs_error <= allowed[c.name] for c in self.components) else "fail"

    def passed(self, rtol: float, atol: float | None = None) -> bool:
        """True when every component is within max(rtol·scale_c, atol) (atol = rtol·G by default, see the module
        docstring); raises :class:`UnreliableReferenceError` when the reference cannot support a verdict."""
        verdict = self.verdict(rtol, atol)
        if verdict == "unsure":
            raise UnreliableReferenceError(self._unsure_reason(rtol, atol) + "\n" + str(self))
        return verdict == "pass"

    def _unsure_reason(self, rtol: float, atol: float | None) -> str:
        if not self.reference_trusted:
            return f"the reference for {self.problem!r} is unreliable: {self.reference_note}"
        allowed = self.allowed(rtol, atol)
        worst = max(self.components, key=lambda c: c.reference_error / allowed[c.name] if allowed[c.name] else np.inf)
        return (f"the reference's {worst.name} is only accurate to {worst.reference_error:.3e}, not "
                f"{REFERENCE_MARGIN:g}x below the allowed error {allowed[worst.name]:.3e} at rtol = {rtol:g}: "
                "no verdict at this tolerance")

    def __str__(self) -> str:
        lines = [f"gradient check on {self.problem!r} against the {self.reference}"]
        if not self.reference_trusted:
            lines.append(f"REFERENCE UNRELIABLE: {self.reference_note}")
        lines += [f"gradient scale G = {self.gradient_scale:.3e}",
                  "| component | relative error | max abs error | reference scale | reference error |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.relative:.3e} | {c.max_abs_error:.3e} | {c.reference_scale:.3e} | "
                  f"{c.reference_error:.3e} |" for c in self.components]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# The numerical reference.


def _sensitivity_rhs(field: VectorField, n: int, n_params: int, complex_step: bool) -> Callable:
    """d/dt [y, Y = ∂y/∂y0 (n×n, row-major), Q = ∂y/∂p (n×P)] = [f, J·Y, J·Q + ∂f/∂p].

    By complex step (``complex_step``), column k of J·Y is Im f(t, y + i·h·Y[:, k], p)/h and column k of J·Q + ∂f/∂p
    is Im f(t, y + i·h·Q[:, k], p + i·h·e_k)/h: 1 + n + P evaluations of f, nothing else. Otherwise J and ∂f/∂p are
    assembled from the VJPs with unit cotangents (2n VJP calls)."""
    h = COMPLEX_STEP
    f = field.f

    def rhs(t, x, p):
        y = x[:n]
        sens = x[n:].reshape(n, n + n_params)  # [Y | Q], row i = ∂y_i/∂(y0, p)
        out = np.empty_like(x)
        out[:n] = np.asarray(f(t, y, p), dtype=np.float64)
        d_sens = out[n:].reshape(n, n + n_params)
        if complex_step:
            tc, pc = complex(t), p.astype(np.complex128)
            for k in range(n + n_params):
                if k >= n:
                    pc[k - n] += 1j * h
                d_sens[:, k] = np.imag(np.asarray(f(tc, y + 1j * h * sens[:, k], pc))) / h
                if k >= n:
                    pc[k - n] = p[k - n]
        else:
            jac = np.empty((n, n))
            jac_p = np.empty((n, n_params))
            for i in range(n):
                e = np.zeros(n)
                e[i] = 1.0
                jac[i] = np.asarray(field.vjp_y(t, y, p, e)).reshape(-1)
                jac_p[i] = np.asarray(field.vjp_p(t, y, p, e)).reshape(-1)
            d_sens[:, :n] = jac @ sens[:, :n]
            d_sens[:, n:] = jac @ sens[:, n:] + jac_p
        return out

    return rhs


def _forward_sensitivity(field, y0, t, params, dL_dy, rtol, atol, complex_step):
    n, n_params = y0.size, params.size
    x0 = np.concatenate([y0, np.hstack([np.eye(n), np.zeros((n, n_params))]).ravel()])
    sol = solve(VectorField(_sensitivity_rhs(field, n, n_params, complex_step)), x0, t, params, rtol=rtol,
                atol=atol, max_steps=1_000_000)
    ys = sol.ys[:, :n]
    sens = sol.ys[:, n:].reshape(len(t), n, n + n_params)
    dy0 = np.einsum("ij,ijk->k", dL_dy, sens[:, :, :n])
    dp = np.einsum("ij,ijk->k", dL_dy, sens[:, :, n:])
    dt = np.array([float(np.dot(np.asarray(field.f(ti, yi, params), dtype=np.float64), ci))
                   for ti, yi, ci in zip(t, ys, dL_dy)])
    # y_i moves with t_0 by −Φ(t_i, t_0)·f(t_0, y0): no ∂f/∂t needed (y_0 itself is held fixed)
    dt[0] = -float(np.dot(dy0 - dL_dy[0], np.asarray(field.f(t[0], y0, params), dtype=np.float64)))
    return (dy0, dp, dt), sol.stats.n_accepted + sol.stats.n_rejected


def _adjoint(field, y0, t, params, dL_dy, rtol, atol):
    g = gradient(field, y0, t, params, dL_dy, method="adjoint", rtol=rtol, atol=atol, max_steps=1_000_000)
    steps = g.diagnostics.steps_forward + g.diagnostics.steps_backward
    return (g.dL_dy0, g.dL_dparams, g.dL_dt), steps


def _with_error(run: Callable, scale_hint: float) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """run(rtol, atol) at the reference tolerance and LOOSE_FACTOR× looser: the tight values and a per-component
    error bound, ESTIMATE_SAFETY·|tight − loose| + 100·ε·(steps + 10)·G: roundoff, each step rounding its 7 stage
    evaluations and the sums over them (tens of ε relative to the scale) and accumulating at most linearly over the
    steps."""
    tight, steps = run(REFERENCE_RTOL, REFERENCE_ATOL)
    loose, _ = run(LOOSE_FACTOR * REFERENCE_RTOL, LOOSE_FACTOR * REFERENCE_ATOL)
    scale = max(scale_hint, max(float(np.max(np.abs(v), initial=0.0)) for v in tight))
    roundoff = 100.0 * np.finfo(np.float64).eps * (steps + 10) * scale
    errors = np.array([ESTIMATE_SAFETY * float(np.max(np.abs(a - b), initial=0.0)) + roundoff
                       for a, b in zip(tight, loose)])
    return tight, errors


def reference_gradient(problem, dL_dy=None, *, numerical: bool = False) -> Reference:
    """The oracle's gradient of L = Σ_i dL_dy[i]·y(t_i) for ``problem`` with a bound on its error (see the module
    docstring). ``numerical=True`` uses the numerical references even where a closed form exists (to test them)."""
    y0, t, params = (np.asarray(problem.y0, dtype=np.float64), np.asarray(problem.t, dtype=np.float64),
                     np.asarray(problem.params, dtype=np.float64))
    dL_dy = _cotangent(dL_dy, t, y0)
    if problem.exact_gradient is not None and not numerical:
        values = tuple(np.asarray(v, dtype=np.float64) for v in problem.exact_gradient(y0, params, t, dL_dy))
        scale = max(float(np.max(np.abs(v), initial=0.0)) for v in values)
        error = CLOSED_FORM_ERROR * scale
        return Reference(*values, errors=(error, error, error), source="closed form")
    field = problem.field
    try:
        probe_complex_step(field.f, float(t[0]), y0, params)
        complex_step = True
    except InputError:  # a real-only f: the sensitivities are assembled from its VJPs instead
        complex_step = False
    field, _ = complete_vjps(field, float(t[0]), y0, params)
    forward, forward_error = _with_error(
        lambda r, a: _forward_sensitivity(field, y0, t, params, dL_dy, r, a, complex_step), 0.0)
    scale = max(float(np.max(np.abs(v), initial=0.0)) for v in forward)
    adjoint, adjoint_error = _with_error(lambda r, a: _adjoint(field, y0, t, params, dL_dy, r, a), scale)
    gap = np.array([float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(forward, adjoint)])
    disagree = gap > forward_error + adjoint_error
    how = "complex step through f" if complex_step else "the field's VJPs"
    source = (f"forward-sensitivity solve ({how}) at rtol = atol = {REFERENCE_RTOL:g}, cross-checked by the "
              "continuous adjoint")
    note = ""
    if disagree.any():
        note = "; ".join(f"{name}: forward sensitivity and adjoint differ by {g:.3e}, more than their error bounds "
                         f"{fe:.3e} + {ae:.3e}" for name, g, fe, ae, bad in
                         zip(COMPONENTS, gap, forward_error, adjoint_error, disagree) if bad)
        note += " (are the field's VJPs consistent with f? is the flow ill-conditioned over this span?)"
    errors = np.where(disagree, gap + forward_error + adjoint_error, forward_error)
    return Reference(*forward, errors=tuple(float(e) for e in errors), source=source, trusted=not disagree.any(),
                     note=note)


def _cotangent(dL_dy, t: np.ndarray, y0: np.ndarray) -> np.ndarray:
    shape = (len(t), *y0.shape)
    if dL_dy is None:
        return np.ones(shape)
    return finite_array("dL_dy", dL_dy, shape=shape, shape_of="ys")


def check_gradient(candidate: Callable, problem, dL_dy=None, *, reference: Reference | None = None
                   ) -> GradientReport:
    """Compare ``candidate(field, y0, t, params, dL_dy) -> (dL_dy0, dL_dparams, dL_dt or None)`` with gqref.

    ``problem`` is a :class:`gqref.problems.Problem`. The reference (:func:`reference_gradient`, unless given) is
    its closed form when it has one, else a forward-sensitivity solve cross-checked by the adjoint, each with an
    error bound; ``report.passed(rtol)`` applies the absolute floor of the module docstring and raises
    :class:`UnreliableReferenceError` rather than give a verdict the reference cannot support. ``dL_dy``
    defaults to ones (the loss Σ y(t_i)).
    """
    y0, t, params = np.asarray(problem.y0), np.asarray(problem.t), np.asarray(problem.params)
    dL_dy = _cotangent(dL_dy, t, y0)
    if reference is None:
        reference = reference_gradient(problem, dL_dy)
    result = candidate(problem.field, y0, t, params, dL_dy)
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise InputError("candidate must return (dL_dy0, dL_dparams, dL_dt or None)")
    return compare(problem.name, result, reference)


def compare(name: str, result, reference: Reference) -> GradientReport:
    """The report of ``result`` = (dL_dy0, dL_dparams, dL_dt or None) against ``reference``."""
    components = []
    for component, got, want, ref_error in zip(COMPONENTS, result, reference.values, reference.errors):
        if got is None:
            continue
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            raise InputError(f"candidate's {component} has shape {got.shape}; expected {want.shape}")
        scale = float(np.max(np.abs(want))) if want.size else 0.0
        error = float(np.max(np.abs(got - want))) if want.size else 0.0
        if not np.isfinite(error):
            error = np.inf
        components.append(ComponentError(component, error, scale, float(ref_error)))
    gradient_scale = max(float(np.max(np.abs(v), initial=0.0)) for v in reference.values)
    return GradientReport(problem=name, reference=reference.source, components=tuple(components),
                          reference_trusted=reference.trusted, reference_note=reference.note,
                          gradient_scale=gradient_scale)
