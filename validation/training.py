"""The training harness every task shares (docs/paper.md §2): seeded data and weights, Adam, one JSON result per run.

A task module provides ``NAME``, ``HELP``, ``DEFAULTS`` (the paper's settings), ``QUICK`` (a tiny smoke
configuration), optionally ``configure_task(parser)`` for its own flags, and ``build(args, generator) ->
TaskSetup``. The harness adds the common flags, then for each seed: builds the task, trains with a progress bar,
evaluates before training (history index 0) and after every epoch, and after every epoch writes the result JSON and a
checkpoint atomically, so an interrupted run loses nothing finished and ``--resume`` continues from the last epoch.

Run under ``torchrun --nproc_per_node=N python -m validation <task> ...`` the training is data-parallel
(DistributedDataParallel over gloo on CPU or NCCL on GPU, a distributed sampler per epoch, the learning rate
unchanged: DDP averages the gradients, so N processes on N shards equal one process on the combined batch) and
only rank 0 writes results.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm import tqdm

from gqtorch.memory import PeakMemory
from validation.methods import METHODS, Solver
from validation.results import environment, write_json_atomic

DEFAULT_OUT = Path("results")
EVAL_BATCH = 500


@dataclass
class TaskSetup:
    """What a task hands the harness. ``model(inputs, solve)`` returns predictions; ``field`` is the ODE function
    (its parameters are the ones counted as P); ``loss(pred, target)`` is the training objective (a scalar mean
    over the batch); ``metric(pred, target)`` a batch mean of the validation metric named ``metric_name``."""

    model: torch.nn.Module
    field: torch.nn.Module
    train: TensorDataset
    val: TensorDataset
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric_name: str
    data_source: str
    details: dict[str, Any] = field(default_factory=dict)


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ≥ ``minimum``, else a usage error saying so."""
    what = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = integer_at_least(1)


def add_training_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any], *,
                           methods: tuple[str, ...] = METHODS, helps: dict[str, str] | None = None) -> None:
    """The flags every training task has, with the task's paper defaults. A task with other methods passes their
    names (the default is gq where offered, else the first); ``helps`` replaces the help of named flags."""
    helps = helps or {}
    parser.add_argument("--method", choices=methods, default="gq" if "gq" in methods else methods[0],
                        help=helps.get("--method", "gradient method (default gq)"))
    parser.add_argument("--width", type=positive_int, default=defaults["width"],
                        help=f"hidden width of the ODE function (default {defaults['width']})")
    parser.add_argument("--seed", type=int, default=0,
                        help=helps.get("--seed", "first seed: data and initial weights (default 0)"))
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs with seeds seed, seed+1, … (default 1)")
    parser.add_argument("--epochs", type=positive_int, default=defaults["epochs"],
                        help=f"training epochs (default {defaults['epochs']})")
    parser.add_argument("--lr", type=positive_float, default=defaults["lr"],
                        help=f"Adam learning rate (default {defaults['lr']})")
    parser.add_argument("--batch-size", type=positive_int, default=defaults["batch_size"],
                        help=helps.get("--batch-size", f"training batch size (default {defaults['batch_size']})"))
    parser.add_argument("--tol", type=positive_float, default=1e-3, help="dopri5 rtol = atol (default 1e-3)")
    parser.add_argument("--gtol", type=positive_float, default=0.1, help="GQ's node-rule constant C (default 0.1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (default cpu)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run: small width, data and epochs")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def result_path(out: Path, task: str, variant: str, width: int, method: str, seed: int) -> Path:
    """``<out>/<task>/<variant>/w<width>/<method>/seed<seed>.json``: one file per run."""
    return Path(out) / task / variant / f"w{width}" / method / f"seed{seed}.json"


def _save_checkpoint_atomic(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device: expected cpu, cuda or cuda:<index>, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
    return device


class Distributed:
    """The process group when launched by torchrun (WORLD_SIZE > 1), else a single process."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes."""
        if not self.active:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor) / self.world


def wrap_model(model: torch.nn.Module, device: torch.device, group: Distributed) -> torch.nn.Module:
    """The model as trained: DistributedDataParallel when several processes run."""
    if not group.active:
        return model
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def train_loader(data: TensorDataset, batch_size: int, seed: int, epoch: int, group: Distributed) -> DataLoader:
    """Shuffled batches, reproducible from (seed, epoch); each process gets its own shard under DDP."""
    if group.active:
        sampler = DistributedSampler(data, num_replicas=group.world, rank=group.rank, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return DataLoader(data, batch_size=batch_size, sampler=sampler)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator)


@torch.no_grad()
def evaluate(setup: TaskSetup, solve: Solver, device: torch.device) -> tuple[float, float]:
    """(mean validation loss, mean validation metric), weighted by batch size."""
    setup.model.eval()
    total_loss = total_metric = 0.0
    count = 0
    for inputs, targets in DataLoader(setup.val, batch_size=EVAL_BATCH):
        inputs, targets = inputs.to(device), targets.to(device)
        pred = setup.model(inputs, solve)
        total_loss += float(setup.loss(pred, targets)) * len(inputs)
        total_metric += float(setup.metric(pred, targets)) * len(inputs)
        count += len(inputs)
    setup.model.train()
    return total_loss / count, total_metric / count


def record_epoch(record: dict, epoch: int, epochs: int, *, elapsed: float, train_loss: float, val_loss: float,
                 val_metric: float, nfe_forward: list, nfe_backward: list, peak_memory_mb: float | None) -> None:
    """Append one finished epoch to a run record: NFE as means per batch (backward None where a batch had none)."""
    history = record["history"]
    history["epoch_time_s"].append(elapsed)
    history["train_loss"].append(train_loss)
    history["val_loss"].append(val_loss)
    history["val_metric"].append(val_metric)
    history["nfe_forward"].append(sum(nfe_forward) / len(nfe_forward))
    history["nfe_backward"].append(None if None in nfe_backward else sum(nfe_backward) / len(nfe_backward))
    history["peak_memory_mb"].append(peak_memory_mb)
    record["epochs_done"] = epoch + 1
    record["finished"] = epoch + 1 == epochs


def train_run(task, args: argparse.Namespace, seed: int) -> dict:
    """Train one seed of ``task``; return its result record (also written to its JSON file on rank 0)."""
    device = _device(args.device)
    group = Distributed(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(seed)  # initial weights: the same for every method at this seed
    setup = task.build(args, torch.Generator().manual_seed(seed))
    setup.model.to(device)
    model = wrap_model(setup.model, device, group)
    optimizer = torch.optim.Adam(setup.model.parameters(), lr=args.lr)
    solve = Solver(args.method, args.tol, args.gtol)
    variant = task.variant(args) if hasattr(task, "variant") else "default"
    path = result_path(args.out, task.NAME, variant, args.width, args.method, seed)
    checkpoint = path.with_suffix(".ckpt")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "handler"}
    record = {
        "task": task.NAME, "variant": variant, "method": args.method, "width": args.width, "seed": seed,
        "config": config, "environment": environment(), "device": str(device), "world_size": group.world,
        "parameters_field": sum(p.numel() for p in setup.field.parameters()),
        "parameters_total": sum(p.numel() for p in setup.model.parameters()),
        "data_source": setup.data_source, "metric_name": setup.metric_name, "details": setup.details,
        "epochs_done": 0, "finished": False,
        "history": {"epoch_time_s": [], "train_loss": [], "val_loss": [], "val_metric": [], "nfe_forward": [],
                    "nfe_backward": [], "peak_memory_mb": []},
    }
    start_epoch = 0
    if args.resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        setup.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        record = state["record"]
        start_epoch = record["epochs_done"]
        torch.set_rng_state(state["rng"])
    else:
        val_loss, val_metric = evaluate(setup, solve, device)
        record["history"]["val_loss"].append(val_loss)
        record["history"]["val_metric"].append(val_metric)
    bar = tqdm(range(start_epoch, args.epochs), desc=f"{task.NAME} {args.method} w{args.width} seed {seed}",
               unit="epoch", disable=args.no_progress or not group.main, file=sys.stderr)
    for epoch in bar:
        loader = train_loader(setup.train, args.batch_size, seed, epoch, group)
        memory = PeakMemory(device)
        memory.start()
        losses, nfe_f, nfe_b = [], [], []
        began = time.perf_counter()
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            solve.reset()
            optimizer.zero_grad(set_to_none=True)
            loss = setup.loss(model(inputs, solve), targets)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            forward, backward = solve.nfe()
            nfe_f.append(forward)
            nfe_b.append(backward)
        elapsed = time.perf_counter() - began
        train_loss = group.mean(float(torch.stack(losses).mean()))
        val_loss, val_metric = evaluate(setup, solve, device)
        record_epoch(record, epoch, args.epochs, elapsed=elapsed, train_loss=train_loss, val_loss=val_loss,
                     val_metric=val_metric, nfe_forward=nfe_f, nfe_backward=nfe_b, peak_memory_mb=memory.peak_mib())
        bar.set_postfix(loss=f"{train_loss:.3g}", val=f"{val_loss:.3g}", **{setup.metric_name: f"{val_metric:.3g}"})
        if group.main:
            write_json_atomic(path, record)
            _save_checkpoint_atomic(checkpoint, {"model": setup.model.state_dict(),
                                                 "optimizer": optimizer.state_dict(), "record": record,
                                                 "rng": torch.get_rng_state()})
    if start_epoch >= args.epochs and group.main:
        write_json_atomic(path, record)
    record["path"] = str(path)
    return record


def run_task(task, args: argparse.Namespace) -> int:
    """Every seed of the command line; prints a one-line summary per run."""
    if args.quick:
        for key, value in task.QUICK.items():
            if getattr(args, key) == task.DEFAULTS.get(key):
                setattr(args, key, value)
    for seed in range(args.seed, args.seed + args.repeats):
        record = train_run(task, args, seed)
        history = record["history"]
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{task.NAME} {args.method} width {args.width} seed {seed}: {sum(history['epoch_time_s']):.2f} s "
                  f"training, val loss {history['val_loss'][-1]:.4g}, {record['metric_name']} "
                  f"{history['val_metric'][-1]:.4g} -> {record['path']}")
            print(f"data: {record['data_source']}")
    if dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing; a rank that tears down first can abort gloo's other side
        dist.destroy_process_group()
    return 0


def task_command(task) -> tuple[Callable, Callable]:
    """(configure, main) for a task module, for the CLI registry."""

    def configure(parser: argparse.ArgumentParser) -> None:
        add_training_arguments(parser, task.DEFAULTS)
        if hasattr(task, "configure_task"):
            task.configure_task(parser)

    def main(args: argparse.Namespace) -> int:
        return run_task(task, args)

    return configure, main
