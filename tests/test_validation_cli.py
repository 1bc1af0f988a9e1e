"""Smoke runs of the validation CLI: the commands run and write complete, parseable results."""

import json

import pytest

from validation.__main__ import main
from validation.bench_memory import measure_in_subprocess


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
            "gq (gqtorch)", "gq auto (gqtorch)", "gq auto, checked every call (gqtorch)"}
        # every method's gradient is within the solver tolerance (1e-3, amplified by at most a few steps) of direct's
        assert all(r["relative_difference_vs_direct"] < 1e-2 for r in rows)
        assert all(r["median_s"] > 0 for r in rows)


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
