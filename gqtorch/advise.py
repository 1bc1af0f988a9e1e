"""A measured advisor: which gradient method to train a given neural ODE with.

:func:`advise` runs a few real training steps (forward, ``loss_fn``, backward) of ``func`` with each of gqtorch's
gradient methods — ``direct`` (backprop through :func:`gqtorch.odeint`), ``adjoint`` (:func:`gqtorch.odeint_adjoint`,
full norm), ``seminorm`` (the same with ``adjoint_options=dict(norm="seminorm")``) and ``gq``
(:func:`gqtorch.odeint_adjoint_gq`) — and measures each one's median step time, peak memory, function evaluations
and how far its parameter gradient is from the most accurate method's. It recommends the fastest method whose
gradient agrees with that reference to the solver's tolerance and that fits an optional memory budget.

The caller's model is left exactly as it was: gradients are taken with ``torch.autograd.grad`` (no ``.grad`` is
written), and parameter values, ``.grad`` (the same tensor object, or None), module buffers and the random number
generators are saved before and restored after, bitwise.
"""

from __future__ import annotations

import gc
import inspect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from gqref.arguments import count, real_number
from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL  # the bound's tolerances when the caller passes none
from gqref.errors import InputError
from gqtorch.adjoint import odeint_adjoint
from gqtorch.backsolve import adjoint_parameters
from gqtorch.gq import odeint_adjoint_gq
from gqtorch.memory import PeakMemory
from gqtorch.solve import odeint

METHODS = ("direct", "adjoint", "seminorm", "gq")
# The reference for gradient accuracy, best first. Backprop through the solver (direct) is the exact derivative of
# the computed solution, so it differs from the others only by their own discretisation errors; without it the full-
# norm adjoint is the next best, as its step control watches every component of the augmented state.
REFERENCE_ORDER = ("direct", "adjoint", "seminorm", "gq")
# The solvers control the local error per step to about max(rtol, atol). A gradient is itself the solution of an
# ODE (the adjoint) or a quadrature along one, so its global error accumulates over the steps and is amplified by
# the problem's conditioning: correct methods at the same tolerance typically differ by 10–100× the tolerance. A
# method further than AGREEMENT_FACTOR × tolerance from the reference is not resolving its gradient to the
# tolerance the user asked for.
AGREEMENT_FACTOR = 100.0

_SOLVERS: dict[str, Callable] = {"direct": odeint, "adjoint": odeint_adjoint, "seminorm": odeint_adjoint,
                                 "gq": odeint_adjoint_gq}


@dataclass(frozen=True)
class Measurement:
    """What was measured for one method: step times (seconds), peak memory (MiB; None where not measurable),
    forward/backward evaluations of ``func`` (backward None for ``direct``, which backprops through the forward
    graph) and the gradient's relative difference from the reference, max|g − g_ref| / max|g_ref|."""

    method: str
    times_s: tuple[float, ...]
    peak_mib: float | None
    nfe_forward: int | None
    nfe_backward: int | None
    relative_difference: float

    @property
    def median_s(self) -> float:
        values = sorted(self.times_s)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


@dataclass(frozen=True)
class MethodReport(Measurement):
    """A :class:`Measurement` with the verdicts: ``agrees`` (relative difference within the bound),
    ``fits_budget`` (True without a budget or when the peak was not measurable) and ``note`` (why it was set
    aside, in words; empty if it was not)."""

    agrees: bool = True
    fits_budget: bool = True
    note: str = ""


@dataclass
class Advice:
    """The advisor's findings: one row per method (in the order run), the reference the gradients were compared
    with, the agreement bound, the memory budget (MiB, or None), the recommended method (None if no method
    qualified) and the reason in words. ``str(advice)`` renders a table."""

    rows: tuple[MethodReport, ...]
    reference: str
    agreement_bound: float
    memory_budget_mib: float | None
    recommendation: str | None
    reason: str
    device: str
    steps: int

    def row(self, method: str) -> MethodReport:
        """The row of ``method``."""
        for r in self.rows:
            if r.method == method:
                return r
        raise KeyError(method)

    def __str__(self) -> str:
        header = ("method", "median step", "peak memory", "NFE fwd / bwd", f"Δ∇θ vs {self.reference}", "verdict")
        lines = []
        for r in self.rows:
            peak = "n/a" if r.peak_mib is None else f"{_mib(r.peak_mib)} MiB"
            nfe = f"{_count(r.nfe_forward)} / {_count(r.nfe_backward)}"
            diff = "0 (reference)" if r.method == self.reference else f"{r.relative_difference:.1e}"
            verdict = "recommended" if r.method == self.recommendation else (r.note or "ok")
            lines.append((r.method, _seconds(r.median_s), peak, nfe, diff, verdict))
        widths = [max(len(row[j]) for row in (header, *lines)) for j in range(len(header))]

        def render(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if j in (0, 5) else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths)))

        budget = "none" if self.memory_budget_mib is None else f"{self.memory_budget_mib:g} MiB"
        out = [f"gradient advice on {self.device}: median of {self.steps} interleaved training step(s) per method; "
               f"agreement bound {self.agreement_bound:.1e} (relative, max-abs); memory budget {budget}",
               render(header), render(["-" * w for w in widths]), *(render(cells) for cells in lines),
               f"recommendation: {self.recommendation or 'none'} — {self.reason}"]
        return "\n".join(out)


def _count(n: int | None) -> str:
    return "—" if n is None else str(n)


def _mib(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def agreement_bound(rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, dtype: torch.dtype = torch.float64) -> float:
    """AGREEMENT_FACTOR · max(rtol, atol, ε) — ε the dtype's machine epsilon, since no method can resolve a
    gradient more finely than its arithmetic. A tensor (or tuple) ``atol`` counts by its largest entry."""
    atols = atol if isinstance(atol, (tuple, list)) else (atol,)
    largest = 0.0
    for a in atols:
        largest = max(largest, float(torch.as_tensor(a).detach().abs().max()) if isinstance(a, torch.Tensor)
                      else float(a))
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return AGREEMENT_FACTOR * max(float(rtol), largest, eps)


def decide(measurements: Sequence[Measurement], *, reference: str, agreement_bound: float,
           memory_budget_mib: float | None, device: str = "cpu", steps: int = 0) -> Advice:
    """Judge measured rows: a method qualifies if its relative difference from ``reference`` is at most
    ``agreement_bound`` and (with a budget) its measured peak is at most ``memory_budget_mib``; the fastest
    (median step) qualifying method is recommended. A method whose peak could not be measured is not excluded by
    the budget (its note says so). Pure logic on the given rows: no model is run."""
    rows = []
    for m in measurements:
        agrees = m.relative_difference <= agreement_bound  # False for NaN too
        fits = True
        notes = []
        if memory_budget_mib is not None:
            if m.peak_mib is None:
                notes.append("peak not measurable here, budget not applied")
            elif m.peak_mib > memory_budget_mib:
                fits = False
                notes.append(f"excluded: peak {_mib(m.peak_mib)} MiB > budget {memory_budget_mib:g} MiB")
        if not agrees:
            notes.append(f"disagrees: {m.relative_difference:.1e} > {agreement_bound:.1e}")
        rows.append(MethodReport(**{f: getattr(m, f) for f in Measurement.__dataclass_fields__},
                                 agrees=agrees, fits_budget=fits, note="; ".join(notes)))
    qualified = sorted((r for r in rows if r.agrees and r.fits_budget), key=lambda r: r.median_s)
    set_aside = [r for r in rows if not (r.agrees and r.fits_budget)]
    budget_words = "" if memory_budget_mib is None else f" and that fits the memory budget of {memory_budget_mib:g} MiB"

    def listing(group: Sequence[MethodReport]) -> str:
        return ", ".join(f"{r.method} ({r.note})" for r in group)

    if not qualified:
        recommendation = None
        reason = f"no method's gradient agrees with {reference} to {agreement_bound:.1e}{budget_words}"
        if set_aside:
            reason += f". Set aside: {listing(set_aside)}"
    else:
        best = qualified[0]
        recommendation = best.method
        if len(rows) == 1:
            accuracy = "(the only method run, so its gradient was compared with nothing)"
        else:
            accuracy = f"whose gradient agrees with {reference} to {agreement_bound:.1e}{budget_words}"
        reason = f"{best.method} is the fastest method ({_seconds(best.median_s)} per step) {accuracy}"
        if len(qualified) > 1:
            runner_up = qualified[1]
            reason += (f"; {runner_up.median_s / best.median_s:.2f}× faster than the next, {runner_up.method} "
                       f"({_seconds(runner_up.median_s)})")
        faster = [r for r in set_aside if r.median_s < best.median_s]
        slower = [r for r in set_aside if r.median_s >= best.median_s]
        if faster:
            reason += f". Faster but set aside: {listing(faster)}"
        if slower:
            reason += f". Also set aside: {listing(slower)}"
    reason += "."
    return Advice(rows=tuple(rows), reference=reference, agreement_bound=agreement_bound,
                  memory_budget_mib=memory_budget_mib, recommendation=recommendation, reason=reason,
                  device=device, steps=steps)


# --- running the steps --------------------------------------------------------------------------------------------

def _route_kwargs(solver_kwargs: dict) -> dict[str, dict]:
    """Each method's keyword arguments: those its solver accepts (a key no solver accepts is an error)."""
    if "return_stats" in solver_kwargs:
        raise InputError("return_stats is set by advise; do not pass it")
    accepted = {name: set(inspect.signature(solve).parameters) - {"func", "y0", "t", "return_stats"}
                for name, solve in _SOLVERS.items()}
    unknown = sorted(set(solver_kwargs) - set().union(*accepted.values()))
    if unknown:
        raise InputError(f"unknown solver keyword argument(s) {unknown}; the solvers accept "
                         f"{sorted(set().union(*accepted.values()))}")
    routed = {name: {k: v for k, v in solver_kwargs.items() if k in keys} for name, keys in accepted.items()}
    options = solver_kwargs.get("adjoint_options") or {}
    if not isinstance(options, dict):
        raise InputError(f"adjoint_options must be a dict, got {type(options).__name__}")
    # "adjoint" is the full norm and "seminorm" the seminorm, whatever norm the caller's adjoint_options name.
    routed["adjoint"]["adjoint_options"] = {k: v for k, v in options.items() if k != "norm"} or None
    routed["seminorm"]["adjoint_options"] = {**options, "norm": "seminorm"}
    return routed


def _check_loss(loss) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise InputError(f"loss_fn must return a scalar (0-d) tensor, got {got}")
    if not loss.requires_grad:
        raise InputError("loss_fn's value does not depend on the parameters (it does not require grad)")
    return loss


def _step_function(method: str, func: Callable, y0, t, loss_fn: Callable, params: tuple[torch.Tensor, ...],
                   kwargs: dict) -> Callable[[], tuple[tuple, int | None, int | None]]:
    """One training step of ``method``: (parameter gradients, forward NFE, backward NFE)."""
    solve = _SOLVERS[method]
    extra = {} if method == "direct" else {"adjoint_params": params}

    def step() -> tuple[tuple, int | None, int | None]:
        ys, stats = solve(func, y0, t, return_stats=True, **extra, **kwargs)
        loss = _check_loss(loss_fn(ys))
        # autograd.grad, not backward(): nothing the caller can see (.grad of params or of tensors loss_fn
        # closes over) is written.
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        if method == "direct":
            return grads, stats.nfe, None
        return grads, stats.nfe_forward, stats.nfe_backward

    return step


def _flat(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if g is None else g).detach().reshape(-1).to(torch.float64)
                      for g, p in zip(grads, params)])


def _relative_difference(g: torch.Tensor, reference: torch.Tensor) -> float:
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    diff = float((g - reference).abs().max()) if g.numel() else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1).contiguous().view(torch.uint8)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))


class _SavedState:
    """Values and ``.grad`` (object and values) of the tensors, bitwise, to put back after the measurements."""

    def __init__(self, tensors: Iterable[torch.Tensor]):
        unique = {id(x): x for x in tensors}
        self.saved = [(x, x.detach().clone(), x.grad, None if x.grad is None else x.grad.detach().clone())
                      for x in unique.values()]

    def restore(self) -> None:
        with torch.no_grad():
            for x, value, grad, grad_value in self.saved:
                # Copy only what changed: an in-place write bumps the version counter, which would invalidate a
                # graph the caller still holds.
                if not _same_bits(x, value):
                    x.copy_(value)
                if x.grad is not grad:
                    x.grad = grad
                if grad is not None and not _same_bits(grad, grad_value):
                    grad.copy_(grad_value)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def advise(func: Callable, y0: torch.Tensor, t, loss_fn: Callable[[torch.Tensor], torch.Tensor], *,
           methods: Sequence[str] = METHODS, steps: int = 3, memory_budget: float | None = None,
           device: torch.device | str | None = None, **solver_kwargs) -> Advice:
    """Measure training steps of ``func`` with each gradient method and recommend one.

    ``func(t, y)``, ``y0`` (a tensor), ``t``: as for :func:`gqtorch.odeint`. ``loss_fn(ys)`` maps the solution at
    every time in ``t`` to a scalar (0-d) tensor. ``solver_kwargs`` go to each solver that accepts them (``rtol``,
    ``atol``, ``method``, ``options``, ``adjoint_rtol``, ``adjoint_atol``, ``adjoint_method``, ``adjoint_options``,
    ``gtol``, ``max_nodes``, ``adjoint_params``); the gradient is taken with respect to ``adjoint_params``, or
    ``func.parameters()`` for an ``nn.Module`` (a plain function must pass ``adjoint_params``). ``y0`` and ``t``
    are detached: the parameter gradient is what is timed, and the caller's graph upstream of ``y0`` is not touched.

    Each method in ``methods`` runs one warm-up step (whose gradient and NFE are reported), then ``steps`` timed
    steps, interleaved round-robin across methods (against drifts in machine load; the garbage collector is off
    during a step), and reports the median; then one more step under :class:`gqtorch.memory.PeakMemory` on
    ``device`` (default and only choice: y0's device; on CUDA the allocator's peak above the start, on CPU the rise
    of the process's resident-set high-water mark — Linux only, None elsewhere). ``memory_budget`` is in MiB:
    methods whose measured peak exceeds it are excluded, and the report says so.

    The gradients are compared with the reference method's — ``direct`` when run (the exact derivative of the
    computed solution), else ``adjoint``, ``seminorm``, ``gq`` in that order — as max|g − g_ref| / max|g_ref| over
    all parameters. A method agrees if that is at most :func:`agreement_bound` (100·max(rtol, atol, ε)). The
    recommendation is the fastest agreeing method within the budget (see :func:`decide`).

    Nothing visible to the caller changes: parameter values, ``.grad`` (tensor object and values, or None), module
    buffers and the CPU/CUDA random number generators are restored bitwise. Does not change torch's thread count.
    Raises :class:`gqref.errors.InputError` for an unknown method, ``steps`` < 1, a negative budget, a ``loss_fn``
    that does not return a scalar tensor, or bad solver arguments.
    """
    methods = tuple(methods) if not isinstance(methods, str) else (methods,)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"methods must be a non-empty selection of {list(METHODS)}, got {list(methods)}")
    if len(set(methods)) != len(methods):
        raise InputError(f"methods must not repeat, got {list(methods)}")
    steps = count("steps", steps)
    if memory_budget is not None:
        memory_budget = real_number("memory_budget", memory_budget, low=0.0, allow_inf=True,
                                    expected="a non-negative number of MiB or None")
    if not isinstance(y0, torch.Tensor):
        raise InputError(f"y0 must be a tensor, got {type(y0).__name__}")
    if not callable(loss_fn):
        raise InputError(f"loss_fn must be callable as loss_fn(ys), got {type(loss_fn).__name__}")
    try:
        here = y0.device if device is None else torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"device must be a torch device or its name, got {device!r}: {error}") from None
    if here != y0.device and not (here.type == y0.device.type and here.index is None):
        raise InputError(f"device {here} is not y0's device {y0.device}: advise runs where the model and y0 are "
                         f"(move them first)")
    here = y0.device
    params = adjoint_parameters(func, solver_kwargs.pop("adjoint_params", None))
    if not params:
        raise InputError("no parameters to differentiate: func has none that require grad (pass adjoint_params)")
    routed = _route_kwargs(solver_kwargs)
    reference = next(m for m in REFERENCE_ORDER if m in methods)

    watched = list(params)
    if isinstance(func, torch.nn.Module):
        watched += list(func.parameters()) + list(func.buffers())
    saved = _SavedState(watched)
    y0 = y0.detach()
    t = t.detach() if isinstance(t, torch.Tensor) else t
    calls = {m: _step_function(m, func, y0, t, loss_fn, params, routed[m]) for m in methods}
    rng_devices = [here] if here.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            measured = _measure(calls, methods, params, steps, here, reference)
    finally:
        saved.restore()
    # After the runs: the solvers have checked rtol and atol by now, with their own messages.
    bound = agreement_bound(solver_kwargs.get("rtol", DEFAULT_RTOL), solver_kwargs.get("atol", DEFAULT_ATOL),
                            y0.dtype)
    return decide(measured, reference=reference, agreement_bound=bound,
                  memory_budget_mib=None if memory_budget is None else float(memory_budget), device=str(here),
                  steps=int(steps))


def _measure(calls: dict[str, Callable], methods: tuple[str, ...], params: tuple[torch.Tensor, ...], steps: int,
             device: torch.device, reference: str) -> list[Measurement]:
    """Warm-up (gradients, NFE), interleaved timed steps, then one memory-measured step per method."""
    first = {}
    for m in methods:
        grads, nfe_f, nfe_b = calls[m]()
        first[m] = (_flat(grads, params), nfe_f, nfe_b)
    times: dict[str, list[float]] = {m: [] for m in methods}
    gc_was_enabled = gc.isenabled()
    try:
        for _ in range(steps):
            gc.enable()
            gc.collect()  # untimed, once per round (as timeit: no collection inside a timed step)
            gc.disable()
            for m in methods:
                _sync(device)
                start = time.perf_counter()
                calls[m]()
                _sync(device)
                times[m].append(time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    # Memory last: trimming the heap before each measurement would otherwise perturb the timings.
    peaks = {}
    for m in methods:
        gc.collect()
        memory = PeakMemory(device)
        memory.start()
        calls[m]()
        peaks[m] = memory.peak_mib()
    ref = first[reference][0]
    return [Measurement(method=m, times_s=tuple(times[m]), peak_mib=peaks[m], nfe_forward=first[m][1],
                        nfe_backward=first[m][2], relative_difference=_relative_difference(first[m][0], ref))
            for m in methods]
