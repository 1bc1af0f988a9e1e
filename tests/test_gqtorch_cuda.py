"""CUDA: gqtorch on the GPU equals gqtorch on the CPU (float64), for the solve and every gradient method.

Skipped, with the reason shown in pytest's summary (``-ra``), where torch sees no CUDA device; run on a GPU
machine with ``pytest tests/test_gqtorch_cuda.py`` (``validation/gpu_check.sh`` does this and the benchmark).
"""

from __future__ import annotations

import pytest
import torch

import gqtorch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the CUDA parity tests need a GPU")
F64 = torch.float64
SOLVERS = {
    "direct": lambda f, y0, t: gqtorch.odeint(f, y0, t, rtol=1e-8, atol=1e-9),
    "adjoint": lambda f, y0, t: gqtorch.odeint_adjoint(f, y0, t, rtol=1e-8, atol=1e-9),
    "seminorm": lambda f, y0, t: gqtorch.odeint_adjoint(f, y0, t, rtol=1e-8, atol=1e-9,
                                                        adjoint_options={"norm": "seminorm"}),
    "gq": lambda f, y0, t: gqtorch.odeint_adjoint_gq(f, y0, t, rtol=1e-8, atol=1e-9, quadrature="interval", gtol=0.5),
}


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Softplus(), torch.nn.Linear(32, 3))

    def forward(self, t, z):
        return self.net(torch.cat([z, t.expand(*z.shape[:-1], 1)], dim=-1))


def _gradients(solver: str, device: str, dtype=F64):
    torch.manual_seed(0)
    func = Field().to(device=device, dtype=dtype)
    y0 = torch.linspace(-1, 1, 6, dtype=dtype, device=device).reshape(2, 3).requires_grad_()
    t = torch.tensor([0.0, 0.4, 1.0], dtype=F64, device=device, requires_grad=True)
    ys = SOLVERS[solver](func, y0, t)
    ys.square().sum().backward()
    return [g.detach().cpu() for g in (ys, y0.grad, t.grad, *(p.grad for p in func.parameters()))]


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_cuda_equals_cpu_in_float64(solver):
    for ours, theirs in zip(_gradients(solver, "cuda"), _gradients(solver, "cpu")):
        # the same steps (the accept/reject decisions agree unless an error ratio sits within roundoff of 1);
        # GPU and CPU kernels sum in different orders, so results agree to roundoff amplified over the steps
        assert float((ours - theirs).abs().max()) <= 1e-10 * max(float(theirs.abs().max()), 1.0)


def test_cuda_float32_gq_matches_float64():
    ours = _gradients("gq", "cuda", torch.float32)
    theirs = _gradients("gq", "cuda", F64)
    for a, b in zip(ours, theirs):
        # float32 solves at rtol 1e-8 are limited by float32 roundoff (~1e-7 relative) accumulated over the steps
        assert float((a.double() - b).abs().max()) <= 1e-4 * max(float(b.abs().max()), 1.0)


def test_cuda_tuple_state_and_decreasing_time():
    y0 = (torch.tensor([1.0, -0.5], dtype=F64, device="cuda", requires_grad=True),
          torch.tensor([0.3], dtype=F64, device="cuda", requires_grad=True))
    t = torch.tensor([1.0, 0.5, 0.0], dtype=F64, device="cuda")
    ys = gqtorch.odeint_adjoint_gq(lambda t, y: (-y[0] * y[1], torch.sin(y[0]).sum(0, keepdim=True)), y0, t,
                                   adjoint_params=())
    assert ys[0].device.type == "cuda" and ys[0].shape == (3, 2) and ys[1].shape == (3, 1)
    (ys[0].sum() + ys[1].sum()).backward()
    assert torch.isfinite(y0[0].grad).all() and torch.isfinite(y0[1].grad).all()
