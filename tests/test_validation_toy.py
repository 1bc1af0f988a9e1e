"""``toy-gradient``: every gqtorch gradient method against the closed form of docs/paper.md §4, and the JSON it
writes."""

from __future__ import annotations

import argparse
import json
import math
import statistics

import pytest
import torch

import gqtorch
from validation.tasks import toy_gradient as toy

METHODS = ("direct", "adjoint", "seminorm", "gq")
# docs/paper.md §4's float64 NumPy run of the same scheme: T → (NFE_fwd, GQ nodes, rel. error of L, of dL/da, of dL/dz0)
REFERENCE = {19.0: (98, 40, 2.4e-6, 3.4e-6, 2.0e-6), 24.0: (122, 49, 2.7e-6, 4.0e-6, 2.4e-6),
             29.0: (140, 56, 3.1e-6, 4.7e-6, 2.8e-6)}
# dopri5 keeps each accepted step's local error below ~rtol·|z|; z = z0·e^{aT} grows monotonically, so the local
# errors add up without cancelling: rel. error of z(T) ≲ rtol·(accepted steps), about 16–23 steps here at
# rtol 1e-6. L = z² doubles it, and the adjoint's backward solve (same tolerances, as many steps) adds as much
# again to the gradients: 2·2·23·rtol ≈ 1e-4 would be the worst case. The NumPy reference above sees 2e-6–5e-6,
# so 3e-5 leaves a factor ~6 of margin and still fails on an error 30 times rtol.
BOUND_FLOAT64 = 3e-5


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    toy.configure(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("T", [19.0, 24.0, 29.04])
def test_float64_errors_of_every_method_are_a_few_rtol(T):
    for method in METHODS:
        run = toy.toy_gradient(T, method, toy.DTYPES["float64"])
        for quantity, error in run.rel_errors.items():
            assert error < BOUND_FLOAT64, (method, quantity, error)
        assert run.nfe_forward > 0
        assert (run.nfe_backward is None) == (method == "direct")


@pytest.mark.parametrize("T", sorted(REFERENCE))
def test_gq_reproduces_the_numpy_reference_of_the_paper(T):
    """The same algorithm as docs/paper.md §4's NumPy check: the same NFE and node count, and the same relative errors
    to the two digits the table gives (5 %: half a unit in the last digit is up to 2.5 %)."""
    nfe, nodes, err_L, err_a, err_z0 = REFERENCE[T]
    run = toy.toy_gradient(T, "gq", toy.DTYPES["float64"])
    assert (run.nfe_forward, run.nodes) == (nfe, nodes)
    assert run.rel_errors["L"] == pytest.approx(err_L, rel=0.05)
    assert run.rel_errors["dL_da"] == pytest.approx(err_a, rel=0.05)
    assert run.rel_errors["dL_dz0"] == pytest.approx(err_z0, rel=0.05)


def test_float32_runs_are_finite_and_measured_against_the_stored_inputs():
    for method in METHODS:
        run = toy.toy_gradient(24.0, method, toy.DTYPES["float32"])
        assert all(math.isfinite(v) for v in run.values.values())
        # float32 rounding (eps 6e-8) over ~120 evaluations stays far below the solver tolerance's error
        assert max(run.rel_errors.values()) < 1e-4
    # 0.2 is not a float32 number: the exact values use the stored a, so they differ from the nominal ones
    stored_a = float(torch.tensor(0.2, dtype=torch.float32))
    assert run.exact == toy.exact_values(10.0, stored_a, 24.0)
    assert run.exact != toy.exact_values(10.0, 0.2, 24.0)


def test_closed_forms_and_the_sweep():
    exact = toy.exact_values(10.0, 0.2, 20.0)
    assert exact["L"] == pytest.approx(100 * math.exp(8.0))
    assert exact["dL_dz0"] == pytest.approx(20 * math.exp(8.0))
    assert exact["dL_da"] == pytest.approx(40 * exact["L"])
    assert exact["dL_dT"] == pytest.approx(0.4 * exact["L"])
    times = toy.sweep_times()
    assert len(times) == 503 and times[0] == 19.0 and times[-1] == 29.04 and times[1] == 19.02


def test_main_writes_the_json_and_prints_the_medians(tmp_path, capsys):
    out = tmp_path / "toy" / "toy.json"
    args = _parse(["--quick", "--methods", "gq", "direct", "--dtypes", "float64", "float32", "--out", str(out),
                   "--no-progress"])
    assert toy.main(args) == 0
    data = json.loads(out.read_text())
    assert data["experiment"] == "toy-gradient" and data["finished"]
    assert data["T"] == list(toy.QUICK_T)
    assert data["config"]["rtol"] == 1e-6 and data["config"]["atol"] == 1e-7 and data["config"]["gtol"] == 0.4
    assert data["environment"]["packages"]["torch"]
    assert [(r["dtype"], r["method"]) for r in data["runs"]] == [("float64", "gq"), ("float64", "direct"),
                                                                  ("float32", "gq"), ("float32", "direct")]
    for run, row in zip(data["runs"], data["summary"]):
        assert run["failures"] == []
        for q in toy.QUANTITIES:
            assert len(run["rel_error"][q]) == len(run["value"][q]) == len(toy.QUICK_T)
            assert row["median_rel_error"][q] == statistics.median(run["rel_error"][q])
            # the stored relative error is the one of the stored value against the stored exact value
            exact = data["exact"][run["dtype"]][q]
            assert run["rel_error"][q] == [abs(v - e) / e for v, e in zip(run["value"][q], exact)]
        assert all(n > 0 for n in run["nfe_forward"]) and all(t > 0 for t in run["time_s"])
        assert all((n is None) == (run["method"] == "direct") for n in run["nfe_backward"] + run["nodes"])
    printed = capsys.readouterr().out
    assert "| gq | float64 |" in printed and "| direct | float32 |" in printed
    assert not list(out.parent.glob(".*"))  # the atomic write left no temporary


def test_a_failed_solve_is_recorded_as_null(tmp_path, monkeypatch):
    real = toy.toy_gradient

    def flaky(T, method, *args):
        if T == 24.0:
            raise gqtorch.StepSizeUnderflowError("step size underflow", T)
        return real(T, method, *args)

    monkeypatch.setattr(toy, "toy_gradient", flaky)
    out = tmp_path / "toy.json"
    assert toy.main(_parse(["--quick", "--methods", "gq", "--dtypes", "float64", "--out", str(out),
                            "--no-progress"])) == 0
    (run,) = json.loads(out.read_text())["runs"]
    assert run["rel_error"]["L"][2] is None and len(run["failures"]) == 1
    assert all(v is not None for k, v in enumerate(run["rel_error"]["L"]) if k != 2)


def test_bad_flags_are_usage_errors():
    for argv in (["--methods", "rk45"], ["--dtypes", "float16"], ["--tol", "0"]):
        with pytest.raises(SystemExit) as info:
            _parse(argv)
        assert info.value.code == 2
    with pytest.raises(SystemExit, match="toy-gradient"):
        toy.main(_parse(["--t-start", "30", "--t-stop", "20"]))
