"""``bench quadrature``: accuracy against cost of GQ's quadrature rules, next to direct backprop and the
adjoint, for one training step in float64.

Problems: the paper's toy (dz/dt = a·z, z0 = 10, a = 0.2, T = 20, L = z(T)²; exact gradient in closed form), g1d and
nested spheres (:func:`validation.bench.gradients.training_step`, built in float64; reference gradient: direct
backprop through a dopri5 solve at rtol = atol = 1e-10, checked against GQ adaptive at gtol 1e-12 on an equally
tight backward solve). Methods: GQ "interval" (the paper's rule, C = 0.1, 0.4, 1), "step", "auto" (the default),
"adaptive" (gtol 1e-3, 1e-5, 1e-7 and the default gtol = the adjoint rtol), gqtorch's direct backprop and backsolve
adjoint; each at several solver tolerances (rtol = atol, forward and backward alike), which makes a curve of error
against time per method. Error: max|∇θ − ∇θ_ref| / max|∇θ_ref| over the field's parameters. Times: medians of
interleaved rounds (:func:`validation.bench.timing.time_interleaved`), one thread.

Printed: one markdown table per problem, then the two targets of the error-controlled rules (reported, not
asserted): (1) at equal gradient error adaptive is at least as fast as the best fixed C (a fixed-C run counts as
equally accurate within 10%), (2) at default settings and solver tolerance 1e-6 adaptive's error is ≤ 1e-5 where C =
0.1's is not. Each GQ row also shows its quadrature error alone: the difference from the exact integral of the same
backward dense output (every GQ rule at one tolerance reads the same backward solve), next to adaptive's estimate of
it.
Written: the JSON (``out``) and a PNG of error against time next to it (``out`` with the suffix .png).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import gqtorch
from gqref.rules import AutoRule
from validation.bench.steps import TrainingStep, training_step
from validation.bench.timing import quick_repeats, start, time_interleaved, torch_threads
from validation.harness.atomic import write_json_atomic
from validation.report.plots import save_figure_atomic
from validation.tasks.toy_gradient import LinearField

TOLERANCES = (1e-4, 1e-6, 1e-8)
QUICK_TOLERANCES = (1e-6,)
WIDTH = 100
QUICK_WIDTH = 8
REFERENCE_TOLERANCE = 1e-10
REFERENCE_GTOL = 1e-12
DENSE_GTOL = 1e-13  # "exact" integral of one backward dense output (the roundoff floor stops it if need be)
EQUAL_ERROR = 1.1  # "at equal error": a fixed-C run counts if its error is at most this factor above adaptive's
TOY = {"a": 0.2, "z0": 10.0, "T": 20.0}
TARGET_TOLERANCE = 1e-6  # target (2): the solver tolerance at which adaptive's default error is compared
TARGET_ERROR = 1e-5


@dataclass(frozen=True)
class Method:
    """One gradient method: ``kind`` is direct, adjoint or gq; ``options`` go to odeint_adjoint_gq."""

    label: str
    kind: str
    options: dict


METHODS = (
    Method("direct", "direct", {}),
    Method("adjoint", "adjoint", {}),
    Method("gq interval C=0.1", "gq", {"quadrature": "interval", "gtol": 0.1}),
    Method("gq interval C=0.4", "gq", {"quadrature": "interval", "gtol": 0.4}),
    Method("gq interval C=1", "gq", {"quadrature": "interval", "gtol": 1.0}),
    Method("gq step", "gq", {"quadrature": "step"}),
    Method("gq adaptive gtol=1e-3", "gq", {"quadrature": "adaptive", "gtol": 1e-3}),
    Method("gq adaptive gtol=1e-5", "gq", {"quadrature": "adaptive", "gtol": 1e-5}),
    Method("gq adaptive gtol=1e-7", "gq", {"quadrature": "adaptive", "gtol": 1e-7}),
    Method("gq adaptive default", "gq", {"quadrature": "adaptive"}),  # gtol = the adjoint rtol
    # the library's default, checked on every call (single calls: its reuse across training calls is measured by
    # bench gradients)
    Method("gq auto", "gq", {"quadrature": AutoRule(recheck_every=1)}),
)
DEFAULT_ADAPTIVE = "gq adaptive default"


def toy_step() -> tuple[TrainingStep, np.ndarray]:
    """The toy as a training step (L = z(T)²) and its exact parameter gradient dL/da = 2·T·z0²·e^{2aT}."""
    a, z0, big_t = TOY["a"], TOY["z0"], TOY["T"]
    step = TrainingStep(LinearField(a, torch.float64), lambda z1: (z1**2).sum(),
                        torch.tensor([z0], dtype=torch.float64), torch.tensor([0.0, big_t], dtype=torch.float64))
    return step, np.array([2.0 * big_t * z0**2 * math.exp(2.0 * a * big_t)])


def float64_step(task: str, width: int) -> TrainingStep:
    """:func:`training_step` built in float64 (modules and data created under float64 as the default dtype)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        step = training_step(task, width)
    finally:
        torch.set_default_dtype(before)
    step.field.double()
    step.y0 = step.y0.double()
    step.t = step.t.double()
    return step


def solver(method: Method, tolerance: float, holder: dict) -> Callable:
    """solve(f, y0, t) for ``method`` at rtol = atol = ``tolerance``; GQ's and the adjoint's stats go to ``holder``."""
    opts = {"rtol": tolerance, "atol": tolerance}

    def solve(f, y0, t):
        if method.kind == "direct":
            ys, holder["stats"] = gqtorch.odeint(f, y0, t, return_stats=True, **opts)
        elif method.kind == "adjoint":
            ys, holder["stats"] = gqtorch.odeint_adjoint(f, y0, t, return_stats=True, **opts)
        else:
            ys, holder["stats"] = gqtorch.odeint_adjoint_gq(f, y0, t, return_stats=True, **method.options, **opts)
        return ys

    return solve


def relative_error(grad: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(grad - reference)) / np.max(np.abs(reference)))


def reference_gradient(step: TrainingStep, exact: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(the reference gradient, how far the other tight gradient is from it): the reference is ``exact`` if given
    (checked against direct backprop at REFERENCE_TOLERANCE), else that direct gradient (checked against GQ
    adaptive at gtol REFERENCE_GTOL on an equally tight backward solve)."""
    tight = {"rtol": REFERENCE_TOLERANCE, "atol": REFERENCE_TOLERANCE}
    direct = step.step(lambda f, y0, t: gqtorch.odeint(f, y0, t, **tight))
    if exact is not None:
        return exact, relative_error(direct, exact)
    gq = step.step(lambda f, y0, t: gqtorch.odeint_adjoint_gq(f, y0, t, quadrature="adaptive", gtol=REFERENCE_GTOL,
                                                              **tight))
    return direct, relative_error(gq, direct)


def _count(stats, name: str):
    value = getattr(stats, name, None)
    return None if value is None else (int(sum(value)) if isinstance(value, tuple) else value)


def measure(name: str, step: TrainingStep, reference: np.ndarray, tolerances, repeats: int) -> list[dict]:
    """Every method at every tolerance on one problem: error, median time, counts."""
    rows = []
    for tolerance in tolerances:
        holders = {m.label: {} for m in METHODS}
        solves = {m.label: solver(m, tolerance, holders[m.label]) for m in METHODS}
        calls = {label: (lambda s=solve: step.step(s)) for label, solve in solves.items()}
        grads = {label: call() for label, call in calls.items()}  # warm-up, and the gradients
        stats = {label: holders[label]["stats"] for label in calls}
        # the exact integral of this tolerance's dense-output integrand (every GQ rule reads the same backward
        # solve): against it, a GQ gradient's difference is its quadrature error alone
        dense_exact = step.step(solver(Method("dense exact", "gq", {"quadrature": "adaptive", "gtol": DENSE_GTOL}),
                                       tolerance, {}))
        print(f"{name}, tolerance {tolerance:g}: timing …", file=sys.stderr)
        times = time_interleaved(calls, repeats, progress=False)
        for m in METHODS:
            s = stats[m.label]
            rows.append({
                "method": m.label, "tolerance": tolerance, "median_s": float(np.median(times[m.label])),
                "error": relative_error(grads[m.label], reference),
                "quadrature_error_actual": relative_error(grads[m.label], dense_exact) if m.kind == "gq" else None,
                "nfe_forward": getattr(s, "nfe_forward", getattr(s, "nfe", None)),
                "nfe_backward": getattr(s, "nfe_backward", None), "nodes": _count(s, "nodes"),
                "quadrature_error": getattr(s, "quadrature_error", None),
            })
    return rows


def _print_table(record: dict) -> None:
    print(f"### {record['problem']} ({record['parameters']:,} parameters; reference: {record['reference']}: "
          f"they differ by {record['reference_check']:.1e})\n")
    print("| method | tol | median step | error ‖Δ∇θ‖∞/‖∇θ‖∞ | quadrature error | estimate E | NFE fwd | NFE bwd "
          "| nodes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    scale = record["gradient_scale"]
    for r in record["rows"]:
        estimate = "—" if r["quadrature_error"] is None else f"{r['quadrature_error'] / scale:.1e}"
        actual = "—" if r["quadrature_error_actual"] is None else f"{r['quadrature_error_actual']:.1e}"
        dash = lambda v: "—" if v is None else str(v)  # noqa: E731
        print(f"| {r['method']} | {r['tolerance']:g} | {r['median_s'] * 1e3:.3g} ms | {r['error']:.1e} | {actual} | "
              f"{estimate} | {dash(r['nfe_forward'])} | {dash(r['nfe_backward'])} | {dash(r['nodes'])} |")
    print("\nerror: against the reference gradient; quadrature error: against the exact integral of the same backward "
          "dense output (GQ adaptive at gtol 1e-13), i.e. the quadrature's share of the error; estimate E: adaptive's "
          "own estimate of that share; both relative to ‖∇θ_ref‖∞.\n")


def targets(record: dict) -> dict:
    """The two targets on one problem (numbers to report, not asserts)."""
    rows = record["rows"]
    interval = [r for r in rows if "interval" in r["method"]]
    adaptive = [r for r in rows if "adaptive" in r["method"] or "auto" in r["method"]]
    comparisons = []
    for r in adaptive:  # the fastest fixed-C run that is at least as accurate
        rivals = [i for i in interval if i["error"] <= EQUAL_ERROR * r["error"]]
        best = min(rivals, key=lambda i: i["median_s"]) if rivals else None
        comparisons.append({"adaptive": r["method"], "tolerance": r["tolerance"], "error": r["error"],
                            "time_s": r["median_s"], "best_interval": None if best is None else best["method"],
                            "best_interval_tolerance": None if best is None else best["tolerance"],
                            "time_ratio": None if best is None else r["median_s"] / best["median_s"]})
    at = {r["method"]: r for r in rows if r["tolerance"] == TARGET_TOLERANCE}
    default = at.get(DEFAULT_ADAPTIVE)
    c01 = at.get("gq interval C=0.1")
    return {"equal_error": comparisons,
            "default_at_1e-6": None if default is None or c01 is None else {
                "adaptive_error": default["error"], "interval_c0.1_error": c01["error"],
                "adaptive_meets": default["error"] <= TARGET_ERROR,
                "interval_c0.1_meets": c01["error"] <= TARGET_ERROR}}


def _print_targets(record: dict) -> None:
    t = record["targets"]
    print(f"**{record['problem']}** — (1) each adaptive run vs the fastest fixed-C run at least as accurate:\n")
    print(f"| adaptive | tol | error | time | fastest interval with error ≤ {EQUAL_ERROR:g}× that | time ratio "
          "adaptive/interval |")
    print("|---|---:|---:|---:|---|---:|")
    for c in t["equal_error"]:
        rival = "none reaches it" if c["best_interval"] is None else \
            f"{c['best_interval']} @ {c['best_interval_tolerance']:g}"
        ratio = "—" if c["time_ratio"] is None else f"{c['time_ratio']:.2f}"
        print(f"| {c['adaptive']} | {c['tolerance']:g} | {c['error']:.1e} | {c['time_s'] * 1e3:.3g} ms | {rival} | "
              f"{ratio} |")
    d = t["default_at_1e-6"]
    if d is not None:
        print(f"\n(2) solver tolerance {TARGET_TOLERANCE:g}: adaptive default error {d['adaptive_error']:.1e} "
              f"({'≤' if d['adaptive_meets'] else '>'} {TARGET_ERROR:g}); interval C = 0.1 error "
              f"{d['interval_c0.1_error']:.1e} ({'≤' if d['interval_c0.1_meets'] else '>'} {TARGET_ERROR:g})")
    print()


def write_figure(path: Path, records: list[dict]) -> None:
    """Per problem: gradient error against time (top) and, for the GQ rules, the quadrature's own error against
    time (bottom); one line per method through its tolerances. Saved atomically (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    # plain numbers at 1, 2, 3, 5 × 10^k only: a short log axis' default minor labels overlap
    ticks = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "1235" else "")

    fig, axes = plt.subplots(2, len(records), figsize=(5.2 * len(records), 8.0), squeeze=False, sharex="col")
    styles = {"direct": ("k", "s"), "adjoint": ("0.5", "D"), "interval": ("tab:blue", "o"),
              "step": ("tab:green", "^"), "adaptive": ("tab:red", "v"),
              "auto": ("tab:purple", "P")}
    shade = {"C=0.4": 0.7, "C=1": 0.45, "1e-5": 0.7, "1e-7": 0.45, "default": 0.3}
    for column, record in enumerate(records):
        for row, (key, what) in enumerate((("error", "relative gradient error"),
                                           ("quadrature_error_actual", "quadrature error alone (relative)"))):
            ax = axes[row][column]
            for m in METHODS:
                points = sorted((r["tolerance"], r["median_s"], r[key]) for r in record["rows"]
                                if r["method"] == m.label and r[key] is not None)
                if not points:
                    continue
                color, marker = styles[next(k for k in styles if k in m.label)]
                ax.plot([p[1] * 1e3 for p in points], [max(p[2], 1e-16) for p in points], marker=marker,
                        color=color, alpha=next((v for k, v in shade.items() if k in m.label), 1.0), label=m.label)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_formatter(ticks)
            ax.xaxis.set_minor_formatter(ticks)
            ax.set_xlabel("time per training step (ms)")
            ax.set_ylabel(what)
            ax.set_title(f"{record['problem']} (tolerances {', '.join(f'{r:g}' for r in record['tolerances'])})"
                         if row == 0 else record["problem"], fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save_figure_atomic(fig, path)


def run(repeats: int = 20, quick: bool = False, out: Path = Path("results/bench_quadrature.json"),
        width: int | None = None, tolerances: tuple[float, ...] | None = None) -> int:
    """Print the tables and targets; write the JSON to ``out`` and the figure next to it."""
    out = Path(out)
    width = width or (QUICK_WIDTH if quick else WIDTH)
    tolerances = tolerances or (QUICK_TOLERANCES if quick else TOLERANCES)
    repeats = quick_repeats(repeats, quick)
    env = start("Quadrature benchmark: GQ's interval / step / adaptive rules, accuracy against cost (float64)",
                f"one training step (forward + backward), rtol = atol = tolerance for forward and backward; width "
                f"{width}; reference: closed form (toy) or direct backprop at {REFERENCE_TOLERANCE:g}; {repeats} "
                f"interleaved rounds, medians, one thread")
    records = []
    with torch_threads(1):
        toy, exact = toy_step()
        problems = [("toy", toy, *reference_gradient(toy, exact), f"closed form (direct @ {REFERENCE_TOLERANCE:g})")]
        for task in ("g1d", "nested-spheres"):
            step = float64_step(task, width)
            problems.append((f"{task} W={width}", step, *reference_gradient(step),
                             f"direct @ {REFERENCE_TOLERANCE:g} (GQ adaptive gtol {REFERENCE_GTOL:g})"))
        for name, step, reference, check, how in problems:
            record = {"problem": name, "parameters": step.parameters(), "reference": how, "reference_check": check,
                      "tolerances": list(tolerances),
                      "gradient_scale": float(np.max(np.abs(reference))),
                      "rows": measure(name, step, reference, tolerances, repeats)}
            record["targets"] = targets(record)
            _print_table(record)
            records.append(record)
            write_json_atomic(out, {"benchmark": "quadrature", "environment": env, "records": records})
    print("### Targets\n")
    for record in records:
        _print_targets(record)
    figure = out.with_suffix(".png")
    write_figure(figure, records)
    write_json_atomic(out, {"benchmark": "quadrature", "environment": env, "records": records, "figure": str(figure),
                            "settings": {"repeats": repeats, "width": width, "tolerances": list(tolerances),
                                         "reference_tolerance": REFERENCE_TOLERANCE, "toy": TOY,
                                         "methods": [{"label": m.label, "kind": m.kind,
                                                      **{k: repr(v) if isinstance(v, AutoRule) else v
                                                         for k, v in m.options.items()}}
                                                     for m in METHODS]}})
    print(f"results written to {out} and {figure}")
    return 0
