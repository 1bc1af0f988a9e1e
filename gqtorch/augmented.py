"""The augmented backward dynamics of gqtorch's two backsolve gradients (twin of :mod:`gqref.augmented`).

With a(t) = ∂L/∂z(t) the adjoint runs backwards with da/dt = −aᵀ∂f/∂z. The continuous adjoint integrates
x = [adj_t (1), z (S), a (S), adj_p (P)] (torchdiffeq's order); GQ integrates only x = [z, a]. Both take one
evaluation of f and one ``torch.autograd.grad`` per backward stage, with the cotangent −a (as torchdiffeq does).
:func:`backward_dynamics` picks one, as gqref's function of the same name does.
"""

from __future__ import annotations

import torch

from gqtorch.nodes import grads_or_none
from gqtorch.solve import FlatField


class BackwardDynamics:
    """What both backward dynamics share: the field, the state size, and the flat view the step callbacks get."""

    def __init__(self, field: FlatField, n: int):
        self.field = field
        self.n = n

    @staticmethod
    def split(x: torch.Tensor) -> torch.Tensor:
        """The state as the step callbacks see it: flat (torchdiffeq's augmented state is flat too)."""
        return x


class GQDynamics(BackwardDynamics):
    """d[z, a]/dt = [f, −aᵀ∂f/∂z]: one evaluation and one VJP with respect to z only (no parameter gradient)."""

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        with torch.enable_grad():
            z = x[:n].detach().requires_grad_(True)
            fz = self.field(t, z)
            (vjp_z,) = grads_or_none(fz, (z,), x[n:].neg())
        if vjp_z is None:
            vjp_z = torch.zeros_like(z)
        return torch.cat((fz.detach(), vjp_z))


class AdjointDynamics(BackwardDynamics):
    """dx/dt = [−a·∂f/∂t, f, −aᵀ∂f/∂z, −aᵀ∂f/∂θ] on x = [adj_t, z, a, adj_θ]: one evaluation, one VJP."""

    def __init__(self, field: FlatField, n: int, params: tuple[torch.Tensor, ...], t_grad: bool):
        super().__init__(field, n)
        self.params = params
        self.t_grad = t_grad

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        n = self.n
        with torch.enable_grad():
            tt = t.detach().requires_grad_(self.t_grad)
            z = x[1:1 + n].detach().requires_grad_(True)
            fz = self.field(tt, z)
            inputs = ((tt,) if self.t_grad else ()) + (z,) + self.params
            grads = grads_or_none(fz, inputs, x[1 + n:1 + 2 * n].neg())
        if not self.t_grad:
            grads.insert(0, None)
        vjp_t, vjp_z, *vjp_p = grads
        parts = [x.new_zeros(1) if vjp_t is None else vjp_t.reshape(1), fz.detach(),
                 torch.zeros_like(z) if vjp_z is None else vjp_z]
        parts += [p.new_zeros(p.numel()) if g is None else g.reshape(-1) for p, g in zip(self.params, vjp_p)]
        return torch.cat(parts)


def backward_dynamics(field: FlatField, n: int, full: bool, params: tuple[torch.Tensor, ...] = (),
                      t_grad: bool = True) -> GQDynamics | AdjointDynamics:
    """The continuous adjoint's dynamics on [adj_t, z, a, adj_θ] (``full``), else GQ's on [z, a]."""
    return AdjointDynamics(field, n, params, t_grad) if full else GQDynamics(field, n)
