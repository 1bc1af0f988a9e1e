"""Smoke runs of the validation CLI: the commands run and write complete, parseable results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from validation.__main__ import main
from validation.bench.memory import measure_in_subprocess


def test_bench_reference_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "reference", "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "reference"
    assert [w["width"] for w in data["widths"]] == [32, 64]
    methods = {m["method"] for m in data["widths"][0]["methods"]}
    assert methods == {"gq C=0.1", "gq C=1", "adjoint", "seminorm", "discrete"}
    assert all(m["median_s"] > 0 and m["nfe_forward"] > 0 for w in data["widths"] for m in w["methods"])
    assert "| gq C=0.1 |" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary behind


def test_bench_training_quadrature_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "training-quadrature", "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert sorted(data["checkpoints"]) == ["0", "3"]
    for row in data["checkpoints"].values():
        # the tight reference shares the backward solve, so each rule's distance from it is a quadrature error: a
        # broken rule or reference (a wrong sign, a missed interval) would be off by the gradient's own size
        assert all(0 <= row[name] < 1 for name in ("paper", "kronrod", "auto"))
        assert row["kronrod_nfe_backward"] > row["paper_nfe_backward"]  # the Kronrod nodes cost evaluations
    counts = data["default_training"]
    assert counts["reused"] + counts["one_round"] + counts["refined"] == 4  # every training call is counted once
    assert "| step | forward NFE |" in capsys.readouterr().out


def test_unknown_command_is_a_clear_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train-everything"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_bench_gradients_quick_compares_every_method(tmp_path):
    out = tmp_path / "gradients.json"
    assert main(["bench", "gradients", "--quick", "--widths", "20", "--no-memory", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [(r["task"], r["width"]) for r in data["records"]] == [("g1d", 20), ("nested-spheres", 20)]
    for record in data["records"]:
        rows = record["methods"]
        assert {r["method"] for r in rows} == {f"{m} ({lib})" for m in ("direct", "adjoint", "seminorm")
                                               for lib in ("gqtorch", "torchdiffeq")} | {
            "gq (gqtorch)", "gq auto (gqtorch)", "gq auto, reusing checks (gqtorch)"}
        # every method's gradient is within the solver tolerance (1e-3, amplified by at most a few steps) of direct's
        assert all(r["relative_difference_vs_direct"] < 1e-2 for r in rows)
        assert all(r["median_s"] > 0 for r in rows)


def test_bench_gradients_times_the_chosen_methods(tmp_path):
    """--methods: those, beside gqtorch's direct (the gradients' reference) and GQ (the ratios' base)."""
    out = tmp_path / "gradients.json"
    assert main(["bench", "gradients", "--quick", "--widths", "20", "--tasks", "g1d", "--no-memory",
                 "--methods", "td-direct,gq-auto", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["records"][0]["methods"]
    assert [r["method"] for r in rows] == ["direct (gqtorch)", "gq (gqtorch)", "gq auto (gqtorch)",
                                           "direct (torchdiffeq)"]
    with pytest.raises(SystemExit, match=r"--methods: unknown \['tdirect'\]"):
        main(["bench", "gradients", "--quick", "--methods", "tdirect", "--out", str(out)])


def test_peak_memory_of_a_step_is_measured_in_a_fresh_process():
    # nested spheres at width 300: the direct method's graph holds ~6 activations of 200×300 floats per
    # evaluation (≈1.4 MB each), so its step needs several MB more as the tolerance (and the NFE) tightens
    loose = measure_in_subprocess("nested-spheres", 300, "direct (gqtorch)", 1e-3)
    tight = measure_in_subprocess("nested-spheres", 300, "direct (gqtorch)", 1e-6)
    assert tight["nfe"] > loose["nfe"] > 0
    assert tight["peak_memory_mb"] > loose["peak_memory_mb"] > 0


def test_bench_options_for_gradients_only_are_refused_elsewhere():
    with pytest.raises(SystemExit, match="options for `bench gradients` only"):
        main(["bench", "solver", "--widths", "10"])


# ---------------------------------------------------------------------------------------------- user errors
#
# Each bad command line ends with exit status 2 and one line naming the flag, the value and what was expected, before
# anything trains or is written; none of these cases gets as far as training.


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``python -m validation`` run in this process."""
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, capsys.readouterr().err


def _file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


# (argv, a function of tmp_path giving extra argv, words the message must contain)
USER_ERRORS = [
    (["g1d", "--seed", str(2**32)], None, ["--seed", "4294967296", "[0, 4294967295]"]),
    (["g1d", "--seed", "-1"], None, ["--seed", "[0, 4294967295]"]),
    (["g1d", "--seed", "1e3"], None, ["--seed", "'1e3'"]),
    (["g1d", "--seed", "4294967295", "--repeats", "2"], None, ["--seed 4294967295 --repeats 2", "≤ 4294967295"]),
    (["g1d", "--lr", "nan"], None, ["--lr", "positive number", "'nan'"]),
    (["g1d", "--lr", "inf"], None, ["--lr", "positive number"]),
    (["g1d", "--tol", "0"], None, ["--tol", "positive number"]),
    (["g1d", "--gtol", "-0.1"], None, ["--gtol", "positive number"]),
    (["g1d", "--width", "0"], None, ["--width", "positive integer"]),
    (["g1d", "--batch-size", "1.5"], None, ["--batch-size", "positive integer"]),
    (["g1d", "--epochs", "two"], None, ["--epochs", "positive integer"]),
    (["g1d", "--threads", "0"], None, ["--threads", "[1, 1024]"]),
    (["g1d", "--threads", "100000"], None, ["--threads", "[1, 1024]"]),
    (["g1d", "--device", "tpu"], None, ["--device", "'tpu'", "cpu, cuda or cuda:<index>"]),
    (["g1d", "--device", "cuda:x"], None, ["--device", "cuda:<index>"]),
    (["g1d"], lambda tmp: ["--out", str(_file(tmp))], ["--out", "a-file", "is a file", "expected a folder"]),
    (["g1d"], lambda tmp: ["--out", str(_file(tmp) / "sub")], ["--out", "cannot create the folder"]),
    (["g1d", "--resume"], lambda tmp: ["--out", str(tmp)], ["--resume", "nothing to resume", "seed0.ckpt",
                                                             "Drop --resume"]),
    (["sines", "--points", "20"], None, ["--points", "invalid choice"]),
    (["nested-spheres", "--method", "euler"], None, ["--method", "invalid choice"]),
    (["ornstein-uhlenbeck", "--paths", "1"], None, ["--paths", "≥ 2"]),
    (["ornstein-uhlenbeck", "--seed", "99999999999"], None, ["--seed", "[0, 4294967295]"]),
    (["ornstein-uhlenbeck"], lambda tmp: ["--out", str(_file(tmp))], ["--out", "is a file"]),
    (["toy-gradient", "--t-start", "0"], None, ["--t-start", "(0, 200]", "'0'"]),
    (["toy-gradient", "--t-start", "nan"], None, ["--t-start", "(0, 200]"]),
    (["toy-gradient", "--t-stop", "1e6"], None, ["--t-stop", "(0, 200]"]),
    (["toy-gradient", "--t-start", "30", "--t-stop", "20"], None, ["--t-stop ≥ --t-start"]),
    (["toy-gradient", "--t-step", "1e-9"], None, ["--t-step", "at most 100,000"]),
    (["toy-gradient", "--quick", "--t-start", "20"], None, ["--t-start", "not used with --quick"]),
    (["toy-gradient", "--quick"], lambda tmp: ["--out", str(tmp)], ["--out", "is a folder", "JSON results file"]),
    (["toy-gradient", "--quick"], lambda tmp: ["--out", str(_file(tmp) / "toy.json")], ["--out", "a-file is a file"]),
    (["report"], lambda tmp: ["--results", str(_file(tmp))], ["--results", "is a file"]),
    (["report"], lambda tmp: ["--results", str(tmp)], ["no results under"]),
    (["demo", "--width", "0"], None, ["--width", "positive integer"]),
    (["demo", "--lr", "-1"], None, ["--lr", "positive number"]),
    (["demo", "--quick"], lambda tmp: ["--out", str(_file(tmp))], ["--out", "is a file"]),
    (["advise", "--task", "g1d", "--width", "4", "--memory-budget", "-1"], None, ["--memory-budget", "[0, "]),
    (["images", "--dataset", "cifar10", "--quick"], lambda tmp: ["--out", str(tmp), "--data-dir", str(tmp / "none")],
     ["--dataset cifar10 --data-dir", "CIFAR-10", "not found"]),
]


@pytest.mark.parametrize("argv, extra, words", USER_ERRORS, ids=[" ".join(c[0]) for c in USER_ERRORS])
def test_user_errors_are_one_line_and_exit_status_2(tmp_path, capsys, argv, extra, words):
    argv = argv + (extra(tmp_path) if extra else [])
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    code, err = _cli(argv, capsys)
    assert code == 2
    message = err.strip().splitlines()[-1]
    assert "error:" in message and "Traceback" not in err
    for word in words:
        assert word in message, (word, message)
    # nothing trained, nothing written (the --out checks create no file, only folders)
    assert {p for p in tmp_path.rglob("*") if p.is_file()} == before


def test_cuda_without_a_device_is_a_user_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present here")
    code, err = _cli(["g1d", "--device", "cuda"], capsys)
    assert code == 2 and "--device cuda: torch sees no CUDA device here; expected cpu" in err


def test_a_folder_the_process_cannot_write_is_found_before_training(tmp_path, capsys):
    # /proc refuses new entries even to root, where permission bits would not stop the write
    code, err = _cli(["g1d", "--out", "/proc/gq-validation-test"], capsys)
    assert code == 2 and "--out /proc/gq-validation-test: cannot create the folder" in err


def test_the_command_line_prints_no_traceback_for_a_user_error(tmp_path):
    """The real entry point, in a fresh interpreter: status 2 and one line on stderr."""
    run = subprocess.run([sys.executable, "-m", "validation", "g1d", "--resume", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1], timeout=300)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("python -m validation g1d: error: --resume:")
    assert run.stdout == ""


def test_quick_help_says_explicit_flags_win(capsys):
    with pytest.raises(SystemExit):
        main(["nested-spheres", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "flags given explicitly keep their values" in text
    assert "--width 8, --epochs 2, --batch-size 50" in text  # the preset it applies


def test_a_huge_gtol_is_a_valid_node_budget_not_an_overflow(tmp_path, capsys):
    """C = 1e300 asks for more nodes than the cap allows: the paper's rule clips to its cap (64 per interval), so
    the run trains and records finite numbers instead of overflowing ⌈C·NFE·Δt/T⌉ into an integer."""
    code, err = _cli(["g1d", "--quick", "--gtol", "1e300", "--out", str(tmp_path), "--no-progress"], capsys)
    assert code == 0, err
    (path,) = tmp_path.rglob("seed0*.json")
    record = json.loads(path.read_text())
    assert record["config"]["gtol"] == 1e300 and record["finished"]
    assert all(v == v and abs(v) < float("inf") for v in record["history"]["train_loss"])  # finite, not NaN
