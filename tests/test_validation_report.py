"""``report`` on a synthetic results folder (numbers known by construction), and ``demo --quick``."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from validation import demo, report
from validation.harness.atomic import write_json_atomic
from validation.harness.training import result_path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASK, VARIANT = "nested-spheres", "gtol0.1"
# (method, width, seed) → per-epoch times; totals: gq w20 → 2, 4; adjoint w20 → 8, 12; gq w50 → 3, 5;
# adjoint w50 → 20, 30
EPOCH_TIMES = {
    ("gq", 20, 0): [1.0, 1.0], ("gq", 20, 1): [1.5, 2.5],
    ("adjoint", 20, 0): [4.0, 4.0], ("adjoint", 20, 1): [6.0, 6.0],
    ("gq", 50, 0): [1.0, 2.0], ("gq", 50, 1): [2.0, 3.0],
    ("adjoint", 50, 0): [10.0, 10.0], ("adjoint", 50, 1): [15.0, 15.0],
}


def _record(method: str, width: int, seed: int, times: list[float], finished: bool = True) -> dict:
    """A minimal but complete harness record: the final accuracy is 90 + seed, the final loss 0.1·(1 + seed)."""
    return {
        "task": TASK, "variant": VARIANT, "method": method, "width": width, "seed": seed, "config": {},
        "environment": {}, "device": "cpu", "parameters_field": width * width + 13 * width + 5,
        "data_source": "synthetic", "metric_name": "accuracy_%", "epochs_done": len(times), "finished": finished,
        "history": {"epoch_time_s": times, "train_loss": [0.5] * len(times),
                    "val_loss": [0.7, 0.3, 0.1 * (1 + seed)][: len(times) + 1],
                    "val_metric": [50.0, 80.0, 90.0 + seed][: len(times) + 1],
                    "nfe_forward": [20.0, 26.0][: len(times)],
                    "nfe_backward": [None] * len(times) if method == "direct" else [30.0, 40.0][: len(times)],
                    "peak_memory_mb": [1.0, 2.0][: len(times)]},
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for (method, width, seed), times in EPOCH_TIMES.items():
        write_json_atomic(result_path(root, TASK, VARIANT, width, method, seed), _record(method, width, seed, times))
    # an interrupted run (one epoch of two) and an unrelated benchmark JSON: neither may enter the tables
    write_json_atomic(result_path(root, TASK, VARIANT, 20, "gq", 7), _record("gq", 20, 7, [99.0], finished=False))
    write_json_atomic(root / "bench_solver.json", {"benchmark": "solver"})
    return root


def test_tables_hold_the_mean_std_and_speedups_of_the_records(results, tmp_path):
    out = tmp_path / "report"
    written = report.write_report(results, out)
    assert (written.finished, written.unfinished, written.invalid) == (8, 1, 0)
    (group,) = written.groups
    gq20, adj20 = group.widths[20]["gq"], group.widths[20]["adjoint"]
    # totals 2 and 4 → mean 3, sample std √2; 8 and 12 → 10, √8
    assert gq20.time_s.mean == pytest.approx(3.0) and gq20.time_s.std == pytest.approx(math.sqrt(2))
    assert adj20.time_s.mean == pytest.approx(10.0) and adj20.time_s.std == pytest.approx(math.sqrt(8))
    assert gq20.metric.mean == pytest.approx(90.5) and gq20.metric.std == pytest.approx(math.sqrt(0.5))
    assert gq20.loss.mean == pytest.approx(0.15)
    assert gq20.nfe_forward == pytest.approx(23.0) and gq20.nfe_backward == pytest.approx(35.0)
    assert gq20.seeds == [0, 1]  # seed 7 is unfinished
    assert group.speedups() == {20: {"adjoint": pytest.approx(10 / 3)}, 50: {"adjoint": pytest.approx(25 / 4)}}

    text = written.path.read_text()
    assert "| 20 | 665 | gq | 2 | 3 ± 1.41 | 90.5 ± 0.707 | 0.15 ± 0.0707 | 23.0 | 35.0 | 2.0 |" in text
    assert "| 20 | 665 | adjoint | 2 | 10 ± 2.83 |" in text
    assert "| 50 | 3155 | adjoint | 2 | 25 ± 7.07 |" in text
    assert "| 20 | 3.33× |" in text and "| 50 | 6.25× |" in text
    assert "Skipped 1 unfinished run(s)" in text and "seed7.json" in text
    assert "bench_solver" not in text


def test_figures_are_png_files_written_atomically(results, tmp_path):
    out = tmp_path / "report"
    written = report.write_report(results, out)
    names = sorted(p.name for p in written.figures)
    assert names == ["loss_vs_time_nested-spheres_gtol0.1_w20.png", "loss_vs_time_nested-spheres_gtol0.1_w50.png",
                     "time_vs_width_nested-spheres_gtol0.1.png"]
    for path in written.figures:
        assert path.read_bytes()[:8] == PNG_MAGIC
        assert f"]({path.name})" in written.path.read_text()
    assert not list(out.glob(".*"))  # no temporary left behind


def test_main_prints_the_counts_and_defaults_to_a_report_folder(results, capsys):
    parser = argparse.ArgumentParser()
    report.configure(parser)
    assert report.main(parser.parse_args(["--results", str(results)])) == 0
    assert (results / "report" / "report.md").is_file()
    printed = capsys.readouterr().out
    assert "8 finished training run(s)" in printed and "skipped 1 unfinished run(s)" in printed


def test_collections_below_the_root_are_kept_apart(results, tmp_path):
    record = _record("gq", 20, 0, [5.0])
    write_json_atomic(result_path(results / "demo", TASK, VARIANT, 20, "gq", 0), record)
    groups = report.write_report(results, tmp_path / "report").groups
    assert [g.title for g in groups] == [f"{TASK} / {VARIANT}", f"{TASK} / {VARIANT} (in demo/)"]
    assert groups[0].widths[20]["gq"].time_s.mean == pytest.approx(3.0)  # not mixed with the demo's run


def test_a_single_seed_shows_no_std_and_a_corrupt_file_is_reported(tmp_path):
    root = tmp_path / "results"
    write_json_atomic(result_path(root, TASK, VARIANT, 8, "direct", 0), _record("direct", 8, 0, [1.0, 2.0]))
    (root / "broken.json").write_text("{not json")
    written = report.write_report(root, tmp_path / "out")
    text = written.path.read_text()
    assert "| 8 | 173 | direct | 1 | 3 | 90 | 0.1 | 23.0 | — |" in text
    assert written.invalid == 1 and "broken.json" in text


def test_empty_or_missing_results_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(SystemExit, match="no results") as info:
            report.write_report(folder)
        assert info.value.code != 0
    assert not (tmp_path / "empty" / "report").exists()


def test_toy_record_gets_a_table_and_a_figure(tmp_path):
    root = tmp_path / "results"
    errors = {"L": [1e-6, 2e-6, 3e-6], "dL_dz0": [1e-6, 1e-6, 1e-6], "dL_da": [4e-6, 5e-6, 0.0],
              "dL_dT": [None, 2e-6, 2e-6]}
    runs = [{"dtype": d, "method": m, "rel_error": errors, "value": {}, "nfe_forward": [98, 122, 140],
             "nfe_backward": [None] * 3 if m == "direct" else [100, 120, 150], "nodes": [None] * 3,
             "time_s": [0.01] * 3, "failures": []} for d in ("float32", "float64") for m in ("direct", "gq")]
    write_json_atomic(root / "toy-gradient" / "toy.json", {
        "experiment": "toy-gradient", "T": [19.0, 24.0, 29.0], "quantities": ["L", "dL_dz0", "dL_da", "dL_dT"],
        "config": {"rtol": 1e-6, "atol": 1e-7, "gtol": 0.4}, "runs": runs, "finished": True})
    written = report.write_report(root, tmp_path / "out")
    text = written.path.read_text()
    assert "| gq | float64 | 2.00e-06 | 1.00e-06 | 4.00e-06 | 2.00e-06 | 122 | 120 |" in text
    assert "| direct | float32 | 2.00e-06 | 1.00e-06 | 4.00e-06 | 2.00e-06 | 122 | — |" in text
    (figure,) = written.figures
    assert figure.name == "toy_gradient.png" and figure.read_bytes()[:8] == PNG_MAGIC


def test_demo_quick_runs_and_prints_its_tables(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    demo.configure(parser)
    assert demo.main(parser.parse_args(["--quick", "--out", str(tmp_path / "demo")])) == 0
    printed = capsys.readouterr().out
    for method in ("direct", "adjoint", "seminorm", "gq"):
        assert f"| {method} |" in printed
    assert "rel. err" in printed and "GQ vs adjoint" in printed
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
    records = list((tmp_path / "demo").rglob("seed0*.json"))  # --lr 1e-3 is not the task default: hashed names
    assert len(records) == 4 and all(json.loads(p.read_text())["finished"] for p in records)


def test_a_copied_record_counts_once(results, tmp_path):
    copy = results / "nested-spheres" / VARIANT / "w20" / "gq" / "seed0-copy.json"
    copy.write_text(result_path(results, TASK, VARIANT, 20, "gq", 0).read_text())
    written = report.write_report(results, tmp_path / "report")
    assert written.invalid == 1 and "the same run as" in written.path.read_text()
    assert written.groups[0].widths[20]["gq"].seeds == [0, 1]


def test_runs_of_another_learning_rate_are_their_own_group_never_averaged(results, tmp_path):
    record = _record("gq", 20, 0, [50.0, 50.0])
    record["config"] = {"method": "gq", "width": 20, "seed": 0, "lr": 0.005, "epochs": 2, "out": "elsewhere"}
    write_json_atomic(result_path(results, TASK, VARIANT, 20, "gq", 0, "0123456789"), record)
    written = report.write_report(results, tmp_path / "report")
    assert written.invalid == 0  # the same (task, variant, width, method, seed), but not a duplicate
    default, other = sorted(written.groups, key=lambda g: g.setting)
    assert default.widths[20]["gq"].time_s.mean == 3.0  # the lr 0.005 run's 100 s are not in it
    assert other.widths[20]["gq"].time_s.mean == 100.0 and other.widths[20]["gq"].seeds == [0]
    assert other.setting == "--lr 0.005" and default.setting == "--lr (not set)"
    text = written.path.read_text()
    assert "## nested-spheres / gtol0.1 [--lr 0.005]" in text
    assert len(set(written.figures)) == len(written.figures)  # each group its own figures


def test_an_unwritable_report_folder_is_found_before_drawing(results, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(SystemExit, match=r"--out .*blocker.* is a file"):
        report.write_report(results, blocker)
    assert list(tmp_path.glob("*.png")) == [] and blocker.read_text() == "a file"
