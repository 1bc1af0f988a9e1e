"""Adaptive Gauß–Kronrod quadrature of a vector integrand over panels, refined in batched rounds until a tolerance.

Why a module of its own: GQ's ``quadrature="adaptive"`` needs an integrator that (1) integrates a vector (the
parameter gradient) with one error test for all its components, (2) starts from given panels (the backward
solver's steps, on each of which the integrand read from the dense output is smooth), and (3) evaluates all the
nodes of one refinement round in a single call, so a batched twin (gqtorch: one vmap'd VJP per round) has the same
structure.

The algorithm (globally adaptive, like QUADPACK's QAG, but a round refines many panels at once):

1. Every pending panel gets the (2n+1)-point Gauß–Kronrod pair (:func:`gqref.kronrod.gauss_kronrod`); all their
   nodes go to ``integrand`` in one call.
2. Each panel p keeps its Gauß sum G_p, its Kronrod–Gauß difference d_p = K_p − G_p and Σ|w·g| (for the
   roundoff floor). The result is I = Σ_p G_p and its estimated error E = |Σ_p d_p| = |K − G| for the totals
   (componentwise): K is far more accurate than G, so Σ_p d_p ≈ Σ_p (I_p − G_p) is G's error, cancellations
   between panels included. (QUADPACK's Σ_p |d_p| would be a safer-looking but looser number: measured 10–250×
   the actual error on problems with hundreds of panels; it still decides which panels to split.)
3. Stop when, for every block b of components (e.g. the parameter gradient, the time integral) and every component
   j in it, E_j ≤ max(atol + rtol·‖I_b‖_∞, ρ_j), with the roundoff floor ρ_j = 100·ε·Σ_p Σ|w·g_j| (what summing the
   nodes in floating point can resolve; a tolerance below it cannot be met, so it is met at that level).
4. Otherwise bisect the panels with the largest scaled errors |d_p| / target (largest first, until the ones left
   alone use at most half the tolerance even without cancellations) and go to 1. A group (e.g. one output
   interval) whose refinement (the rounds after the first) would evaluate more than ``max_refinement_nodes``
   nodes raises :class:`QuadratureLimitError`; so does a non-finite integrand value
   (:class:`gqref.errors.NonFiniteFieldError`). The roundoff floor makes every finite tolerance reachable, so the
   limit only stops integrands that converge very slowly (jumps, cusps) or not at all.

G, not K, is returned, and E estimates G's error: on a panel where the integrand is smooth K is far more accurate
than G, so |K − G| is close to G's actual error — an estimate, not a loose bound. (Returning K would usually be more
accurate still, but then nothing would say by how much.) Panels must not straddle points where the integrand or its
low derivatives jump: there G and K err alike and |K − G| can miss most of the error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from gqref.errors import GQError, InputError, NonFiniteFieldError
from gqref.kronrod import gauss_kronrod
from gqref.rules import REFINEMENT_MAX_NODES, ROUNDOFF_ULPS, STEP_NODES

DEFAULT_KRONROD_N = STEP_NODES  # G3/K7 panels: G3 is GQ's step rule (see gqref.gq)
ROUNDOFF_FLOOR = ROUNDOFF_ULPS * np.finfo(np.float64).eps
_Vector = TypeVar("_Vector")  # the result's per-component vectors: np.ndarray (gqref) or torch.Tensor (gqtorch)
SPLIT_BUDGET = 0.5  # after a round's splits, the panels left alone use at most this share of the tolerance


class QuadratureLimitError(GQError, RuntimeError):
    """Adaptive quadrature would need more refinement nodes than its safety limit allows (per group)."""


@dataclass(frozen=True)
class AdaptiveQuadrature(Generic[_Vector]):
    """The result of :func:`integrate_panels` (and of gqtorch's twin, whose vectors are device tensors).

    ``integral`` (D,) is Σ of the final panels' Gauß sums; ``error`` (D,) its estimated error |Σ_p (K_p − G_p)|
    per component and ``error_sum`` (D,) the cancellation-free Σ_p |K_p − G_p|; ``roundoff`` (D,) the floor ρ;
    ``nodes[g]`` the number of nodes evaluated for group g (all rounds, split panels included: the cost) and
    ``node_times[g]`` those nodes; ``panels`` the final panel count per group; ``rounds`` the evaluation rounds.
    """

    integral: _Vector
    error: _Vector
    error_sum: _Vector
    roundoff: _Vector
    nodes: tuple[int, ...]
    node_times: tuple[np.ndarray, ...]
    panels: tuple[int, ...]
    rounds: int


def integrate_panels(
    integrand: Callable[[np.ndarray, np.ndarray], np.ndarray],
    panels: Sequence[tuple[int, float, float]],
    *,
    n_groups: int,
    dimension: int,
    rtol: float,
    atol: float,
    blocks: Sequence[slice] | None = None,
    max_refinement_nodes: int = REFINEMENT_MAX_NODES,
    n: int = DEFAULT_KRONROD_N,
) -> AdaptiveQuadrature[np.ndarray]:
    """Σ over ``panels`` (group, lo, hi) of ∫_lo^hi g(t) dt, refined until the estimated error meets the tolerance.

    ``integrand(groups, times) -> (len(times), dimension)`` evaluates g at a batch of nodes (``groups[k]`` says
    which group's function to use at ``times[k]``); it is called once per round. ``lo > hi`` integrates backwards
    (a negative orientation). ``blocks`` partition the components for the relative test (default: one block).
    The test, the split rule and the meaning of the result are in the module docstring.
    """
    if not panels:
        raise InputError("integrate_panels needs at least one panel")
    blocks = [slice(0, dimension)] if blocks is None else list(blocks)
    x_ref, wk_ref, wg_ref = gauss_kronrod(n)
    book = PanelRounds(panels, n_groups, x_ref, max_refinement_nodes, rtol, atol)
    done_g, done_d, done_abs = [], [], []  # per kept panel: G (D,), K − G (D,), Σ|w·g| (D,)
    while True:
        groups, half, times = book.nodes()
        # all nodes of the round at once (the batched call a twin makes)
        values = np.asarray(integrand(np.repeat(groups, book.width), times.reshape(-1)), dtype=np.float64)
        if not np.all(np.isfinite(values)):
            bad = float(times.reshape(-1)[int(np.argmax(~np.isfinite(values).all(axis=1)))])
            raise NonFiniteFieldError(f"the quadrature's integrand is not finite (NaN or inf) at t = {bad!r}", bad)
        values = values.reshape(len(groups), book.width, dimension)
        gauss = np.einsum("pk,pkd->pd", half[:, None] * wg_ref[None, :], values)
        kronrod = np.einsum("pk,pkd->pd", half[:, None] * wk_ref[None, :], values)
        absolute = np.einsum("pk,pkd->pd", np.abs(half)[:, None] * wk_ref[None, :], np.abs(values))
        book.evaluated()
        done_g += list(gauss)
        done_d += list(kronrod - gauss)
        done_abs += list(absolute)
        g_all, e_all = np.array(done_g), np.abs(np.array(done_d))
        integral, error = g_all.sum(axis=0), np.abs(np.array(done_d).sum(axis=0))
        roundoff = ROUNDOFF_FLOOR * np.array(done_abs).sum(axis=0)
        target = np.empty(dimension)
        for block in blocks:
            scale = np.max(np.abs(integral[block]), initial=0.0)
            target[block] = np.maximum(atol + rtol * scale, roundoff[block])
        if np.all(error <= target):
            break
        # scaled error of each panel: its share of the tolerance in its worst component
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(e_all > 0, e_all / np.where(target > 0, target, np.inf), 0.0)
        keep = book.split(np.where(np.isfinite(share), share, np.inf).max(axis=1))
        done_g = [done_g[k] for k in keep]
        done_d = [done_d[k] for k in keep]
        done_abs = [done_abs[k] for k in keep]
    return AdaptiveQuadrature(integral=integral, error=error, error_sum=e_all.sum(axis=0), roundoff=roundoff,
                              **book.counts())


def panels_to_split(share: np.ndarray) -> list[int]:
    """The panels to split, in index order: largest scaled error ``share`` first, until those left alone use at most
    ``SPLIT_BUDGET`` of the tolerance (at least one, the largest). Also the auto rule's (:mod:`gqref.panels`)."""
    order = np.argsort(-share, kind="stable")
    left = share.sum() - np.cumsum(share[order])  # what stays if the first k+1 are split
    n_split = int(np.argmax(left <= SPLIT_BUDGET)) + 1 if np.any(left <= SPLIT_BUDGET) else len(order)
    return sorted(order[:n_split].tolist())


class PanelRounds:
    """The host side of :func:`integrate_panels`, the same for gqtorch's twin (all float64 numpy): the pending and
    the kept panels, the nodes evaluated per group and their times, the node limit and the split rule (steps 1 and
    4 of the module docstring). The twins keep the panel sums, the error test and the scaled errors themselves."""

    def __init__(self, panels: Sequence[tuple[int, float, float]], n_groups: int, x_ref: np.ndarray,
                 max_refinement_nodes: int, rtol: float, atol: float):
        self.x_ref, self.width, self.n_groups = x_ref, x_ref.size, n_groups
        self.max_refinement_nodes, self.rtol, self.atol = max_refinement_nodes, rtol, atol
        self.pending = [(int(g), float(lo), float(hi)) for g, lo, hi in panels]
        self.done: list[tuple[int, float, float]] = []
        self.nodes_used = np.zeros(n_groups, dtype=np.int64)
        self.first_round = self.width * np.bincount(np.array([p[0] for p in self.pending], dtype=np.int64),
                                                    minlength=n_groups)
        self.times_by_group: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
        self.rounds = 0

    def nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pending panels' groups (P,), half-widths (P,) and node times (P, width), counted and recorded;
        :class:`QuadratureLimitError` when a group's refinement would pass ``max_refinement_nodes``."""
        groups = np.array([p[0] for p in self.pending], dtype=np.int64)
        lo = np.array([p[1] for p in self.pending])
        hi = np.array([p[2] for p in self.pending])
        self.nodes_used += self.width * np.bincount(groups, minlength=self.n_groups)
        over = self.nodes_used - self.first_round > self.max_refinement_nodes
        if np.any(over):
            g = int(np.argmax(over))
            raise QuadratureLimitError(
                f"adaptive quadrature would evaluate more than max_nodes = {self.max_refinement_nodes} refinement "
                f"nodes in group {g} (GQ: the interval [t_{g}, t_{g + 1}]) to reach rtol = {self.rtol:g}, "
                f"atol = {self.atol:g} ({self.rounds} rounds so far): "
                "the integrand may be non-smooth there, or the tolerance far below what it needs; raise max_nodes "
                "or loosen the tolerance"
            )
        half = 0.5 * (hi - lo)
        times = 0.5 * (lo + hi)[:, None] + half[:, None] * self.x_ref[None, :]
        for g, row in zip(groups, times):
            self.times_by_group[g].append(row)
        return groups, half, times

    def evaluated(self) -> None:
        """The pending panels' sums are in: they join the kept panels (their sums appended in the same order)."""
        self.done += self.pending
        self.rounds += 1

    def split(self, share: np.ndarray) -> list[int]:
        """Bisect the kept panels :func:`panels_to_split` picks by their scaled errors ``share`` (P,); the halves are
        the next round's panels. Returns the indices of the panels kept (whose sums the caller keeps, in order)."""
        chosen = panels_to_split(share)
        self.pending = []
        for index in chosen:
            g, a, b = self.done[index]
            cut = 0.5 * (a + b)
            self.pending += [(g, a, cut), (g, cut, b)]
        keep = sorted(set(range(len(self.done))) - set(chosen))
        self.done = [self.done[k] for k in keep]
        return keep

    def counts(self) -> dict:
        """The result's ``nodes``, ``node_times``, ``panels`` and ``rounds``."""
        panel_counts = np.bincount(np.array([p[0] for p in self.done]), minlength=self.n_groups)
        return dict(nodes=tuple(int(c) for c in self.nodes_used),
                    node_times=tuple(np.concatenate(ts) if ts else np.empty(0) for ts in self.times_by_group),
                    panels=tuple(int(c) for c in panel_counts), rounds=self.rounds)
