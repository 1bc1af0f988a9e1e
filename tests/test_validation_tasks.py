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
from validation.harness.training import result_path

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


# ---------------------------------------------------------------------------------------------- configurations


def _plan(argv: list[str]):
    """The parsed args and plans of ``python -m validation <argv>`` (checked, nothing trained)."""
    from validation.__main__ import build_parser
    from validation.harness.training import plan_runs
    from validation.tasks import g1d, images, nested_spheres, sines

    args = build_parser().parse_args(argv)
    task = {"g1d": g1d, "nested-spheres": nested_spheres, "sines": sines, "images": images}[argv[0]]
    return args, plan_runs(task, args)


def test_explicit_flags_win_over_quick(tmp_path):
    args, _ = _plan(["nested-spheres", "--quick", "--width", "100", "--batch-size", "200", "--out", str(tmp_path)])
    # both values equal the paper defaults, yet were given: --quick must not replace them
    assert (args.width, args.batch_size, args.epochs) == (100, 200, 2)
    args, _ = _plan(["nested-spheres", "--quick", "--out", str(tmp_path)])
    assert (args.width, args.batch_size, args.epochs) == (8, 50, 2)


def test_runs_differing_in_any_result_changing_flag_get_their_own_files(tmp_path):
    out = ["--out", str(tmp_path)]
    base = ["g1d", "--method", "adjoint", "--width", "16", *out]
    paths = {}
    for extra in ([], ["--lr", "0.005"], ["--lr", "0.02"], ["--batch-size", "1"], ["--tol", "1e-4"],
                  ["--gtol", "0.2"], ["--quick", "--epochs", "150"], ["--seed", "0"]):
        (plan,) = _plan(base + extra)[1]
        paths.setdefault(plan.path, []).append(extra)
    # --seed 0 is the default: the same run as no flag, the same file; every other line its own
    assert sorted(map(len, paths.values())) == [1] * 6 + [2]
    default = result_path(tmp_path, "g1d", "default", 16, "adjoint", 0)
    assert paths[default] == [[], ["--seed", "0"]]
    # flags that do not change the numbers do not change the file
    (plan,) = _plan([*base, "--epochs", "3", "--threads", "1", "--no-progress"])[1]
    assert plan.path == default


def test_default_names_for_the_paper_and_quick_runs_only(tmp_path):
    out = ["--out", str(tmp_path)]
    (quick,) = _plan(["nested-spheres", "--quick", *out])[1]
    assert quick.path == result_path(tmp_path, "nested-spheres", "gtol0.1", 8, "gq", 0)
    (paper,) = _plan(["nested-spheres", "--width", "1000", *out])[1]
    assert paper.path == result_path(tmp_path, "nested-spheres", "gtol0.1", 1000, "gq", 0)
    # the paper's configuration at --quick's width would share the quick run's folder: it is named by its hash
    (full_at_8,) = _plan(["nested-spheres", "--width", "8", *out])[1]
    assert full_at_8.path.name == f"seed0-{full_at_8.config_hash}.json"
    assert full_at_8.config_hash != quick.config_hash
    (quick_wide,) = _plan(["nested-spheres", "--quick", "--width", "1000", *out])[1]
    assert quick_wide.path.parent == paper.path.parent and quick_wide.path != paper.path
    # a variant flag is in the folder, so it keeps the plain name; two gtol values never share a folder
    (gtol,) = _plan(["nested-spheres", "--gtol", "0.2", "--width", "1000", *out])[1]
    assert gtol.path == result_path(tmp_path, "nested-spheres", "gtol0.2", 1000, "gq", 0)
    (close,) = _plan(["nested-spheres", "--gtol", "0.1000000001", "--width", "1000", *out])[1]
    assert close.path.parent.parent.parent.name == "gtol0.1000000001"


def test_lr_runs_write_both_records_with_their_own_config(tmp_path):
    records = {}
    for lr in ("0.01", "0.02"):
        argv = ["g1d", "--quick", "--method", "adjoint", "--lr", lr, "--out", str(tmp_path), "--no-progress"]
        assert main(argv) == 0
    files = sorted((tmp_path / "g1d" / "default" / "w8" / "adjoint").glob("seed0*.json"))
    assert len(files) == 2
    for path in files:
        record = json.loads(path.read_text())
        records[record["config"]["lr"]] = record
        assert record["config_hash"] in path.name or path.name == "seed0.json"
    assert set(records) == {0.01, 0.02}
    assert records[0.01]["history"]["train_loss"][1] != records[0.02]["history"]["train_loss"][1]


def _quick_g1d(out: Path, *extra: str) -> int:
    return main(["g1d", "--quick", "--method", "adjoint", "--out", str(out), "--no-progress", *extra])


def _error(task, args) -> str:
    from validation.harness.training import run_task

    with pytest.raises(SystemExit) as info:
        run_task(task, args)
    assert isinstance(info.value.code, str)  # a message, not a traceback
    return info.value.code


def test_resume_refuses_another_configuration_naming_the_flags(tmp_path, capsys):
    from validation.tasks import g1d

    assert _quick_g1d(tmp_path, "--epochs", "1") == 0
    from validation.__main__ import build_parser

    for extra, words in ((["--batch-size", "1"], "--batch-size 2 → 1"), (["--lr", "0.5"], "--lr 0.01 → 0.5"),
                         (["--tol", "1e-5"], "--tol 0.001 → 1e-05")):
        args = build_parser().parse_args(["g1d", "--quick", "--method", "adjoint", "--out", str(tmp_path),
                                          "--no-progress", "--resume", *extra])
        message = _error(g1d, args)
        assert words in message and "seed0.ckpt" in message and "drop --resume" in message
    # through the CLI: status 2, the same words
    assert _quick_g1d(tmp_path, "--resume", "--lr", "0.5") == 2
    assert "--lr 0.01 → 0.5" in capsys.readouterr().err
    # the record was not touched: one epoch, the old config
    record = _load(tmp_path, "g1d", "default", "adjoint")
    assert record["epochs_done"] == 1 and record["config"]["lr"] == 0.01


def test_resume_updates_the_config_that_may_change(tmp_path):
    assert _quick_g1d(tmp_path, "--epochs", "1") == 0
    assert _quick_g1d(tmp_path, "--epochs", "2", "--resume", "--threads", "1") == 0
    record = _load(tmp_path, "g1d", "default", "adjoint")
    assert record["epochs_done"] == 2 and record["finished"]
    assert record["config"]["epochs"] == 2 and record["config"]["threads"] == 1 and record["config"]["resume"]
    # extending a finished run: finished again only at the new --epochs
    assert _quick_g1d(tmp_path, "--epochs", "3", "--resume") == 0
    record = _load(tmp_path, "g1d", "default", "adjoint")
    assert record["epochs_done"] == 3 and record["finished"] and len(record["history"]["train_loss"]) == 3


def test_resume_cannot_shorten_a_run(tmp_path, capsys):
    assert _quick_g1d(tmp_path, "--epochs", "2") == 0
    assert _quick_g1d(tmp_path, "--epochs", "1", "--resume") == 2
    assert "--epochs 1: the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not a checkpoint"])
def test_a_damaged_checkpoint_is_named_with_what_to_do(tmp_path, capsys, damage):
    assert _quick_g1d(tmp_path, "--epochs", "1") == 0
    checkpoint = result_path(tmp_path, "g1d", "default", 8, "adjoint", 0).with_suffix(".ckpt")
    data = checkpoint.read_bytes()
    if damage == "truncated":
        checkpoint.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        checkpoint.write_bytes(b"\x80\x04not a pickle at all" * 10)
    elif damage == "empty":
        checkpoint.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    assert _quick_g1d(tmp_path, "--epochs", "2", "--resume") == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "Traceback" not in err and err.count("\n") == 1
    assert ("truncated or corrupt" in err) if damage != "not a checkpoint" else ("not a checkpoint" in err)
    assert "epoch 0" in err  # what to do: start again


def test_a_result_without_its_checkpoint_is_not_silently_restarted(tmp_path, capsys):
    assert _quick_g1d(tmp_path, "--epochs", "1") == 0
    path = result_path(tmp_path, "g1d", "default", 8, "adjoint", 0)
    path.with_suffix(".ckpt").unlink()
    assert _quick_g1d(tmp_path, "--resume") == 2
    err = capsys.readouterr().err
    assert "records 1 finished epoch(s) but its checkpoint" in err and "missing" in err
    assert json.loads(path.read_text())["epochs_done"] == 1


def test_resume_starts_only_the_seeds_without_a_checkpoint(tmp_path, capsys):
    assert _quick_g1d(tmp_path, "--epochs", "1") == 0  # seed 0 started, seed 1 not
    assert _quick_g1d(tmp_path, "--epochs", "2", "--repeats", "2", "--resume") == 0
    assert "seed 1 has no checkpoint yet" in capsys.readouterr().err
    for seed in (0, 1):
        assert _load(tmp_path, "g1d", "default", "adjoint", seed=seed)["epochs_done"] == 2


def test_a_fresh_run_never_replaces_a_result_of_another_configuration(tmp_path, capsys):
    path = result_path(tmp_path, "g1d", "default", 8, "adjoint", 0)
    path.parent.mkdir(parents=True)
    foreign = {"task": "g1d", "config": {"method": "adjoint", "width": 8, "seed": 0, "lr": 0.3, "quick": True}}
    path.write_text(json.dumps(foreign))  # e.g. written before config hashes, under the default name
    assert _quick_g1d(tmp_path) == 2
    assert "holds a run of another configuration" in capsys.readouterr().err
    assert json.loads(path.read_text()) == foreign


def test_an_empty_data_set_is_a_user_error(tmp_path, monkeypatch, capsys):
    from validation.harness.training import TaskSetup
    from validation.tasks import g1d

    real = g1d.build

    def empty_validation(args, generator, seed):
        setup = real(args, generator, seed)
        return TaskSetup(**{**setup.__dict__, "val": torch.utils.data.TensorDataset(torch.zeros(0, 4),
                                                                                     torch.zeros(0, 1))})

    monkeypatch.setattr(g1d, "build", empty_validation)
    assert _quick_g1d(tmp_path) == 2
    err = capsys.readouterr().err
    assert "g1d: the validation set is empty" in err and "expected at least one example" in err
    assert not list(tmp_path.rglob("*.json"))  # found before the first epoch
