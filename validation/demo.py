"""``demo``: gqref on a linear system with a closed form and on Van der Pol — accuracy, and speed against scipy."""

from __future__ import annotations

import argparse

import numpy as np

import gqref
from validation.bench_solver import BASELINE, METHOD_LABELS, benchmark, format_table, tight_reference
from validation.problems_bench import PROBLEMS, Problem

HELP = "a short tour of gqref: accuracy against closed forms and references, speed against scipy RK45"
DEMO_PROBLEMS = ("linear", "van_der_pol")
DEMO_METHODS = ("gqref", "gqref_scipy", "scipy_rk45")
DEMO_REPEATS = 5
DENSE_POINTS = 21


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=DEMO_REPEATS,
                        help=f"timed runs per solver (default {DEMO_REPEATS})")


def closed_form_or_tight(problem: Problem) -> tuple[np.ndarray, str]:
    """The closed-form final state where the problem has one, else the tight DOP853 reference."""
    if problem.exact is None:
        return tight_reference(problem)
    return problem.exact(problem.t_span[1]), "the closed form expm(A t)·y0"


def dense_output_error(problem: Problem, controller: str, n_points: int = DENSE_POINTS) -> float:
    """Max abs error of gqref's output on ``n_points`` times across ``t_span`` against the closed form."""
    t = np.linspace(*problem.t_span, n_points)
    sol = gqref.solve(problem.field, problem.y0, t, problem.params, rtol=problem.rtol, atol=problem.atol,
                      controller=controller)
    exact = np.stack([problem.exact(ti) for ti in t])
    return float(np.max(np.abs(sol.ys - exact)))


def _heading(text: str, underline: str = "=") -> None:
    print(f"\n{text}\n{underline * len(text)}")


def main(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    problems = [PROBLEMS[name] for name in DEMO_PROBLEMS]
    _heading("gq demo: the gqref reference solver (compiled dopri5)")
    print("The first solve of each problem compiles it with numba (several seconds); timings below are after that.")

    results = benchmark(problems, methods=DEMO_METHODS, repeats=args.repeats, reference=closed_form_or_tight)

    linear = PROBLEMS["linear"]
    _heading("1. Accuracy against a closed form: y' = Ay, y(t) = expm(A t)·y0", "-")
    print(f"{linear.title}; rtol = {linear.rtol:g}, atol = {linear.atol:g}.")
    for controller in ("torchdiffeq", "scipy"):
        error = dense_output_error(linear, controller)
        print(f"  gqref ({controller} control): max abs error over {DENSE_POINTS} output times = {error:.2e}")

    _heading(f"2. Accuracy and speed against {METHOD_LABELS[BASELINE]} (median of {args.repeats} runs)", "-")
    for result in results:
        print("\n" + format_table(result))

    _heading("Summary", "-")
    for result in results:
        ours, theirs = result.methods["gqref"], result.methods[BASELINE]
        print(f"  {result.name}: gqref is {ours.speedup_vs_baseline:.3g}× faster than {METHOD_LABELS[BASELINE]} "
              f"({ours.median_s * 1e3:.3g} ms vs {theirs.median_s * 1e3:.3g} ms); final-state error "
              f"{ours.max_abs_err:.1e} vs {theirs.max_abs_err:.1e}")
    return 0
