"""Running the grid within a budget, across sittings.

Each run's state is read from the harness's own files: its result JSON (``epochs_done``) and checkpoint. A finished
run is skipped; a partial one continues with ``--resume``; a new one starts. A run goes in chunks: each chunk is
one training command with ``--epochs`` set to where the chunk ends (``--epochs`` is not part of a run's
configuration, and ``--resume --epochs N`` extends a run, so the chunks together are exactly one uninterrupted run:
the data order is seeded per epoch and the RNG states are checkpointed). A chunk is only started when its
estimated time fits in what is left of the budget, so the command stops at an epoch boundary, every finished epoch
checkpointed, and the next sitting continues from there.

Per-epoch estimates come from ``costs.json`` until a run has trained a chunk here, then from its own wall clock.
With ``jobs`` > 1 the runs go in subprocesses, ``jobs`` at a time (one thread each); with one job, in this process.
"""

from __future__ import annotations

import argparse
import importlib
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from validation.harness.atomic import make_dirs, read_json_object
from validation.reproduction.plan import TOY, Costs, Run, toy_path
from validation.tasks import toy_gradient

REPO_ROOT = Path(__file__).resolve().parents[2]
CHUNK_S = 600.0  # at most this much estimated work per command: the budget is checked between chunks
UNKNOWN_EPOCHS = 1  # a run with no estimate trains one epoch first, to get one


@dataclass
class RunState:
    """Where a run stands on disk."""

    epochs_done: int
    finished: bool
    resumable: bool  # a checkpoint is there to continue from
    path: Path | None


def _task_module(task: str):
    from validation.__main__ import COMMANDS

    return importlib.import_module(COMMANDS[task])


def result_path(run: Run, out: Path) -> tuple[Path, str]:
    """(the result JSON the harness writes for ``run`` under ``out``, its config hash), from the harness's own
    planning (nothing is written)."""
    from validation.harness.training import plan_runs

    module = _task_module(run.task)
    parser = argparse.ArgumentParser()
    module.configure(parser)
    args = parser.parse_args(run.argv(out)[1:])
    (plan,) = plan_runs(module, args, writer=False)
    return plan.path, plan.config_hash


def toy_count(run: Run) -> int:
    """The number of T values of a toy run (its --t-step, else the paper's)."""
    flags = list(run.flags)
    step = float(flags[flags.index("--t-step") + 1]) if "--t-step" in flags else toy_gradient.T_STEP
    return len(toy_gradient.sweep_times(step=step))


def toy_methods(run: Run) -> list[str]:
    flags = list(run.flags)
    methods = []
    for value in flags[flags.index("--methods") + 1:] if "--methods" in flags else []:
        if value.startswith("--"):
            break
        methods.append(value)
    return methods


def run_state(run: Run, out: Path) -> RunState:
    """The run's progress under ``out``."""
    if run.task == TOY:
        path = toy_path(out, run)
        record = read_json_object(path) if path.is_file() else None
        config = record.get("config", {}) if record else {}
        done = bool(record and record.get("finished") and not config.get("quick") and config.get("n_T") ==
                    toy_count(run) and sorted(config.get("methods", [])) == sorted(toy_methods(run)))
        return RunState(int(done), done, False, path)
    path, digest = result_path(run, out)
    record = read_json_object(path) if path.is_file() else None
    if record is None or record.get("config_hash") != digest:
        return RunState(0, False, False, path)
    epochs = int(record.get("epochs_done", 0))
    resumable = path.with_suffix(".ckpt").is_file()
    return RunState(epochs, epochs >= run.epochs, resumable and epochs > 0, path)


def in_process(argv: list[str]) -> int:
    """Run one ``python -m validation`` command here."""
    from validation.__main__ import main

    return main(argv)


def in_subprocess(log: Path) -> Callable[[list[str]], int]:
    """An executor that runs each command as ``python -m validation …``, appending its output to ``log``."""

    def execute(argv: list[str]) -> int:
        make_dirs(log.parent)
        with open(log, "a") as handle:
            handle.write(f"\n$ python -m validation {' '.join(argv)}\n")
            handle.flush()
            return subprocess.run([sys.executable, "-m", "validation", *argv], cwd=REPO_ROOT, stdout=handle,
                                  stderr=subprocess.STDOUT, check=False).returncode

    return execute


@dataclass
class Outcome:
    """What one sitting did."""

    finished: list[Run] = field(default_factory=list)
    advanced: list[Run] = field(default_factory=list)  # trained some epochs, not finished
    skipped: list[Run] = field(default_factory=list)  # finished before this sitting
    failed: list[tuple[Run, int]] = field(default_factory=list)
    not_started: list[Run] = field(default_factory=list)
    budget_spent: bool = False


class Runner:
    """Takes ``runs`` in order within ``budget_s`` seconds of ``clock``; ``execute(argv) -> exit status`` runs one
    command (in process by default)."""

    def __init__(self, runs: list[Run], out: Path, budget_s: float, costs: Costs, *, jobs: int = 1,
                 execute: Callable[[list[str]], int] | None = None, clock: Callable[[], float] = time.monotonic,
                 chunk_s: float = CHUNK_S, progress: bool = True, log: Callable[[str], None] = print):
        self.runs, self.out, self.costs, self.jobs = runs, Path(out), costs, max(1, jobs)
        self.clock, self.chunk_s, self.log = clock, chunk_s, log
        self.deadline = clock() + budget_s
        if execute is None:
            execute = in_process if self.jobs == 1 else in_subprocess(self.out / "logs" / "reproduce.log")
        self.execute = execute
        self.progress = progress
        self._lock = threading.Lock()
        self._queue: list[Run] = []
        self.outcome = Outcome()

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def _next(self) -> Run | None:
        with self._lock:
            return self._queue.pop(0) if self._queue else None

    def _note(self, kind: str, run: Run, *extra) -> None:
        with self._lock:
            getattr(self.outcome, kind).append((run, *extra) if extra else run)

    def run_one(self, run: Run) -> str:
        """Advance one run chunk by chunk while the budget allows: 'finished', 'advanced', 'budget' or 'failed'."""
        state = run_state(run, self.out)
        per_epoch = self.costs.get(run)
        if run.task == TOY:
            if per_epoch is not None and per_epoch > self.remaining():
                return "budget"
            rc = self.execute(run.argv(self.out))
            return "finished" if rc == 0 else f"failed:{rc}"
        trained = False
        while not state.finished:
            left = run.epochs - state.epochs_done
            remaining = self.remaining()
            if remaining <= 0:
                return "advanced" if trained else "budget"
            if per_epoch is None:
                epochs = min(left, UNKNOWN_EPOCHS)
            else:
                if per_epoch > remaining:
                    return "advanced" if trained else "budget"
                epochs = max(1, min(left, math.floor(min(remaining, self.chunk_s) / per_epoch)))
            target = state.epochs_done + epochs
            began = self.clock()
            rc = self.execute(run.argv(self.out, epochs=target, resume=state.resumable))
            if rc != 0:
                return f"failed:{rc}"
            trained = True
            after = run_state(run, self.out)
            done_now = after.epochs_done - state.epochs_done
            if done_now <= 0:
                return "failed:no progress"
            per_epoch = (self.clock() - began) / done_now  # this machine, now: better than the table
            state = after
        return "finished" if trained else "skipped"

    def _worker(self, bar: tqdm) -> None:
        while (run := self._next()) is not None:
            bar.set_postfix_str(run.label, refresh=True)
            result = self.run_one(run)
            if result == "finished":
                self._note("finished", run)
                self.log(f"finished: {run.label}")
            elif result == "skipped":
                self._note("skipped", run)
            elif result == "advanced":
                self._note("advanced", run)
                self.log(f"checkpointed (budget): {run.label}")
            elif result == "budget":
                self._note("not_started", run)
            else:
                self._note("failed", run, result.split(":", 1)[1])
                self.log(f"FAILED ({result}): {run.label}")
            if result in ("advanced", "budget"):
                with self._lock:
                    self.outcome.budget_spent = True
            bar.update()

    def run(self) -> Outcome:
        """Every run in order until the budget is spent; the runs never reached are listed as not started."""
        pending = []
        for run in self.runs:
            if run_state(run, self.out).finished:
                self.outcome.skipped.append(run)
            else:
                pending.append(run)
        self._queue = list(pending)
        bar = tqdm(total=len(pending), desc="reproduce", unit="run", disable=not self.progress, file=sys.stderr)
        try:
            if self.jobs == 1:
                self._worker(bar)
            else:
                threads = [threading.Thread(target=self._worker, args=(bar,)) for _ in range(self.jobs)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        finally:
            bar.close()
        return self.outcome
