"""The training harness every task shares (docs/paper.md §2): seeded data and weights, Adam, one JSON result per run.

The task protocol. A task module provides ``NAME``, ``HELP``, ``DEFAULTS`` (the paper's settings), ``QUICK`` (a tiny
smoke configuration) and ``build(args, generator, seed) -> TaskSetup`` (``generator`` is seeded with the run's
seed); optionally ``METHODS`` and ``FLAG_HELPS`` (its gradient methods and help texts, when not the four ODE ones),
``configure_task(parser)`` for its own flags, ``variant(args)`` and ``VARIANT_KEYS`` (the flags its variant folder
names). The :class:`TaskSetup` holds the data, model, loss and metric, and optionally the task's own solve
(``solver``), evaluation (``evaluate``), extra random states to checkpoint (``states``) and end-of-run step
(``finish``): one train loop, one checkpoint/resume path and one DDP path then serve every task, the neural SDE
included. The harness adds the common flags, then
checks the whole command before training anything (values, ``--out``, the checkpoints of ``--resume``), and for each
seed: builds the task, trains with a progress bar, evaluates before training (history index 0) and after every epoch,
and after every epoch writes a checkpoint and then the result JSON atomically and durably
(:mod:`validation.harness.atomic`), so an interrupted run loses nothing finished and ``--resume`` continues from
the last epoch.

Every run's record carries ``config_hash``, a hash of the flags that change its numbers (all but ``--epochs``,
``--repeats``, ``--out``, ``--resume``, ``--threads``, ``--no-progress``, ``--data-dir`` and ``--download``; the
device counts by its type, cpu or cuda). The result is ``<out>/<task>/<variant>/w<width>/<method>/seed<k>.json``
for the command's default configuration (the paper's, or ``--quick``'s) and ``seed<k>-<hash>.json`` for any other,
so runs that differ in any such flag never share a file; ``--resume`` refuses a checkpoint of another configuration
and names the flags that differ.

Run under ``torchrun --nproc_per_node=N python -m validation <task> ...`` the training is data-parallel
(DistributedDataParallel over gloo on CPU or NCCL on GPU, a distributed sampler per epoch, the learning rate
unchanged: DDP averages the gradients, so N processes on N shards equal one process on the combined batch) and
only rank 0 writes results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm import tqdm

from gqref.rules import PAPER_C
from gqtorch.memory import PeakMemory
from validation.harness.atomic import atomic_open, read_json_object, remove_stale_temporaries, write_json_atomic
from validation.harness.cli import (
    EXPLICIT,
    PARSER_DEFAULTS,
    SEED_MAX,
    UsageError,
    apply_preset,
    check_writable_dir,
    integer_in,
    parser_defaults,
    positive_float,
    positive_int,
    seed_int,
    track_explicit,
)
from validation.harness.environment import environment
from validation.harness.methods import METHODS, Solver

DEFAULT_OUT = Path("results")
EVAL_BATCH = 500
MAX_THREADS = 1024
# Flags that do not change a run's numbers: left out of its config hash. --epochs is one because a run's first k
# epochs are the same whatever the total (no schedule), so --resume --epochs N+M extends a finished run.
NOT_HASHED = frozenset({"epochs", "repeats", "out", "resume", "threads", "no_progress", "data_dir", "download"})
# Namespace entries that are plumbing, not flags.
NOT_CONFIG = frozenset({"handler", "command", EXPLICIT, PARSER_DEFAULTS})
PATH_KEYS = ("method", "width", "seed")  # named by every result path; a task's VARIANT_KEYS add to these
CHECKPOINT_KEYS = ("model", "optimizer", "record", "rng", "states")


@dataclass
class TaskSetup:
    """What a task hands the harness. ``model(inputs, solve)`` returns predictions; ``field`` is the ODE function
    (its parameters are the ones counted as P); ``loss(pred, target)`` is the training objective (a scalar mean
    over the batch); ``metric(pred, target)`` a batch mean of the validation metric named ``metric_name``.

    Optional hooks, for tasks whose training is not one ODE solve per batch:

    - ``solver``: the ``solve`` handed to ``model`` (``reset()`` before each batch, ``nfe()`` → (forward, backward
      or None) after it); default :class:`validation.harness.methods.Solver` for ``--method``.
    - ``evaluate()``: the validation numbers, a dict with ``val_loss`` and ``val_metric`` and any others, each kept in
      the record's history under its own name; default: ``loss`` and ``metric`` over ``val`` with ``solver``.
    - ``states``: name → object with ``get_state()``/``set_state()`` (e.g. a ``torch.Generator``), checkpointed
      with the model so that ``--resume`` continues every random stream exactly.
    - ``finish(record, plan)``: run once a run is finished (e.g. write its figure).
    """

    model: torch.nn.Module
    field: torch.nn.Module
    train: TensorDataset
    val: TensorDataset
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric_name: str
    data_source: str
    details: dict[str, Any] = field(default_factory=dict)
    solver: Any = None
    evaluate: Callable[[], dict[str, float]] | None = None
    states: dict[str, Any] = field(default_factory=dict)
    finish: Callable[[dict, RunPlan], None] | None = None


def add_training_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any], *,
                           methods: tuple[str, ...] = METHODS, helps: dict[str, str] | None = None,
                           quick: dict[str, Any] | None = None) -> None:
    """The flags every training task has, with the task's paper defaults. A task with other methods passes their
    names (the default is gq where offered, else the first); ``helps`` replaces the help of named flags; ``quick``
    is the task's --quick preset, listed in the flag's help."""
    helps = helps or {}
    parser.add_argument("--method", choices=methods, default="gq" if "gq" in methods else methods[0],
                        help=helps.get("--method", "gradient method (default gq)"))
    parser.add_argument("--width", type=positive_int, default=defaults["width"],
                        help=f"hidden width of the ODE function (default {defaults['width']})")
    parser.add_argument("--seed", type=seed_int, default=0,
                        help=helps.get("--seed", f"first seed: data and initial weights (default 0; at most "
                                                 f"{SEED_MAX})"))
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs with seeds seed, seed+1, … (default 1)")
    parser.add_argument("--epochs", type=positive_int, default=defaults["epochs"],
                        help=f"training epochs (default {defaults['epochs']})")
    parser.add_argument("--lr", type=positive_float, default=defaults["lr"],
                        help=f"Adam learning rate (default {defaults['lr']})")
    parser.add_argument("--batch-size", type=positive_int, default=defaults["batch_size"],
                        help=helps.get("--batch-size", f"training batch size (default {defaults['batch_size']})"))
    parser.add_argument("--tol", type=positive_float, default=1e-3, help="dopri5 rtol = atol (default 1e-3)")
    parser.add_argument("--gtol", type=positive_float, default=PAPER_C,
                        help=f"GQ's node-rule constant C (default {PAPER_C})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (default cpu)")
    parser.add_argument("--threads", type=integer_in(1, MAX_THREADS), default=None,
                        help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"results folder, checked for writing before training starts (default {DEFAULT_OUT})")
    preset = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in (quick or {}).items())
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke run: changes the defaults only" + (f" ({preset})" if preset else "") +
                             "; flags given explicitly keep their values; some tasks also use a small data set")
    parser.add_argument("--resume", action="store_true",
                        help="continue each seed from its checkpoint; a seed without one starts at epoch 0, but a "
                             "command with no checkpoint at all, or with one of another configuration, is an error. "
                             "--epochs may be raised to extend a finished run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def result_path(out: Path, task: str, variant: str, width: int, method: str, seed: int,
                config_hash: str | None = None) -> Path:
    """``<out>/<task>/<variant>/w<width>/<method>/seed<seed>.json`` for a default configuration, else
    ``…/seed<seed>-<config_hash>.json``: one file per run."""
    name = f"seed{seed}.json" if config_hash is None else f"seed{seed}-{config_hash}.json"
    return Path(out) / task / variant / f"w{width}" / method / name


# --- configurations --------------------------------------------------------------------------------------------


def run_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """The run's flags as JSON values (paths as text), ``seed`` being this run's own seed."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in NOT_CONFIG}
    config["seed"] = seed
    return config


def _device_type(name: Any) -> str:
    try:
        return torch.device(str(name)).type
    except (RuntimeError, ValueError):
        return str(name)


def hashed_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's config that changes its numbers (the device by its type: cuda:0 and cuda:1 are alike)."""
    settings = {k: v for k, v in config.items() if k not in NOT_HASHED and k not in NOT_CONFIG}
    if "device" in settings:
        settings["device"] = _device_type(settings["device"])
    return settings


def config_hash(config: dict[str, Any]) -> str:
    """A short hash of :func:`hashed_settings`: equal exactly when every result-changing flag is equal."""
    text = json.dumps(hashed_settings(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``--flag old → new`` for every result-changing flag in which two configs differ."""
    a, b = hashed_settings(old), hashed_settings(new)
    missing = "(not set)"
    return [f"{_flag(k)} {a.get(k, missing)} → {b.get(k, missing)}" for k in sorted(a.keys() | b.keys())
            if a.get(k, missing) != b.get(k, missing)]


def is_default_configuration(task, args: argparse.Namespace, config: dict[str, Any]) -> bool:
    """Whether ``config`` is the command's default run, the paper's or --quick's, apart from the values its path
    names (method, width, seed and the task's variant flags): such a run keeps the plain name ``seed<k>.json``.

    A run without --quick whose path shows every value --quick sets there (e.g. ``--width 8``) is not, so that it
    can never share a file with the --quick run.
    """
    defaults = parser_defaults(args)
    if defaults is None:
        return False
    quick = bool(config.get("quick"))
    preset = task.QUICK if quick else {}
    named = set(PATH_KEYS) | set(getattr(task, "VARIANT_KEYS", ()))
    expected = {k: (str(v) if isinstance(v, Path) else v) for k, v in defaults.items()}
    expected.update(preset)
    expected["quick"] = quick
    for key in named - set(preset):
        expected[key] = config.get(key)
    if hashed_settings(expected) != hashed_settings(config):
        return False
    if not quick:
        shown = [k for k in task.QUICK if k in named]
        if shown and all(config.get(k) == task.QUICK[k] for k in shown):
            return False
    return True


# --- planning a command ----------------------------------------------------------------------------------------


@dataclass
class RunPlan:
    """One seed of a command: its config, where its files go, and (with --resume) its loaded checkpoint."""

    seed: int
    config: dict[str, Any]
    config_hash: str
    path: Path
    state: dict[str, Any] | None = None

    @property
    def checkpoint(self) -> Path:
        return self.path.with_suffix(".ckpt")

    @property
    def figure(self) -> Path:
        return self.path.with_suffix(".png")


def plan_runs(task, args: argparse.Namespace, *, writer: bool = True) -> list[RunPlan]:
    """Check a whole training command before anything trains, and plan its runs.

    Applies the --quick preset to the flags not given explicitly; checks the seed range, the device and that every
    result folder can be written (``writer``: the process that writes, rank 0); removes the temporaries a killed
    earlier run left; with --resume loads and checks every seed's checkpoint; without it refuses to replace a result
    of another configuration. Every problem is a :class:`UsageError`.
    """
    if args.quick:
        apply_preset(args, task.QUICK)
    last = args.seed + args.repeats - 1
    if last > SEED_MAX:
        raise UsageError(f"--seed {args.seed} --repeats {args.repeats}: the last seed would be {last}; expected "
                         f"seed + repeats − 1 ≤ {SEED_MAX}")
    resolve_device(args.device)
    variant = task.variant(args) if hasattr(task, "variant") else "default"
    plans = []
    for seed in range(args.seed, args.seed + args.repeats):
        config = run_config(args, seed)
        digest = config_hash(config)
        named = None if is_default_configuration(task, args, config) else digest
        plans.append(RunPlan(seed, config, digest, result_path(args.out, task.NAME, variant, args.width,
                                                               args.method, seed, named)))
    if writer:
        check_writable_dir(args.out, "--out")
        check_writable_dir(plans[0].path.parent, "--out", given=args.out)
        for plan in plans:
            if plan.path.is_dir():
                raise UsageError(f"--out {args.out}: the result path {plan.path} is a folder; expected a file")
            for path in (plan.path, plan.checkpoint, plan.figure):
                remove_stale_temporaries(path)
    if args.resume:
        for plan in plans:
            plan.state = load_checkpoint(plan, args)
        if all(plan.state is None for plan in plans):
            raise UsageError(_nothing_to_resume(task, args, plans))
        for plan in plans:
            if plan.state is None:
                print(f"{task.NAME}: seed {plan.seed} has no checkpoint yet ({plan.checkpoint}); it starts at "
                      f"epoch 0", file=sys.stderr)
    elif writer:
        for plan in plans:
            _refuse_other_configuration(plan, args)
    return plans


def _refuse_other_configuration(plan: RunPlan, args: argparse.Namespace) -> None:
    """A fresh run replaces a result of its own configuration (a rerun), never one of another."""
    record = read_json_object(plan.path) if plan.path.is_file() else None
    if record is None or not isinstance(record.get("config"), dict):
        return
    differences = config_differences(record["config"], plan.config)
    if differences:
        raise UsageError(f"--out {args.out}: {plan.path} holds a run of another configuration (it differs in "
                         f"{'; '.join(differences)}); move it away or choose another --out")


def load_checkpoint(plan: RunPlan, args: argparse.Namespace,
                    keys: tuple[str, ...] = CHECKPOINT_KEYS) -> dict[str, Any] | None:
    """The checkpoint of ``plan`` for --resume (None when the seed has not finished an epoch), checked: readable,
    of this harness, of this configuration, and not past ``--epochs``."""
    checkpoint = plan.checkpoint
    if not checkpoint.exists():
        record = read_json_object(plan.path) if plan.path.is_file() else None
        if record is not None and record.get("epochs_done", 0) > 0:
            raise UsageError(f"--resume: {plan.path} records {record['epochs_done']} finished epoch(s) but its "
                             f"checkpoint {checkpoint} is missing, so the run cannot continue; restore the "
                             f"checkpoint, or drop --resume to train seed {plan.seed} again from epoch 0")
        return None
    try:
        # the harness wrote this file (RNG states and the record are not plain tensors)
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception as error:  # whatever unpickling a damaged file raises, it means "damaged"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"--resume: the checkpoint {checkpoint} cannot be read ({reason}): it is truncated or "
                         f"corrupt. Delete it and {plan.path.name} to train seed {plan.seed} again from epoch 0, or "
                         f"restore it from a copy") from None
    if not (isinstance(state, dict) and all(k in state for k in keys)
            and isinstance(state["record"], dict) and isinstance(state["record"].get("epochs_done"), int)):
        raise UsageError(f"--resume: {checkpoint} is not a checkpoint of this task (expected a dict with "
                         f"{', '.join(keys)}); delete it to train seed {plan.seed} again from epoch 0")
    stored = state["record"].get("config")
    differences = config_differences(stored, plan.config) if isinstance(stored, dict) else ["(no config stored)"]
    if differences:
        raise UsageError(f"--resume: the checkpoint {checkpoint} is of another configuration: "
                         f"{'; '.join(differences)} (checkpoint → now). Resume with the checkpoint's values, or drop "
                         f"--resume to start the new configuration (it gets its own file)")
    done = state["record"]["epochs_done"]
    if done > args.epochs:
        raise UsageError(f"--epochs {args.epochs}: the checkpoint {checkpoint} has {done} epochs done already; "
                         f"expected --epochs ≥ {done} (a run cannot be shortened)")
    return state


def _nothing_to_resume(task, args: argparse.Namespace, plans: list[RunPlan]) -> str:
    """The message for --resume with no checkpoint: the nearest run of another configuration, if any, and how it
    differs, since a changed flag is the usual reason."""
    best: tuple[int, Path, list[str]] | None = None
    root = Path(args.out) / task.NAME
    seeds = {plan.seed: plan for plan in plans}
    if root.is_dir():
        for path in sorted(root.rglob("seed*.json")):
            record = read_json_object(path)
            if not record or record.get("seed") not in seeds or not isinstance(record.get("config"), dict):
                continue
            if not path.with_suffix(".ckpt").is_file():
                continue
            differences = config_differences(record["config"], seeds[record["seed"]].config)
            if differences and (best is None or len(differences) < best[0]):
                best = (len(differences), path.with_suffix(".ckpt"), differences)
    where = plans[0].checkpoint if len(plans) == 1 else f"{plans[0].checkpoint} (nor for seeds {plans[0].seed}–" \
        f"{plans[-1].seed})"
    if best is not None:
        return (f"--resume: no checkpoint of this configuration at {where}; the nearest, {best[1]}, differs in "
                f"{'; '.join(best[2])} (checkpoint → now). Pass its values to resume it, or drop --resume to start "
                f"this configuration at epoch 0")
    return (f"--resume: nothing to resume: no checkpoint at {where}. Drop --resume to start the run at epoch 0, or "
            f"check --out ({args.out})")


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` through the atomic writer."""
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch device, checked against what torch sees here."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r}: expected cpu, cuda or cuda:<index>") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name!r}: expected cpu, cuda or cuda:<index>")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: torch sees no CUDA device here; expected cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: expected an index below {torch.cuda.device_count()} (the CUDA devices "
                             f"torch sees)")
    return device


def check_data(name: str, setup: TaskSetup) -> None:
    """An empty training or validation set is the user's to fix (e.g. a data file with no images)."""
    for which, data in (("training", setup.train), ("validation", setup.val)):
        if len(data) == 0:
            raise UsageError(f"{name}: the {which} set is empty ({setup.data_source}); expected at least one example")


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
def evaluate(setup: TaskSetup, solve: Solver, device: torch.device) -> dict[str, float]:
    """The validation numbers: the task's own ``evaluate()``, else the mean loss and metric over ``val``, weighted by
    batch size."""
    if setup.evaluate is not None:
        metrics = dict(setup.evaluate())
        missing = {"val_loss", "val_metric"} - metrics.keys()
        if missing:
            raise TypeError(f"a task's evaluate() must return val_loss and val_metric; {sorted(missing)} missing")
        return metrics
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
    return {"val_loss": total_loss / count, "val_metric": total_metric / count}


def record_metrics(record: dict, metrics: dict[str, float]) -> None:
    """Append one evaluation to the history, each number under its own name."""
    for name, value in metrics.items():
        record["history"].setdefault(name, []).append(value)


def record_epoch(record: dict, epoch: int, epochs: int, *, elapsed: float, train_loss: float,
                 metrics: dict[str, float], nfe_forward: list, nfe_backward: list,
                 peak_memory_mb: float | None) -> None:
    """Append one finished epoch to a run record: NFE as means per batch (backward None where a batch had none)."""
    history = record["history"]
    history["epoch_time_s"].append(elapsed)
    history["train_loss"].append(train_loss)
    record_metrics(record, metrics)
    history["nfe_forward"].append(sum(nfe_forward) / len(nfe_forward))
    history["nfe_backward"].append(None if None in nfe_backward else sum(nfe_backward) / len(nfe_backward))
    history["peak_memory_mb"].append(peak_memory_mb)
    record["epochs_done"] = epoch + 1
    record["finished"] = epoch + 1 == epochs


def train_run(task, args: argparse.Namespace, plan: RunPlan) -> dict:
    """Train one seed of ``task`` as planned; return its result record (also written to its JSON file on rank 0)."""
    seed = plan.seed
    device = resolve_device(args.device)
    group = Distributed(device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(seed)  # initial weights: the same for every method at this seed
    setup = task.build(args, torch.Generator().manual_seed(seed), seed)
    check_data(task.NAME, setup)
    setup.model.to(device)
    model = wrap_model(setup.model, device, group)
    optimizer = torch.optim.Adam(setup.model.parameters(), lr=args.lr)
    solve = setup.solver if setup.solver is not None else Solver(args.method, args.tol, args.gtol)
    variant = task.variant(args) if hasattr(task, "variant") else "default"
    path, checkpoint = plan.path, plan.checkpoint
    record = {
        "task": task.NAME, "variant": variant, "method": args.method, "width": args.width, "seed": seed,
        "config": plan.config, "config_hash": plan.config_hash, "environment": environment(), "device": str(device),
        "world_size": group.world,
        "parameters_field": sum(p.numel() for p in setup.field.parameters()),
        "parameters_total": sum(p.numel() for p in setup.model.parameters()),
        "data_source": setup.data_source, "metric_name": setup.metric_name, "details": setup.details,
        "epochs_done": 0, "finished": False,
        "history": {"epoch_time_s": [], "train_loss": [], "val_loss": [], "val_metric": [], "nfe_forward": [],
                    "nfe_backward": [], "peak_memory_mb": []},
    }
    start_epoch = 0
    if plan.state is not None:
        state, plan.state = plan.state, None  # the plan need not keep the tensors alive
        restore_states(checkpoint, (setup.model, state["model"]), (optimizer, state["optimizer"]))
        record = resumed_record(state["record"], plan, args.epochs)
        start_epoch = record["epochs_done"]
        torch.set_rng_state(state["rng"])
        restore_generators(checkpoint, setup.states, state["states"])
    else:
        record_metrics(record, evaluate(setup, solve, device))
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
        metrics = evaluate(setup, solve, device)
        record_epoch(record, epoch, args.epochs, elapsed=elapsed, train_loss=train_loss, metrics=metrics,
                     nfe_forward=nfe_f, nfe_backward=nfe_b, peak_memory_mb=memory.peak_mib())
        bar.set_postfix(loss=f"{train_loss:.3g}", val=f"{metrics['val_loss']:.3g}",
                        **{setup.metric_name: f"{metrics['val_metric']:.3g}"})
        if group.main:
            # checkpoint first: a result JSON is never ahead of the checkpoint that can continue it
            save_checkpoint(checkpoint, {"model": setup.model.state_dict(), "optimizer": optimizer.state_dict(),
                                         "record": record, "rng": torch.get_rng_state(),
                                         "states": {name: s.get_state() for name, s in setup.states.items()}})
            write_json_atomic(path, record)
    if start_epoch >= args.epochs and group.main:
        write_json_atomic(path, record)  # resumed a finished run: the record now shows this command's config
    if record["finished"] and setup.finish is not None and group.main:
        setup.finish(record, plan)
    record["path"] = str(path)
    return record


def restore_states(checkpoint: Path, *pairs: tuple[Any, dict]) -> None:
    """``load_state_dict`` for each (module or optimizer, state); a state that does not fit is a checkpoint of
    another version of the task, which the user must remove."""
    for target, state in pairs:
        try:
            target.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UsageError(f"--resume: the checkpoint {checkpoint} does not fit this model ({reason}); it was "
                             f"written by another version of the task. Delete it to start again") from None


def restore_generators(checkpoint: Path, states: dict[str, Any], saved: Any) -> None:
    """The task's extra random states from a checkpoint; one that does not match is another version's checkpoint."""
    if not isinstance(saved, dict) or saved.keys() != states.keys():
        raise UsageError(f"--resume: the checkpoint {checkpoint} holds the random states "
                         f"{sorted(saved) if isinstance(saved, dict) else saved!r}, expected {sorted(states)}; it was "
                         f"written by another version of the task. Delete it to start again")
    for name, target in states.items():
        target.set_state(saved[name])


def resumed_record(record: dict, plan: RunPlan, epochs: int) -> dict:
    """The checkpoint's record brought up to this command: its config (equal in every hashed flag, but e.g.
    --epochs or --out may have changed) and whether it is finished at this --epochs."""
    record["config"] = plan.config
    record["config_hash"] = plan.config_hash
    record["finished"] = record["epochs_done"] >= epochs
    return record


def run_records(task, args: argparse.Namespace) -> list[dict]:
    """Every seed of the command, checked first as a whole (:func:`plan_runs`); the records, in seed order."""
    writer = int(os.environ.get("RANK", "0")) == 0
    plans = plan_runs(task, args, writer=writer)
    records = []
    for plan in plans:
        with torch.random.fork_rng(devices=[]):  # each run seeds torch's CPU RNG; the caller's state is kept
            records.append(train_run(task, args, plan))
    return records


def run_task(task, args: argparse.Namespace) -> int:
    """Every seed of the command line; prints a one-line summary per run."""
    for record in run_records(task, args):
        history = record["history"]
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"{task.NAME} {args.method} width {args.width} seed {record['seed']}: "
                  f"{sum(history['epoch_time_s']):.2f} s training, val loss {history['val_loss'][-1]:.4g}, "
                  f"{record['metric_name']} {history['val_metric'][-1]:.4g} -> {record['path']}")
            print(f"data: {record['data_source']}")
    if dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing; a rank that tears down first can abort gloo's other side
        dist.destroy_process_group()
    return 0


def task_command(task) -> tuple[Callable, Callable]:
    """(configure, main) for a task module, for the CLI registry."""

    def configure(parser: argparse.ArgumentParser) -> None:
        add_training_arguments(parser, task.DEFAULTS, methods=getattr(task, "METHODS", METHODS),
                               helps=getattr(task, "FLAG_HELPS", None), quick=task.QUICK)
        if hasattr(task, "configure_task"):
            task.configure_task(parser)
        track_explicit(parser)  # last: it wraps every flag added above

    def main(args: argparse.Namespace) -> int:
        return run_task(task, args)

    return configure, main
