"""The training tasks: ``--quick`` smoke runs of each, result contents, reproducibility, resume, DDP."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from validation.__main__ import main
from validation.training import result_path

QUICK_TASKS = [("g1d", [], "default"), ("nested-spheres", [], "gtol0.1"), ("sines", [], "10pts-regular"),
               ("sines", ["--irregular"], "10pts-irregular")]


def _run(tmp_path: Path, task: str, method: str, extra: list[str] = ()) -> dict:
    argv = [task, "--quick", "--method", method, "--out", str(tmp_path), "--no-progress", *extra]
    assert main(argv) == 0
    return argv


def _load(tmp_path, task, variant, method, width=8, seed=0) -> dict:
    return json.loads(result_path(tmp_path, task, variant, width, method, seed).read_text())


@pytest.mark.parametrize("task, extra, variant", QUICK_TASKS)
def test_quick_run_writes_a_complete_result(tmp_path, task, extra, variant):
    _run(tmp_path, task, "gq", extra)
    record = _load(tmp_path, task, variant, "gq")
    history = record["history"]
    assert record["finished"] and record["epochs_done"] == 2
    assert record["task"] == task and record["method"] == "gq" and record["width"] == 8
    assert record["parameters_field"] == sum(p.numel() for p in _field(task, 8).parameters())
    assert record["environment"]["packages"]["torch"] == torch.__version__.split("+")[0] or \
        record["environment"]["packages"]["torch"] == torch.__version__
    # index 0 of the validation history is the evaluation before training
    assert len(history["val_loss"]) == len(history["val_metric"]) == 3
    assert len(history["epoch_time_s"]) == len(history["train_loss"]) == 2
    assert all(t > 0 for t in history["epoch_time_s"])
    assert all(math.isfinite(v) for v in history["train_loss"] + history["val_loss"])
    # GQ reports both evaluation counts from the solver (no func.nfe needed); a dopri5 step costs 6 evaluations
    assert all(n >= 6 for n in history["nfe_forward"]) and all(n >= 6 for n in history["nfe_backward"])
    assert "generated" in record["data_source"] or "g1d points" in record["data_source"]
    assert not list(tmp_path.rglob(".*.tmp"))


def _field(task: str, width: int) -> torch.nn.Module:
    from validation.tasks import g1d, nested_spheres, sines

    return {"g1d": g1d.G1dField, "nested-spheres": nested_spheres.NestedSpheresField,
            "sines": sines.SinesField}[task](width)


def test_parameter_counts_follow_the_papers_formulas():
    w = 30
    assert sum(p.numel() for p in _field("g1d", w).parameters()) == w * w + 10 * w + 4
    assert sum(p.numel() for p in _field("nested-spheres", w).parameters()) == w * w + 13 * w + 5
    assert sum(p.numel() for p in _field("sines", w).parameters()) == w * w + 5 * w + 1


def test_same_command_twice_gives_identical_losses(tmp_path):
    histories = []
    for run in ("a", "b"):
        _run(tmp_path / run, "nested-spheres", "gq")
        histories.append(_load(tmp_path / run, "nested-spheres", "gtol0.1", "gq")["history"])
    for key in ("train_loss", "val_loss", "val_metric", "nfe_forward", "nfe_backward"):
        assert histories[0][key] == histories[1][key]


def test_methods_share_initial_weights_and_data(tmp_path):
    """At one seed every method starts from the same weights: the pre-training evaluation is identical."""
    first = {}
    for method in ("direct", "adjoint", "seminorm", "gq"):
        _run(tmp_path, "g1d", method)
        first[method] = _load(tmp_path, "g1d", "default", method)["history"]["val_loss"][0]
    assert len(set(first.values())) == 1


def test_resume_continues_from_the_last_finished_epoch(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _run(full, "nested-spheres", "adjoint", ["--epochs", "3"])
    _run(part, "nested-spheres", "adjoint", ["--epochs", "1"])  # as if interrupted after one epoch
    assert _load(part, "nested-spheres", "gtol0.1", "adjoint")["epochs_done"] == 1
    _run(part, "nested-spheres", "adjoint", ["--epochs", "3", "--resume"])
    resumed = _load(part, "nested-spheres", "gtol0.1", "adjoint")
    reference = _load(full, "nested-spheres", "gtol0.1", "adjoint")
    assert resumed["epochs_done"] == 3 and resumed["finished"]
    assert resumed["history"]["train_loss"] == reference["history"]["train_loss"]
    assert resumed["history"]["val_loss"] == reference["history"]["val_loss"]


def test_bad_flags_are_usage_errors(capsys):
    for argv in (["g1d", "--width", "0"], ["g1d", "--tol", "-1"], ["g1d", "--method", "euler"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "positive" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_SCRIPT = Path(__file__).with_name("ddp_gradients.py")


@pytest.mark.parametrize("solver", ["rk4", "gq"])
def test_two_process_ddp_gradients_equal_one_process_on_the_combined_batch(tmp_path, solver):
    """A torchrun-style launch of 2 CPU processes (gloo on 127.0.0.1), each with half the batch: DDP's averaged
    gradient must equal the single-process gradient of the mean loss over the whole batch."""
    out = tmp_path / "grads"
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    ddp = {**base, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    procs = [subprocess.Popen([sys.executable, str(DDP_SCRIPT), str(out), solver],
                              env={**ddp, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    subprocess.run([sys.executable, str(DDP_SCRIPT), str(out), solver], env={**base, "WORLD_SIZE": "1"}, check=True)
    distributed = torch.load(out / f"rank0-{solver}.pt")
    reference = torch.load(out / f"single-{solver}.pt")
    assert distributed.keys() == reference.keys()
    # rk4 (fixed grid, float64): the two differ only by the order of the sums (two half-batch means averaged by
    # all-reduce vs one full-batch mean), a few ulps of the gradient's scale. gq (adaptive): each process's error
    # norm sees its own half batch, so the accepted steps differ; both gradients are within ~tol·(a few steps) of
    # the exact one at rtol = atol = 1e-9.
    bound = 1e-12 if solver == "rk4" else 1e-6
    for name in reference:
        scale = float(reference[name].abs().max()) + 1e-300
        assert float((distributed[name] - reference[name]).abs().max()) <= bound * scale, name
