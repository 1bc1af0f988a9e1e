"""The reproduction grid: every run, its command line, its estimated cost and its place in the order.

A :class:`Run` is one training command of one seed (or the toy-gradient sweep). Its cost is estimated as
(CPU seconds per epoch, measured by ``python -m validation reproduce --measure`` and kept in ``costs.json``) ×
epochs, plus a start-up allowance. CPU time of a one-thread process, not wall clock, so that timing runs on a busy
machine still estimate a quiet one; runs go ``--jobs`` at a time, one thread each, and the plan's wall clock is
the longest of the jobs' queues when runs are dealt out in order.

The order is most informative first (:func:`ordered`): tier 0 gives every task's headline comparison at one
seed (the paper's methods at one width), tier 1 the other widths at that seed, tier 2 the library's default GQ
(``gq-auto``), tiers 3 and 4 the extra seeds. A grid cut short by its budget therefore still answers the paper's
question for every task, with fewer widths and seeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from validation.harness.methods import PAPER_METHODS

HERE = Path(__file__).resolve().parent
COSTS_FILE = HERE / "costs.json"
DEFAULT_RESULTS = HERE / "results"
TOY = "toy-gradient"
STARTUP_S = 5.0  # importing torch and building a task, per command (a run is resumed in a few chunks)
GQ_AUTO = "gq-auto"
TOY_MAIN = "paper-methods"  # the toy run of the four methods, gq-auto and ACA; MALI runs on its own, coarser
TOY_MALI_STEP = 0.2
ODE_METHODS = (*PAPER_METHODS, GQ_AUTO)


@dataclass(frozen=True)
class Run:
    """One command of the grid. ``flags`` are the task flags beyond method, width, seed and epochs; ``tier`` its
    place in the order (0 first); ``note`` says where it is shorter than the paper's and why."""

    task: str
    method: str
    width: int
    seed: int
    epochs: int
    flags: tuple[str, ...] = ()
    tier: int = 0
    note: str = ""

    @property
    def label(self) -> str:
        if self.task == TOY:
            return f"{TOY} {' '.join(self.flags)}"
        extra = " ".join(self.flags)
        return f"{self.task} {self.method} w{self.width} seed{self.seed} {self.epochs} ep" + (f" {extra}" if extra
                                                                                                else "")

    @property
    def cell(self) -> tuple:
        """What the cost table is keyed by: the run less its seed and epochs."""
        return (self.task, self.method, self.width, self.flags)

    def argv(self, out: Path, *, epochs: int | None = None, resume: bool = False, threads: int = 1) -> list[str]:
        """The ``python -m validation`` arguments of this run (``epochs`` overrides the target, for a chunk)."""
        if self.task == TOY:
            return [TOY, *self.flags, "--out", str(toy_path(out, self)), "--no-progress"]
        argv = [self.task, "--method", self.method, "--width", str(self.width), "--seed", str(self.seed),
                "--epochs", str(self.epochs if epochs is None else epochs), *self.flags, "--out", str(out),
                "--threads", str(threads), "--no-progress"]
        return argv + (["--resume"] if resume else [])

    def command(self, out: Path | str = "validation/reproduction/results") -> str:
        """The command line, as the README and the report print it."""
        return "python -m validation " + " ".join(self.argv(Path(out)))


def toy_path(out: Path, run: Run) -> Path:
    """The toy sweep's JSON: ``toy.json`` for the paper's methods, ``toy-<method>.json`` for a peer on its own."""
    return Path(out) / TOY / ("toy.json" if run.method == TOY_MAIN else f"toy-{run.method}.json")


@dataclass
class Costs:
    """CPU seconds per epoch per cell (``Run.cell``) as measured, with how they were measured."""

    per_epoch_s: dict[tuple, float] = field(default_factory=dict)
    measured: str = ""

    @staticmethod
    def key(cell: tuple) -> str:
        task, method, width, flags = cell
        return " ".join([task, method, f"w{width}", *flags])

    def get(self, run: Run) -> float | None:
        return self.per_epoch_s.get(run.cell)

    def to_json(self) -> dict:
        return {"measured": self.measured,
                "per_epoch_cpu_s": {self.key(c): v for c, v in sorted(self.per_epoch_s.items(), key=str)}}

    @classmethod
    def load(cls, path: Path = COSTS_FILE, runs: list[Run] | None = None) -> Costs:
        """The measured costs (empty where the file is missing); keys are matched against ``runs``' cells."""
        if not Path(path).is_file():
            return cls()
        data = json.loads(Path(path).read_text())
        by_key = {cls.key(r.cell): r.cell for r in (runs if runs is not None else grid())}
        table = {by_key[k]: float(v) for k, v in data.get("per_epoch_cpu_s", {}).items() if k in by_key}
        return cls(table, data.get("measured", ""))


def estimate_s(run: Run, costs: Costs, epochs_done: int = 0) -> float | None:
    """Seconds still to spend on ``run`` (its remaining epochs and one start-up); None where never measured."""
    per = costs.get(run)
    if per is None:
        return None
    left = max(0, run.epochs - epochs_done)
    return 0.0 if left == 0 else STARTUP_S + per * left


# --- the grid ----------------------------------------------------------------------------------------------------

# Widths and learning rates. The paper's width-dependent learning rates are in an appendix table we do not have
# (docs/paper.md §3); ours come from sanity runs (validation/reproduction/README.md): at W = 100 nested spheres with
# the authors' default 0.01 reaches 100 % but with loss spikes (0.02 → 2.1 in an epoch), so wider nets get less.
G1D_WIDTHS = (5, 20, 100, 300, 1000)
G1D_SEEDS = 3
G1D_EPOCHS = 150
NS_WIDTHS = (20, 100, 250)
NS_SEEDS = 2
NS_EPOCHS = 100
SINES_WIDTH = 100
SINES_SEEDS = 2
SINES_EPOCHS = 250
IMAGES_WIDTH = 16
IMAGES_EPOCHS = 15  # the paper's
OU_WIDTH = 20
OU_EPOCHS = 20
OU_METHODS = ("gq", "sde-direct", "sde-adjoint")
IMAGES_METHODS = ("direct", "adjoint", "gq")


def lr_for(task: str, width: int) -> float | None:
    """The learning rate the grid passes (None: the task's default, the authors' CLI default)."""
    if task == "g1d":
        return None if width <= 100 else 1e-3
    if task == "nested-spheres":
        return {20: None, 100: 3e-3}.get(width, 1e-3)
    return None


def _lr_flags(task: str, width: int) -> tuple[str, ...]:
    lr = lr_for(task, width)
    return () if lr is None else ("--lr", f"{lr:g}")


def _tier(seed: int, method: str, headline: bool) -> int:
    if seed > 0:
        return 2 + seed  # extra seeds last: 3, 4
    if method == GQ_AUTO:
        return 2
    return 0 if headline else 1


def grid() -> list[Run]:
    """Every run of the reproduction, unordered (see :func:`ordered`)."""
    runs: list[Run] = [
        Run(TOY, TOY_MAIN, 0, 0, 1, ("--methods", *ODE_METHODS, "aca"), 0),
        Run(TOY, "mali", 0, 0, 1, ("--methods", "mali", "--t-step", f"{TOY_MALI_STEP:g}"), 1,
            f"MALI at every {round(TOY_MALI_STEP / 0.02)}th T (T step {TOY_MALI_STEP:g}, paper 0.02): its sym12async "
            f"solve costs ~20× the other five methods together per T, 1.5 CPU-h for the full sweep"),
    ]
    for width in G1D_WIDTHS:
        for seed in range(G1D_SEEDS):
            for method in ODE_METHODS:
                note = "3 seeds (paper 10): time" if seed == 0 else ""
                runs.append(Run("g1d", method, width, seed, G1D_EPOCHS, _lr_flags("g1d", width),
                                _tier(seed, method, width == 100), note))
    for width in NS_WIDTHS:
        for seed in range(NS_SEEDS):
            for method in ODE_METHODS:
                runs.append(Run("nested-spheres", method, width, seed, NS_EPOCHS, _lr_flags("nested-spheres", width),
                                _tier(seed, method, width == 100), "2 seeds (paper 10), 3 widths: time"))
    for seed in range(SINES_SEEDS):
        for method in ODE_METHODS:
            runs.append(Run("sines", method, SINES_WIDTH, seed, SINES_EPOCHS, (), _tier(seed, method, True),
                            "1 width, 2 seeds (paper 5 widths, 5 seeds): time"))
    for method in ("direct", "gq"):
        runs.append(Run("sines", method, SINES_WIDTH, 0, SINES_EPOCHS, ("--points", "50", "--irregular"), 1,
                        "irregular 50 points, 1 seed: direct vs GQ only; GQ's epoch costs ~100× direct's here "
                        "(~750 merged times: one backward solve and quadrature per interval)"))
    for method in IMAGES_METHODS:
        runs.append(Run("images", method, IMAGES_WIDTH, 0, IMAGES_EPOCHS, (), 1,
                        f"embedded 5,000-digit MNIST subset, width {IMAGES_WIDTH}, 1 seed (paper: full MNIST, 50–500 "
                        f"channels, 3 repeats): a convolutional ODE on one CPU thread"))
    for method in OU_METHODS:
        runs.append(Run("ornstein-uhlenbeck", method, OU_WIDTH, 0, OU_EPOCHS, ("--ncosines", "10"), 1,
                        f"{OU_EPOCHS} epochs, 1 seed (paper 100 epochs, 5 repeats): the SDE baselines' reversible "
                        f"Heun at dt 0.01 is slow on CPU"))
    return runs


def ordered(runs: list[Run], costs: Costs | None = None) -> list[Run]:
    """Most informative first: by tier, then seed; within those, task by task with the cheaper cells first, the
    methods of one (task, width) side by side so that each comparison completes together."""
    task_order = {t: k for k, t in enumerate((TOY, "g1d", "nested-spheres", "sines", "ornstein-uhlenbeck", "images"))}
    method_order = {m: k for k, m in enumerate((*ODE_METHODS, "sde-direct", "sde-adjoint", TOY_MAIN, "mali"))}
    return sorted(runs, key=lambda r: (r.tier, r.seed, task_order.get(r.task, 99), r.flags != (), r.width,
                                       method_order.get(r.method, 99)))


def schedule(runs: list[Run], costs: Costs, jobs: int, done: dict[Run, int] | None = None) -> tuple[float, list[float]]:
    """(wall seconds of the whole plan, each run's expected start in seconds) when ``jobs`` workers take the runs in
    order, each the next free one; unmeasured runs count 0 (the dry run flags them)."""
    done = done or {}
    free = [0.0] * max(1, jobs)
    starts = []
    for run in runs:
        k = min(range(len(free)), key=free.__getitem__)
        starts.append(free[k])
        free[k] += estimate_s(run, costs, done.get(run, 0)) or 0.0
    return max(free), starts


def format_minutes(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f}"


def plan_table(runs: list[Run], costs: Costs, jobs: int, done: dict[Run, int] | None = None) -> str:
    """A markdown table of the ordered plan: run, tier, estimated minutes, cumulative wall clock, notes."""
    done = done or {}
    _, starts = schedule(runs, costs, jobs, done)
    lines = ["| # | tier | run | est. min | starts at (h) | epochs done | note |", "|---:|---:|---|---:|---:|---:|---|"]
    for k, (run, start) in enumerate(zip(runs, starts), 1):
        lines.append(f"| {k} | {run.tier} | `{run.label}` | {format_minutes(estimate_s(run, costs, done.get(run, 0)))} "
                     f"| {start / 3600:.2f} | {done.get(run, 0)} | {run.note} |")
    return "\n".join(lines)


def totals(runs: list[Run], costs: Costs, jobs: int) -> dict[str, float]:
    """CPU seconds per task and in all, and the wall clock at ``jobs`` at a time."""
    per_task: dict[str, float] = {}
    for run in runs:
        per_task[run.task] = per_task.get(run.task, 0.0) + (estimate_s(run, costs) or 0.0)
    wall, _ = schedule(runs, costs, jobs)
    return {**per_task, "cpu total": sum(per_task.values()), "wall": wall}


def unmeasured(runs: list[Run], costs: Costs) -> list[Run]:
    return [r for r in runs if costs.get(r) is None]


def fits(runs: list[Run], costs: Costs, jobs: int, budget_s: float) -> bool:
    wall, _ = schedule(runs, costs, jobs)
    return math.isfinite(wall) and wall <= budget_s
