"""``bench gradients``: one training step (forward + backward) on the paper's tasks with every gradient method.

Tasks (Norcliffe & Deisenroth 2023, §7.1–7.2): g1d (batch 2, state 4, autonomous MLP 4 → W → W → 4, MSE on z₁(1)) and
nested spheres (batch 200, state 5, MLP on [z, t] 6 → W → W → 5, Linear(5 → 2) readout, cross-entropy);
dopri5 rtol = atol = 1e-3, t = [0, 1], float32, one thread. Methods: gqtorch direct / adjoint / seminorm / GQ with
the paper's rule (C = 0.1) / GQ's default ("auto", and the same checked on every call) and torchdiffeq direct /
adjoint / seminorm, all from one set of initial weights, timed interleaved: each sample is a block of
``BLOCK`` consecutive training steps, reported per step (medians). Each method's parameter gradient is compared
with gqtorch's direct one. With ``--memory`` each
(task, width, method) also runs once in a fresh process to measure the step's peak memory
(:mod:`validation.bench.memory`), plus a sweep over solver tolerances showing which methods' memory grows with NFE.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gqtorch.memory import PeakMemory
from validation.bench.memory import measure_in_subprocess
from validation.bench.steps import GTOL, METHOD_KEYS, SEED, TASKS, TOLERANCE, solvers, training_step
from validation.bench.timing import quick_repeats, start, time_interleaved, torch_threads
from validation.harness.atomic import write_json_atomic

WIDTHS = (100, 500, 1000, 2000, 3000)
QUICK_WIDTHS = (20, 50)
MEMORY_SWEEP = {"task": "nested-spheres", "width": 500, "tolerances": (1e-3, 1e-5, 1e-7)}
QUICK_MEMORY_SWEEP = {"task": "g1d", "width": 20, "tolerances": (1e-3, 1e-5)}
REFERENCE = "direct (gqtorch)"
RATIO_BASE = "gq (gqtorch)"  # the "time / GQ" column's denominator
# A timed sample is a block of this many consecutive training steps, reported per step, for every method alike:
# steadier than one call, and an AutoRule(recheck_every=k ≤ BLOCK) is timed over whole cycles of checks and reuses
BLOCK = 10




def _time_task(task: str, width: int, repeats: int, device: str = "cpu", methods: tuple[str, ...] | None = None
               ) -> dict:
    setup = training_step(task, width, device=device)
    timed = set(solvers()) if methods is None else {REFERENCE, RATIO_BASE, *methods}
    calls = {name: (lambda solve=solve: setup.step(solve)) for name, solve in solvers().items() if name in timed}
    grads = {name: call() for name, call in calls.items()}  # warm-up, and the gradients to compare
    blocks = {name: (lambda call=call: [call() for _ in range(BLOCK)]) for name, call in calls.items()}
    print(f"{task} width {width}: timing …", file=sys.stderr)
    times = {name: np.asarray(ts) / BLOCK for name, ts in time_interleaved(blocks, repeats).items()}
    reference = grads[REFERENCE]
    scale = float(np.max(np.abs(reference)))
    rows = [{"method": name, "median_s": float(np.median(times[name])), "steps_per_sample": BLOCK,
             "relative_difference_vs_direct": float(np.max(np.abs(grads[name] - reference)) / scale)}
            for name in calls]
    if device != "cpu":  # on CUDA the allocator's own peak counter, measured in this process
        for row in rows:
            memory = PeakMemory(device)
            memory.start()
            setup.step(solvers()[row["method"]])
            row["peak_memory_mb"] = memory.peak_mib()
    return {"task": task, "width": width, "parameters": setup.parameters(), "methods": rows}


def _print_timing(record: dict) -> None:
    rows = {r["method"]: r for r in record["methods"]}
    gq = rows[RATIO_BASE]["median_s"]
    print(f"### {record['task']}, width {record['width']}, {record['parameters']:,} parameters\n")
    print(f"| method | median step (blocks of {BLOCK}) | time / GQ | ‖Δ∇θ‖∞/‖∇θ‖∞ vs direct | peak memory |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        memory = r.get("peak_memory_mb")
        memory = "—" if memory is None else f"{memory:.1f} MB"
        print(f"| {name} | {r['median_s'] * 1e3:.3g} ms | {r['median_s'] / gq:.2f}× | "
              f"{r['relative_difference_vs_direct']:.1e} | {memory} |")
    print()


def _memory_sweep(sweep: dict) -> list[dict]:
    """Peak memory of each method at several tolerances (more NFE as the tolerance tightens)."""
    rows = []
    for tolerance in sweep["tolerances"]:
        for method in solvers():
            measured = measure_in_subprocess(sweep["task"], sweep["width"], method, tolerance)
            rows.append({"tolerance": tolerance, "method": method, **measured})
    print(f"### Peak memory vs tolerance: {sweep['task']}, width {sweep['width']}\n")
    print("| method | " + " | ".join(f"tol {tol:g}" for tol in sweep["tolerances"]) + " |")
    print("|---|" + "---:|" * len(sweep["tolerances"]))
    for method in solvers():
        cells = [next(r for r in rows if r["method"] == method and r["tolerance"] == tol)
                 for tol in sweep["tolerances"]]
        print(f"| {method} | " + " | ".join(f"{c['peak_memory_mb']:.1f} MB (NFE {c['nfe']})" for c in cells) + " |")
    print()
    return rows


def run(repeats: int = 20, quick: bool = False, out: Path = Path("results/bench_gradients.json"),
        widths: tuple[int, ...] | None = None, tasks: tuple[str, ...] | None = None, memory: bool = True,
        device: str = "cpu", methods: tuple[str, ...] | None = None) -> int:
    """``methods``: short names (:data:`METHOD_KEYS`) to time, beside gqtorch's direct backprop (the gradients'
    reference) and GQ with the paper's rule (the ratios' base), which always run; default every method."""
    unknown = sorted(set(methods or ()) - set(METHOD_KEYS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose among {', '.join(METHOD_KEYS)}")
    labels = None if methods is None else tuple(METHOD_KEYS[m] for m in methods)
    widths = widths or (QUICK_WIDTHS if quick else WIDTHS)
    tasks = tasks or TASKS
    repeats = quick_repeats(repeats, quick)
    env = start("Training-step benchmark: g1d and nested spheres, every gradient method",
                f"dopri5 rtol = atol = {TOLERANCE:g}, GQ C = {GTOL}, t = [0, 1], float32, one CPU thread, device "
                f"{device}, {repeats} interleaved rounds, medians; peak memory: one step in a fresh process (CPU, see "
                f"validation/bench/memory.py) or CUDA's allocator peak")
    records = []
    with torch_threads(1):
        for task in tasks:
            for width in widths:
                record = _time_task(task, width, repeats, device, labels)
                if memory and device == "cpu":
                    for row in record["methods"]:
                        row.update(measure_in_subprocess(task, width, row["method"], TOLERANCE))
                _print_timing(record)
                records.append(record)
                write_json_atomic(out, {"benchmark": "gradients", "environment": env, "records": records})
    sweep_rows = _memory_sweep(QUICK_MEMORY_SWEEP if quick else MEMORY_SWEEP) if memory and device == "cpu" else []
    write_json_atomic(out, {"benchmark": "gradients", "environment": env, "device": device, "records": records,
                            "memory_sweep": sweep_rows,
                            "settings": {"repeats": repeats, "tolerance": TOLERANCE, "gtol": GTOL, "seed": SEED,
                                         "methods": list(labels) if labels else None}})
    print(f"results written to {out}")
    return 0
