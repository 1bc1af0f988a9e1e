"""The auto rule's panel sums on the device (twin of :mod:`gqref.panels`).

The panels, their node times, the splits, the budget and the driver are gqref's (:func:`gqref.panels.refine`),
imported, not copied; so identical panels give identical node times in both twins. What differs is where the sums
are formed: here G_p and K_p are weighted sums of VJPs, so no per-node gradient is ever materialised. Per panel,
one batched evaluation at its n Gauß nodes feeds two ``autograd.grad`` calls (the Kronrod and the Gauß weights
folded into the cotangents), and one at its n + 1 Kronrod-only nodes feeds a third. Each round makes one
device→host transfer: the finiteness flag, the stop flag, the worst error ratio and each panel's share.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gqref.panels import Assessment, Panel
from gqref.rules import ROUNDOFF_ULPS
from gqtorch.dense import DenseReader
from gqtorch.nodes import name_nonfinite_node
from gqtorch.solve import FlatField

__all__ = ["TorchPanelSums"]


def parameter_fingerprint(params: Sequence[torch.Tensor]) -> tuple:
    """The parameters by storage and version counter: an optimizer's in-place update (or any other) moves the
    counter, so the auto rule reuses a check only while they stay what it checked. No host sync, unlike gqref's
    twin, which digests the values (NumPy arrays have no version counter)."""
    return tuple((p.data_ptr(), p._version, tuple(p.shape), p.dtype) for p in params)


class TorchPanelSums:
    """Panel sums for :func:`gqref.panels.refine`: per panel K_p and D_p = K_p − G_p, each a list with one tensor
    per parameter (in its shape: the gradients as autograd returns them, never flattened or copied) plus, when
    ``t_grad``, the time integral a·∂f/∂t as a 0-d tensor; and their running totals I = Σ K_p, Σ D_p.

    Why this layout: for a small batch and a big field (g1d: P ~ 10⁶, batch 2) every pass over a P-sized vector
    costs about as much as a node, so the common case (one round, the test met) makes just two gradients per panel
    and two max-norm reads. ``batched`` says whether ``torch.func.vmap(field)`` may be tried (on failure the nodes
    run in a loop, as :func:`gqtorch.nodes.node_vjps` does, and that is remembered).
    """

    def __init__(self, field: FlatField, reader: DenseReader, size: int, params: tuple[torch.Tensor, ...],
                 t_grad: bool, batched: bool, dtype: torch.dtype, device: torch.device):
        self.field, self.reader, self.size = field, reader, size
        self.params, self.t_grad, self.batched = params, t_grad, batched
        self.dtype, self.device = dtype, device
        self.rows: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []  # (K_p, D_p) per kept panel
        self.integral: list[torch.Tensor] | None = None
        self.difference: list[torch.Tensor] | None = None

    def _tensor(self, values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float64).to(dtype=self.dtype, device=self.device)

    def _weighted(self, group: int, times: np.ndarray,
                  weight_sets: Sequence[np.ndarray]) -> list[list[torch.Tensor]]:
        """For each weight set w: [Σ_k w_k·a_kᵀ∂f(τ_k, z_k)/∂θ per param (+ Σ_k w_k·a_k·∂f/∂τ_k)], from one
        evaluation of f at all ``times``."""
        states = self.reader(np.full(times.size, group), times)
        zs, adjoints = states[:, :self.size], states[:, self.size:]
        with torch.enable_grad():
            tau = self._tensor(times).requires_grad_(self.t_grad)
            inputs = self.params + ((tau,) if self.t_grad else ())
            out = None
            if self.batched:
                try:
                    out = torch.func.vmap(self.field)(tau, zs)
                except Exception:
                    self.batched = False
            if out is None:
                out = torch.stack([self.field(tau[k], zs[k]) for k in range(zs.shape[0])])
            sums = []
            for j, weights in enumerate(weight_sets):
                if inputs and out.requires_grad:
                    grads = list(torch.autograd.grad(out, inputs, adjoints * self._tensor(weights).unsqueeze(1),
                                                     allow_unused=True, retain_graph=j + 1 < len(weight_sets)))
                else:
                    grads = [None] * len(inputs)
                parts = [torch.zeros_like(p, dtype=self.dtype) if g is None else g.to(self.dtype)
                         for p, g in zip(self.params, grads)]
                if self.t_grad:
                    parts.append(torch.zeros((), dtype=self.dtype, device=self.device) if grads[-1] is None
                                 else grads[-1].sum().to(self.dtype))
                sums.append(parts)
        return sums

    def _accumulate(self, kronrod: list[torch.Tensor], difference: list[torch.Tensor]) -> None:
        # the first panel's tensors become the totals (no copy); later ones add out of place, so rows stay intact
        if self.integral is None:
            self.integral, self.difference = list(kronrod), list(difference)
        else:
            self.integral = [a + b for a, b in zip(self.integral, kronrod)]
            self.difference = [a + b for a, b in zip(self.difference, difference)]

    def add(self, panels: list[Panel]) -> None:
        for panel in panels:
            times, wk, wg = panel.nodes()
            row = self._weighted(panel.group, times, (wk, wk - wg))
            self.rows.append(row)
            self._accumulate(*row)

    def locate(self, panels: list[Panel]) -> None:
        """Raise :class:`~gqref.errors.NonFiniteFieldError` naming the first node of ``panels`` whose VJP is not
        finite (called by :func:`gqref.panels.refine` once a round's sums came out NaN/inf)."""
        for panel in panels:
            times = panel.nodes()[0]
            states = self.reader(np.full(times.size, panel.group), times)
            name_nonfinite_node(self.field, self._tensor(times), states[:, :self.size], states[:, self.size:],
                             self.params, self.t_grad)

    def keep(self, indices: list[int]) -> None:
        self.rows = [self.rows[k] for k in indices]
        self.integral = self.difference = None
        for row in self.rows:
            self._accumulate(*row)

    def totals(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(I = Σ_p K_p, E = |Σ_p (K_p − G_p)|), per parameter (and the time integral last)."""
        return self.integral, [d.abs() for d in self.difference]

    def _blocks(self, parts: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """gqref's blocks: the parameter gradient, then (with t_grad) the time integral."""
        n = len(self.params)
        return [parts[:n]] + ([parts[n:]] if self.t_grad else [])

    def assess(self, rtol: float, atol: float, blocks: Sequence[slice], scales: Sequence[float]) -> Assessment:
        def max_abs(parts):
            return torch.stack([p.abs().max() for p in parts if p.numel()]).max() if any(
                p.numel() for p in parts) else torch.zeros((), dtype=self.dtype, device=self.device)

        # the quick test first: E_j ≤ atol + rtol·‖I_b‖_∞ for all j implies the full test (the roundoff floor only
        # raises targets), in two max-norm reads per block and one transfer
        block_scales = scales
        scales = [max_abs(b) for b in self._blocks(self.integral)]
        errors = [max_abs(b) for b in self._blocks(self.difference)]
        host = torch.stack(scales + errors).tolist()
        scales, errors = host[:len(scales)], host[len(scales):]
        finite = all(np.isfinite(host))
        if not finite:
            return Assessment(False, False, np.zeros(0), float("inf"))
        levels = [atol + rtol * max(s, floor) for s, floor in zip(scales, block_scales)]
        if all(e <= level for e, level in zip(errors, levels)):
            worst = max((e / level if level > 0 else 0.0 for e, level in zip(errors, levels)), default=0.0)
            return Assessment(True, True, np.zeros(0), worst)
        # the full test, with the roundoff floor ρ_j = 100·ε·Σ_p |K_p,j|, and the panels' shares
        floor = ROUNDOFF_ULPS * torch.finfo(self.dtype).eps
        tiny = torch.finfo(self.dtype).tiny  # target 0 only where every K_p is 0: any error there fails
        absolute = [sum(row[0][j].abs() for row in self.rows) for j in range(len(self.integral))]
        targets = []
        for block_abs, level in zip(self._blocks(absolute), levels):
            targets += [(floor * a).clamp_min(level).clamp_min(tiny) for a in block_abs]
        ratios = [d.abs() / target for d, target in zip(self.difference, targets)]
        worst = max_abs(ratios)
        shares = torch.stack([max_abs([d.abs() / target for d, target in zip(row[1], targets)])
                              for row in self.rows])
        host = torch.cat((worst.reshape(1), shares)).tolist()
        return Assessment(True, host[0] <= 1.0, np.array(host[1:]), host[0])
