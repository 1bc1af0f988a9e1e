"""``report``: markdown tables and figures from every result JSON under a results folder.

Training runs (``<task>/<variant>/w<width>/<method>/seed<k>.json``, written by the harness in
:mod:`validation.harness.training`) are grouped by task and variant — and by the folder above ``<task>`` when several
collections share one root (``results/demo/…`` next to ``results/…``) — then by width and method. Per method the
tables give mean ± sample standard deviation (n − 1) over seeds of the total training time (the sum of the epoch
times: training loop only, evaluation excluded, as in the paper), of the final validation metric and of the final
validation loss; the mean forward/backward NFE per batch and the peak memory; and GQ's speed-up over each baseline,
the ratio of the mean training times (for the paper's rule, ``gq``, and where it ran for the library's default,
``gq-auto``). Unfinished runs are left out of the tables and counted. The toy-gradient JSON,
if present, adds its median-error table and a figure of the relative errors against T. Every file is written
atomically and durably (:mod:`validation.harness.atomic`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from validation.harness import atomic
from validation.harness.cli import UsageError, check_writable_dir
from validation.harness.methods import GQ_METHODS, METHODS

HELP = "tables (mean ± std over seeds, GQ's speed-ups) and figures from the result JSONs under a results folder"
DEFAULT_RESULTS = Path("results")
REPORT_NAME = "report.md"
BASELINES = ("adjoint", "seminorm", "direct")  # GQ's speed-up is reported against each one present
GQ_LABELS = {"gq": "GQ", "gq-auto": "GQ-auto"}
TRAINING_KEYS = ("task", "variant", "method", "width", "seed", "history")
COMPARED = ("method", "width", "seed")  # what varies within one group of the report
HISTORY_KEYS = ("epoch_time_s", "val_loss", "val_metric")


class NoResultsError(UsageError):
    """No result JSON under the folder: a clear message for the command line (exit status 2, a user error)."""


@dataclass
class Loaded:
    """What a results folder holds: finished training runs, skipped ones, toy-gradient records."""

    root: Path
    training: list[tuple[Path, dict]] = field(default_factory=list)
    unfinished: list[Path] = field(default_factory=list)
    invalid: list[tuple[Path, str]] = field(default_factory=list)
    toy: list[tuple[Path, dict]] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.training or self.unfinished or self.toy)


@dataclass
class Stat:
    """Mean and sample standard deviation (None for a single value) of ``n`` values."""

    mean: float | None
    std: float | None
    n: int


@dataclass
class MethodSummary:
    """One method at one width of one task/variant, over its finished seeds."""

    method: str
    width: int
    seeds: list[int]
    time_s: Stat
    metric: Stat
    loss: Stat
    nfe_forward: float | None
    nfe_backward: float | None
    peak_memory_mb: float | None
    parameters_field: int | None
    metric_name: str


@dataclass
class GroupSummary:
    """A task/variant (within one collection): per width, per method."""

    collection: str
    task: str
    variant: str
    widths: dict[int, dict[str, MethodSummary]]
    metric_name: str
    setting: str = ""  # the flags that set this group apart from others of its task/variant, e.g. "--lr 0.005"
    settings_key: str = ""  # its runs' settings (settings_of), as canonical JSON

    @property
    def title(self) -> str:
        where = f" (in {self.collection}/)" if self.collection else ""
        setting = f" [{self.setting}]" if self.setting else ""
        return f"{self.task} / {self.variant}{setting}{where}"

    def speedups(self, gq_method: str = "gq") -> dict[int, dict[str, float]]:
        """width → baseline → mean training time of the baseline / mean training time of ``gq_method`` (the paper's
        rule, or ``gq-auto``, the library's default)."""
        result: dict[int, dict[str, float]] = {}
        for width, methods in self.widths.items():
            gq = methods.get(gq_method)
            if gq is None or not gq.time_s.mean:
                continue
            result[width] = {b: methods[b].time_s.mean / gq.time_s.mean for b in BASELINES if b in methods}
        return result


def mean_std(values: list[float]) -> Stat:
    """Mean and sample standard deviation (n − 1: the seeds are a sample); std is None for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return Stat(None, None, 0)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Stat(mean, std, n)


def _mean_known(values) -> float | None:
    known = [float(v) for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _is_training(data: Any) -> bool:
    return isinstance(data, dict) and all(k in data for k in TRAINING_KEYS) and isinstance(data["history"], dict)


def _training_problem(data: dict) -> str | None:
    """Why a training record cannot be summarised, or None when it can."""
    history = data["history"]
    missing = [k for k in HISTORY_KEYS if not isinstance(history.get(k), list)]
    if missing:
        return f"history lacks {', '.join(missing)}"
    if not history["epoch_time_s"] or not history["val_loss"] or not history["val_metric"]:
        return "no finished epoch"
    return None


def load_results(root: Path) -> Loaded:
    """Every ``*.json`` under ``root`` (hidden files and folders, e.g. temporaries, excluded), sorted into kinds."""
    root = Path(root)
    loaded = Loaded(root=root)
    for path in sorted(root.rglob("*.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            loaded.invalid.append((path, f"unreadable: {error}"))
            continue
        if isinstance(data, dict) and data.get("experiment") == "toy-gradient":
            loaded.toy.append((path, data))
        elif _is_training(data):
            if not data.get("finished", False):
                loaded.unfinished.append(path)
                continue
            problem = _training_problem(data)
            if problem:
                loaded.invalid.append((path, problem))
            else:
                loaded.training.append((path, data))
        else:
            loaded.other.append(path)  # e.g. the bench commands' JSON: not for this report
    _drop_duplicates(loaded)
    return loaded


def settings_of(record: dict) -> dict[str, Any]:
    """The flags of a training record that change its numbers, less method, width and seed (what a group of the
    report compares): runs that differ in any other (e.g. --lr) are different experiments, never averaged."""
    from validation.harness.training import hashed_settings

    config = record.get("config")
    if not isinstance(config, dict):
        return {}
    return {k: v for k, v in hashed_settings(config).items() if k not in COMPARED}


def _settings_key(record: dict) -> str:
    return json.dumps(settings_of(record), sort_keys=True, default=str)


def _drop_duplicates(loaded: Loaded) -> None:
    """Keep one record per (collection, task, variant, settings, width, method, seed): a copied file would count
    twice."""
    seen: dict[tuple, Path] = {}
    kept = []
    for path, record in loaded.training:
        key = (collection_of(path, loaded.root), record["task"], record["variant"], _settings_key(record),
               record["width"], record["method"], record["seed"])
        if key in seen:
            loaded.invalid.append((path, f"the same run as {_rel(seen[key], loaded.root)}"))
        else:
            seen[key] = path
            kept.append((path, record))
    loaded.training = kept


def collection_of(path: Path, root: Path) -> str:
    """The folder between ``root`` and ``<task>/<variant>/w<width>/<method>/seed<k>.json`` ('' when none)."""
    parts = Path(path).relative_to(root).parts
    return "/".join(parts[:-5]) if len(parts) > 5 else ""


def _method_order(method: str) -> tuple[int, str]:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def summarize_method(records: list[dict]) -> MethodSummary:
    """Mean ± std over the seeds of one (task, variant, width, method)."""
    records = sorted(records, key=lambda r: r["seed"])
    histories = [r["history"] for r in records]
    memories = [max((m for m in h.get("peak_memory_mb", []) if m is not None), default=None) for h in histories]
    first = records[0]
    return MethodSummary(
        method=first["method"], width=int(first["width"]), seeds=[int(r["seed"]) for r in records],
        time_s=mean_std([float(sum(h["epoch_time_s"])) for h in histories]),
        metric=mean_std([float(h["val_metric"][-1]) for h in histories]),
        loss=mean_std([float(h["val_loss"][-1]) for h in histories]),
        nfe_forward=_mean_known(_mean_known(h.get("nfe_forward", [])) for h in histories),
        nfe_backward=_mean_known(_mean_known(h.get("nfe_backward", [])) for h in histories),
        peak_memory_mb=_mean_known(memories),
        parameters_field=first.get("parameters_field"),
        metric_name=str(first.get("metric_name", "metric")),
    )


def _setting_labels(training: list[tuple[Path, dict]], root: Path) -> dict[tuple[str, str, str, str], str]:
    """(collection, task, variant, settings key) → the flags in which that group differs from the other groups of
    its task/variant ("" when it is the only one)."""
    per_variant: dict[tuple[str, str, str], dict[str, dict]] = defaultdict(dict)
    for path, record in training:
        per_variant[(collection_of(path, root), str(record["task"]), str(record["variant"]))][
            _settings_key(record)] = settings_of(record)
    labels = {}
    for base, settings in per_variant.items():
        keys = sorted({k for s in settings.values() for k in s})
        varying = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in settings.values()}) > 1]
        for key, values in settings.items():
            labels[(*base, key)] = ", ".join(f"--{k.replace('_', '-')} {values.get(k, '(not set)')}"
                                             for k in varying)
    return labels


def summarize_training(training: list[tuple[Path, dict]], root: Path) -> list[GroupSummary]:
    """Group the finished runs by (collection, task, variant, settings), then width and method."""
    buckets: dict[tuple[str, str, str, str], dict[int, dict[str, list[dict]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for path, record in training:
        key = (collection_of(path, root), str(record["task"]), str(record["variant"]), _settings_key(record))
        buckets[key][int(record["width"])][str(record["method"])].append(record)
    labels = _setting_labels(training, root)
    groups = []
    for (collection, task, variant, settings), widths in sorted(buckets.items()):
        summaries = {
            width: {method: summarize_method(widths[width][method])
                    for method in sorted(widths[width], key=_method_order)}
            for width in sorted(widths)
        }
        metric_name = next(iter(next(iter(summaries.values())).values())).metric_name
        groups.append(GroupSummary(collection, task, variant, summaries, metric_name,
                                   labels[(collection, task, variant, settings)], settings))
    return groups


def format_stat(stat: Stat, spec: str = ".3g") -> str:
    """``mean ± std`` (just the mean for a single seed; — for none)."""
    if stat.mean is None:
        return "—"
    if stat.std is None:
        return format(stat.mean, spec)
    return f"{stat.mean:{spec}} ± {stat.std:{spec}}"


def _value(value: float | None, spec: str = ".3g") -> str:
    return "—" if value is None else format(value, spec)


def training_table(group: GroupSummary) -> str:
    """The per-width, per-method markdown table of one task/variant."""
    lines = [f"| width | P_f | method | seeds | training time (s) | final {group.metric_name} | final val loss | "
             "NFE fwd | NFE bwd | peak memory (MiB) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for width, methods in group.widths.items():
        for s in methods.values():
            lines.append(f"| {width} | {_value(s.parameters_field, 'd')} | {s.method} | {len(s.seeds)} | "
                         f"{format_stat(s.time_s)} | {format_stat(s.metric)} | {format_stat(s.loss)} | "
                         f"{_value(s.nfe_forward, '.1f')} | {_value(s.nfe_backward, '.1f')} | "
                         f"{_value(s.peak_memory_mb, '.1f')} |")
    return "\n".join(lines)


def speedup_table(group: GroupSummary) -> str | None:
    """Each GQ variant's speed-up per width over each baseline present (None when no GQ variant ran next to a
    baseline): columns "GQ vs <baseline>" for the paper's rule, then "GQ-auto vs <baseline>" where gq-auto ran."""
    columns: list[tuple[str, str]] = []  # (GQ variant, baseline)
    per_variant = {gq: group.speedups(gq) for gq in GQ_METHODS}
    for gq, speedups in per_variant.items():
        columns += [(gq, b) for b in BASELINES if any(b in row for row in speedups.values())]
    if not columns:
        return None
    widths = sorted({w for speedups in per_variant.values() for w in speedups})
    lines = ["| width | " + " | ".join(f"{GQ_LABELS[gq]} vs {b}" for gq, b in columns) + " |",
             "|---:|" + "---:|" * len(columns)]
    for width in widths:
        cells = []
        for gq, b in columns:
            ratio = per_variant[gq].get(width, {}).get(b)
            cells.append("—" if ratio is None else f"{ratio:.2f}×")
        lines.append(f"| {width} | {' | '.join(cells)} |")
    return "\n".join(lines)


def slug(text: str) -> str:
    """A file-name-safe form of a task/variant/collection name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` atomically and durably (:mod:`validation.harness.atomic`): never a half-written report."""
    atomic.write_text_atomic(path, text)


def time_series(group: GroupSummary) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """Per method (in the report's method order): the widths, and the training time's mean and std at each."""
    series: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for width, methods in group.widths.items():
        for method, s in methods.items():
            widths, means, stds = series.setdefault(method, ([], [], []))
            widths.append(width)
            means.append(s.time_s.mean)
            stds.append(s.time_s.std or 0.0)
    return dict(sorted(series.items(), key=lambda item: _method_order(item[0])))


def _group_figures(group: GroupSummary, training: list[tuple[Path, dict]], root: Path, out: Path) -> list[Path]:
    """Time against width for the group, and validation loss against wall clock at each of its widths."""
    from validation.report import plots

    base = slug("_".join(p for p in (group.collection, group.task, group.variant, group.setting) if p))
    figures = [plots.time_vs_width(time_series(group), f"{group.title}: training time (mean ± std over seeds)",
                                   out / f"time_vs_width_{base}.png")]
    for width in group.widths:
        curves: dict[str, list[tuple[int, list[float], list[float]]]] = defaultdict(list)
        for path, record in sorted(training, key=lambda item: item[1]["seed"]):
            if (collection_of(path, root), record["task"], record["variant"], int(record["width"])) != \
                    (group.collection, group.task, group.variant, width) or \
                    _settings_key(record) != group.settings_key:
                continue
            history = record["history"]
            clock = [0.0]
            for seconds in history["epoch_time_s"]:
                clock.append(clock[-1] + float(seconds))
            losses = [float(v) for v in history["val_loss"]]
            n = min(len(clock), len(losses))  # index 0 of val_loss is the evaluation before training, at time 0
            curves[record["method"]].append((int(record["seed"]), clock[:n], losses[:n]))
        curves = dict(sorted(curves.items(), key=lambda item: _method_order(item[0])))
        figures.append(plots.loss_vs_time(curves, f"{group.title}, width {width}: validation loss",
                                          out / f"loss_vs_time_{base}_w{width}.png"))
    return figures


def _rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


@dataclass
class Report:
    """The written report: its markdown path, its figures and the counts it states."""

    path: Path
    figures: list[Path]
    groups: list[GroupSummary]
    finished: int
    unfinished: int
    invalid: int
    toy: int


def write_report(results: Path, out: Path | None = None) -> Report:
    """Read ``results``, write ``report.md`` and the PNGs into ``out`` (default ``<results>/report``)."""
    results = Path(results)
    out = results / "report" if out is None else Path(out)
    if results.exists() and not results.is_dir():
        raise NoResultsError(f"--results {results}: no results folder, it is a file; expected the folder a training "
                             f"command wrote into (its --out)")
    if not results.is_dir():
        raise NoResultsError(f"report: no results folder {results} (run a training command or toy-gradient first, "
                             f"or pass --results)")
    loaded = load_results(results)
    if loaded.empty:
        raise NoResultsError(f"report: no results under {results}: expected <task>/<variant>/w<width>/<method>/"
                             f"seed<k>.json files from a training command (e.g. `python -m validation nested-spheres "
                             f"--quick`) or toy-gradient's JSON")
    check_writable_dir(out, "--out")  # before drawing anything
    groups = summarize_training(loaded.training, results)
    figures: list[Path] = []
    lines = ["# Results report", "",
             f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from `{results}`: "
             f"{len(loaded.training)} finished training runs, {len(loaded.toy)} toy-gradient record(s).", ""]
    if loaded.unfinished:
        lines += [f"Skipped {len(loaded.unfinished)} unfinished run(s) (not in the tables):", ""]
        lines += [f"- `{_rel(p, results)}`" for p in loaded.unfinished] + [""]
    if loaded.invalid:
        lines += [f"Skipped {len(loaded.invalid)} unusable file(s):", ""]
        lines += [f"- `{_rel(p, results)}`: {why}" for p, why in loaded.invalid] + [""]
    if groups:
        lines += ["Training: mean ± sample standard deviation (n − 1) over seeds. Training time is the sum of the "
                  "epoch times (training loop only). NFE: mean evaluations of the field per batch (backward: none "
                  "for direct backprop). GQ's speed-up over a baseline is the ratio of the mean training times.", ""]
    for group in groups:
        lines += [f"## {group.title}", "", training_table(group), ""]
        speedups = speedup_table(group)
        if speedups:
            lines += ["Speed-up of GQ (mean training time of the baseline / that of GQ):", "", speedups, ""]
        group_figures = _group_figures(group, loaded.training, results, out)
        figures += group_figures
        lines += [f"![{p.stem}]({p.name})" for p in group_figures] + [""]
    for k, (path, toy) in enumerate(loaded.toy):
        figures.append(toy_section(lines, path, toy, results, out, k))
    report_path = out / REPORT_NAME
    write_text_atomic(report_path, "\n".join(lines).rstrip() + "\n")
    return Report(report_path, figures, groups, len(loaded.training), len(loaded.unfinished), len(loaded.invalid),
                  len(loaded.toy))


def toy_section(lines: list[str], path: Path, toy: dict, results: Path, out: Path, index: int) -> Path:
    """Append the toy experiment's summary to ``lines``; draw its figure."""
    from validation.report import plots
    from validation.tasks.toy_gradient import summarize, summary_table

    config = toy.get("config", {})
    T = toy.get("T", [])
    name = "toy_gradient.png" if index == 0 else f"toy_gradient_{index}.png"
    figure = plots.toy_errors(toy, out / name)
    lines += [f"## Toy gradient experiment (`{_rel(path, results)}`)", "",
              f"dz/dt = a·z, z0 = 10, a = 0.2, L = z(T)², {len(T)} values of T in "
              f"[{min(T, default=float('nan')):g}, {max(T, default=float('nan')):g}]; rtol {config.get('rtol')}, "
              f"atol {config.get('atol')}, C {config.get('gtol')}. Median relative errors against the closed form:",
              "", summary_table(summarize(toy["runs"])), "", f"![toy gradient]({figure.name})", ""]
    return figure


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help=f"folder searched for result JSONs (default {DEFAULT_RESULTS})")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.md and the PNGs "
                        "(default <results>/report)")


def main(args: argparse.Namespace) -> int:
    report = write_report(args.results, args.out)
    print(f"report written to {report.path} with {len(report.figures)} figure(s): {report.finished} finished "
          f"training run(s) in {len(report.groups)} task/variant group(s), {report.toy} toy-gradient record(s)")
    if report.unfinished:
        print(f"skipped {report.unfinished} unfinished run(s)")
    if report.invalid:
        print(f"skipped {report.invalid} unusable file(s) (listed in the report)")
    return 0
