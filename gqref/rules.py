"""GQ's quadrature rules as small typed objects, shared by gqref and gqtorch.

A rule says where GQ places its nodes and what, if anything, it promises about the quadrature error. Each rule is a
frozen dataclass that validates its own fields (an :class:`~gqref.errors.InputError` naming the field), so
``gqref.gradient(..., quadrature=AutoRule(rtol=1e-6))`` and ``gqtorch.odeint_adjoint_gq(..., quadrature=...)`` take
the same objects. The strings ``"auto"``, ``"interval"``, ``"step"``, ``"adaptive"`` with the keyword options
``gtol``/``gatol``/``max_nodes``/``strict`` are shortcuts for them (:func:`quadrature_rule`).

| rule | nodes | error estimate |
|---|---|---|
| :class:`AutoRule` (default) | the paper's nodes per interval + their Kronrod extension, refined | yes, to ``rtol`` |
| :class:`IntervalRule` | the paper's rule: n_i = min(⌈C·NFE·Δt_i/T⌉, max_nodes) per interval | none |
| :class:`StepRule` | 3 Gauß–Legendre nodes on every backward step | none |
| :class:`AdaptiveRule` | a G3/K7 pair on every backward step, bisected until ``rtol`` | yes |

Why the auto rule is the default, and how it works: :mod:`gqref.panels`.

``warm_start`` (every rule): each adaptive backward solve starts with the last accepted step before it (the forward
solve's for the last interval, then the previous backward solve's) instead of the initial-step heuristic, which
costs one evaluation of the backward dynamics per interval. On by default except for :class:`IntervalRule`, whose
arithmetic stays the original implementation's.
"""

from __future__ import annotations

from dataclasses import dataclass

from gqref.arguments import count, flag, non_negative_float, positive_float
from gqref.errors import InputError
from gqref.quadrature import DEFAULT_MAX_NODES as PAPER_MAX_NODES  # the paper's cap on nodes per interval

PAPER_C = 0.1  # the paper's node-rule constant C (Norcliffe & Deisenroth 2023, §4)
STEP_NODES = 3  # Gauß–Legendre nodes per backward step (why 3: gqref.gq)
REFINEMENT_MAX_NODES = 10_000  # error-controlled rules: safety limit on refinement nodes per interval
ROUNDOFF_ULPS = 100  # a relative tolerance below ROUNDOFF_ULPS·ε of the working dtype cannot be verified
FIRST_ROUND_MIN_NODES = 2  # AutoRule: Gauß nodes per interval in the first round, at least (gqref.panels)
RECHECK_EVERY = 1  # AutoRule: calls per check once a check passed with a wide margin (1: every call is checked;
# reuse is opt-in, because a margin did not cover training's changes: gqref.panels)
REUSE_MARGIN = 0.1  # AutoRule: the margin (error / tolerance) a check must show before its result is reused


def _check_tolerances(rule) -> None:
    """Validate (and normalise) the fields the error-controlled rules share: rtol, atol, max_nodes."""
    owner = type(rule).__name__
    if rule.rtol is not None:
        object.__setattr__(rule, "rtol", positive_float(f"{owner}: rtol (gtol)", rule.rtol))
    object.__setattr__(rule, "atol", non_negative_float(f"{owner}: atol (gatol)", rule.atol))
    object.__setattr__(rule, "max_nodes", count(f"{owner}: max_nodes", rule.max_nodes))
    _check_warm_start(rule)


def _check_warm_start(rule) -> None:
    object.__setattr__(rule, "warm_start", flag(f"{type(rule).__name__}: warm_start", rule.warm_start))


@dataclass(frozen=True)
class IntervalRule:
    """The paper's rule: n_i = min(⌈C·NFE·Δt_i/(T − t_0)⌉, max_nodes) Gauß–Legendre nodes on interval i.

    ``C`` is a node budget, not a tolerance: nothing checks the quadrature error (the paper's figures use C = 0.1).
    ``warm_start`` is off: the backward solves are the original implementation's, bit for bit.
    """

    C: float = PAPER_C
    max_nodes: int = PAPER_MAX_NODES
    warm_start: bool = False
    name = "interval"

    def __post_init__(self):
        object.__setattr__(self, "C", positive_float("IntervalRule: C (gtol)", self.C))
        object.__setattr__(self, "max_nodes", count("IntervalRule: max_nodes", self.max_nodes))
        _check_warm_start(self)


@dataclass(frozen=True)
class StepRule:
    """3 Gauß–Legendre nodes on every accepted backward step (no error estimate)."""

    warm_start: bool = True
    name = "step"

    def __post_init__(self):
        _check_warm_start(self)


@dataclass(frozen=True)
class AdaptiveRule:
    """A G3/K7 Gauß–Kronrod pair on every backward step, bisected until E_j ≤ atol + rtol·‖I‖_∞.

    ``rtol`` defaults to the adjoint rtol; ``max_nodes`` is a safety limit on refinement nodes per interval
    (beyond the first 7 per step) that raises :class:`gqref.refinement.QuadratureLimitError`.
    """

    rtol: float | None = None
    atol: float = 0.0
    max_nodes: int = REFINEMENT_MAX_NODES
    warm_start: bool = True
    name = "adaptive"

    def __post_init__(self):
        _check_tolerances(self)

    def relative_tolerance(self, adjoint_rtol: float, eps: float) -> float:
        return adjoint_rtol if self.rtol is None else self.rtol


@dataclass(frozen=True)
class AutoRule:
    """The default: the paper's nodes, checked by their Kronrod extension, refined only where the check fails.

    Every interval starts as one panel with the paper's n_i = min(⌈C·NFE·Δt_i/T⌉, 64) Gauß nodes and their
    n_i + 1 Kronrod nodes. The returned value is the Kronrod sum K; the reported error ``quadrature_error`` is
    E = |Σ_panels (K − G)|, the estimated error of the paper's Gauß sum, so an estimate on the safe side for K.
    Until E_j ≤ atol + rtol·‖I‖_∞ (per block: parameter gradient, time integral) holds, the panels with the
    largest errors are split at their middle backward step (one step: in half). Details: :mod:`gqref.panels`.

    - ``rtol`` (``gtol``): default max(adjoint rtol, 100·ε of the working dtype): the quadrature error is held at
      the backward solve's own error level, never below what the dtype can verify.
    - ``atol`` (``gatol``): absolute tolerance, default 0.
    - ``max_nodes``: refinement nodes per interval beyond the first round; when the budget runs out the result
      comes with a :class:`~gqref.errors.QuadratureAccuracyWarning` naming the interval and the error reached,
      or, with ``strict=True``, a :class:`gqref.refinement.QuadratureLimitError`.
    - ``C``: the first round's node budget (the paper's constant).
    - ``recheck_every`` (default 1: every call is checked): with k > 1, when a check on a field found the paper's
      nodes accurate with a wide margin (the error ≤ :data:`REUSE_MARGIN` × its tolerance, in the first round),
      the next k − 1 calls on the same field with the same parameters, times and shapes use the paper's nodes
      alone (the paper's cost, less a warm start's saving; ``quadrature_checked`` False, no new estimate); then it
      checks again. Any other outcome, or a smaller node count, checks every call. For repeated gradients at
      fixed parameters (micro-batches, evaluation): an optimizer step ends the reuse, because the parameters must
      be unchanged (gqtorch tells by each tensor's version counter, so an update written through ``.data``
      is not seen: keep the default with such updates). Why not by default: :mod:`gqref.panels`.
    - ``warm_start``: see the module's docstring; a reused check's paper-node sweep starts warm too.
    """

    rtol: float | None = None
    atol: float = 0.0
    max_nodes: int = REFINEMENT_MAX_NODES
    strict: bool = False
    C: float = PAPER_C
    recheck_every: int = RECHECK_EVERY
    warm_start: bool = True
    name = "auto"

    def __post_init__(self):
        _check_tolerances(self)
        object.__setattr__(self, "recheck_every", count("AutoRule: recheck_every", self.recheck_every))
        object.__setattr__(self, "strict", flag("AutoRule: strict", self.strict))
        object.__setattr__(self, "C", positive_float("AutoRule: C", self.C))

    def relative_tolerance(self, adjoint_rtol: float, eps: float) -> float:
        return max(adjoint_rtol, ROUNDOFF_ULPS * eps) if self.rtol is None else self.rtol


Rule = AutoRule | IntervalRule | StepRule | AdaptiveRule
RULES = {rule.name: rule for rule in (AutoRule, IntervalRule, StepRule, AdaptiveRule)}
QUADRATURES = tuple(RULES)
DEFAULT_QUADRATURE = "auto"


def quadrature_rule(quadrature="auto", gtol=None, gatol=None, max_nodes=None, strict=None) -> Rule:
    """The rule object for ``quadrature`` (a rule object, or a name with the keyword options).

    ``gtol`` means C for "interval" and the relative tolerance for "auto"/"adaptive"; ``gatol`` the absolute
    tolerance; ``max_nodes`` the cap ("interval") or the refinement budget; ``strict`` ("auto") raises instead of
    warning when the budget runs out. An option a rule has no use for is an error, not a no-op: its meaning differs
    between the rules, so a value given to the wrong one is a mistake.
    """
    given = {name: value for name, value in
             (("gtol", gtol), ("gatol", gatol), ("max_nodes", max_nodes), ("strict", strict)) if value is not None}
    if isinstance(quadrature, tuple(RULES.values())):
        if given:
            raise InputError(f"{sorted(given)} cannot be combined with a rule object ({quadrature!r}): "
                             "set them on the rule")
        return quadrature
    if not isinstance(quadrature, str) or quadrature not in RULES:
        raise InputError(f"quadrature must be one of {list(QUADRATURES)} or a rule object "
                         f"(gqref.rules.AutoRule, …), got {quadrature!r}")
    accepted = {"auto": ("gtol", "gatol", "max_nodes", "strict"), "interval": ("gtol", "max_nodes"),
                "step": (), "adaptive": ("gtol", "gatol", "max_nodes")}[quadrature]
    for name in given:
        if name not in accepted:
            raise InputError(f"{name} does not apply to quadrature={quadrature!r} (it takes "
                             f"{', '.join(accepted) if accepted else 'no options'})")
    if quadrature == "step":
        return StepRule()
    if quadrature == "interval":
        return IntervalRule(**({"C": gtol} if gtol is not None else {}),
                            **({"max_nodes": max_nodes} if max_nodes is not None else {}))
    options = {"rtol": gtol, **({"atol": gatol} if gatol is not None else {}),
               **({"max_nodes": max_nodes} if max_nodes is not None else {})}
    if quadrature == "adaptive":
        return AdaptiveRule(**options)
    return AutoRule(**options, **({"strict": strict} if strict is not None else {}))
