"""``bench methods``: every gqtorch method against torchdiffeq's same method, time and NFE side by side.

For each small ODE and each method both ``torchdiffeq.odeint`` and ``gqtorch.odeint`` solve the same torch field
(float64, forward only, under ``no_grad``), plus one backprop-through-solve row for dopri5 and rk4 (forward and
``autograd.grad`` of a scalar loss with respect to y0 and the field's parameters). Timing reuses
:mod:`validation.bench.timing`'s protocol: interleaved round-robin in a shuffled order, one untimed call before
each timed one, the garbage collector off, medians, torch on one thread. NFE is counted by the field itself (the
same counter for both libraries), so it includes the initial-step evaluations and any corrector iterations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchdiffeq

import gqtorch
from validation.bench.problems import linear_rhs, van_der_pol_rhs
from validation.bench.timing import quick_repeats, start, time_interleaved, torch_threads
from validation.harness.atomic import write_json_atomic

RTOL, ATOL = 1e-7, 1e-9
# Order-2/3 adaptive methods need 10^4-10^5 evaluations at 1e-7 on these problems (adaptive_heun: ~50 000 on Van
# der Pol, two minutes a solve in torchdiffeq on a loaded machine), so they run at looser tolerances; the rows say
# which. The comparison is of per-step costs at equal steps, which these tolerances keep.
LOOSE_TOLERANCES: dict[str, tuple[float, float]] = {
    "bosh3": (1e-5, 1e-7),
    "fehlberg2": (1e-5, 1e-7),
    "adaptive_heun": (1e-3, 1e-5),
}
STEP_SIZE = 0.02  # fixed grids: 500 steps on [0, 10]; rk4's error here is ~1e-7, near the adaptive tolerance
N_OUTPUTS = 11  # output times, so the adaptive methods' interpolation is part of what is timed
# What every method gets as ``options`` (None: the defaults). explicit_adams' default max_order 12 is unstable at
# this step size (it overflows to ~1e74 on the oscillator and NaN on Van der Pol, in both libraries); order 4 is not.
FIXED = ("euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams")
ADAPTIVE = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5")
METHODS: tuple[str, ...] = ADAPTIVE + FIXED + ("scipy_solver",)
GRADIENT_METHODS = ("dopri5", "rk4")  # also timed with backprop through the solve
TORCHDIFFEQ_LACKS = frozenset({"tsit5"})  # torchdiffeq 0.2.5 has no tsit5: gqtorch only


def method_options(method: str) -> dict[str, Any] | None:
    """The ``options`` both libraries get for ``method``."""
    if method == "explicit_adams":
        return {"step_size": STEP_SIZE, "max_order": 4}
    if method in FIXED:
        return {"step_size": STEP_SIZE}
    if method == "scipy_solver":
        return {"solver": "LSODA"}  # torchdiffeq's default, named so the row says what ran
    return None


def method_tolerances(method: str) -> tuple[float, float]:
    return LOOSE_TOLERANCES.get(method, (RTOL, ATOL))


@dataclass(frozen=True)
class OdeProblem:
    """dy/dt = rhs(t, y, params, torch.stack) from y0, output at N_OUTPUTS evenly spaced times on ``t_span``."""

    name: str
    title: str
    rhs: Callable  # a twin from validation.bench.problems
    y0: tuple[float, ...]
    params: tuple[float, ...]
    t_span: tuple[float, float] = (0.0, 10.0)
    n_outputs: int = N_OUTPUTS


def _linear10_matrix() -> np.ndarray:
    """A fixed stable 10×10 matrix: a random skew-symmetric part (rotations) damped by −0.3·I."""
    m = np.random.default_rng(0).standard_normal((10, 10)) / math.sqrt(10)
    return m - m.T - 0.3 * np.eye(10)


PROBLEMS: dict[str, OdeProblem] = {
    p.name: p
    for p in (
        # the linear problems on [0, 5]: half the cost of a full run, and per-step costs are what is compared
        OdeProblem("oscillator", "2-D linear oscillator y'' = −y, t ∈ [0, 5]", linear_rhs, (1.0, 0.0),
                   (0.0, 1.0, -1.0, 0.0), (0.0, 5.0)),
        OdeProblem("van_der_pol", "Van der Pol, μ = 1, t ∈ [0, 10]", van_der_pol_rhs, (2.0, 0.0), (1.0,)),
        OdeProblem("linear10", "10-D linear y' = Ay (damped rotations), t ∈ [0, 5]", linear_rhs,
                   tuple(np.linspace(1.0, -1.0, 10)), tuple(_linear10_matrix().ravel()), (0.0, 5.0)),
    )
}


class CountingField:
    """``func(t, y)`` for both libraries: the problem's twin, counting its calls."""

    def __init__(self, rhs: Callable, params: torch.Tensor):
        self.rhs, self.params, self.nfe = rhs, params, 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.rhs(t, y, self.params, torch.stack)


@dataclass(frozen=True)
class Answer:
    """One solve's outputs (and, for a gradient row, dL/dy0 and dL/dparams concatenated) and its NFE."""

    ys: np.ndarray
    grad: np.ndarray | None
    nfe: int
    n_warnings: int = 0


Solve = Callable[[], Answer]


def make_solve(library: Any, problem: OdeProblem, method: str, gradient: bool) -> Solve:
    """A zero-argument solve of ``problem`` by ``library.odeint`` (torchdiffeq or gqtorch) with ``method``."""
    t = torch.linspace(*problem.t_span, problem.n_outputs, dtype=torch.float64)
    rtol, atol = method_tolerances(method)
    options = method_options(method)

    def solve() -> Answer:
        # fresh leaves each call, so a gradient row never accumulates into (or reuses the graph of) the last one
        y0 = torch.tensor(problem.y0, dtype=torch.float64, requires_grad=gradient)
        params = torch.tensor(problem.params, dtype=torch.float64, requires_grad=gradient)
        func = CountingField(problem.rhs, params)
        with torch.set_grad_enabled(gradient):
            ys = library.odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options)
            if not gradient:
                return Answer(ys.numpy(), None, func.nfe)
            grads = torch.autograd.grad((ys * ys).sum(), (y0, params))
        return Answer(ys.detach().numpy(), torch.cat(grads).numpy(), func.nfe)

    return solve


def _recording_warnings(solve: Solve) -> Answer:
    """Run ``solve`` once, counting its warnings (implicit_adams warns when its corrector does not converge)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = solve()
    return Answer(answer.ys, answer.grad, answer.nfe, len(caught))


@dataclass
class Row:
    """One (problem, method, forward or backprop) comparison; torchdiffeq's fields are None where it lacks the
    method."""

    problem: str
    method: str
    gradient: bool
    rtol: float
    atol: float
    options: dict[str, Any] | None
    torchdiffeq_median_s: float | None
    gqtorch_median_s: float
    ratio: float | None  # gqtorch median / torchdiffeq median: above 1, gqtorch is slower
    nfe_torchdiffeq: int | None
    nfe_gqtorch: int
    nfe_equal: bool | None
    max_diff: float | None  # max |ys_gqtorch − ys_torchdiffeq| over every output time and component
    max_diff_grad: float | None  # gradient rows: the same for dL/d(y0, params)
    warnings_torchdiffeq: int | None
    warnings_gqtorch: int
    torchdiffeq_times_s: list[float] | None = field(default=None, repr=False)
    gqtorch_times_s: list[float] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} (backprop)" if self.gradient else self.method


LIBRARIES = {"torchdiffeq": torchdiffeq, "gqtorch": gqtorch}


def benchmark(problems: Sequence[OdeProblem], methods: Sequence[str] = METHODS,
              gradient_methods: Sequence[str] = GRADIENT_METHODS, repeats: int = 20,
              progress: bool = True) -> list[Row]:
    """Warm up and check every solve, then time them all interleaved; one :class:`Row` per comparison."""
    unknown = (set(methods) | set(gradient_methods)) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    cases = [(p, m, False) for p in problems for m in methods]
    cases += [(p, m, True) for p in problems for m in gradient_methods]
    solves: dict[tuple[str, str, bool, str], Solve] = {}
    for problem, method, gradient in cases:
        for lib_name, library in LIBRARIES.items():
            if lib_name == "torchdiffeq" and method in TORCHDIFFEQ_LACKS:
                continue
            solves[problem.name, method, gradient, lib_name] = make_solve(library, problem, method, gradient)
    with torch_threads(1):
        answers = {key: _recording_warnings(solve) for key, solve in solves.items()}  # warm-up; the answers
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # already counted above; don't time the warnings machinery
            times = time_interleaved(solves, repeats, progress)

    rows = []
    for problem, method, gradient in cases:
        key = (problem.name, method, gradient)
        gq, gq_times = answers[(*key, "gqtorch")], times[(*key, "gqtorch")]
        td = answers.get((*key, "torchdiffeq"))
        td_times = times.get((*key, "torchdiffeq"))
        gq_median = float(np.median(gq_times))
        td_median = None if td_times is None else float(np.median(td_times))
        rtol, atol = method_tolerances(method)
        rows.append(Row(
            problem=problem.name, method=method, gradient=gradient, rtol=rtol, atol=atol,
            options=method_options(method), torchdiffeq_median_s=td_median, gqtorch_median_s=gq_median,
            ratio=None if td_median is None else gq_median / td_median,
            nfe_torchdiffeq=None if td is None else td.nfe, nfe_gqtorch=gq.nfe,
            nfe_equal=None if td is None else td.nfe == gq.nfe,
            max_diff=None if td is None else float(np.max(np.abs(gq.ys - td.ys))),
            max_diff_grad=None if td is None or td.grad is None else float(np.max(np.abs(gq.grad - td.grad))),
            warnings_torchdiffeq=None if td is None else td.n_warnings, warnings_gqtorch=gq.n_warnings,
            torchdiffeq_times_s=td_times, gqtorch_times_s=gq_times))
    return rows


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3g}"


def format_table(rows: Sequence[Row], problem: OdeProblem) -> str:
    """A markdown section for one problem: method | torchdiffeq ms | gqtorch ms | ratio | NFE td/gq | max diff."""
    lines = [f"### {problem.title}", "",
             "| method | torchdiffeq ms | gqtorch ms | ratio | NFE td/gq | max diff |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.problem != problem.name:
            continue
        label = row.label
        if (row.rtol, row.atol) != (RTOL, ATOL) and row.method not in FIXED:
            label += f" (rtol {row.rtol:g}, atol {row.atol:g})"
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}" + (" **slower**" if row.ratio > 1 else "")
        nfe = f"— / {row.nfe_gqtorch}" if row.nfe_torchdiffeq is None else f"{row.nfe_torchdiffeq} / {row.nfe_gqtorch}"
        diff = "—" if row.max_diff is None else f"{row.max_diff:.1e}"
        if row.max_diff_grad is not None:
            diff += f" (grad {row.max_diff_grad:.1e})"
        if row.warnings_gqtorch or row.warnings_torchdiffeq:
            diff += f"; warnings td/gq {row.warnings_torchdiffeq}/{row.warnings_gqtorch}"
        lines.append(f"| {label} | {_ms(row.torchdiffeq_median_s)} | {_ms(row.gqtorch_median_s)} | {ratio} | {nfe} "
                     f"| {diff} |")
    return "\n".join(lines)


def run(repeats: int = 20, quick: bool = False, out: Path = Path("results/bench_methods.json"),
        problems: Sequence[OdeProblem] | None = None, methods: Sequence[str] = METHODS,
        gradient_methods: Sequence[str] = GRADIENT_METHODS) -> int:
    """The ``bench methods`` command: print one table per problem and write JSON to ``out``."""
    repeats = quick_repeats(repeats, quick)
    problems = list(PROBLEMS.values()) if problems is None else list(problems)
    env = start("Every method: gqtorch.odeint vs torchdiffeq.odeint",
                f"{repeats} interleaved rounds (shuffled order), medians; torch on 1 thread; float64; "
                f"{N_OUTPUTS} output times. rtol = {RTOL:g}, atol = {ATOL:g} unless the row says otherwise; fixed "
                f"grids step_size = {STEP_SIZE:g} (explicit_adams max_order 4); scipy_solver LSODA. ratio = gqtorch / "
                "torchdiffeq (above 1: gqtorch slower). NFE: calls of the field. max diff: max |gqtorch − torchdiffeq| "
                "over all outputs (backprop rows: and over dL/d(y0, params) of L = Σ ys²).", versions=True)
    rows = benchmark(problems, methods, gradient_methods, repeats=repeats)
    for problem in problems:
        print(format_table(rows, problem) + "\n")
    slower = [f"{r.problem}/{r.label} ({r.ratio:.2f})" for r in rows if r.ratio is not None and r.ratio > 1]
    print("gqtorch slower than torchdiffeq: " + (", ".join(slower) if slower else "none"))
    write_json_atomic(out, {
        "benchmark": "methods",
        "settings": {"repeats": repeats, "quick": quick, "torch_threads": 1, "rtol": RTOL, "atol": ATOL,
                     "step_size": STEP_SIZE, "n_outputs": N_OUTPUTS},
        "environment": env,
        "problems": [{"name": p.name, "title": p.title, "t_span": p.t_span, "y0": p.y0} for p in problems],
        "rows": [dict(vars(row), label=row.label) for row in rows],
    })
    print(f"results written to {out}")
    return 0
