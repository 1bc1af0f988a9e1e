"""The harness's task protocol: a task's own solve, evaluation, random states and finishing step are used by the one
train loop, checkpointed, and resumed exactly."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from validation.harness.training import TaskSetup, result_path, task_command


class _Decay(torch.nn.Module):
    """dz/dt = −a z with one learnable rate: small enough that a run takes a fraction of a second."""

    def __init__(self):
        super().__init__()
        self.rate = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, t, z):
        return -self.rate * z


class _NoisyModel(torch.nn.Module):
    """z(1) plus noise from the task's own generator: a run is reproducible only if that generator is checkpointed."""

    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.field, self.generator = _Decay(), generator

    def forward(self, z0, solve):
        z1 = solve(self.field, z0, torch.tensor([0.0, 1.0], dtype=torch.float64))[-1]
        return z1 + 0.1 * torch.randn(z1.shape, generator=self.generator)


class _CountingSolver:
    """A task's own solve: a fixed-grid RK4 solve by gqtorch with the evaluation count the harness records."""

    def __init__(self):
        import gqtorch

        self.odeint, self.calls = gqtorch.odeint, 0

    def __call__(self, func, y0, t):
        def counted(t, y):
            self.calls += 1
            return func(t, y)

        return self.odeint(counted, y0, t, method="rk4", options={"step_size": 0.25})

    def reset(self):
        self.calls = 0

    def nfe(self):
        return self.calls, None


def _task(finished: list) -> types.ModuleType:
    task = types.ModuleType("protocol_task")
    task.NAME, task.HELP = "protocol", "a task exercising every hook"
    task.DEFAULTS = {"width": 1, "epochs": 3, "lr": 0.05, "batch_size": 4}
    task.QUICK = {"epochs": 1}
    task.METHODS = ("own",)

    def build(args, generator, seed):
        model = _NoisyModel(torch.Generator().manual_seed(1000 + seed))
        data = TensorDataset(torch.linspace(0.5, 2.0, 8).unsqueeze(-1), torch.full((8, 1), 0.2))
        mse = torch.nn.functional.mse_loss

        def evaluate():
            rate = float(model.field.rate)
            return {"val_loss": rate, "val_metric": rate**2, "val_rate": rate}

        return TaskSetup(model=model, field=model.field, train=data, val=data, loss=mse, metric=mse,
                         metric_name="rate²", data_source="eight points", solver=_CountingSolver(),
                         evaluate=evaluate, states={"noise": model.generator},
                         finish=lambda record, plan: finished.append((record["epochs_done"], plan.seed)))

    task.build = build
    sys.modules[task.__name__] = task
    return task


def _train(task, out: Path, *flags: str) -> dict:
    configure, main = task_command(task)
    parser = argparse.ArgumentParser()
    configure(parser)
    assert main(parser.parse_args(["--out", str(out), "--no-progress", *flags])) == 0
    return json.loads(result_path(out, task.NAME, "default", 1, "own", 0).read_text())


def test_every_hook_is_used_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    finished: list = []
    task = _task(finished)
    whole = _train(task, tmp_path / "whole")
    history = whole["history"]
    # the task's evaluation: its extra number kept under its own name, before training and after each epoch
    assert len(history["val_rate"]) == len(history["val_loss"]) == 4
    assert history["val_metric"] == [v * v for v in history["val_loss"]]
    # the task's solver: RK4 with 4 steps is 16 evaluations per batch, and no backward count
    assert history["nfe_forward"] == [16.0] * 3 and history["nfe_backward"] == [None] * 3
    assert finished == [(3, 0)]  # finish ran once, when the run was complete

    finished.clear()
    _train(task, tmp_path / "split", "--epochs", "1")
    resumed = _train(task, tmp_path / "split", "--epochs", "3", "--resume")
    assert finished == [(1, 0), (3, 0)]  # each command's run was complete at its own --epochs
    # the noise generator came back from the checkpoint: the same losses bit for bit, not merely close
    assert resumed["history"]["train_loss"] == history["train_loss"]
    assert resumed["history"]["val_rate"] == history["val_rate"]


def test_a_checkpoint_without_the_tasks_states_is_refused(tmp_path):
    task = _task([])
    _train(task, tmp_path, "--epochs", "1")
    checkpoint = result_path(tmp_path, task.NAME, "default", 1, "own", 0).with_suffix(".ckpt")
    state = torch.load(checkpoint, weights_only=False)
    state["states"] = {}
    torch.save(state, checkpoint)
    configure, main = task_command(task)
    parser = argparse.ArgumentParser()
    configure(parser)
    from validation.harness.cli import UsageError

    try:
        main(parser.parse_args(["--out", str(tmp_path), "--no-progress", "--epochs", "2", "--resume"]))
    except UsageError as error:
        assert "random states" in str(error) and "noise" in str(error)
    else:
        raise AssertionError("a checkpoint missing the task's random states was accepted")
