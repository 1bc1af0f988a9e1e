"""Check a torch ODE solver's gradients against gqref's oracle: :func:`check_odeint`, :func:`problem`, :func:`problems`.

For developers of torchdiffeq-like solvers (a hypothesis test, 6 lines)::

    import torchdiffeq, gqtorch.testing as T
    from hypothesis import given

    @given(T.problems())
    def test_my_solver(problem):
        report = T.check_odeint(torchdiffeq.odeint_adjoint, problem, rtol=1e-10, atol=1e-10)
        assert report.passed(1e-5), str(report)

A :class:`TorchProblem` is the torch twin of a :mod:`gqref.problems` problem: ``field`` is an ``nn.Module`` written in
plain torch ops (differentiable by autograd, ``torch.func.vmap``-compatible) whose parameters, flattened in
``parameters()`` order, are exactly the gqref problem's ``params`` (:meth:`TwinField.flat_params`); ``y0``, ``t`` and
the loss cotangent ``dL_dy`` are float64 tensors, and ``reference`` is the oracle's gradient of
L = Σ_i dL_dy[i]·y(t_i) (:func:`gqref.check.reference_gradient`: the closed form where one exists, else a
forward-sensitivity solve cross-checked by the adjoint, each with an error bound). :func:`problem` builds one by name,
:func:`problems` draws them with hypothesis (from :func:`gqref.strategies.problems`, so every draw is
non-degenerate).

:func:`check_odeint` runs the solver from ``y0`` over ``t`` (both requiring grad) and compares its solution and its
gradients with respect to y0, the parameters and t with the reference. Verdicts use the rule of
:meth:`gqref.check.GradientReport.passed`: max-abs error ≤ max(rtol·scale_c, rtol·G) per component, G the largest
reference magnitude, and no verdict ("unsure") where the reference is not 10× tighter than that.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from gqref import problems as pr
from gqref.check import (
    LOOSE_FACTOR,
    REFERENCE_ATOL,
    REFERENCE_RTOL,
    ComponentError,
    GradientReport,
    Reference,
    compare,
    reference_gradient,
)
from gqref.errors import InputError
from gqref.field import complete_vjps
from gqref.solve import solve

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = [
    "OdeintReport",
    "TorchField",
    "TorchProblem",
    "TwinField",
    "check_odeint",
    "default_problems",
    "problem",
    "problems",
    "twin",
    "twin_field",
]


def default_problems() -> list[pr.Problem]:
    """Closed-form problems of every kind (the time-dependent one exercises dL/dt0's ∂f/∂t term) and Van der Pol,
    which has none (its reference is numerical)."""
    return [pr.linear(), pr.toy(a=0.2, z0=1.0, T=3.0), pr.harmonic_oscillator(t=np.linspace(0.0, 3.0, 4)),
            pr.time_dependent_scalar(), pr.van_der_pol(t=np.linspace(0.0, 3.0, 4))]


# ---------------------------------------------------------------------------------------------------------------
# Torch twins of gqref's fields: the same formulas in torch ops. Every forward takes y of shape (..., S) and a scalar
# t, so it serves a solver's call, a batch, and torch.func.vmap alike.


def _parameter(value) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=torch.float64).clone())


class TwinField(torch.nn.Module):
    """Base of the twins: ``flat_params()`` is the gqref problem's ``params``, exactly (registration order)."""

    def flat_params(self) -> torch.Tensor:
        """The parameters flattened and concatenated in ``parameters()`` order: gqref's flat ``params``."""
        return torch.cat([p.reshape(-1) for p in self.parameters()])

    def gqref_gradient(self, grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Per-parameter gradients (``parameters()`` order, None for unused) as one vector in gqref's layout."""
        return torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
                          for p, g in zip(self.parameters(), grads)])


class LinearField(TwinField):
    """y' = A y + b; params = [A.ravel() (row-major), b]."""

    def __init__(self, params: np.ndarray, state_dim: int):
        super().__init__()
        n = state_dim
        self.A = _parameter(np.reshape(params[: n * n], (n, n)))
        self.b = _parameter(params[n * n:])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ self.A.T + self.b


class ForcedLinearField(TwinField):
    """y' = A y + b·cos(ω t); params = [A.ravel() (row-major), b, ω]."""

    def __init__(self, params: np.ndarray, state_dim: int):
        super().__init__()
        n = state_dim
        self.A = _parameter(np.reshape(params[: n * n], (n, n)))
        self.b = _parameter(params[n * n: n * n + n])
        self.omega = _parameter(params[n * n + n])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        forcing = torch.cos(self.omega * torch.as_tensor(t, dtype=y.dtype))
        return y @ self.A.T + self.b * forcing


class ScaleField(TwinField):
    """The toy y' = a·y; params = [a]."""

    def __init__(self, params: np.ndarray):
        super().__init__()
        self.a = _parameter(params[0])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a * y


class OscillatorField(TwinField):
    """x'' = −ω² x − γ x' as y = [x, x']; params = [ω, γ]."""

    def __init__(self, params: np.ndarray):
        super().__init__()
        self.omega, self.gamma = _parameter(params[0]), _parameter(params[1])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, -self.omega * self.omega * x - self.gamma * v], dim=-1)


class CosineField(TwinField):
    """y' = p0·cos(p1·t)·y; params = [p0, p1]."""

    def __init__(self, params: np.ndarray):
        super().__init__()
        self.p0, self.p1 = _parameter(params[0]), _parameter(params[1])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.p0 * torch.cos(self.p1 * torch.as_tensor(t, dtype=y.dtype)) * y


class CubicField(TwinField):
    """torchdiffeq's spiral y' = (y³) @ A; params = A.ravel() (row-major)."""

    def __init__(self, params: np.ndarray, state_dim: int):
        super().__init__()
        self.A = _parameter(np.reshape(params, (state_dim, state_dim)))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (y * y * y) @ self.A  # y·y·y as gqref writes it (pow rounds differently)


class LotkaVolterraField(TwinField):
    """x' = αx − βxy, y' = δxy − γy; params = [α, β, δ, γ]."""

    def __init__(self, params: np.ndarray):
        super().__init__()
        self.alpha, self.beta, self.delta, self.gamma = (_parameter(v) for v in params)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, z = y[..., 0], y[..., 1]
        xz = x * z
        return torch.stack([self.alpha * x - self.beta * xz, self.delta * xz - self.gamma * z], dim=-1)


class VanDerPolField(TwinField):
    """x'' = μ(1 − x²)x' − x as y = [x, x']; params = [μ]."""

    def __init__(self, params: np.ndarray):
        super().__init__()
        self.mu = _parameter(params[0])

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, self.mu * (1.0 - x * x) * v - x], dim=-1)


class MLPField(TwinField):
    """f = W2·softplus(W1·u + b1) + b2, u = y or [y, t]; params = [W1.ravel(), b1, W2.ravel(), b2]."""

    def __init__(self, params: np.ndarray, state_dim: int, time_dependent: bool):
        super().__init__()
        w1, b1, w2, b2 = pr.unpack_mlp(params, state_dim, time_dependent)
        self.time_dependent = time_dependent
        self.W1, self.b1, self.W2, self.b2 = _parameter(w1), _parameter(b1), _parameter(w2), _parameter(b2)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        u = y
        if self.time_dependent:
            u = torch.cat([y, torch.as_tensor(t, dtype=y.dtype).expand(*y.shape[:-1], 1)], dim=-1)
        z = u @ self.W1.T + self.b1
        # softplus as log(eᶻ + 1): stable both ways, and its derivative at z = 0 is ½ (a relu + log1p(e^−|z|) split
        # is not differentiable there, and drawn weights do produce z = 0 exactly)
        return torch.logaddexp(z, torch.zeros_like(z)) @ self.W2.T + self.b2


_TWINS: tuple[tuple[object, Callable[[pr.Problem], TwinField]], ...] = (
    (pr.LINEAR_FIELD, lambda p: LinearField(p.params, p.state_dim)),
    (pr.FORCED_LINEAR_FIELD, lambda p: ForcedLinearField(p.params, p.state_dim)),
    (pr.SCALE_FIELD, lambda p: ScaleField(p.params)),
    (pr.OSCILLATOR_FIELD, lambda p: OscillatorField(p.params)),
    (pr.COSINE_FIELD, lambda p: CosineField(p.params)),
    (pr.CUBIC_FIELD, lambda p: CubicField(p.params, p.state_dim)),
    (pr.LOTKA_FIELD, lambda p: LotkaVolterraField(p.params)),
    (pr.VAN_DER_POL_FIELD, lambda p: VanDerPolField(p.params)),
    (pr.MLP_FIELD, lambda p: MLPField(p.params, p.state_dim, False)),
    (pr.MLP_TIME_FIELD, lambda p: MLPField(p.params, p.state_dim, True)),
)


# ---------------------------------------------------------------------------------------------------------------
# The numpy bridge, for gqref problems whose field has no twin (a user's own VectorField).


class _NumpyField(torch.autograd.Function):
    """f(t, y, theta) in numpy, with the problem's VJPs as its backward (float64, CPU)."""

    @staticmethod
    def forward(ctx, t, y, theta, field):
        ctx.field = field
        ctx.save_for_backward(t, y, theta)
        value = field.f(float(t), y.detach().cpu().numpy(), theta.detach().cpu().numpy())
        return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=y.dtype, device=y.device)

    @staticmethod
    def backward(ctx, grad):
        t, y, theta = ctx.saved_tensors
        field = ctx.field
        args = (float(t), y.detach().cpu().numpy(), theta.detach().cpu().numpy(), grad.detach().cpu().numpy())
        grad_t = torch.as_tensor(float(field.vjp_t(*args)), dtype=t.dtype, device=t.device)
        grad_y = torch.as_tensor(np.asarray(field.vjp_y(*args), dtype=np.float64), dtype=y.dtype, device=y.device)
        grad_theta = torch.as_tensor(np.asarray(field.vjp_p(*args), dtype=np.float64), dtype=theta.dtype,
                                     device=theta.device)
        return grad_t.reshape(t.shape), grad_y.reshape(y.shape), grad_theta, None


class TorchField(TwinField):
    """Any gqref problem's field as ``func(t, y)`` with one parameter ``theta`` = the problem's params (float64).

    Differentiable in t, y and theta through the field's VJPs (missing ones derived by complex step, as
    :func:`gqref.gradient` does). Not vmap-compatible (gqtorch then evaluates its nodes one by one), and one state
    at a time: :func:`twin_field` uses it only for fields without a torch twin."""

    def __init__(self, problem: pr.Problem):
        super().__init__()
        self.problem = problem
        self.theta = torch.nn.Parameter(torch.tensor(problem.params, dtype=torch.float64))
        self._field = complete_vjps(problem.field, float(problem.t[0]), problem.y0, problem.params)[0]

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _NumpyField.apply(torch.as_tensor(t, dtype=y.dtype), y, self.theta, self._field)


def twin_field(problem: pr.Problem) -> TwinField:
    """A fresh torch field for ``problem``: its plain-torch twin when gqref's field is one of
    :mod:`gqref.problems`' (matched by identity), else the numpy bridge :class:`TorchField`."""
    for field, build in _TWINS:
        if problem.field is field:
            return build(problem)
    return TorchField(problem)


# ---------------------------------------------------------------------------------------------------------------
# Problems.

# References keyed by the problem's content: hypothesis draws the same examples for every solver under test, and a
# numerical reference costs far more than a solve at the solver's tolerance.
_REFERENCE_CACHE: OrderedDict[tuple, tuple[Reference, tuple[np.ndarray, float]]] = OrderedDict()
_REFERENCE_CACHE_SIZE = 2048


def _oracle(problem: pr.Problem, dL_dy: np.ndarray) -> tuple[Reference, tuple[np.ndarray, float]]:
    key = (problem.field, problem.y0.tobytes(), problem.params.tobytes(), problem.t.tobytes(), dL_dy.tobytes(),
           problem.exact_gradient is None)
    if key in _REFERENCE_CACHE:
        _REFERENCE_CACHE.move_to_end(key)
        return _REFERENCE_CACHE[key]
    value = (reference_gradient(problem, dL_dy), _solution_reference(problem))
    _REFERENCE_CACHE[key] = value
    while len(_REFERENCE_CACHE) > _REFERENCE_CACHE_SIZE:
        _REFERENCE_CACHE.popitem(last=False)
    return value


def _solution_reference(problem: pr.Problem) -> tuple[np.ndarray, float]:
    """y(t_i) and a bound on its error: the closed form (roundoff, stated as the closed-form gradient's), else
    gqref.solve at the oracle's tolerance with its difference from a run LOOSE_FACTOR× looser as the bound
    (dopri5's global error scales with the tolerance)."""
    if problem.exact_solution is not None:
        ys = np.real(problem.exact_solution(problem.y0, problem.params, problem.t))
        return ys, 1e-12 * float(np.max(np.abs(ys)))
    tight = solve(problem.field, problem.y0, problem.t, problem.params, rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL).ys
    loose = solve(problem.field, problem.y0, problem.t, problem.params, rtol=LOOSE_FACTOR * REFERENCE_RTOL,
                  atol=LOOSE_FACTOR * REFERENCE_ATOL).ys
    return tight, float(np.max(np.abs(tight - loose)))


@dataclass(frozen=True, eq=False)
class TorchProblem:
    """The torch twin of a gqref problem with a loss: L = Σ_i dL_dy[i]·y(t_i) (see the module docstring).

    ``field``'s parameters are the ones to differentiate; :meth:`TwinField.flat_params` maps them to
    ``problem.params``. ``reference`` and ``solution`` are computed on first use (and shared between equal
    problems drawn again)."""

    problem: pr.Problem
    field: TwinField
    y0: torch.Tensor
    t: torch.Tensor
    dL_dy: torch.Tensor

    @property
    def name(self) -> str:
        return self.problem.name

    @cached_property
    def _oracle(self) -> tuple[Reference, tuple[np.ndarray, float]]:
        return _oracle(self.problem, self.dL_dy.detach().cpu().numpy())

    @property
    def reference(self) -> Reference:
        """The oracle's (dL_dy0, dL_dparams in gqref's flat layout, dL_dt) with a max-abs error bound for each."""
        return self._oracle[0]

    @property
    def solution(self) -> tuple[np.ndarray, float]:
        """y(t_i), shape (len(t), S), and a bound on its max-abs error."""
        return self._oracle[1]

    def __repr__(self) -> str:
        return (f"TorchProblem({self.problem.name!r}, y0={self.problem.y0.tolist()}, "
                f"params={self.problem.params.tolist()}, t={self.problem.t.tolist()}, "
                f"dL_dy={self.dL_dy.tolist()})")


def twin(problem: pr.Problem, dL_dy: np.ndarray | None = None) -> TorchProblem:
    """The :class:`TorchProblem` of a gqref problem; ``dL_dy`` (shape (len(t), S)) defaults to ones."""
    if not isinstance(problem, pr.Problem):
        raise InputError(f"problems must be gqref.problems.Problem or TorchProblem instances, got "
                         f"{type(problem).__name__}")
    shape = (problem.t.size, problem.state_dim)
    c = np.ones(shape) if dL_dy is None else np.asarray(dL_dy, dtype=np.float64)
    if c.shape != shape or not np.all(np.isfinite(c)):
        raise InputError(f"dL_dy for {problem.name!r} must be finite with the shape of ys, {shape}; got {c.shape}")
    return TorchProblem(problem, twin_field(problem), torch.tensor(problem.y0, dtype=torch.float64),
                        torch.tensor(problem.t, dtype=torch.float64), torch.tensor(c, dtype=torch.float64))


def problem(name: str, *, dL_dy: np.ndarray | None = None, **kwargs) -> TorchProblem:
    """The twin of ``gqref.problems.PROBLEMS[name](**kwargs)`` (e.g. ``problem("van_der_pol", mu=2.0)``), with the
    loss cotangent ``dL_dy`` (default ones)."""
    if name not in pr.PROBLEMS:
        raise InputError(f"unknown problem {name!r}; expected one of {sorted(pr.PROBLEMS)}")
    return twin(pr.PROBLEMS[name](**kwargs), dL_dy)


def problems(closed_form: bool | None = None, names: Sequence[str] | None = None,
             cotangents: bool = True) -> SearchStrategy[TorchProblem]:
    """A hypothesis strategy for :class:`TorchProblem`: the problems of :func:`gqref.strategies.problems`
    (``closed_form`` as there; ``names`` restricts to those kinds of :data:`gqref.strategies.problem_strategies`),
    each with a drawn cotangent (:func:`gqref.strategies.cotangents`, never all zero) or, with
    ``cotangents=False``, ones. Requires hypothesis."""
    from hypothesis import strategies as st

    import gqref.strategies as gst

    if names is None:
        base = gst.problems(closed_form)
    else:
        unknown = sorted(set(names) - set(gst.problem_strategies))
        if unknown or not names:
            raise InputError(f"unknown problem kinds {unknown}; expected some of {sorted(gst.problem_strategies)}")
        base = st.one_of(*(gst.problem_strategies[n] for n in names))
    if not cotangents:
        return base.map(twin)
    return base.flatmap(lambda p: gst.cotangents(p).map(lambda c: twin(p, c)))


# ---------------------------------------------------------------------------------------------------------------
# The check.


@dataclass(frozen=True)
class OdeintReport:
    """One :class:`gqref.check.GradientReport` per problem; a component "ys" is the solution's error."""

    reports: tuple[GradientReport, ...]

    def verdict(self, rtol: float, atol: float | None = None) -> str:
        """"fail" if any problem fails, else "unsure" if any cannot be judged, else "pass"."""
        verdicts = [r.verdict(rtol, atol) for r in self.reports]
        return "fail" if "fail" in verdicts else "unsure" if "unsure" in verdicts else "pass"

    def passed(self, rtol: float, atol: float | None = None) -> bool:
        """Every problem passes (see :meth:`gqref.check.GradientReport.passed`); a failure anywhere is False even
        where another problem's reference is unsure; otherwise an unsure reference raises."""
        if self.verdict(rtol, atol) == "fail":
            return False
        return all(r.passed(rtol, atol) for r in self.reports)

    def failures(self, rtol: float, atol: float | None = None) -> list[str]:
        return [r.problem for r in self.reports if r.verdict(rtol, atol) == "fail"]

    def describe(self, rtol: float, atol: float | None = None) -> str:
        """The per-component tables with each problem's verdict and each component's allowed error at ``rtol``."""
        blocks = []
        for r in self.reports:
            allowed = r.allowed(rtol, atol)
            lines = str(r).splitlines()
            lines[0] += f": {r.verdict(rtol, atol).upper()} at rtol = {rtol:g}"
            lines = [lines[0], *lines[1:-len(r.components) - 2],
                     "| component | relative error | max abs error | allowed | reference error |",
                     "|---|---|---|---|---|"]
            lines += [f"| {c.name} | {c.relative:.3e} | {c.max_abs_error:.3e} | {allowed[c.name]:.3e} | "
                      f"{c.reference_error:.3e} |{'  <-- over' if c.max_abs_error > allowed[c.name] else ''}"
                      for c in r.components]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def __str__(self) -> str:
        return "\n\n".join(str(r) for r in self.reports)


def _run(odeint_fn: Callable, tp: TorchProblem, solver_kwargs: dict):
    func = tp.field
    params = tuple(func.parameters())
    y0 = tp.y0.detach().clone().requires_grad_(True)
    t = tp.t.detach().clone().requires_grad_(True)
    shape = (len(tp.problem.t), tp.problem.state_dim)
    ys = odeint_fn(func, y0, t, **solver_kwargs)
    if isinstance(ys, tuple):  # (ys, stats) from return_stats=True
        ys = ys[0]
    if not isinstance(ys, torch.Tensor) or tuple(ys.shape) != shape:
        raise InputError(f"odeint_fn must return a tensor of shape {shape} for problem {tp.name!r}, got "
                         f"{getattr(ys, 'shape', type(ys).__name__)}")
    loss = (ys * tp.dL_dy.to(ys.dtype)).sum()
    grads = torch.autograd.grad(loss, (y0, *params, t), allow_unused=True)
    g_y0, g_params, g_t = grads[0], grads[1:-1], grads[-1]
    # a missing parameter gradient is a zero one (a solver that drops it must fail); a missing time gradient means
    # the solver does not offer one, and is left out of the report
    g_y0 = torch.zeros_like(y0) if g_y0 is None else g_y0
    g_theta = func.gqref_gradient(g_params)
    result = (g_y0.detach().cpu().numpy(), g_theta.detach().cpu().numpy(),
              None if g_t is None else g_t.detach().cpu().numpy())
    return ys.detach().cpu().numpy(), result


def check_odeint(odeint_fn: Callable, problems: TorchProblem | pr.Problem | Sequence[TorchProblem | pr.Problem] |
                 None = None, *, rtol: float = 1e-9, atol: float = 1e-9,
                 dL_dy: Callable[[pr.Problem], np.ndarray] | None = None, **solver_kwargs) -> OdeintReport:
    """Run ``odeint_fn(func, y0, t, rtol=..., atol=..., **solver_kwargs)`` (torchdiffeq's signature:
    ``torchdiffeq.odeint_adjoint``, ``gqtorch.odeint_adjoint_gq``, ``gqtorch.odeint``, your own) on each problem
    and compare its solution and its gradients w.r.t. y0, the field's parameters and t with gqref's oracle.

    ``problems``: one :class:`TorchProblem` or gqref :class:`~gqref.problems.Problem`, or a sequence of them
    (default :func:`default_problems`). A gqref problem runs as its twin (:func:`twin`) with the cotangent
    ``dL_dy(problem)`` (default ones: L = Σ y(t_i)); a TorchProblem brings its own ``dL_dy``.

    ``rtol``/``atol`` are the solver's tolerances; judge the report with ``report.passed(check_rtol)`` where
    check_rtol is well above the error those tolerances allow over the problem's steps (e.g. 1e5·rtol).
    """
    if problems is None:
        problems = default_problems()
    elif isinstance(problems, (TorchProblem, pr.Problem)):
        problems = [problems]
    reports = []
    for item in problems:
        if isinstance(item, TorchProblem):
            if dL_dy is not None:
                raise InputError("dL_dy applies to gqref problems; a TorchProblem carries its own dL_dy")
            tp = item
        else:
            tp = twin(item, None if dL_dy is None or not isinstance(item, pr.Problem) else dL_dy(item))
        ys, result = _run(odeint_fn, tp, {"rtol": rtol, "atol": atol, **solver_kwargs})
        report = compare(tp.name, result, tp.reference)
        ys_ref, ys_ref_error = tp.solution
        ys_component = ComponentError("ys", float(np.max(np.abs(ys - ys_ref))), float(np.max(np.abs(ys_ref))),
                                      ys_ref_error)
        # G (the absolute floor's scale) takes the solution's own scale into account as well
        reports.append(GradientReport(problem=report.problem, reference=report.reference,
                                      components=(*report.components, ys_component),
                                      reference_trusted=report.reference_trusted,
                                      reference_note=report.reference_note,
                                      gradient_scale=max(report.gradient_scale, ys_component.reference_scale)))
    return OdeintReport(tuple(reports))
