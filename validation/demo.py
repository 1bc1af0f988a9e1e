"""``demo``: gqref's solver (accuracy against closed forms, speed against scipy) and its gradients on the toy."""

from __future__ import annotations

import argparse

import numpy as np

import gqref
from gqref import problems
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


TOY_T = (19.0, 24.0, 29.04)  # the paper's toy experiment spans T ∈ [19, 29.04]


def toy_gradient_errors() -> list[tuple[float, str, float, float, int, int]]:
    """(T, method, rel. error of dL/da, of dL/dz0, backward NFE, nodes) on the paper's toy: dz/dt = a·z, L = z(T)²,
    a = 0.2, z0 = 10, rtol 1e-6, atol 1e-7, C = 0.4."""
    rows = []
    for T in TOY_T:
        toy = problems.toy(a=0.2, z0=10.0, T=T)
        cot = problems.toy_loss_gradient(toy)
        exact = toy.exact_gradient(toy.y0, toy.params, toy.t, cot)
        for method in gqref.GRADIENT_METHODS:
            g = gqref.gradient(toy.field, toy.y0, toy.t, toy.params, cot, method=method, rtol=1e-6, atol=1e-7,
                               gtol=0.4)
            rows.append((T, method, abs(g.dL_dparams[0] / exact[1][0] - 1), abs(g.dL_dy0[0] / exact[0][0] - 1),
                         g.diagnostics.nfe_backward, sum(g.diagnostics.nodes)))
    return rows


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

    _heading("3. Gradients on the paper's toy problem (dz/dt = a·z, L = z(T)², exact answer known)", "-")
    print("| T | method | rel. error dL/da | rel. error dL/dz0 | backward NFE | GQ nodes |")
    print("|---:|---|---:|---:|---:|---:|")
    for T, method, err_a, err_z0, nfe, nodes in toy_gradient_errors():
        print(f"| {T:g} | {method} | {err_a:.1e} | {err_z0:.1e} | {nfe} | {nodes or '—'} |")

    _heading("Summary", "-")
    for result in results:
        ours, theirs = result.methods["gqref"], result.methods[BASELINE]
        print(f"  {result.name}: gqref is {ours.speedup_vs_baseline:.3g}× faster than {METHOD_LABELS[BASELINE]} "
              f"({ours.median_s * 1e3:.3g} ms vs {theirs.median_s * 1e3:.3g} ms); final-state error "
              f"{ours.max_abs_err:.1e} vs {theirs.max_abs_err:.1e}")
    return 0
