"""``bench methods --quick`` on one tiny problem: the JSON has every row and field, and the NFE agree."""

import io
import json
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest

from validation.bench import methods as bench_methods
from validation.bench.methods import GRADIENT_METHODS, METHODS, PROBLEMS, TORCHDIFFEQ_LACKS

# the oscillator on [0, 0.5]: 25 fixed-grid steps, a few dozen adaptive ones, so every method runs in milliseconds
TINY = replace(PROBLEMS["oscillator"], name="tiny", title="tiny oscillator", t_span=(0.0, 0.5), n_outputs=3)
FIELDS = {"problem", "method", "label", "gradient", "rtol", "atol", "options", "torchdiffeq_median_s",
          "gqtorch_median_s", "ratio", "nfe_torchdiffeq", "nfe_gqtorch", "nfe_equal", "max_diff", "max_diff_grad",
          "warnings_torchdiffeq", "warnings_gqtorch", "torchdiffeq_times_s", "gqtorch_times_s"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "methods.json"
    printed = io.StringIO()  # capsys is per test; this fixture runs once for the module
    with redirect_stdout(printed):
        assert bench_methods.run(quick=True, out=out, problems=[TINY]) == 0
    return json.loads(Path(out).read_text()), printed.getvalue()


def test_every_method_has_a_complete_row(quick_run):
    data, _ = quick_run
    assert data["benchmark"] == "methods"
    assert data["settings"]["repeats"] == 3 and data["settings"]["quick"]
    rows = data["rows"]
    assert [(r["method"], r["gradient"]) for r in rows] == (
        [(m, False) for m in METHODS] + [(m, True) for m in GRADIENT_METHODS])
    for row in rows:
        assert set(row) == FIELDS
        assert row["problem"] == "tiny"
        assert len(row["gqtorch_times_s"]) == 3 and row["gqtorch_median_s"] > 0
        if row["method"] in TORCHDIFFEQ_LACKS:  # gqtorch only: every torchdiffeq column empty
            assert row["torchdiffeq_median_s"] is None and row["ratio"] is None and row["max_diff"] is None
            continue
        assert row["ratio"] == pytest.approx(row["gqtorch_median_s"] / row["torchdiffeq_median_s"])
        # both libraries run the same method on the same field: the outputs agree far below the tolerance, except
        # dopri8's: its error estimate on this smooth problem is at rounding level (~1e-15), so the two libraries'
        # differently rounded sums pick step sizes ~0.1% apart, and the outputs then differ at the tolerance level
        assert row["max_diff"] < (1e-5 if row["method"] == "dopri8" else 1e-10), row["label"]
        assert (row["max_diff_grad"] is not None) == row["gradient"]


def test_nfe_are_equal_for_every_shared_method(quick_run):
    # gqtorch reproduces torchdiffeq's steps, initial-step selection and Adams corrector iterations exactly, and
    # its scipy_solver hands the same problem to the same solve_ivp, so every count must match
    data, _ = quick_run
    for row in data["rows"]:
        if row["method"] not in TORCHDIFFEQ_LACKS:
            assert row["nfe_equal"] and row["nfe_torchdiffeq"] == row["nfe_gqtorch"] > 0, row["label"]


def test_table_is_printed(quick_run):
    _, printed = quick_run
    assert "| method | torchdiffeq ms | gqtorch ms | ratio | NFE td/gq | max diff |" in printed
    assert "| rk4 (backprop) |" in printed and "| tsit5 | — |" in printed
