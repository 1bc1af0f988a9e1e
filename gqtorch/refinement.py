"""Adaptive Gauß–Kronrod quadrature of a vector integrand over panels (twin of :mod:`gqref.refinement`), and the
per-node VJP rows it integrates.

The algorithm, its stopping rule and the meaning of the result are gqref's (see :mod:`gqref.refinement`); so are
the Kronrod table, the constants and :class:`QuadratureLimitError`. What differs is where the work happens:

- the panels, node times and the split decisions live on the host in float64 numpy, computed by the same
  operations as gqref's (so identical panels give identical node times);
- the integrand values, the panel sums G_p, d_p = K_p − G_p and Σ|w·g| and the tolerance test live on the device;
- every round makes one ``integrand`` call (GQ: one batched VJP for all the round's nodes) and one device→host
  transfer: the finiteness flag, the stop flag and each panel's scaled error, packed together. Nothing is
  transferred per node.

The roundoff floor uses the ε of the integrand's dtype (gqref: float64's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from gqref.errors import InputError, NonFiniteFieldError
from gqref.kronrod import gauss_kronrod
from gqref.refinement import DEFAULT_KRONROD_N, AdaptiveQuadrature, PanelRounds, QuadratureLimitError
from gqref.rules import REFINEMENT_MAX_NODES, ROUNDOFF_ULPS  # the floor is ROUNDOFF_ULPS·ε(dtype)·∫|g|
from gqtorch.nodes import grads_or_none
from gqtorch.quadrature import kronrod_rule
from gqtorch.solve import FlatField

__all__ = ["AdaptiveQuadrature", "QuadratureLimitError", "integrate_panels", "node_rows"]


def integrate_panels(
    integrand: Callable[[np.ndarray, np.ndarray], torch.Tensor],
    panels: Sequence[tuple[int, float, float]],
    *,
    n_groups: int,
    dimension: int,
    rtol: float,
    atol: float,
    dtype: torch.dtype,
    device: torch.device | str,
    blocks: Sequence[slice] | None = None,
    max_refinement_nodes: int = REFINEMENT_MAX_NODES,
    n: int = DEFAULT_KRONROD_N,
) -> AdaptiveQuadrature[torch.Tensor]:
    """Σ over ``panels`` (group, lo, hi) of ∫_lo^hi g(t) dt, refined until the estimated error meets the tolerance.

    ``integrand(groups, times) -> (len(times), dimension)`` tensor of ``dtype`` on ``device``: g at a batch of
    nodes (host arrays; ``groups[k]`` says which group's function to use at ``times[k]``), called once per round.
    Everything else as :func:`gqref.refinement.integrate_panels`.
    """
    if not panels:
        raise InputError("integrate_panels needs at least one panel")
    blocks = [slice(0, dimension)] if blocks is None else list(blocks)
    # the host side (panels, node times, limit, splits) is gqref's, on float64 numpy: identical panels give
    # identical node times
    book = PanelRounds(panels, n_groups, gauss_kronrod(n)[0], max_refinement_nodes, rtol, atol)
    _, wk_ref, wg_ref = kronrod_rule(n, dtype, device)
    floor = ROUNDOFF_ULPS * torch.finfo(dtype).eps
    # per kept panel (rows, in the book's order): G (D,), K − G (D,), Σ|w·g| (D,)
    done_g = done_d = done_abs = torch.zeros((0, dimension), dtype=dtype, device=device)
    while True:
        groups, half, times = book.nodes()
        values = integrand(np.repeat(groups, book.width), times.reshape(-1))  # all nodes of the round in one call
        values = values.reshape(len(groups), book.width, dimension)
        half_t = torch.as_tensor(half, dtype=torch.float64).to(dtype=dtype, device=device)
        gauss = torch.einsum("pk,pkd->pd", half_t[:, None] * wg_ref[None, :], values)
        kronrod = torch.einsum("pk,pkd->pd", half_t[:, None] * wk_ref[None, :], values)
        absolute = torch.einsum("pk,pkd->pd", half_t.abs()[:, None] * wk_ref[None, :], values.abs())
        book.evaluated()
        done_g = torch.cat((done_g, gauss))
        done_d = torch.cat((done_d, kronrod - gauss))
        done_abs = torch.cat((done_abs, absolute))
        integral = done_g.sum(dim=0)
        e_all = done_d.abs()
        error = done_d.sum(dim=0).abs()
        roundoff = floor * done_abs.sum(dim=0)
        target = torch.zeros(dimension, dtype=dtype, device=device)
        for block in blocks:
            part = integral[block]
            if part.numel():
                target[block] = torch.maximum(atol + rtol * part.abs().max(), roundoff[block])
        # each panel's share of the tolerance in its worst component (gqref's arithmetic, inf for non-finite)
        share = torch.where(e_all > 0, e_all / torch.where(target > 0, target, torch.inf), 0.0)
        share = torch.where(torch.isfinite(share), share, torch.inf).amax(dim=1)
        flags = torch.stack((torch.isfinite(values).all(), (error <= target).all())).to(dtype)
        host = torch.cat((flags, share)).tolist()  # the round's one device→host transfer
        if not host[0]:
            rows = torch.isfinite(values.reshape(-1, dimension)).all(dim=1).tolist()
            bad = float(times.reshape(-1)[rows.index(False)])
            raise NonFiniteFieldError(f"the quadrature's integrand is not finite (NaN or inf) at t = {bad!r}", bad)
        if host[1]:
            break
        keep = book.split(np.array(host[2:]))
        keep_index = torch.as_tensor(keep, dtype=torch.long).to(device)
        done_g, done_d, done_abs = (x.index_select(0, keep_index) for x in (done_g, done_d, done_abs))
    return AdaptiveQuadrature(integral=integral, error=error, error_sum=e_all.sum(dim=0), roundoff=roundoff,
                              **book.counts())


def _module_names(func, params: tuple[torch.Tensor, ...]) -> list[str] | None:
    """The names of ``params`` among ``func``'s parameters if ``func`` is an ``nn.Module`` owning them all (or
    there are none), else None (then :func:`torch.func.functional_call` cannot substitute them)."""
    if not params:
        return []
    if not isinstance(func, torch.nn.Module):
        return None
    names = {id(p): name for name, p in func.named_parameters(remove_duplicate=False)}
    found = [names.get(id(p)) for p in params]
    return None if any(name is None for name in found) else found


def node_rows(field: FlatField, taus: torch.Tensor, zs: torch.Tensor, cotangents: torch.Tensor,
              params: tuple[torch.Tensor, ...], t_grad: bool, batched: bool) -> tuple[torch.Tensor, bool]:
    """Each node's own VJP: rows [cot_kᵀ∂f(τ_k, z_k)/∂θ (all params flattened), (cot_k·∂f/∂τ_k)], shape (K, D).

    Unlike :func:`gqtorch.nodes.node_vjps` (which needs only the weighted sum over nodes, one
    ``autograd.grad``), adaptive quadrature needs every node's value: its panel sums, error estimates and roundoff
    floor are per panel and per component. Batched (one call for all nodes): when ``func`` is an ``nn.Module``
    owning every differentiated tensor (or there are none), ``torch.func.vmap(torch.func.grad(...))`` over
    :func:`torch.func.functional_call` gives per-node gradients at the cost of one summed VJP. A plain function
    closing over its parameters cannot have them substituted, so (as when vmap fails) the nodes are evaluated one
    by one, each with its own ``autograd.grad``, and ``batched`` comes back False. Rows are in ``zs``' dtype.
    """
    names = _module_names(field.func, params) if batched else None
    if names is not None:
        module = field.func
        argnums = (0, 1) if t_grad else 0

        def weighted(values, tau, z, cot):
            if names:
                mapping = dict(zip(names, values))
                call = FlatField(lambda t, y: torch.func.functional_call(module, mapping, (t, y), strict=False),
                                 field.shapes, field.is_tuple)
            else:  # no parameters to substitute: any vmap-compatible function will do
                call = field
            return torch.dot(call(tau, z), cot)

        try:
            with torch.enable_grad():
                grads = torch.func.vmap(torch.func.grad(weighted, argnums=argnums), in_dims=(None, 0, 0, 0))(
                    tuple(p.detach() for p in params), taus.detach(), zs, cotangents)
            param_grads, tau_grad = (grads[0], grads[1]) if t_grad else (grads, None)
            columns = [g.reshape(zs.shape[0], -1) for g in param_grads]
            if t_grad:
                columns.append(tau_grad.reshape(-1, 1))
            return torch.cat(columns, dim=1).to(zs.dtype), True
        except InputError:
            raise
        except Exception:  # any vmap/functional_call failure: the loop below re-raises real errors
            pass
    rows = []
    for k in range(zs.shape[0]):
        with torch.enable_grad():
            tau = taus[k].detach().requires_grad_(t_grad)
            out = field(tau, zs[k])
            grads = grads_or_none(out, params + ((tau,) if t_grad else ()), cotangents[k])
        rows.append(torch.cat([zs.new_zeros(x.numel()) if g is None else g.reshape(-1).to(zs.dtype)
                               for x, g in zip(params + ((tau,) if t_grad else ()), grads)]))
    if not rows:
        return zs.new_zeros((0, sum(p.numel() for p in params) + int(t_grad))), False
    return torch.stack(rows), False
