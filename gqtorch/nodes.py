"""GQ's node VJPs: a(τ)ᵀ∂f/∂θ (and a·∂f/∂t) at the quadrature nodes of an interval, batched through ``func`` by
``torch.func.vmap`` where it can be, else in a loop, and the node to blame when one is not finite."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gqref.errors import InputError, NonFiniteFieldError
from gqtorch.solve import FlatField


def grads_or_none(out: torch.Tensor, inputs: Sequence[torch.Tensor], cotangent: torch.Tensor) -> list:
    """``autograd.grad`` that answers None for inputs ``out`` does not depend on (also when it depends on none)."""
    if not inputs:
        return []
    if not out.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad(out, inputs, cotangent, allow_unused=True))


def node_vjps(field: FlatField, taus: torch.Tensor, zs: torch.Tensor, cotangents: torch.Tensor,
              params: tuple[torch.Tensor, ...], t_grad: bool, batched: bool) -> tuple[list, bool]:
    """Σ_j cotangents_j ᵀ ∂f(τ_j, z_j)/∂(θ, τ_j) for all nodes of an interval: (grads per param [+ per τ], batched).

    Batched: ``torch.func.vmap(func)`` evaluates every node in one call and one ``autograd.grad`` gives the sum.
    This assumes ``func`` is vmap-compatible (pure tensor code; no ``.item()``, data-dependent Python branches or
    in-place writes to captured tensors). If vmap raises, the nodes are evaluated one by one (same single
    ``autograd.grad``) and ``batched`` comes back False, so later intervals skip the vmap attempt.
    """
    grads = None
    with torch.enable_grad():
        tau = taus.detach().requires_grad_(t_grad)
        inputs = params + ((tau,) if t_grad else ())
        if batched:
            try:
                out = torch.func.vmap(field)(tau, zs)
                grads = grads_or_none(out, inputs, cotangents)
            except InputError:
                raise
            except Exception:  # any vmap failure: fall back to the loop, which re-raises real errors
                batched = False
        if grads is None:
            out = torch.stack([field(tau[j], zs[j]) for j in range(zs.shape[0])])
            grads = grads_or_none(out, inputs, cotangents)
    # one host sync per call (per interval, or per backward pass for the step rule): a NaN from func's backward
    # must not become a silent NaN gradient
    sums = [g.sum() for g in grads if g is not None]
    if sums and not bool(torch.isfinite(torch.stack(sums)).all()):
        name_nonfinite_node(field, taus, zs, cotangents, params, t_grad)
        t = float(taus[0])
        raise NonFiniteFieldError(f"GQ's quadrature sum over the nodes from t = {t!r} to {float(taus[-1])!r} "
                                  "overflowed (every node's VJP is finite, their weighted sum is not)", t)
    return grads, batched


def name_nonfinite_node(field: FlatField, taus: torch.Tensor, zs: torch.Tensor, cotangents: torch.Tensor,
                        params: tuple[torch.Tensor, ...], t_grad: bool) -> None:
    """Once a sum of GQ's node VJPs came out NaN/inf: the nodes one by one (the slow path, taken only on failure),
    raising :class:`~gqref.errors.NonFiniteFieldError` at the first node whose VJP is not finite."""
    with torch.enable_grad():
        for j in range(zs.shape[0]):
            tau = taus[j].detach().requires_grad_(t_grad)
            grads = grads_or_none(field(tau, zs[j]), params + ((tau,) if t_grad else ()), cotangents[j])
            if not all(bool(torch.isfinite(g).all()) for g in grads if g is not None):
                t = float(taus[j])
                raise NonFiniteFieldError(f"GQ's node VJP of func (aᵀ∂f/∂θ{' and a·∂f/∂t' if t_grad else ''}) is not "
                                          f"finite (NaN or inf) at t = {t!r}", t)
