"""Check a torch ODE solver's gradients against gqref's oracle: :func:`check_odeint`.

For developers of torchdiffeq-like solvers::

    import torchdiffeq, gqtorch.testing as T
    report = T.check_odeint(torchdiffeq.odeint_adjoint, rtol=1e-9, atol=1e-9)
    assert report.passed(1e-5), str(report)

Each gqref problem becomes a torch ``nn.Module`` field (:class:`TorchField`: one flat float64 parameter ``theta``,
the problem's f evaluated in numpy and differentiated by its VJPs, hand-written or complex-step), the solver runs
it from ``y0`` over ``t`` (both requiring grad), and the gradients of L = Σ_i dL_dy[i]·y(t_i) with respect to y0,
theta and t are compared with :func:`gqref.check.reference_gradient` (closed form, or a forward-sensitivity solve
cross-checked by the adjoint, each with an error bound). The solution y(t_i) is compared too. Verdicts use the
same rule as :meth:`gqref.check.GradientReport.passed`: max-abs error ≤ max(rtol·scale_c, rtol·G) per component,
G the largest reference magnitude, and no verdict where the reference is not 10× tighter than that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gqref import problems as pr
from gqref.check import ComponentError, GradientReport, compare, reference_gradient
from gqref.errors import InputError
from gqref.field import complete_vjps
from gqref.solve import solve

__all__ = ["OdeintReport", "TorchField", "check_odeint", "default_problems"]


def default_problems() -> list[pr.Problem]:
    """Closed-form problems of every kind (the time-dependent one exercises dL/dt0's ∂f/∂t term) and Van der Pol,
    which has none (its reference is numerical)."""
    return [pr.linear(), pr.toy(a=0.2, z0=1.0, T=3.0), pr.harmonic_oscillator(t=np.linspace(0.0, 3.0, 4)),
            pr.time_dependent_scalar(), pr.van_der_pol(t=np.linspace(0.0, 3.0, 4))]


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


class TorchField(torch.nn.Module):
    """A gqref problem's field as ``func(t, y)`` with one parameter ``theta`` = the problem's params (float64).

    Differentiable in t, y and theta through the field's VJPs (missing ones derived by complex step, as
    :func:`gqref.gradient` does). Not vmap-compatible: gqtorch evaluates its nodes one by one for it."""

    def __init__(self, problem: pr.Problem):
        super().__init__()
        self.problem = problem
        self.theta = torch.nn.Parameter(torch.tensor(problem.params, dtype=torch.float64))
        self._field = complete_vjps(problem.field, float(problem.t[0]), problem.y0, problem.params)[0]

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _NumpyField.apply(torch.as_tensor(t, dtype=y.dtype), y, self.theta, self._field)


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

    def __str__(self) -> str:
        return "\n\n".join(str(r) for r in self.reports)


def _solution_reference(problem: pr.Problem) -> tuple[np.ndarray, float]:
    """y(t_i) and a bound on its error: the closed form (roundoff), else gqref.solve at 1e-12 with its difference
    from 1e-10 as the bound (dopri5's global error scales with the tolerance)."""
    if problem.exact_solution is not None:
        ys = np.real(problem.exact_solution(problem.y0, problem.params, problem.t))
        return ys, 1e-12 * float(np.max(np.abs(ys)))
    tight = solve(problem.field, problem.y0, problem.t, problem.params, rtol=1e-12, atol=1e-12).ys
    loose = solve(problem.field, problem.y0, problem.t, problem.params, rtol=1e-10, atol=1e-10).ys
    return tight, float(np.max(np.abs(tight - loose)))


def _run(odeint_fn: Callable, problem: pr.Problem, dL_dy: np.ndarray, solver_kwargs: dict):
    func = TorchField(problem)
    y0 = torch.tensor(problem.y0, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(problem.t, dtype=torch.float64, requires_grad=True)
    ys = odeint_fn(func, y0, t, **solver_kwargs)
    if isinstance(ys, tuple):  # (ys, stats) from return_stats=True
        ys = ys[0]
    if not isinstance(ys, torch.Tensor) or tuple(ys.shape) != (len(problem.t), problem.state_dim):
        raise InputError(f"odeint_fn must return a tensor of shape {(len(problem.t), problem.state_dim)} for "
                         f"problem {problem.name!r}, got {getattr(ys, 'shape', type(ys).__name__)}")
    loss = (ys * torch.as_tensor(dL_dy)).sum()
    g_y0, g_theta, g_t = torch.autograd.grad(loss, (y0, func.theta, t), allow_unused=True)
    # a missing parameter gradient is a zero one (a solver that drops it must fail); a missing time gradient means
    # the solver does not offer one, and is left out of the report
    g_theta = torch.zeros_like(func.theta) if g_theta is None else g_theta
    g_y0 = torch.zeros_like(y0) if g_y0 is None else g_y0
    result = (g_y0.detach().numpy(), g_theta.detach().numpy(), None if g_t is None else g_t.detach().numpy())
    return ys.detach().numpy(), result


def check_odeint(odeint_fn: Callable, problems: Sequence[pr.Problem] | None = None, *, rtol: float = 1e-9,
                 atol: float = 1e-9, dL_dy: Callable[[pr.Problem], np.ndarray] | None = None,
                 **solver_kwargs) -> OdeintReport:
    """Run ``odeint_fn(func, y0, t, rtol=..., atol=..., **solver_kwargs)`` (torchdiffeq's signature:
    ``torchdiffeq.odeint_adjoint``, ``gqtorch.odeint_adjoint_gq``, ``gqtorch.odeint``, your own) on each problem
    (default :func:`default_problems`) and compare its solution and its gradients w.r.t. y0, the parameters and t
    with gqref's oracle. ``dL_dy(problem)`` gives the loss cotangent (default ones: L = Σ y(t_i)).

    ``rtol``/``atol`` are the solver's tolerances; judge the report with ``report.passed(check_rtol)`` where
    check_rtol is well above what those tolerances allow over the problem's steps (e.g. 1e4·rtol).
    """
    if problems is None:
        problems = default_problems()
    reports = []
    for problem in problems:
        if not isinstance(problem, pr.Problem):
            raise InputError(f"problems must be gqref.problems.Problem instances, got {type(problem).__name__}")
        c = np.ones((len(problem.t), problem.state_dim)) if dL_dy is None else np.asarray(dL_dy(problem), float)
        ys, result = _run(odeint_fn, problem, c, {"rtol": rtol, "atol": atol, **solver_kwargs})
        report = compare(problem.name, result, reference_gradient(problem, c))
        ys_ref, ys_ref_error = _solution_reference(problem)
        ys_component = ComponentError("ys", float(np.max(np.abs(ys - ys_ref))), float(np.max(np.abs(ys_ref))),
                                      ys_ref_error)
        # G (the absolute floor's scale) takes the solution's own scale into account as well
        reports.append(GradientReport(problem=report.problem, reference=report.reference,
                                      components=(*report.components, ys_component),
                                      reference_trusted=report.reference_trusted,
                                      reference_note=report.reference_note,
                                      gradient_scale=max(report.gradient_scale, ys_component.reference_scale)))
    return OdeintReport(tuple(reports))
