"""gqtorch.testing.check_odeint: correct torch solvers pass, deliberately broken ones fail."""

import pytest
import torch
import torchdiffeq

import gqtorch
import gqtorch.testing as T

torch.set_num_threads(1)

# Solvers at rtol = atol = 1e-10: their global error is ≲ (steps)·1e-10 ≈ 1e-8 of the gradient's scale on these
# problems, so a criterion of 1e-5 leaves a factor ~1000 for the error's growth along the flow, while a planted
# error of 1e-3 relative (or a dropped gradient) is 100× above it. The references are good to ~1e-10.
SOLVER_TOL = 1e-10
CHECK_RTOL = 1e-5

CORRECT = {
    "torchdiffeq.odeint_adjoint": torchdiffeq.odeint_adjoint,
    "gqtorch.odeint_adjoint_gq": gqtorch.odeint_adjoint_gq,
    "gqtorch.odeint_adjoint": gqtorch.odeint_adjoint,
    "gqtorch.odeint": gqtorch.odeint,
}


@pytest.fixture(scope="module")
def problems():
    return T.default_problems()


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_solvers_pass(name, problems):
    report = T.check_odeint(CORRECT[name], problems, rtol=SOLVER_TOL, atol=SOLVER_TOL)
    assert report.passed(CHECK_RTOL), str(report)
    assert {c.name for c in report.reports[0].components} == {"dL_dy0", "dL_dparams", "dL_dt", "ys"}


def drops_the_parameter_gradient(func, y0, t, **kwargs):
    return torchdiffeq.odeint_adjoint(func, y0, t, adjoint_params=(), **kwargs)


class _Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ys):
        return ys.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * (1.0 + 1e-3)


def scales_every_gradient(func, y0, t, **kwargs):
    return _Scaled.apply(gqtorch.odeint_adjoint(func, y0, t, **kwargs))


def reverses_time(func, y0, t, **kwargs):
    return torchdiffeq.odeint_adjoint(lambda s, y: -func(s, y), y0, t, adjoint_params=tuple(func.parameters()),
                                      **kwargs)


@pytest.mark.parametrize("broken, component", [
    (drops_the_parameter_gradient, "dL_dparams"),
    (scales_every_gradient, "dL_dy0"),
    (reverses_time, "ys"),
], ids=["dropped parameter gradient", "gradient x (1 + 1e-3)", "reversed time"])
def test_broken_solvers_fail_and_the_report_says_where(broken, component, problems):
    report = T.check_odeint(broken, problems, rtol=SOLVER_TOL, atol=SOLVER_TOL)
    assert not report.passed(CHECK_RTOL)
    assert report.verdict(CHECK_RTOL) == "fail"
    failing = report.failures(CHECK_RTOL)
    assert failing
    first = next(r for r in report.reports if r.problem == failing[0])
    allowed = first.allowed(CHECK_RTOL)
    assert any(c.name == component and c.max_abs_error > allowed[c.name] for c in first.components), str(first)


def test_bad_problems_are_rejected():
    with pytest.raises(gqtorch.InputError, match="Problem instances"):
        T.check_odeint(gqtorch.odeint, ["linear"])
