"""Smoke runs of the validation CLI: the commands run and write complete, parseable results."""

import json

import pytest

from validation.__main__ import main


def test_bench_gradients_quick_writes_results(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "gradients", "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "gradients"
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


def test_bench_training_quick_compares_every_method(tmp_path):
    out = tmp_path / "training.json"
    assert main(["bench", "training", "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data["widths"][0]["methods"]
    assert {r["method"] for r in rows} >= {"direct (gqtorch.odeint)", "gq (gqtorch)", "adjoint (torchdiffeq)"}
    # every method's gradient is within the solver tolerance (1e-3, amplified by at most a few steps) of direct's
    assert all(r["relative_difference_vs_direct"] < 1e-2 for r in rows)
