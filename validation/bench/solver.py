"""``bench solver``: gqref's compiled dopri5 against scipy's RK45, torchdiffeq's dopri5 and (optional) diffrax's Dopri5.

Each solver is timed end to end (one call from y0 to the final time) after an untimed warm-up. The solvers run
interleaved round-robin, so drifts in machine load hit all of them alike, in a freshly shuffled (seeded) order each
round, so no solver always runs right after the same other one: a compiled solve right after a long pure-Python one
runs measurably slower (cold caches), and right after a torchdiffeq solve its first allocations can cost milliseconds
(glibc consolidating the many small blocks torch freed). The garbage collector is off during the timed calls. Medians
are reported. Answers are compared with a tight scipy DOP853 reference (or a closed form, where the caller gives one).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

import gqref
import gqtorch
from validation.bench.problems import PROBLEMS, Problem, check_twins, numpy_rhs
from validation.bench.timing import quick_repeats, start, time_interleaved, torch_threads
from validation.harness.atomic import write_json_atomic

BASELINE = "scipy_rk45"
REFERENCE_TOL = 1e-13
DIFFRAX_MAX_STEPS = 100_000  # far above any problem's need; diffrax sizes its buffers by it
METHOD_LABELS = {
    "gqref": "gqref dopri5 (torchdiffeq control)",
    "gqref_specialized": "gqref dopri5, kernels specialized to the field",
    "gqref_scipy": "gqref dopri5 (scipy control)",
    "scipy_rk45": "scipy RK45",
    "torchdiffeq": "torchdiffeq dopri5",
    "gqtorch": "gqtorch dopri5",
    "diffrax": "diffrax Dopri5 (jax.jit)",
}
# (gqref method, the library it reproduces): their final states should agree far below the tolerance. diffrax's
# controller is not torchdiffeq's (other step sequences), so it is compared with the reference only.
TWINS = (("gqref", "torchdiffeq"), ("gqref_specialized", "torchdiffeq"), ("gqref_scipy", "scipy_rk45"),
         ("gqtorch", "torchdiffeq"))


@dataclass(frozen=True)
class Run:
    """What one solve produced: the final state and the solver's counters."""

    y: np.ndarray
    nfe: int
    n_accepted: int
    n_rejected: int


Solver = Callable[[], Run]


def gqref_solver(problem: Problem, controller: str = "torchdiffeq", specialize: bool = False) -> Solver:
    """gqref's compiled dopri5 with the given step-size controller; ``specialize``: kernels compiled around this
    field (gqref.VectorField), not the default first-class call."""
    t = np.array(problem.t_span)
    field = gqref.VectorField(problem.field, specialize=specialize)

    def solve() -> Run:
        sol = gqref.solve(field, problem.y0, t, problem.params, rtol=problem.rtol, atol=problem.atol,
                          controller=controller)
        return Run(sol.ys[-1], sol.stats.nfe, sol.stats.n_accepted, sol.stats.n_rejected)

    return solve


def scipy_solver(problem: Problem, method: str = "RK45", rtol: float | None = None,
                 atol: float | None = None) -> Solver:
    """``scipy.integrate.solve_ivp`` on the numpy twin (the problem's tolerances unless given)."""
    f = numpy_rhs(problem)
    rtol = problem.rtol if rtol is None else rtol
    atol = problem.atol if atol is None else atol

    def solve() -> Run:
        sol = solve_ivp(f, problem.t_span, problem.y0, method=method, rtol=rtol, atol=atol)
        if sol.status != 0:
            raise RuntimeError(f"solve_ivp {method} failed on {problem.name}: {sol.message}")
        n_accepted = sol.t.size - 1
        # RK45 spends 2 evaluations on the start (f0, initial step) and 6 on every attempted step.
        n_rejected = (sol.nfev - 2) // 6 - n_accepted if method == "RK45" else -1
        return Run(sol.y[:, -1].copy(), int(sol.nfev), n_accepted, n_rejected)

    return solve


class _CountingField:
    """The torch twin as torchdiffeq's ``func``, counting evaluations and (through its callbacks) steps."""

    def __init__(self, problem: Problem):
        self.rhs = problem.rhs
        self.params = torch.as_tensor(problem.params, dtype=torch.float64)
        self.nfe = self.n_accepted = self.n_rejected = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.rhs(t, y, self.params, torch.stack)

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.n_accepted += 1

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.n_rejected += 1


def torchdiffeq_solver(problem: Problem) -> Solver:
    """``torchdiffeq.odeint`` dopri5 in float64 on the torch twin."""
    y0 = torch.as_tensor(problem.y0, dtype=torch.float64)
    t = torch.tensor(problem.t_span, dtype=torch.float64)

    def solve() -> Run:
        func = _CountingField(problem)
        with torch.no_grad():
            ys = torchdiffeq.odeint(func, y0, t, rtol=problem.rtol, atol=problem.atol, method="dopri5")
        return Run(ys[-1].numpy().copy(), func.nfe, func.n_accepted, func.n_rejected)

    return solve


def gqtorch_solver(problem: Problem) -> Solver:
    """``gqtorch.odeint`` dopri5 in float64 on the same torch twin (its counters come from the solver itself)."""
    y0 = torch.as_tensor(problem.y0, dtype=torch.float64)
    t = torch.tensor(problem.t_span, dtype=torch.float64)
    params = torch.as_tensor(problem.params, dtype=torch.float64)

    def func(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return problem.rhs(s, y, params, torch.stack)

    def solve() -> Run:
        with torch.no_grad():
            ys, stats = gqtorch.odeint(func, y0, t, rtol=problem.rtol, atol=problem.atol, return_stats=True)
        return Run(ys[-1].numpy().copy(), stats.nfe, stats.n_accepted, stats.n_rejected)

    return solve


def diffrax_available() -> bool:
    """Whether the optional ``bench`` extra (jax and diffrax) is installed."""
    try:
        import diffrax  # noqa: F401
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def diffrax_solver(problem: Problem) -> Solver:
    """diffrax's Dopri5 with its PID controller (proportional only, as its default), the whole solve under
    ``jax.jit``, float64, on the same twin with ``jnp.stack``. Each call includes jax's dispatch from Python, as each
    of the other solvers' calls includes its own. diffrax counts steps, not evaluations: NFE is reported as "—"."""
    import diffrax
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    term = diffrax.ODETerm(lambda t, y, p: problem.rhs(t, y, p, jnp.stack))
    controller = diffrax.PIDController(rtol=problem.rtol, atol=problem.atol)
    t0, t1 = problem.t_span

    @jax.jit
    def run(y0, params):
        sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), t0, t1, dt0=None, y0=y0, args=params,
                                  stepsize_controller=controller, saveat=diffrax.SaveAt(t1=True),
                                  max_steps=DIFFRAX_MAX_STEPS)
        return sol.ys[-1], sol.stats["num_accepted_steps"], sol.stats["num_rejected_steps"]

    y0, params = jnp.asarray(problem.y0), jnp.asarray(problem.params)

    def solve() -> Run:
        y, accepted, rejected = jax.block_until_ready(run(y0, params))
        return Run(np.asarray(y).copy(), -1, int(accepted), int(rejected))

    return solve


SOLVERS: dict[str, Callable[[Problem], Solver]] = {
    "gqref": gqref_solver,
    "gqref_specialized": partial(gqref_solver, specialize=True),
    "gqref_scipy": partial(gqref_solver, controller="scipy"),
    "scipy_rk45": scipy_solver,
    "torchdiffeq": torchdiffeq_solver,
    "gqtorch": gqtorch_solver,
    "diffrax": diffrax_solver,
}
# Solvers whose library is an optional extra: left out, with a note, where it is not installed.
OPTIONAL: dict[str, Callable[[], bool]] = {"diffrax": diffrax_available}


def available_methods() -> tuple[str, ...]:
    """Every solver, less the optional ones whose library is not installed."""
    return tuple(m for m in SOLVERS if m not in OPTIONAL or OPTIONAL[m]())


def tight_reference(problem: Problem) -> tuple[np.ndarray, str]:
    """(final state, description) from scipy DOP853 at rtol = atol = 1e-13."""
    run = scipy_solver(problem, "DOP853", REFERENCE_TOL, REFERENCE_TOL)()
    return run.y, f"scipy DOP853, rtol = atol = {REFERENCE_TOL:g}"


@dataclass
class MethodResult:
    method: str
    label: str
    median_s: float
    times_s: list[float]
    speedup_vs_baseline: float | None  # baseline median / this median
    nfe: int
    n_accepted: int
    n_rejected: int
    final_state: list[float]
    max_abs_err: float


@dataclass
class ProblemResult:
    name: str
    title: str
    rtol: float
    atol: float
    t_span: tuple[float, float]
    compile_s: float | None  # gqref's first call: JIT compile of the field (and of the kernel, on the first problem)
    reference: str
    reference_state: list[float]
    methods: dict[str, MethodResult] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)  # "a vs b" -> max |final_a − final_b|


def _log(message: str) -> None:
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)


def compile_gqref(problem: Problem) -> float:
    """Seconds for gqref's first solve of ``problem`` (numba compiles the field, and on the process's first solve the
    first-class kernel that serves every field)."""
    start = time.perf_counter()
    gqref_solver(problem)()
    return time.perf_counter() - start


def benchmark(
    problems: Sequence[Problem],
    methods: Sequence[str] | None = None,
    repeats: int = 20,
    reference: Callable[[Problem], tuple[np.ndarray, str]] = tight_reference,
    progress: bool = True,
) -> list[ProblemResult]:
    """Compile, warm up, then time every (problem, method) interleaved; one :class:`ProblemResult` per problem.
    ``methods`` defaults to every solver whose library is installed (:func:`available_methods`)."""
    if methods is None:
        methods = available_methods()
    unknown = set(methods) - set(SOLVERS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {list(SOLVERS)}")
    results = []
    solvers: dict[tuple[str, str], Solver] = {}
    with torch_threads(1):
        for problem in problems:
            compile_s = None
            if any(m.startswith("gqref") for m in methods):
                _log(f"compiling gqref for {problem.name} (first call) …")
                compile_s = compile_gqref(problem)
            check_twins(problem)
            ref_state, ref_label = reference(problem)
            results.append(ProblemResult(problem.name, problem.title, problem.rtol, problem.atol, problem.t_span,
                                         compile_s, ref_label, ref_state.tolist()))
            for method in methods:
                solvers[problem.name, method] = SOLVERS[method](problem)
        runs = {key: solve() for key, solve in solvers.items()}  # untimed warm-up; also the answers and counters
        times = time_interleaved(solvers, repeats, progress)

    for result in results:
        ref_state = np.asarray(result.reference_state)
        medians = {m: float(np.median(times[result.name, m])) for m in methods}
        for method in methods:
            run = runs[result.name, method]
            speedup = medians[BASELINE] / medians[method] if BASELINE in medians else None
            result.methods[method] = MethodResult(
                method, METHOD_LABELS[method], medians[method], times[result.name, method], speedup, run.nfe,
                run.n_accepted, run.n_rejected, run.y.tolist(), float(np.max(np.abs(run.y - ref_state))))
        for a, b in TWINS:
            if a in methods and b in methods:
                diff = np.max(np.abs(runs[result.name, a].y - runs[result.name, b].y))
                result.agreement[f"{a} vs {b}"] = float(diff)
    return results


def _format_time(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1.0 else f"{seconds:.3g} s"


def format_table(result: ProblemResult) -> str:
    """A markdown section for one problem: the timing/accuracy table and the agreement of the reproductions."""
    lines = [
        f"### {result.title}",
        "",
        f"rtol = {result.rtol:g}, atol = {result.atol:g}; error against {result.reference}."
        + ("" if result.compile_s is None else f" gqref first call (JIT compile): {result.compile_s:.2f} s."),
        "",
        f"| method | median time | speed-up vs {METHOD_LABELS[BASELINE]} | NFE | accepted | rejected "
        "| max abs err vs reference |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result.methods.values():
        speedup = "—" if m.speedup_vs_baseline is None else f"{m.speedup_vs_baseline:.3g}×"
        rejected = "—" if m.n_rejected < 0 else str(m.n_rejected)
        nfe = "—" if m.nfe < 0 else str(m.nfe)
        lines.append(f"| {m.label} | {_format_time(m.median_s)} | {speedup} | {nfe} | {m.n_accepted} | {rejected} "
                     f"| {m.max_abs_err:.2e} |")
    if result.agreement:
        lines.append("")
        lines.append("Final states, max abs difference: " + "; ".join(
            f"{METHOD_LABELS[pair.split(' vs ')[0]]} vs {METHOD_LABELS[pair.split(' vs ')[1]]}: {diff:.2e}"
            for pair, diff in result.agreement.items()))
    return "\n".join(lines)


def run(repeats: int = 20, quick: bool = False, out: Path = Path("results/bench_solver.json")) -> int:
    """The ``bench solver`` command: every problem, every method; print tables and write JSON to ``out``."""
    repeats = quick_repeats(repeats, quick)
    env = start("Solver benchmark: gqref (compiled) vs scipy RK45, torchdiffeq dopri5 and diffrax Dopri5",
                f"{repeats} interleaved rounds (shuffled order), medians; torch on 1 thread.", versions=True)
    missing = [METHOD_LABELS[m] for m in OPTIONAL if not OPTIONAL[m]()]
    if missing:
        print(f"Not installed, so not timed: {', '.join(missing)} (pip install -e '.[bench]').\n")
    results = benchmark(list(PROBLEMS.values()), repeats=repeats)
    for result in results:
        print(format_table(result) + "\n")
    write_json_atomic(out, {
        "benchmark": "solver",
        "settings": {"repeats": repeats, "quick": quick, "baseline": BASELINE, "torch_threads": 1},
        "environment": env,
        "problems": [_as_json(result) for result in results],
    })
    print(f"results written to {out}")
    return 0


def _as_json(result: ProblemResult) -> dict[str, Any]:
    data = dict(vars(result))
    data["methods"] = {name: dict(vars(m)) for name, m in result.methods.items()}
    return data
