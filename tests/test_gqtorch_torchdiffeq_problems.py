"""torchdiffeq's own gradient tests, run on gqtorch at the paper's tolerances (docs/paper.md §5).

- ``test_adjoint``'s problems (constant, linear, sine; float64, t = linspace(1, 8, 10), rtol 1e-9, atol 1e-12):
  GQ (C = 0.2) and the adjoint against direct backprop, with and without t requiring grad; the bounds on the max
  absolute difference are the paper's (1e-12 constant, 1e-5 linear, 5e-3 sine).
- ``test_against_dopri5``: the cubic spiral in float32 with an unused module: its gradient is exactly zero, and the
  adjoint methods agree with direct dopri5 within 3e-4 (y0), 1e-4 (t), 2e-3 (A).
- ``gradcheck`` of ``odeint`` with respect to (y0, t) on the constant problem, for every method.
- Direct backprop through ``gqtorch.odeint`` against torchdiffeq's: equal to the tolerance level (torchdiffeq also
  differentiates its step-size selection, we hold the steps fixed).
"""

from __future__ import annotations

import math

import pytest
import torch
import torchdiffeq

import gqtorch

F64 = torch.float64
PAPER_RTOL, PAPER_ATOL = 1e-9, 1e-12
PAPER_GTOL = 0.2
PAPER_BOUNDS = {"constant": 1e-12, "linear": 1e-5, "sine": 5e-3}
SPIRAL_BOUNDS = {"y0": 3e-4, "t": 1e-4, "A": 2e-3}


class ConstantODE(torch.nn.Module):
    """f = a + (y − (a·t + b))⁵: the exact solution a·t + b is a straight line, which every RK method hits."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.2, dtype=F64))
        self.b = torch.nn.Parameter(torch.tensor(3.0, dtype=F64))

    def forward(self, t, y):
        return self.a + (y - (self.a * t + self.b)) ** 5

    def y_exact(self, t):
        return self.a * t + self.b


class SineODE(torch.nn.Module):
    """f = 2y/t + t⁴ sin 2t − t² + 4t³ (no parameters)."""

    def forward(self, t, y):
        return 2 * y / t + t**4 * torch.sin(2 * t) - t**2 + 4 * t**3

    def y_exact(self, t):
        return (-0.5 * t**4 * torch.cos(2 * t) + 0.5 * t**3 * torch.sin(2 * t) + 0.25 * t**2 * torch.cos(2 * t)
                - t**3 + 2 * t**4 + (math.pi - 0.25) * t**2)


class LinearODE(torch.nn.Module):
    """f = A·y in 10-D with A = 2U − (U + Uᵀ) (skew-symmetric), U = 0.1·randn — seeded here (torchdiffeq's is not)."""

    def __init__(self, dim: int = 10):
        super().__init__()
        u = 0.1 * torch.randn(dim, dim, dtype=F64, generator=torch.Generator().manual_seed(0))
        self.A = torch.nn.Parameter(2 * u - (u + u.T))

    def forward(self, t, y):
        return self.A @ y

    def y_exact(self, t):
        y0 = torch.ones(self.A.shape[0], dtype=F64)
        return torch.stack([torch.linalg.matrix_exp(self.A * ti) @ y0 for ti in t])


PROBLEMS = {"constant": ConstantODE, "linear": LinearODE, "sine": SineODE}


def _problem(name: str):
    func = PROBLEMS[name]()
    t = torch.linspace(1.0, 8.0, 10, dtype=F64)
    with torch.no_grad():
        y0 = func.y_exact(t)[0]
    return func, y0, t


def _gradients(name: str, solver: str, t_grad: bool, cotangent: torch.Tensor | None = None):
    func, y0_data, t_data = _problem(name)
    y0 = y0_data.clone().requires_grad_()
    t = t_data.clone().requires_grad_(t_grad)
    opts = {"rtol": PAPER_RTOL, "atol": PAPER_ATOL}
    if solver == "direct":
        ys = gqtorch.odeint(func, y0, t, **opts)
    elif solver == "gq":
        ys = gqtorch.odeint_adjoint_gq(func, y0, t, quadrature="interval", gtol=PAPER_GTOL, **opts)
    else:
        ys = gqtorch.odeint_adjoint(func, y0, t, **opts)
    if cotangent is None:
        cotangent = torch.rand(ys.shape, dtype=F64, generator=torch.Generator().manual_seed(0))
    ys.backward(cotangent)
    grads = {"y0": y0.grad, **{n: p.grad for n, p in func.named_parameters()}}
    if t_grad:
        grads["t"] = t.grad
    return grads


@pytest.mark.parametrize("t_grad", [True, False])
@pytest.mark.parametrize("solver", ["gq", "adjoint"])
@pytest.mark.parametrize("name", list(PROBLEMS))
def test_torchdiffeq_adjoint_problems_against_direct(name, solver, t_grad):
    direct = _gradients(name, "direct", t_grad)
    ours = _gradients(name, solver, t_grad)
    assert ours.keys() == direct.keys()
    for key in direct:
        difference = float((ours[key] - direct[key]).abs().max())
        assert difference < PAPER_BOUNDS[name], (key, difference)


class CubicSpiral(torch.nn.Module):
    """f(y) = y³·A with an unused Linear(2, 5): its parameters must get an exactly zero gradient."""

    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))
        self.unused_module = torch.nn.Linear(2, 5)

    def forward(self, t, y):
        return torch.mm(y**3, self.A)


def _spiral_gradients(solver, cotangent=None):
    torch.manual_seed(0)
    func = CubicSpiral()
    y0 = torch.tensor([[2.0, 0.0]], requires_grad=True)
    t = torch.linspace(0.0, 25.0, 10, requires_grad=True)
    ys = solver(func, y0, t)
    if cotangent is None:
        cotangent = 0.1 * torch.rand(ys.shape, generator=torch.Generator().manual_seed(1))
    ys.backward(cotangent)
    return func, {"y0": y0.grad, "t": t.grad, "A": func.A.grad}, cotangent


SPIRAL_SOLVERS = {
    "gq": lambda f, y0, t: gqtorch.odeint_adjoint_gq(f, y0, t, quadrature="interval", gtol=PAPER_GTOL),
    "adjoint": gqtorch.odeint_adjoint,
    "seminorm": lambda f, y0, t: gqtorch.odeint_adjoint(f, y0, t, adjoint_options={"norm": "seminorm"}),
}


@pytest.mark.parametrize("solver", list(SPIRAL_SOLVERS))
def test_cubic_spiral_float32_against_direct_dopri5(solver):
    func, ours, cotangent = _spiral_gradients(SPIRAL_SOLVERS[solver])
    assert torch.equal(func.unused_module.weight.grad, torch.zeros(5, 2))
    assert torch.equal(func.unused_module.bias.grad, torch.zeros(5))
    _, direct, _ = _spiral_gradients(gqtorch.odeint, cotangent)
    for key, bound in SPIRAL_BOUNDS.items():
        assert float((ours[key] - direct[key]).abs().max()) < bound, key


def test_unused_module_gradient_is_zero_with_direct_backprop():
    func, _, _ = _spiral_gradients(gqtorch.odeint)
    # direct backprop never touches the unused module: its gradient stays None (torch's "no gradient")
    assert func.unused_module.weight.grad is None and func.unused_module.bias.grad is None


@pytest.mark.parametrize("method", ["dopri5", "euler", "midpoint", "rk4"])
def test_gradcheck_odeint_with_respect_to_y0_and_t(method):
    func, y0, t = _problem("constant")
    y0 = y0.detach().requires_grad_()
    t = t.detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda y0_, t_: gqtorch.odeint(func, y0_, t_, method=method), (y0, t))


@pytest.mark.parametrize("t_grad", [True, False])
def test_direct_backprop_agrees_with_torchdiffeq_to_tolerance(t_grad):
    """Same problem, same cotangent: gqtorch holds the steps fixed, torchdiffeq differentiates their selection too.
    Both approximate the true gradient to the solve's accuracy, so they agree to a multiple of the tolerance."""
    rtol = atol = 1e-8
    grads = []
    for solve in (gqtorch.odeint, torchdiffeq.odeint):
        func = CubicSpiral().double()
        with torch.no_grad():
            func.A.copy_(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))
        y0 = torch.tensor([[2.0, 0.0]], dtype=F64, requires_grad=True)
        t = torch.linspace(0.0, 5.0, 6, dtype=F64, requires_grad=t_grad)
        ys = solve(func, y0, t, rtol=rtol, atol=atol, method="dopri5")
        ys.backward(torch.linspace(-1.0, 1.0, ys.numel(), dtype=F64).reshape(ys.shape))
        grads.append([y0.grad, func.A.grad] + ([t.grad] if t_grad else []))
    for ours, theirs in zip(*grads):
        scale = float(theirs.abs().max())
        # the solution's own error is ~rtol·|y| per unit time; 100× covers 5 time units and the growth of
        # perturbations along the spiral
        assert float((ours - theirs).abs().max()) <= 100 * rtol * max(scale, 1.0)
