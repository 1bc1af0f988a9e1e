"""The reproduction's report: ``report.md`` and PNG figures from the result JSONs of the grid.

Only runs of the grid (:mod:`validation.reproduction.plan`) that have trained all their planned epochs enter the
tables (a chunk of a run marks its JSON finished at the chunk's end, so the planned epochs are what counts); the
others are listed as partial. The numbers are :mod:`validation.report`'s (mean ± sample std over seeds, training
time as the sum of the epoch times, NFE per batch, peak memory, GQ's speed-up as the ratio of mean training times),
grouped per task and variant across widths (the grid's learning rate changes with width, which the generic report
would split into separate groups). Added here: whether the methods' final metrics agree within the seed spread,
the paper's result beside ours, and every run's command line.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from validation import report as generic
from validation.harness import atomic
from validation.reproduction import plan as grid_plan
from validation.reproduction.plan import HERE, TOY, Run

REPORT_NAME = "report.md"
LOG_METRICS = ("mse", "kl")  # compared on a log scale: they span decades and are never negative
# The paper's result per task as docs/paper.md records it (Norcliffe & Deisenroth, TMLR 2023), numeric where given.
PAPER: dict[str, str] = {
    "g1d": "W = 3000, 200 epochs, lr 1e-4 (the authors' notebook): direct 108 s, adjoint 664 s, GQ 92 s, all reaching "
           "MSE ≈ 3e-8, i.e. GQ 1.17× faster than direct and 7.2× faster than the adjoint at equal MSE "
           "(docs/paper.md §3.1).",
    "nested-spheres": "Qualitative: every method reaches the same validation accuracy; GQ trains faster than the "
                      "adjoint and seminorm adjoint, the more so the wider the field (P ≫ S), and does not grow in "
                      "memory with the number of steps (docs/paper.md §1, §3.2).",
    "sines": "Qualitative: equal final MSE for every method; GQ faster than the adjoint methods at large width "
             "(docs/paper.md §3.3).",
    "images": "Qualitative: equal test accuracy for the adjoint, seminorm and GQ at 50–500 channels on full MNIST, "
              "CIFAR-10 and SVHN; GQ faster (docs/paper.md §3.4).",
    "ornstein-uhlenbeck": "Qualitative: GQ on the Wong–Zakai ODE reaches a test KL comparable to the SDE baselines "
                          "(reversible Heun, direct and adjoint) in less training time (docs/paper.md §3.5).",
    TOY: "At T = 19 / 24 / 29 a float64 run of the method gives relative errors of L 2.4e-6 / 2.7e-6 / 3.1e-6, of "
         "dL/da 3.4e-6 / 4.0e-6 / 4.7e-6, of dL/dz0 2.0e-6 / 2.4e-6 / 2.8e-6, with 40 / 49 / 56 GQ nodes; the paper "
         "plots GQ's errors at the level of the adjoint's and direct backprop's (docs/paper.md §4).",
}


class NoResults(Exception):
    """No finished or partial run of the grid under the results folder."""


@dataclass
class Sorted:
    """The grid's records under a results folder: complete ones, partial ones (path, epochs done of planned)."""

    complete: list[tuple[Path, dict, Run]]
    partial: list[tuple[Path, int, Run]]
    toy: list[tuple[Path, dict]]


def sort_records(results: Path, runs: list[Run] | None = None) -> Sorted:
    """Match every result JSON under ``results`` to its run of the grid."""
    from validation.reproduction.runner import result_path

    runs = grid_plan.grid() if runs is None else runs
    by_path: dict[Path, Run] = {}
    for run in runs:
        if run.task != TOY:
            by_path[result_path(run, results)[0].resolve()] = run
    loaded = generic.load_results(results)
    complete, partial = [], []
    # a chunk's JSON says finished at the chunk's end; an interrupted one is in loaded.unfinished
    for path, record in loaded.training:
        run = by_path.get(path.resolve())
        if run is None:
            continue
        if int(record.get("epochs_done", 0)) >= run.epochs:
            complete.append((path, record, run))
        else:
            partial.append((path, int(record.get("epochs_done", 0)), run))
    for path in loaded.unfinished:
        run = by_path.get(path.resolve())
        if run is not None:
            try:
                done = int(json.loads(path.read_text()).get("epochs_done", 0))
            except (OSError, ValueError, AttributeError):
                done = 0
            partial.append((path, done, run))
    toy = [(p, t) for p, t in loaded.toy if not t.get("config", {}).get("quick")]
    return Sorted(complete, partial, toy)


def merged_groups(complete: list[tuple[Path, dict, Run]], root: Path) -> list[generic.GroupSummary]:
    """One group per (task, variant) across widths (the grid's learning rate varies by width), from the generic
    report's per-width summaries."""
    buckets: dict[tuple[str, str], dict[int, dict[str, list[dict]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for _, record, _ in complete:
        buckets[(str(record["task"]), str(record["variant"]))][int(record["width"])][str(record["method"])].append(
            record)
    groups = []
    for (task, variant), widths in sorted(buckets.items()):
        summaries = {w: {m: generic.summarize_method(widths[w][m])
                         for m in sorted(widths[w], key=generic._method_order)} for w in sorted(widths)}
        metric = next(iter(next(iter(summaries.values())).values())).metric_name
        groups.append(generic.GroupSummary("", task, variant, summaries, metric))
    return groups


def _scaled(value: float, metric: str) -> float:
    return math.log10(max(value, 1e-300)) if metric in LOG_METRICS else value


def agreement(methods: dict[str, generic.MethodSummary], metric: str) -> str:
    """Whether the methods' mean final metrics lie within twice the pooled seed standard deviation of their
    common mean (log10 scale for MSE and KL); with one seed there is no spread to judge by."""
    if len(methods) < 2:
        return "one method"
    means = {m: s.metric.mean for m, s in methods.items() if s.metric.mean is not None}
    scaled = {m: _scaled(v, metric) for m, v in means.items()}
    centre = sum(scaled.values()) / len(scaled)
    spreads = []
    for s in methods.values():
        if s.metric.std is not None and s.metric.mean is not None:
            if metric in LOG_METRICS:  # the std of log10 from the std of the value, to first order
                spreads.append(s.metric.std / max(s.metric.mean, 1e-300) / math.log(10))
            else:
                spreads.append(s.metric.std)
    gap = max(abs(v - centre) for v in scaled.values())
    unit = " decades" if metric in LOG_METRICS else ""
    if not spreads:
        return f"one seed, no spread to judge by (largest gap from the mean {gap:.3g}{unit})"
    pooled = math.sqrt(sum(x * x for x in spreads) / len(spreads))
    verdict = "agree" if gap <= 2 * pooled + 1e-12 else "DIFFER"
    return f"{verdict}: largest gap from the mean {gap:.3g}{unit}, 2 × pooled seed std {2 * pooled:.3g}{unit}"


def _figures(group: generic.GroupSummary, complete: list[tuple[Path, dict, Run]], out: Path) -> list[Path]:
    from validation.report import plots

    base = generic.slug(f"{group.task}_{group.variant}")
    figures = [plots.time_vs_width(generic.time_series(group), f"{group.task} / {group.variant}: training time",
                                   out / f"time_vs_width_{base}.png")]
    for width in group.widths:
        curves: dict[str, list] = defaultdict(list)
        for _, record, _ in sorted(complete, key=lambda item: item[1]["seed"]):
            if (record["task"], record["variant"], int(record["width"])) != (group.task, group.variant, width):
                continue
            clock = [0.0]
            for seconds in record["history"]["epoch_time_s"]:
                clock.append(clock[-1] + float(seconds))
            losses = [float(v) for v in record["history"]["val_loss"]]
            n = min(len(clock), len(losses))
            curves[record["method"]].append((int(record["seed"]), clock[:n], losses[:n]))
        curves = dict(sorted(curves.items(), key=lambda item: generic._method_order(item[0])))
        figures.append(plots.loss_vs_time(curves, f"{group.task} / {group.variant}, width {width}: validation loss",
                                          out / f"loss_vs_time_{base}_w{width}.png"))
    return figures


def _rates(group: generic.GroupSummary, complete: list[tuple[Path, dict, Run]]) -> str:
    """Each width's Adam learning rate as the runs' configs record it."""
    rates: dict[int, set[str]] = defaultdict(set)
    for _, record, _ in complete:
        if (record["task"], record["variant"]) == (group.task, group.variant):
            rates[int(record["width"])].add(str(record.get("config", {}).get("lr", "?")))
    return ", ".join(f"W = {w}: {' / '.join(sorted(r))}" for w, r in sorted(rates.items()))


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (no machine's absolute path in a committed report)."""
    root = HERE.parent.parent
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def write(results: Path, out: Path | None = None, runs: list[Run] | None = None) -> Path:
    """Write ``report.md`` and its PNGs into ``out`` (default: this package's folder); its path."""
    results = Path(results)
    out = HERE if out is None else Path(out)
    if not results.is_dir():
        raise NoResults(f"no results folder {results}: run `python -m validation reproduce` first")
    runs = grid_plan.grid() if runs is None else runs
    found = sort_records(results, runs)
    if not (found.complete or found.partial or found.toy):
        raise NoResults(f"no result of the grid under {results}: run `python -m validation reproduce` first")
    atomic.make_dirs(out)
    groups = merged_groups(found.complete, results)
    planned = {r.task for r in runs}
    lines = ["# Reproduction report", "",
             f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from `{_shown(results)}` by "
             f"`python -m validation reproduce --report-only`: {len(found.complete)} of "
             f"{sum(1 for r in runs if r.task != TOY)} training runs complete, {len(found.partial)} partial, "
             f"{len(found.toy)} toy-gradient sweep(s). Norcliffe & Deisenroth, TMLR 2023, is \"the paper\".", "",
             "What the numbers say, and the investigation of any disagreement: the Findings in "
             "[README.md](README.md#findings-the-grid-of-2026-11-30).", "",
             "Mean ± sample standard deviation (n − 1) over seeds. Training time: the sum of the epoch times "
             "(training loop only). NFE: mean field evaluations per batch. `gq` is the paper's rule (interval "
             "quadrature, C = 0.1), `gq-auto` the library's default error-controlled rule. \"Agree\": every "
             "method's mean final metric within 2 × the pooled seed std of their common mean (log10 scale for MSE "
             "and KL).", ""]
    for group in groups:
        lines += [f"## {group.task} / {group.variant}", "", f"**The paper:** {PAPER.get(group.task, '—')}", "",
                  f"Learning rate by width: {_rates(group, found.complete)}.", "",
                  generic.training_table(group), "", "Agreement of the final " + group.metric_name + ":", ""]
        lines += [f"- width {w}: {agreement(m, group.metric_name)}" for w, m in group.widths.items()] + [""]
        speedups = generic.speedup_table(group)
        if speedups:
            lines += ["GQ's training-time ratio (time of the other method / time of GQ; > 1: GQ faster):", "",
                      speedups, ""]
        figures = _figures(group, found.complete, out)
        lines += [f"![{p.stem}]({p.name})" for p in figures] + [""]
    if found.toy:
        lines += [f"**The paper (toy):** {PAPER[TOY]}", ""]
    for k, (path, toy) in enumerate(found.toy):
        generic.toy_section(lines, path, toy, results, out, k)
    missing = sorted(planned - {g.task for g in groups} - ({TOY} if found.toy else set()))
    if missing:
        lines += ["## Not yet run", "", "No complete run yet for: " + ", ".join(missing) + ".", ""]
        lines += [f"- {t}: the paper: {PAPER.get(t, '—')}" for t in missing] + [""]
    if found.partial:
        lines += ["## Partial runs (not in the tables)", ""]
        lines += [f"- `{run.label}`: {done} of {run.epochs} epochs" for _, done, run in found.partial] + [""]
    lines += ["## Command lines", "", "Every run of the grid, in the order `reproduce` takes them (it adds "
              "`--resume` and a chunk's `--epochs` when it continues a run):", "", "```"]
    lines += [run.command() for run in grid_plan.ordered(runs)] + ["```", ""]
    path = out / REPORT_NAME
    atomic.write_text_atomic(path, "\n".join(lines).rstrip() + "\n")
    return path
