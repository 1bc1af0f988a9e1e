"""gqtorch never returns a silently wrong answer: second derivatives, low precision, mixed dtypes, fields that write
into their argument, tolerances given as tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gqtorch
from gqref.errors import InputError
from tests.altered_backward import altered_backward

F64 = torch.float64
T = torch.tensor([0.0, 1.0], dtype=F64)


def decay(t, y):
    return -y


@pytest.mark.parametrize("backsolve", [gqtorch.odeint_adjoint, gqtorch.odeint_adjoint_gq])
def test_second_derivatives_through_a_backsolve_raise(backsolve):
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys = backsolve(decay, y0, T, adjoint_params=())
    (grad,) = torch.autograd.grad(ys.pow(2).sum(), y0, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):  # torch's error for once-differentiable steps
        grad.sum().backward()


def test_second_derivatives_through_odeint_are_exact():
    # y(1) = y0·e⁻¹, so L = Σ y(1)² has d²L/dy0² = 2e⁻² on the diagonal
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    ys = gqtorch.odeint(decay, y0, T, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad(ys[-1].pow(2).sum(), y0, create_graph=True)
    (hess_diag,) = torch.autograd.grad(grad.sum(), y0)
    assert torch.allclose(hess_diag, torch.full((2,), 2 * np.exp(-2.0), dtype=F64), rtol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_states_are_refused_with_the_fix(dtype):
    for solve in (gqtorch.odeint, gqtorch.odeint_adjoint, gqtorch.odeint_adjoint_gq):
        kwargs = {} if solve is gqtorch.odeint else {"adjoint_params": ()}
        with pytest.raises(InputError, match="float32 or float64"):
            solve(decay, torch.ones(2, dtype=dtype), T, **kwargs)


def test_a_field_of_another_dtype_is_refused():
    with pytest.raises(InputError, match=r"float32.*float64 state"):
        gqtorch.odeint(lambda t, y: (-y).float(), torch.ones(2, dtype=F64), T)
    with pytest.raises(InputError, match=r"float32.*float64 state"):
        gqtorch.odeint(lambda t, y: (-y[0], (-y[1]).float()), (torch.ones(2, dtype=F64), torch.ones(1, dtype=F64)),
                       T)


def test_a_field_that_writes_into_its_argument_leaves_y0_alone():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)

    def scribbles(t, y):
        y[0] = 5.0
        return -y

    gqtorch.odeint(scribbles, y0, T)
    assert y0.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("backsolve", [gqtorch.odeint_adjoint, gqtorch.odeint_adjoint_gq])
def test_backsolves_take_tensor_and_numpy_tolerances_like_odeint(backsolve):
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    for rtol, atol in [(torch.tensor(1e-6), torch.tensor(1e-8)), (np.float32(1e-6), np.float64(1e-8))]:
        ys = backsolve(decay, y0, T, rtol=rtol, atol=atol, adjoint_params=())
        (grad,) = torch.autograd.grad(ys[-1].sum(), y0)
        assert torch.allclose(grad, torch.full((2,), np.exp(-1.0), dtype=F64), rtol=1e-5)  # 10·rtol
    with pytest.raises(InputError, match="rtol"):
        backsolve(decay, y0, T, rtol=True, adjoint_params=())


def _nan_backward(x: torch.Tensor) -> torch.Tensor:
    """Identity forward; NaN backward: a func whose forward is fine and whose parameter gradient is not."""
    return altered_backward(x, lambda grad: grad * float("nan"))


class _NanGradDecay(torch.nn.Module):
    def __init__(self, where: str):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([0.5], dtype=F64))
        self.where = where

    def forward(self, t, y):
        if self.where == "params":
            return -_nan_backward(self.k) * y
        if self.where == "state":
            return -self.k * _nan_backward(y)
        return -self.k * y * _nan_backward(t)


BACKSOLVES = [("adjoint", {}), ("adjoint", {"adjoint_options": {"norm": "seminorm"}}),
              ("adjoint", {"method": "rk4"})] + [
    ("gq", {"quadrature": q}) for q in ("interval", "step", "adaptive", "auto")] + [("gq", {"method": "rk4"})]


@pytest.mark.parametrize("where", ["params", "state", "time"])
@pytest.mark.parametrize(("which", "kwargs"), BACKSOLVES)
def test_a_nan_in_funcs_backward_raises_naming_the_time(where, which, kwargs):
    """Never a silent NaN gradient: the backward raises NonFiniteFieldError with a time in the span."""
    solver = gqtorch.odeint_adjoint if which == "adjoint" else gqtorch.odeint_adjoint_gq
    func = _NanGradDecay(where)
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    ys = solver(func, y0, t, **kwargs)
    with pytest.raises(gqtorch.NonFiniteFieldError, match=r"at t = ") as caught:
        ys.sum().backward()
    assert 0.0 <= caught.value.t <= 1.0
