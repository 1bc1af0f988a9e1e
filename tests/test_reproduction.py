"""``reproduce``: the grid's plan (cells, order, budget), the budgeted resumable runner, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from validation.harness.atomic import write_json_atomic
from validation.harness.methods import METHODS
from validation.reproduction import dry_run, report
from validation.reproduction import plan as grid_plan
from validation.reproduction.plan import TOY, Costs, Run
from validation.reproduction.runner import Runner, in_process, result_path, run_state

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- the plan ----------------------------------------------------------------------------------------------------


def test_every_cell_of_the_grid_is_planned_once():
    runs = grid_plan.grid()
    assert len(set(runs)) == len(runs)
    cells = {(r.task, r.method, r.width, r.seed, r.flags) for r in runs}
    for width in grid_plan.G1D_WIDTHS:
        for seed in range(3):
            for method in METHODS:
                assert any(c[:4] == ("g1d", method, width, seed) for c in cells)
    for width in grid_plan.NS_WIDTHS:
        for seed in range(2):
            for method in METHODS:
                assert any(c[:4] == ("nested-spheres", method, width, seed) for c in cells)
    for seed in range(2):
        for method in METHODS:
            assert ("sines", method, grid_plan.SINES_WIDTH, seed, ()) in cells
    irregular = ("--points", "50", "--irregular")
    assert {c[1] for c in cells if c[0] == "sines" and c[4] == irregular} == {"direct", "gq"}
    assert {c[1] for c in cells if c[0] == "images"} == {"direct", "adjoint", "gq"}
    assert {c[1] for c in cells if c[0] == "ornstein-uhlenbeck"} == {"gq", "sde-direct", "sde-adjoint"}
    toys = {r.method: r for r in runs if r.task == TOY}
    assert set(toys) == {grid_plan.TOY_MAIN, "mali"}  # the full sweep; MALI, ~20× the rest per T, on a coarser one
    assert "--t-step" not in toys[grid_plan.TOY_MAIN].flags and "aca" in toys[grid_plan.TOY_MAIN].flags
    assert all(r.epochs == 150 for r in runs if r.task == "g1d")  # the paper's epochs
    assert all(r.epochs == 100 for r in runs if r.task == "nested-spheres")
    assert all(r.epochs == 250 for r in runs if r.task == "sines")


def test_order_puts_one_seed_of_every_task_first_and_keeps_comparisons_together():
    runs = grid_plan.ordered(grid_plan.grid())
    tiers = [r.tier for r in runs]
    assert tiers == sorted(tiers)
    first = [r for r in runs if r.tier == 0]
    assert {r.task for r in first} == {TOY, "g1d", "nested-spheres", "sines"}
    assert all(r.seed == 0 and r.method != "gq-auto" for r in first)
    assert all(r.seed > 0 for r in runs if r.tier >= 3)
    # the methods of one (task, width, seed) follow each other
    keys = [(r.task, r.width, r.seed, r.flags, r.tier) for r in runs]
    seen, previous = set(), None
    for key in keys:
        if key != previous:
            assert key not in seen, key
            seen.add(key)
        previous = key


def test_estimates_fit_the_budget_at_two_jobs():
    runs = grid_plan.grid()
    costs = Costs.load(grid_plan.COSTS_FILE, runs)
    assert not grid_plan.unmeasured(runs, costs), "costs.json lacks cells: run reproduce --measure"
    wall, starts = grid_plan.schedule(grid_plan.ordered(runs), costs, 2)
    assert wall <= 3 * 3600
    assert starts == sorted(starts)  # taken in order
    text = dry_run(grid_plan.ordered(runs), costs, Path("/nonexistent-results"), 2, 3 * 3600)
    assert "Estimated CPU time" in text and f"{len(runs)} runs, 0 finished" in text


def test_schedule_deals_runs_to_the_free_job():
    runs = [Run("g1d", m, 8, 0, 10) for m in ("direct", "adjoint", "gq")]
    costs = Costs({r.cell: s for r, s in zip(runs, (10.0, 1.0, 1.0))})
    wall, starts = grid_plan.schedule(runs, costs, 2)
    startup = grid_plan.STARTUP_S
    assert starts == [0.0, 0.0, startup + 10.0]
    assert wall == pytest.approx(100.0 + startup)


# --- the runner --------------------------------------------------------------------------------------------------


class FakeClock:
    """Time that moves one second per trained epoch: the budget test does not depend on the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _executor(clock: FakeClock, calls: list[list[str]]):
    targets: dict[tuple, int] = {}

    def execute(argv: list[str]) -> int:
        calls.append(argv)
        key = tuple(argv[: argv.index("--epochs")])
        target = int(argv[argv.index("--epochs") + 1])
        rc = in_process(argv)
        clock.now += target - targets.get(key, 0)
        targets[key] = target
        return rc

    return execute


QUICK_RUNS = [Run("g1d", "gq", 8, 0, 2, ("--quick",)), Run("g1d", "direct", 8, 0, 2, ("--quick",))]


def test_a_tiny_budget_stops_at_an_epoch_and_the_next_call_finishes(tmp_path):
    out = tmp_path / "results"
    costs = Costs({r.cell: 1.0 for r in QUICK_RUNS})
    clock, calls = FakeClock(), []
    first = Runner(QUICK_RUNS, out, 3.0, costs, execute=_executor(clock, calls), clock=clock, progress=False,
                   log=lambda _: None).run()
    assert first.finished == [QUICK_RUNS[0]] and first.advanced == [QUICK_RUNS[1]] and first.budget_spent
    state = run_state(QUICK_RUNS[1], out)
    assert (state.epochs_done, state.finished, state.resumable) == (1, False, True)

    clock2, calls2 = FakeClock(), []
    second = Runner(QUICK_RUNS, out, 3.0, costs, execute=_executor(clock2, calls2), clock=clock2, progress=False,
                    log=lambda _: None).run()
    assert second.skipped == [QUICK_RUNS[0]] and second.finished == [QUICK_RUNS[1]] and not second.budget_spent
    assert len(calls2) == 1 and "--resume" in calls2[0]
    assert all(run_state(r, out).finished for r in QUICK_RUNS)

    # the two chunks are one uninterrupted run
    straight = tmp_path / "straight"
    assert in_process(QUICK_RUNS[1].argv(straight)) == 0
    chunked = json.loads(result_path(QUICK_RUNS[1], out)[0].read_text())["history"]
    whole = json.loads(result_path(QUICK_RUNS[1], straight)[0].read_text())["history"]
    assert chunked["train_loss"] == whole["train_loss"] and chunked["val_loss"] == whole["val_loss"]


def test_no_budget_starts_nothing(tmp_path):
    clock, calls = FakeClock(), []
    outcome = Runner(QUICK_RUNS, tmp_path, 0.5, Costs({r.cell: 1.0 for r in QUICK_RUNS}),
                     execute=_executor(clock, calls), clock=clock, progress=False, log=lambda _: None).run()
    assert calls == [] and outcome.not_started == QUICK_RUNS and outcome.budget_spent


# --- the report --------------------------------------------------------------------------------------------------


REPORT_RUNS = [Run("nested-spheres", m, w, s, 3, ("--lr", "0.003") if w == 100 else ())
               for w in (20, 100) for m in ("direct", "adjoint", "gq", "gq-auto") for s in (0, 1)]
TIMES = {"direct": 2.0, "adjoint": 8.0, "seminorm": 6.0, "gq": 1.0, "gq-auto": 4.0}  # per epoch


def _record(run: Run, epochs: int) -> dict:
    accuracy = 99.0 + run.seed
    return {"task": run.task, "variant": "gtol0.1", "method": run.method, "width": run.width, "seed": run.seed,
            "config": {}, "parameters_field": run.width ** 2 + 13 * run.width + 5, "metric_name": "accuracy_%",
            "epochs_done": epochs, "finished": True,
            "history": {"epoch_time_s": [TIMES[run.method]] * epochs, "train_loss": [0.1] * epochs,
                        "val_loss": [0.7] + [0.05] * epochs, "val_metric": [50.0] + [accuracy] * epochs,
                        "nfe_forward": [26.0] * epochs,
                        "nfe_backward": [None if run.method == "direct" else 30.0] * epochs,
                        "peak_memory_mb": [3.0] * epochs}}


def test_report_from_synthetic_records(tmp_path):
    results, out = tmp_path / "results", tmp_path / "report"
    for run in REPORT_RUNS:
        write_json_atomic(result_path(run, results)[0], _record(run, run.epochs))
    partial = Run("nested-spheres", "seminorm", 20, 0, 3)
    write_json_atomic(result_path(partial, results)[0], _record(partial, 1))
    path = report.write(results, out, [*REPORT_RUNS, partial])
    text = path.read_text()
    assert "## nested-spheres / gtol0.1" in text and "**The paper:**" in text
    assert "| 20 | 665 | gq | 2 | 3 ± 0 | 99.5 ± 0.707 |" in text
    assert "- width 20: agree" in text and "- width 100: agree" in text
    assert "GQ vs adjoint" in text and "GQ-auto vs adjoint" in text
    assert "| 20 | 8.00× | 2.00× | 2.00× | 0.50× |" in text  # gq vs adjoint, direct; gq-auto vs adjoint, direct
    assert "nested-spheres seminorm w20 seed0 3 ep`: 1 of 3 epochs" in text
    assert "python -m validation nested-spheres --method gq --width 100 --seed 0 --epochs 3 --lr 0.003" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["loss_vs_time_nested-spheres_gtol0.1_w100.png", "loss_vs_time_nested-spheres_gtol0.1_w20.png",
                    "time_vs_width_nested-spheres_gtol0.1.png"]
    assert all((out / p).read_bytes()[:8] == PNG_MAGIC for p in pngs)


def test_methods_that_differ_beyond_the_seed_spread_are_flagged():
    from validation.report import MethodSummary, Stat

    def summary(method: str, mean: float) -> MethodSummary:
        return MethodSummary(method, 20, [0, 1], Stat(1.0, 0.1, 2), Stat(mean, 0.5, 2), Stat(0.1, 0.0, 2), None,
                             None, None, None, "accuracy_%")

    assert report.agreement({"direct": summary("direct", 99.0), "gq": summary("gq", 98.8)}, "accuracy_%").startswith(
        "agree")
    assert report.agreement({"direct": summary("direct", 99.0), "gq": summary("gq", 80.0)}, "accuracy_%").startswith(
        "DIFFER")


def test_no_results_is_a_clear_error(tmp_path):
    with pytest.raises(report.NoResults, match="no results folder"):
        report.write(tmp_path / "missing", tmp_path / "out", REPORT_RUNS)


def test_command_line_dry_run_and_report_only(tmp_path, capsys):
    from validation.__main__ import main

    assert main(["reproduce", "--dry-run", "--only", "sines", "--out", str(tmp_path / "results")]) == 0
    printed = capsys.readouterr().out
    assert "| 1 | 0 | `sines direct w100 seed0 250 ep`" in printed and "Estimated CPU time" in printed
    assert main(["reproduce", "--report-only", "--out", str(tmp_path / "missing"),
                 "--report-out", str(tmp_path / "report")]) == 2
    assert "no results folder" in capsys.readouterr().err
