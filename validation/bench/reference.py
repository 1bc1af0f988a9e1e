"""``bench reference``: gqref's gradient methods side by side on a softplus MLP field with parameters ≫ state.

Time per gradient (forward + backward) and evaluation counts of GQ, the backsolve adjoint, its seminorm variant
and the frozen-step derivative, interleaved as in ``bench solver``, at several widths. GQ's advantage is structural:
its backward state is 2S numbers while the adjoint's is 1 + 2S + P, and the parameters enter neither its dynamics
nor its step control.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import gqref
from gqref import problems
from validation.bench.timing import quick_repeats, start, time_interleaved
from validation.harness.atomic import write_json_atomic

STATE_DIM = 4
WIDTHS = (256, 512, 1024)
QUICK_WIDTHS = (32, 64)
TOLERANCE = 1e-6
TIMES = np.linspace(0.0, 1.0, 5)
# (label, method, GQ's node-rule constant C): the paper's default C = 0.1 and a generous C = 1
VARIANTS = (("gq C=0.1", "gq", 0.1), ("gq C=1", "gq", 1.0), ("adjoint", "adjoint", None),
            ("seminorm", "seminorm", None), ("discrete", "discrete", None))


def _gradient_call(problem: problems.Problem, method: str, gtol: float | None):
    cot = np.ones((len(problem.t), problem.state_dim))
    extra = {} if gtol is None else {"gtol": gtol}

    def call():
        return gqref.gradient(problem.field, problem.y0, problem.t, problem.params, cot, method=method,
                              rtol=TOLERANCE, atol=TOLERANCE, **extra)

    return call


def run(repeats: int = 20, quick: bool = False, out: Path = Path("results/bench_reference.json")) -> int:
    """Print one table per width and write the medians, counts and gradient differences to ``out``."""
    widths = QUICK_WIDTHS if quick else WIDTHS
    repeats = quick_repeats(repeats, quick)
    env = start("Gradient benchmark (gqref): GQ vs adjoint vs seminorm vs frozen-step derivative",
                f"softplus MLP field, state {STATE_DIM}, rtol = atol = {TOLERANCE:g}, outputs at {TIMES.tolist()}; "
                f"{repeats} interleaved rounds, medians")
    records = []
    for width in widths:
        problem = problems.mlp(width=width, seed=0, state_dim=STATE_DIM, time_dependent=True, t=TIMES)
        calls = {label: _gradient_call(problem, method, gtol) for label, method, gtol in VARIANTS}
        results = {m: call() for m, call in calls.items()}  # warm-up (compiles), answers and counters
        print(f"width {width} ({problem.params.size} parameters): timing …", file=sys.stderr)
        times = time_interleaved(calls, repeats)
        reference = results["discrete"].dL_dparams
        scale = np.max(np.abs(reference))
        rows = []
        for m in calls:
            d = results[m].diagnostics
            rows.append({
                "method": m, "median_s": float(np.median(times[m])), "nfe_forward": d.nfe_forward,
                "nfe_backward": d.nfe_backward, "steps_backward": d.steps_backward, "nodes": list(d.nodes),
                "relative_difference_vs_discrete": float(np.max(np.abs(results[m].dL_dparams - reference)) / scale),
            })
        gq_time = rows[0]["median_s"]
        print(f"### width {width}, {problem.params.size} parameters\n")
        print("| method | median time | time / GQ C=0.1 | NFE fwd | NFE bwd | backward steps | nodes "
              "| ‖Δ∇θ‖/‖∇θ‖ vs discrete |")
        print("|---|---:|---:|---:|---:|---:|---|---:|")
        for r in rows:
            print(f"| {r['method']} | {r['median_s'] * 1e3:.3g} ms | {r['median_s'] / gq_time:.2f}× | "
                  f"{r['nfe_forward']} | {r['nfe_backward']} | {r['steps_backward']} | "
                  f"{','.join(map(str, r['nodes'])) or '—'} | {r['relative_difference_vs_discrete']:.1e} |")
        print()
        records.append({"width": width, "parameters": int(problem.params.size), "methods": rows})
    write_json_atomic(out, {"benchmark": "reference", "environment": env,
                            "settings": {"repeats": repeats, "state_dim": STATE_DIM, "tolerance": TOLERANCE,
                                         "times": TIMES.tolist()}, "widths": records})
    print(f"results written to {out}")
    return 0
