"""``toy-gradient``: the paper's analytic gradient-accuracy experiment (docs/paper.md §4, its Fig. 1) with gqtorch.

dz/dt = a·z with z(0) = z0 = 10 and a = 0.2 (both parameters), loss L = z(T)² on times t = [0, T] with T itself
requiring grad. The closed forms are L = z0²e^{2aT}, dL/dz0 = 2z0e^{2aT}, dL/da = 2T·z0²e^{2aT} and
dL/dT = 2a·z0²e^{2aT}. For every T of the sweep (19 to 29.04 in steps of 0.02: 503 values), every gradient method
(direct backprop through dopri5, the backsolve adjoint, the adjoint with the seminorm, GQ) and every dtype, the
relative errors |est − exact|/exact of L and of its three gradients are recorded with the solver's evaluation
counts, written as one JSON file and summarised as medians. This is not a training task: the harness is not used.

The exact values are computed in float64 from the parameters *as stored* in the run's dtype (0.2 is not a float32
number; its rounding alone would move L by ~2T·1.5e-8 ≈ 1e-6 relative), so the errors measure the gradient method
and the arithmetic, not the rounding of the inputs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import gqtorch
from validation.harness.atomic import write_json_atomic
from validation.harness.cli import (
    UsageError,
    check_writable_dir,
    explicit_flags,
    float_in,
    positive_float,
    track_explicit,
)
from validation.harness.environment import environment
from validation.harness.methods import GQ_METHODS, METHODS, PAPER_METHODS, solve
from validation.tasks.peers import PEERS, available, solve_to_end

NAME = "toy-gradient"
HELP = "the paper's analytic gradient experiment (dz/dt = a·z, L = z(T)²): relative errors vs T per method/dtype"
A, Z0 = 0.2, 10.0
T_START, T_STOP, T_STEP = 19.0, 29.04, 0.02
QUICK_T = (19.0, 21.5, 24.0, 26.5, 29.04)
RTOL, ATOL, GTOL = 1e-6, 1e-7, 0.4
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}
QUANTITIES = ("L", "dL_dz0", "dL_da", "dL_dT")
LABELS = {"L": "L", "dL_dz0": "dL/dz0", "dL_da": "dL/da", "dL_dT": "dL/dT"}
DEFAULT_OUT = Path("results/toy-gradient/toy.json")
# T ≤ 200: the loss z0²e^{2aT} = 100·e^{0.4T} stays below float32's maximum (3.4e38, reached at T ≈ 210).
T_MAX = 200.0
MAX_SWEEP = 100_000  # values of T in one sweep: a step that would give more is a typo, not an experiment


class LinearField(torch.nn.Module):
    """f(t, z) = a·z with the rate a a trainable parameter."""

    def __init__(self, a: float, dtype: torch.dtype):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(a, dtype=dtype))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.a * z


def exact_values(z0: float, a: float, T: float) -> dict[str, float]:
    """The closed forms of L = z(T)² and its gradients for z(T) = z0·e^{aT}, in float64."""
    loss = z0 * z0 * math.exp(2 * a * T)
    return {"L": loss, "dL_dz0": 2 * loss / z0, "dL_da": 2 * T * loss, "dL_dT": 2 * a * loss}


def sweep_times(start: float = T_START, stop: float = T_STOP, step: float = T_STEP) -> list[float]:
    """start, start + step, …, stop (inclusive), each rounded to 10 decimals so that 0.02 steps stay on the grid."""
    if step <= 0 or stop < start:
        raise ValueError(f"need step > 0 and stop >= start, got start {start}, stop {stop}, step {step}")
    count = math.floor((stop - start) / step + 1e-9) + 1
    return [round(start + k * step, 10) for k in range(count)]


@dataclass
class ToyRun:
    """One (T, method, dtype) evaluation: the estimates, the exact values and the cost."""

    values: dict[str, float]
    exact: dict[str, float]
    nfe_forward: int | None
    nfe_backward: int | None
    nodes: int | None
    time_s: float
    rel_errors: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        # a quantity a method does not provide (MALI/ACA: dL/dT) stays None
        self.rel_errors = {q: None if self.values[q] is None else abs(self.values[q] - self.exact[q]) / abs(
            self.exact[q]) for q in QUANTITIES}


def toy_gradient(T: float, method: str, dtype: torch.dtype = torch.float64, rtol: float = RTOL, atol: float = ATOL,
                 gtol: float = GTOL) -> ToyRun:
    """Solve the toy on [0, T] with ``method`` (one of :data:`validation.harness.methods.METHODS`) and
    differentiate L = z(T)²."""
    func = LinearField(A, dtype)
    z0 = torch.tensor([Z0], dtype=dtype, requires_grad=True)
    t_end = torch.tensor(T, dtype=dtype, requires_grad=True)
    t = torch.stack([torch.zeros((), dtype=dtype), t_end])
    began = time.perf_counter()
    if method in PEERS:  # TorchDiffEqPack integrates to a number, so T gets no gradient
        z_end = solve_to_end(method, func, z0, 0.0, T, rtol, atol)
        loss = z_end.pow(2).sum()
        d_z0, d_a = torch.autograd.grad(loss, (z0, func.a))
        elapsed = time.perf_counter() - began
        values = {"L": float(loss.detach()), "dL_dz0": float(d_z0.sum()), "dL_da": float(d_a), "dL_dT": None}
        exact = exact_values(float(z0.detach()), float(func.a.detach()), float(t_end.detach()))
        return ToyRun(values, exact, None, None, None, elapsed)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS + PEERS)}, got {method!r}")
    ys, stats = solve(method, func, z0, t, rtol=rtol, atol=atol, gtol=gtol)
    loss = ys[-1].pow(2).sum()
    d_z0, d_a, d_T = torch.autograd.grad(loss, (z0, func.a, t_end))
    elapsed = time.perf_counter() - began
    values = {"L": float(loss.detach()), "dL_dz0": float(d_z0.sum()), "dL_da": float(d_a), "dL_dT": float(d_T)}
    # the closed form at the inputs as this dtype stores them (float32 → float64 is exact)
    exact = exact_values(float(z0.detach()), float(func.a.detach()), float(t_end.detach()))
    if method == "direct":  # plain odeint reports gqref.Stats; backprop through the graph evaluates no field
        nfe_forward, nfe_backward, nodes = stats.nfe, None, None
    else:
        nfe_forward, nfe_backward = stats.nfe_forward, stats.nfe_backward
        nodes = sum(stats.nodes) if method in GQ_METHODS else None
    return ToyRun(values, exact, int(nfe_forward), nfe_backward, nodes, elapsed)


def usable_methods(methods: list[str]) -> tuple[list[str], list[str]]:
    """(methods to run, peers left out because TorchDiffEqPack is not installed)."""
    missing = [m for m in methods if m in PEERS and not available()]
    return [m for m in methods if m not in missing], missing


def _median(values: list) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summarize(runs: list[dict]) -> list[dict]:
    """Per (dtype, method) run record: median and max relative error per quantity and median NFE."""
    rows = []
    for run in runs:
        rows.append({
            "dtype": run["dtype"], "method": run["method"],
            "median_rel_error": {q: _median(run["rel_error"][q]) for q in QUANTITIES},
            "max_rel_error": {q: max((v for v in run["rel_error"][q] if v is not None), default=None)
                              for q in QUANTITIES},
            "median_nfe_forward": _median(run["nfe_forward"]),
            "median_nfe_backward": _median(run["nfe_backward"]),
            "failures": len(run["failures"]),
        })
    return rows


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "—" if value is None else format(value, spec)


def summary_table(summary: list[dict]) -> str:
    """A markdown table of the medians: one row per (method, dtype)."""
    head = "| method | dtype | " + " | ".join(f"median rel. err. {LABELS[q]}" for q in QUANTITIES) + \
        " | median NFE fwd | median NFE bwd |"
    lines = [head, "|---|---|" + "---:|" * (len(QUANTITIES) + 2)]
    for row in summary:
        errors = " | ".join(_fmt(row["median_rel_error"][q]) for q in QUANTITIES)
        lines.append(f"| {row['method']} | {row['dtype']} | {errors} | {_fmt(row['median_nfe_forward'], 'g')} | "
                     f"{_fmt(row['median_nfe_backward'], 'g')} |")
    return "\n".join(lines)


def run_sweep(times: list[float], methods: list[str], dtypes: list[str], rtol: float = RTOL, atol: float = ATOL,
              gtol: float = GTOL, progress: bool = True) -> dict[str, Any]:
    """Every (dtype, method, T): the record written to JSON (without the environment)."""
    runs = []
    exact: dict[str, dict[str, list[float]]] = {}
    bar = tqdm(total=len(times) * len(methods) * len(dtypes), desc="toy gradient", unit="solve",
               disable=not progress, file=sys.stderr)
    for dtype_name in dtypes:
        exact[dtype_name] = {q: [] for q in QUANTITIES}
        for method in methods:
            run: dict[str, Any] = {"dtype": dtype_name, "method": method,
                                   "value": {q: [] for q in QUANTITIES}, "rel_error": {q: [] for q in QUANTITIES},
                                   "nfe_forward": [], "nfe_backward": [], "nodes": [], "time_s": [], "failures": []}
            for T in times:
                bar.set_postfix(dtype=dtype_name, method=method, T=f"{T:g}")
                try:
                    result = toy_gradient(T, method, DTYPES[dtype_name], rtol, atol, gtol)
                except gqtorch.SolverError as error:  # a failed solve is a result too: keep the sweep going
                    run["failures"].append({"T": T, "error": str(error)})
                    for q in QUANTITIES:
                        run["value"][q].append(None)
                        run["rel_error"][q].append(None)
                    for key in ("nfe_forward", "nfe_backward", "nodes", "time_s"):
                        run[key].append(None)
                else:
                    for q in QUANTITIES:
                        run["value"][q].append(result.values[q])
                        run["rel_error"][q].append(result.rel_errors[q])
                    run["nfe_forward"].append(result.nfe_forward)
                    run["nfe_backward"].append(result.nfe_backward)
                    run["nodes"].append(result.nodes)
                    run["time_s"].append(result.time_s)
                bar.update()
            runs.append(run)
        # the exact values depend only on the dtype's stored inputs, not on the method
        for T in times:
            stored = [float(torch.tensor(v, dtype=DTYPES[dtype_name])) for v in (Z0, A, T)]
            for q, value in exact_values(*stored).items():
                exact[dtype_name][q].append(value)
    bar.close()
    return {
        "experiment": NAME,
        "problem": {"field": "dz/dt = a*z", "z0": Z0, "a": A, "loss": "z(T)^2", "t": "[0, T], T requires grad",
                    "exact": {"L": "z0^2 exp(2aT)", "dL_dz0": "2 z0 exp(2aT)", "dL_da": "2T z0^2 exp(2aT)",
                              "dL_dT": "2a z0^2 exp(2aT)"},
                    "exact_from": "the float64 closed form at z0, a and T as stored in the run's dtype"},
        "config": {"rtol": rtol, "atol": atol, "gtol": gtol, "methods": list(methods), "dtypes": list(dtypes),
                   "solver": "dopri5 (gqtorch)"},
        "quantities": list(QUANTITIES),
        "T": list(times),
        "exact": exact,
        "runs": runs,
        "summary": summarize(runs),
        "finished": True,
    }


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", nargs="+", choices=METHODS + PEERS, default=list(PAPER_METHODS + PEERS),
                        help="gradient methods (default: the paper's four, plus MALI and ACA where TorchDiffEqPack is "
                             "installed)")
    parser.add_argument("--dtypes", nargs="+", choices=tuple(DTYPES), default=list(DTYPES),
                        help="floating-point types (default: float32 float64)")
    parser.add_argument("--tol", type=positive_float, default=RTOL, help=f"dopri5 rtol (default {RTOL:g})")
    parser.add_argument("--atol", type=positive_float, default=ATOL, help=f"dopri5 atol (default {ATOL:g})")
    parser.add_argument("--gtol", type=positive_float, default=GTOL,
                        help=f"GQ's node-rule constant C (default {GTOL:g})")
    parser.add_argument("--t-start", type=float_in(0.0, T_MAX, low_open=True), default=T_START,
                        help=f"first T, in (0, {T_MAX:g}] (default {T_START:g})")
    parser.add_argument("--t-stop", type=float_in(0.0, T_MAX, low_open=True), default=T_STOP,
                        help=f"last T, in (0, {T_MAX:g}] (default {T_STOP:g})")
    parser.add_argument("--t-step", type=positive_float, default=T_STEP, help=f"T step (default {T_STEP:g})")
    parser.add_argument("--quick", action="store_true",
                        help=f"only T in {', '.join(f'{t:g}' for t in QUICK_T)} (the --t-* flags are then refused)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results file, checked for writing before the sweep (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    track_explicit(parser)  # last: it wraps every flag added above


def _check_out(out: Path) -> None:
    """The results file must be writable before the sweep spends minutes."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; expected the path of the JSON results file")
    check_writable_dir(out.parent, "--out", given=out)


def main(args: argparse.Namespace) -> int:
    given = [f"--{dest.replace('_', '-')}" for dest in ("t_start", "t_stop", "t_step") if dest in explicit_flags(args)]
    if args.quick and given:  # --quick fixes the T values: a sweep flag would be ignored, so say so
        raise UsageError(f"{', '.join(given)}: not used with --quick, which runs T = "
                         f"{', '.join(f'{t:g}' for t in QUICK_T)}; expected one or the other")
    if args.quick:
        times = list(QUICK_T)
    else:
        if args.t_stop < args.t_start:
            raise UsageError(f"toy-gradient: --t-start {args.t_start:g} --t-stop {args.t_stop:g}: expected --t-stop ≥ "
                             f"--t-start")
        count = math.floor((args.t_stop - args.t_start) / args.t_step + 1e-9) + 1
        if count > MAX_SWEEP:
            raise UsageError(f"--t-step {args.t_step:g}: gives {count:,} values of T in [{args.t_start:g}, "
                             f"{args.t_stop:g}]; expected at most {MAX_SWEEP:,}")
        times = sweep_times(args.t_start, args.t_stop, args.t_step)
    _check_out(args.out)
    methods, unavailable = usable_methods(list(dict.fromkeys(args.methods)))  # keep order, drop repeats
    for method in unavailable:
        print(f"toy gradient: {method} is unavailable (TorchDiffEqPack is not installed: pip install --no-deps "
              f"TorchDiffEqPack==1.0.1)")
    dtypes = list(dict.fromkeys(args.dtypes))
    record = run_sweep(times, methods, dtypes, args.tol, args.atol, args.gtol, progress=not args.no_progress)
    record["unavailable"] = unavailable
    record["config"].update({"quick": bool(args.quick), "t_start": times[0], "t_stop": times[-1],
                             "t_step": args.t_step, "n_T": len(times)})
    record["environment"] = environment()
    write_json_atomic(args.out, record)
    print(f"toy gradient: {len(times)} values of T in [{times[0]:g}, {times[-1]:g}], rtol {args.tol:g}, "
          f"atol {args.atol:g}, C {args.gtol:g}")
    print(summary_table(record["summary"]))
    failures = sum(row["failures"] for row in record["summary"])
    if failures:
        print(f"{failures} solves failed (recorded as null in the JSON)")
    print(f"results written to {args.out}")
    return 0
