"""The auto rule's panels: the paper's nodes per interval, checked by their Kronrod extension, refined where needed.

Why this rule is GQ's default. The paper's rule (n_i = ⌈C·NFE·Δt_i/T⌉ Gauß–Legendre nodes per interval, C = 0.1)
is fast, and on smooth problems accurate far beyond the solver's tolerance; but it is a node budget, not a
tolerance, and nothing tells the user when it is not enough. On torchdiffeq's cubic spiral (t ∈ [0, 25], 9
intervals) the forward NFE is concentrated at the start, where the spiral turns fast, and 28 evenly spaced nodes
per interval leave the parameter gradient 3e-3 off. The per-step G3/K7 rule ("adaptive") fixes that but pays at
least 7 nodes per backward step everywhere. This rule pays the paper's nodes plus n_i + 1 Kronrod nodes per
interval where the paper's rule is already accurate, and spends more only where its own check fails.

The algorithm (one round evaluates every pending panel; a twin does it in batched VJPs):

1. Every interval [t_{i−1}, t_i] starts as one panel with n = max(n_i, 2) Gauß nodes (the paper's count, so its
   G sum is the paper's rule wherever n_i ≥ 2: :func:`first_round_counts`) and the (2n+1)-point Kronrod
   extension (:func:`gqref.kronrod.gauss_kronrod`). A panel keeps the backward solver's step ends inside it
   (``cuts``).
2. Per panel p: G_p and K_p. The result is I = Σ_p K_p, and E = |Σ_p (K_p − G_p)| (componentwise) estimates the
   error of Σ_p G_p — realistic for G, and on the safe side for the K returned (K is exact to degree 3n+1, G to
   2n−1).
3. Stop when E_j ≤ max(atol + rtol·‖I_b‖_∞, ρ_j) for every component j of every block b (the parameter gradient;
   the time integral of dL/dt_0, whose scale is at least that of the other terms of dL/dt_0: :func:`refine`),
   with the roundoff floor ρ_j = 100·ε·Σ_p |K_p,j| (panel sums, so cancellation inside a panel is not seen; a
   tolerance below what the dtype resolves then still stops).
4. Otherwise split the panels with the largest scaled errors |K_p − G_p|/target (largest first, until the ones
   left alone use at most half the tolerance: :data:`gqref.refinement.SPLIT_BUDGET`). A panel is split at its
   middle backward-step end, so the children hold equal numbers of steps: the solver's steps mark where the state,
   and so the integrand, changes fast. A panel inside one step is bisected. A child keeps its parent's n, capped
   at 3 nodes per step it holds (:data:`gqref.rules.STEP_NODES`, where the step rule already meets the dense
   output's own accuracy), and at least 3 (with fewer, |K − G| measures a G far worse than the K returned).
5. If the next round would take some interval's refinement nodes past ``max_nodes``, stop: warn
   (:class:`gqref.errors.QuadratureAccuracyWarning`, naming the intervals and the error reached) or, with
   ``strict``, raise :class:`gqref.refinement.QuadratureLimitError`. A non-finite integrand raises
   :class:`gqref.errors.NonFiniteFieldError`.

Reuse across calls (:class:`CheckMemory`; opt-in, ``AutoRule(recheck_every=k)`` with k > 1). When a check
passes in its first round with E ≤ 0.1 × its tolerance (:data:`gqref.rules.REUSE_MARGIN`), the next k − 1 calls on
the same field with the same parameters (unchanged since the check), output times, shapes and settings evaluate
only those Gauß nodes (the paper's rule with the checked counts, at the paper's cost or less: those solves start
warm) and report ``quadrature_checked = False``; then a full check runs again. The state may differ between them
(batches at fixed parameters: gradient accumulation, evaluation); the margin covers that. A change of the
parameters means a full check: in g1d training (Adam, lr 0.01) the paper's nodes went from 5e-7 off at a passed
check to 1.7e-3 off (tolerance 1e-3) nine optimizer steps later, so a margin does not cover training's changes.
Reuse was the default (k = 10) until that measurement; training never reuses (its parameters change every step),
so the default is now k = 1. A check that needed refinement, fewer nodes than were checked, or any change of
context also means a full check on the next call. Measured on g1d and nested spheres at tol 1e-3
(docs/benchmarks.md): a full check costs 1.04–1.55× the paper's rule per step.

The panel logic here (panels, node times, splits, the budget, the driver :func:`refine`) is backend-free and
shared with gqtorch; only the panel sums and the stop test are per backend (:class:`NumpyPanelSums` here,
``gqtorch.panels.TorchPanelSums`` there).
"""

from __future__ import annotations

import hashlib
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gqref.errors import NonFiniteFieldError, QuadratureAccuracyWarning
from gqref.kronrod import gauss_kronrod
from gqref.quadrature import node_count
from gqref.refinement import QuadratureLimitError, panels_to_split
from gqref.rules import FIRST_ROUND_MIN_NODES, PAPER_MAX_NODES, REUSE_MARGIN, ROUNDOFF_ULPS, STEP_NODES


@dataclass(frozen=True)
class Panel:
    """∫ from ``lo`` (the t_{i−1} side) to ``hi`` on interval ``group`` (= i − 1) with an n-point Gauß rule and its
    Kronrod extension; ``cuts`` are the backward step ends strictly inside, ordered from lo to hi."""

    group: int
    lo: float
    hi: float
    n: int
    cuts: tuple[float, ...] = ()

    @property
    def width(self) -> int:
        return 2 * self.n + 1

    def nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, signed Kronrod weights, signed Gauß weights), 2n+1 each: ∫_lo^hi g ≈ Σ w·g(times)."""
        x, wk, wg = gauss_kronrod(self.n)
        half = 0.5 * (self.hi - self.lo)
        return 0.5 * (self.lo + self.hi) + half * x, half * wk, half * wg

    def split(self) -> tuple[Panel, Panel]:
        """Two children: at the middle step end (equal numbers of steps), or in half inside one step."""
        if self.cuts:
            k = len(self.cuts) // 2
            cut, left, right = self.cuts[k], self.cuts[:k], self.cuts[k + 1:]
        else:
            cut, left, right = 0.5 * (self.lo + self.hi), (), ()
        return (Panel(self.group, self.lo, cut, self._child_nodes(len(left) + 1), left),
                Panel(self.group, cut, self.hi, self._child_nodes(len(right) + 1), right))

    def _child_nodes(self, steps: int) -> int:
        # at most 3 per step (the step rule's accuracy), at least 3: with fewer, |K − G| (G's error) would far
        # exceed the error of the K returned, and refinement would chase G's error instead of K's
        return max(STEP_NODES, min(self.n, STEP_NODES * steps))


def first_round_counts(rule, nfe: int, t: Sequence[float]) -> list[int]:
    """The auto rule's Gauß nodes per interval in its first round: the paper's n_i = min(⌈C·NFE·Δt_i/T⌉, 64), at
    least :data:`gqref.rules.FIRST_ROUND_MIN_NODES` (with one node, |K − G| is the midpoint rule's error, far above
    that of the K returned, and nearly every check would fail into refinement)."""
    return [max(FIRST_ROUND_MIN_NODES, node_count(rule.C, nfe, t[g], t[g + 1], t[0], t[-1], PAPER_MAX_NODES))
            for g in range(len(t) - 1)]


def interval_panels(step_ends: Sequence[np.ndarray], t: Sequence[float], counts: Sequence[int]) -> list[Panel]:
    """One panel per interval i (group i − 1) with ``counts[i − 1]`` Gauß nodes; ``step_ends[i − 1]`` are the
    backward step ends from t_i towards t_{i−1} (the last may overshoot it: the solver does not cut steps)."""
    panels = []
    for g, ends in enumerate(step_ends):
        lo, hi = float(t[g]), float(t[g + 1])
        inside = [float(e) for e in ends if min(lo, hi) < e < max(lo, hi)]
        inside.sort(reverse=lo > hi)  # from lo to hi
        panels.append(Panel(g, lo, hi, int(counts[g]), tuple(inside)))
    return panels


@dataclass(frozen=True)
class Assessment:
    """One round's verdict, on the host: ``finite`` (every panel sum is), ``met`` (the tolerance), ``shares`` (each
    kept panel's scaled error max_j |K_p − G_p|_j / target_j) and ``worst`` (max_j E_j / target_j)."""

    finite: bool
    met: bool
    shares: np.ndarray
    worst: float


class PanelSums(Protocol):
    """The backend half of :func:`refine`: evaluates panels, keeps their sums, judges the round."""

    def add(self, panels: list[Panel]) -> None:
        """Evaluate G_p and K_p for ``panels`` (appended after the kept ones)."""

    def keep(self, indices: list[int]) -> None:
        """Keep only the panels at ``indices`` (in order)."""

    def assess(self, rtol: float, atol: float, blocks: Sequence[slice], scales: Sequence[float]) -> Assessment:
        """The stop test of the module docstring (step 3) and the panels' shares."""


@dataclass(frozen=True)
class Refinement:
    """What :func:`refine` did: nodes evaluated and their times per interval, final panels per interval, rounds,
    and whether the tolerance was met (False only after a budget warning)."""

    nodes: tuple[int, ...]
    node_times: tuple[np.ndarray, ...]
    panels: tuple[int, ...]
    rounds: int
    met: bool
    worst: float


def refine(sums: PanelSums, panels: list[Panel], *, n_groups: int, rtol: float, atol: float,
           blocks: Sequence[slice], max_nodes: int, strict: bool, scales: Sequence[float] | None = None) -> Refinement:
    """Evaluate ``panels`` and split them until the tolerance is met or the budget runs out (module docstring).

    ``scales[b]`` is a floor under block b's scale ‖I_b‖_∞ in the relative test: the size of what the integral is
    added to (GQ: Σ_i |f_i·dL/dy_i|, the other terms of dL/dt_0). Without it a time integral that vanishes (an
    autonomous field: a·∂f/∂t ≡ 0 up to noise) would be held to a relative tolerance of noise and never stop.
    """
    scales = [0.0] * len(blocks) if scales is None else [float(s) for s in scales]
    done: list[Panel] = []
    pending = list(panels)
    counts = np.zeros(n_groups, dtype=np.int64)
    first_round = np.zeros(n_groups, dtype=np.int64)
    for p in pending:
        first_round[p.group] += p.width
    times: list[list[np.ndarray]] = [[] for _ in range(n_groups)]
    rounds = 0
    met = True
    while True:
        for p in pending:
            counts[p.group] += p.width
            times[p.group].append(p.nodes()[0])
        sums.add(pending)
        done += pending
        rounds += 1
        verdict = sums.assess(rtol, atol, blocks, scales)
        if not verdict.finite:
            locate = getattr(sums, "locate", None)  # a twin's sums may name the node (it raises if it can)
            if locate is not None:
                locate(pending)
            named = ", ".join(f"[{p.lo!r}, {p.hi!r}] in [t_{p.group}, t_{p.group + 1}]" for p in pending[:3])
            raise NonFiniteFieldError("GQ's quadrature integrand (aᵀ∂f/∂θ or a·∂f/∂t) is not finite (NaN or inf) "
                                      f"at a node of the panels {named}{' …' if len(pending) > 3 else ''}",
                                      float(pending[0].lo))
        if verdict.met:
            break
        chosen = panels_to_split(verdict.shares)
        children = [child for k in chosen for child in done[k].split()]
        extra = counts.copy()
        for p in children:
            extra[p.group] += p.width
        over = np.flatnonzero(extra - first_round > max_nodes)
        if over.size:
            named = ", ".join(f"[t_{g}, t_{g + 1}]" for g in over[:5]) + (" …" if over.size > 5 else "")
            message = (f"GQ's quadrature stopped at its node budget (max_nodes = {max_nodes} refinement nodes per "
                       f"interval) on {named} with the estimated error {verdict.worst:.3g}× its tolerance "
                       f"(rtol = {rtol:g}, atol = {atol:g}); the gradient is less accurate than asked. Raise "
                       "max_nodes, loosen gtol, or tighten the adjoint tolerances if the backward solve is coarse")
            if strict:
                raise QuadratureLimitError(message)
            warnings.warn(message, QuadratureAccuracyWarning, stacklevel=4)
            met = False
            break
        split = set(chosen)
        keep = [k for k in range(len(done)) if k not in split]
        sums.keep(keep)
        done = [done[k] for k in keep]
        pending = children
    per_group = np.bincount(np.array([p.group for p in done], dtype=np.int64), minlength=n_groups)
    return Refinement(nodes=tuple(int(c) for c in counts),
                      node_times=tuple(np.concatenate(ts) if ts else np.empty(0) for ts in times),
                      panels=tuple(int(c) for c in per_group), rounds=rounds, met=met, worst=verdict.worst)


def tolerance_targets(integral: np.ndarray, roundoff: np.ndarray, rtol: float, atol: float,
                      blocks: Sequence[slice], scales: Sequence[float]) -> np.ndarray:
    """target_j = max(atol + rtol·max(‖I_b‖_∞, scale_b), ρ_j) for every component j of every block b."""
    target = np.empty(integral.shape)
    for block, floor in zip(blocks, scales):
        scale = max(np.max(np.abs(integral[block]), initial=0.0), floor)
        target[block] = np.maximum(atol + rtol * scale, roundoff[block])
    return target


class NumpyPanelSums:
    """gqref's panel sums: ``integrand(groups, times) -> (len(times), D)`` rows, one call per round."""

    def __init__(self, integrand: Callable[[np.ndarray, np.ndarray], np.ndarray], dimension: int):
        self.integrand = integrand
        self.gauss = np.zeros((0, dimension))
        self.kronrod = np.zeros((0, dimension))

    def add(self, panels: list[Panel]) -> None:
        rules = [p.nodes() for p in panels]
        groups = np.concatenate([np.full(p.width, p.group) for p in panels])
        values = np.asarray(self.integrand(groups, np.concatenate([r[0] for r in rules])), dtype=np.float64)
        bounds = np.cumsum([0] + [p.width for p in panels])
        gauss = np.array([r[2] @ values[a:b] for r, a, b in zip(rules, bounds[:-1], bounds[1:])])
        kronrod = np.array([r[1] @ values[a:b] for r, a, b in zip(rules, bounds[:-1], bounds[1:])])
        self.gauss = np.concatenate([self.gauss, gauss.reshape(len(panels), -1)])
        self.kronrod = np.concatenate([self.kronrod, kronrod.reshape(len(panels), -1)])

    def keep(self, indices: list[int]) -> None:
        self.gauss, self.kronrod = self.gauss[indices], self.kronrod[indices]

    def totals(self) -> tuple[np.ndarray, np.ndarray]:
        """(I = Σ_p K_p, E = |Σ_p (K_p − G_p)|)."""
        return self.kronrod.sum(axis=0), np.abs((self.kronrod - self.gauss).sum(axis=0))

    def assess(self, rtol: float, atol: float, blocks: Sequence[slice], scales: Sequence[float]) -> Assessment:
        if not (np.all(np.isfinite(self.gauss)) and np.all(np.isfinite(self.kronrod))):
            return Assessment(False, False, np.zeros(0), float("inf"))
        integral, error = self.totals()
        roundoff = ROUNDOFF_ULPS * np.finfo(np.float64).eps * np.abs(self.kronrod).sum(axis=0)
        target = tolerance_targets(integral, roundoff, rtol, atol, blocks, scales)
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(target > 0, np.abs(self.kronrod - self.gauss) / target, np.inf)
            scaled = np.where(np.abs(self.kronrod - self.gauss) > 0, scaled, 0.0)
            ratio = np.where(target > 0, error / target, np.where(error > 0, np.inf, 0.0))
        worst = float(np.max(ratio, initial=0.0))
        return Assessment(True, bool(np.all(error <= target)), scaled.max(axis=1, initial=0.0), worst)


def parameter_fingerprint(params: np.ndarray) -> bytes:
    """The parameters' values, digested: a check is reused only while they stay exactly what it checked."""
    values = np.ascontiguousarray(params)
    return hashlib.blake2b(values.dtype.str.encode() + repr(values.shape).encode() + values.tobytes(),
                           digest_size=16).digest()


class CheckMemory:
    """What the auto rule's last check on each field found, so that training need not re-check every call.

    Keys are the field objects by identity (held weakly: a field that is garbage-collected is forgotten; one that
    cannot be weakly referenced is checked every call). ``context`` is everything else the check depended on and
    must match exactly (GQ: the parameters, unchanged since the check, the output times, shapes, dtype,
    tolerances, the rule, whether t is differentiated). The state may differ (another batch).
    """

    def __init__(self):
        self._entries: dict[int, tuple[weakref.ref, dict]] = {}

    def _entry(self, field) -> dict | None:
        found = self._entries.get(id(field))
        return found[1] if found is not None and found[0]() is field else None

    def trusted(self, field, context: tuple, counts: Sequence[int]) -> bool:
        """True (and one reuse spent) if the last check on ``field`` in this ``context`` passed with the margin,
        has reuses left, and had at most ``counts`` Gauß nodes per interval (fewer nodes were not checked)."""
        entry = self._entry(field)
        if entry is None or entry["context"] != context or entry["left"] <= 0:
            return False
        if any(now < then for now, then in zip(counts, entry["counts"], strict=True)):
            return False
        entry["left"] -= 1
        return True

    def record(self, field, context: tuple, counts: Sequence[int], done: Refinement, recheck_every: int) -> None:
        """Remember a check that the paper's nodes passed in the first round with the margin; forget otherwise."""
        key = id(field)
        if not (done.rounds == 1 and done.met and done.worst <= REUSE_MARGIN and recheck_every > 1):
            self._entries.pop(key, None)
            return
        try:
            ref = weakref.ref(field, lambda _, key=key: self._entries.pop(key, None))
        except TypeError:  # not weakly referenceable: never remembered
            return
        self._entries[key] = (ref, {"context": context, "counts": tuple(counts), "left": recheck_every - 1})


AUTO_CHECKS = CheckMemory()  # one memory for both twins (their fields are different objects)
