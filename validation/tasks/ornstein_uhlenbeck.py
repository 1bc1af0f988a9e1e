"""Ornstein–Uhlenbeck (docs/paper.md §3.5): a neural SDE fitted to a time-dependent OU process by moment-matched KL.

Data: dY = (μt − θY) dt + (σ + φt) dW with μ = 0.2, θ = 0.1, σ = 0.6, φ = 0.15 on t ∈ [0, 10] at 101 equally spaced
times; 200 training initial conditions y0 ~ U(−3, 3) with 45 paths each (NumPy seed 982846947), 20 validation ICs ×
45 paths (seed 535617672), each set from its own ``numpy.random.Generator`` (never the global RNG). The paths are
sampled **exactly**: the SDE is linear with additive noise, so Y(t + Δ) given Y(t) is Gaussian with a closed-form
mean and variance (:func:`ou_transition`); stepping with those has no discretisation error at any Δ (so ``--quick``'s
coarse grids are exact too), where Euler–Maruyama would need substeps. Additive noise makes Itô and Stratonovich the
same process, so the data are the Stratonovich SDE the model learns.

Model: drift f(t, x) = MLP([x, t]) and diffusion g(t, x) = MLP([x, t]), each 2 → W → W → 1 with Softplus (no
positivity constraint on g, as in the paper); P = 2(W² + 5W + 1). A batch of B ICs × M paths is flattened into B·M
independent 1-D trajectories (state (B·M, 1)), each with its own noise draw, started at the data's y0.

Methods (``--method``):
- ``gq``: the Wong–Zakai ODE dx/dt = f + g·ξ_N(t) (:class:`gqtorch.WongZakaiODE`, N = ``--ncosines`` cosines on
  [0, 10], a fresh draw per iteration from a seeded generator) solved by dopri5 and differentiated by GQ
  (``gqtorch.odeint_adjoint_gq``, rtol = atol = ``--tol``, C = ``--gtol``); NFE from the solver's statistics.
- ``sde-direct``: torchsde reversible Heun at fixed ``--sde-dt`` (0.01), backprop through the solver.
- ``sde-adjoint``: the same with torchsde's ``adjoint_reversible_heun`` adjoint.
For the SDE methods NFE counts drift-network evaluations (the diffusion network is evaluated as often); direct
backprop evaluates no network in the backward pass, so its backward NFE is None, as for the ODE tasks' ``direct``.

Loss (§5): for each IC and time, the mean and unbiased std (+1e-9) of the model's M sample paths and of the data's
define two Gaussians; the loss is KL(model ‖ data) averaged over ICs and times (t = 0 included, where it is 0).
Validation, for **every** method, samples the trained drift and diffusion with torchsde reversible Heun (``--sde-dt``)
from a fixed Brownian-motion seed, so the curves compare models, not noise draws: ``val_loss`` and ``val_metric``
are both that test KL (``metric_name`` "kl"), and ``history["val_logp"]`` holds the paper's other number, the mean
log-likelihood of the data samples under the model's moment-matched Gaussians.

The task plugs into the harness's task protocol (:mod:`validation.harness.training`): its ``build`` hands over the
data, the model, this solve and NFE count (:class:`OUSolver`), the evaluation above, the two random streams to
checkpoint, and the figure. So it shares the train loop, ``--resume``, DDP and the result layout
``<out>/ornstein-uhlenbeck/n<ncosines>/w<width>/<method>/seed<k>.json`` (written atomically after every epoch, with
a checkpoint), and at the end writes a figure ``seed<k>.png`` beside it: sample paths and marginals for three
validation ICs against the exact OU marginals. Weights are initialised from the run seed inside
``torch.random.fork_rng``; the NumPy and Python global RNGs are never used.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from gqtorch.sde import SmoothNoise, WongZakaiODE, sdeint
from validation.harness.atomic import atomic_open
from validation.harness.cli import integer_at_least, positive_float, positive_int
from validation.harness.methods import GQ_METHODS, Solver
from validation.harness.training import (
    resolve_device,
)
from validation.tasks.mlp import softplus_mlp

NAME = "ornstein-uhlenbeck"
HELP = "ornstein-uhlenbeck: a neural SDE fitted to a time-dependent OU process (docs/paper.md §3.5), moment-matched KL"
METHODS = ("gq", "gq-auto", "sde-direct", "sde-adjoint")  # gq-auto: the library's default GQ rule
DEFAULTS = {"width": 20, "epochs": 100, "lr": 0.001, "batch_size": 40, "train_ics": 200, "val_ics": 20, "paths": 45,
            "times": 101, "sde_dt": 0.01}
# --quick: a tiny smoke run; the coarser SDE step keeps the SDE methods' 2 epochs to seconds.
QUICK = {"width": 8, "epochs": 2, "batch_size": 2, "train_ics": 4, "val_ics": 3, "paths": 8, "times": 11,
         "sde_dt": 0.1}

MU, THETA, SIGMA, PHI = 0.2, 0.1, 0.6, 0.15
T_END = 10.0
Y0_RANGE = 3.0
TRAIN_SEED, VAL_SEED = 982846947, 535617672
STD_EPS = 1e-9  # added to every std, as in the paper's loss
DEFAULT_NCOSINES = 10
# Per-run seeds of the three random streams, offset from the run seed so that they never coincide.
NOISE_SALT, BROWNIAN_SALT, EVAL_SALT = 1, 2, 3
PLOT_ICS, PLOT_PATHS, PLOT_TIME_FRACTIONS = 3, 30, (0.03, 0.5, 1.0)  # the paper's figure: indices 3, 50, 100 of 101
VARIANT_KEYS = ("ncosines",)  # the flags variant() names
CHECKPOINT_KEYS = ("model", "optimizer", "record", "generators")


# --- data --------------------------------------------------------------------------------------------------------


def ou_transition(t: np.ndarray | float, dt: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(decay, shift, variance) with Y(t + dt) | Y(t) = y ~ N(decay·y + shift, variance), exactly.

    Y(t + Δ) = e^{−θΔ}Y(t) + ∫_0^Δ e^{−θr}[μ(t + Δ − r) dr + (σ + φ(t + Δ − r)) dW]; with A = ∫_0^Δ e^{−θr} dr and
    B = ∫_0^Δ r e^{−θr} dr the shift is μ((t + Δ)A − B); with a = σ + φ(t + Δ), k = 2θ and I_j = ∫_0^Δ r^j e^{−kr} dr
    the variance is a²I_0 − 2aφI_1 + φ²I_2 (Itô isometry). From t = 0 with Δ = t it is the marginal given y0.
    """
    t, dt = np.asarray(t, dtype=np.float64), np.asarray(dt, dtype=np.float64)
    decay = np.exp(-THETA * dt)
    x = THETA * dt
    a_int = -np.expm1(-x) / THETA
    b_int = (-np.expm1(-x) - x * np.exp(-x)) / THETA**2
    shift = MU * ((t + dt) * a_int - b_int)
    k = 2.0 * THETA
    y = k * dt
    i0 = -np.expm1(-y) / k
    i1 = (-np.expm1(-y) - y * np.exp(-y)) / k**2
    i2 = (2.0 * -np.expm1(-y) - np.exp(-y) * (y * y + 2.0 * y)) / k**3
    a = SIGMA + PHI * (t + dt)
    variance = a * a * i0 - 2.0 * a * PHI * i1 + PHI * PHI * i2
    return decay, shift, variance


def ou_marginal(y0: np.ndarray | float, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance) of Y(t) given Y(0) = y0: the closed-form marginal the plots compare against."""
    decay, shift, variance = ou_transition(0.0, t)
    return decay * np.asarray(y0, dtype=np.float64) + shift, variance


def ou_times(n_times: int) -> np.ndarray:
    """``n_times`` equally spaced times on [0, 10] (101 gives Δt = 0.1)."""
    return np.linspace(0.0, T_END, n_times)


def simulate_ou(y0: np.ndarray, n_paths: int, times: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exact OU paths, shape (len(y0), n_paths, len(times)), from each y0 at times[0] through the Gaussian
    transitions; the normals come from ``rng`` one time step (all ICs × paths) at a time."""
    y0 = np.asarray(y0, dtype=np.float64)
    paths = np.empty((len(y0), n_paths, len(times)))
    paths[:, :, 0] = y0[:, None]
    for k in range(len(times) - 1):
        decay, shift, variance = ou_transition(times[k], times[k + 1] - times[k])
        paths[:, :, k + 1] = decay * paths[:, :, k] + shift + math.sqrt(variance) * rng.standard_normal(
            (len(y0), n_paths))
    return paths


def ou_data(n_ics: int, n_paths: int, times: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(y0 of shape (n_ics,), paths of shape (n_ics, n_paths, len(times))) from ``numpy.random.default_rng(seed)``:
    first the ICs ~ U(−3, 3), then the paths."""
    rng = np.random.default_rng(seed)
    y0 = rng.uniform(-Y0_RANGE, Y0_RANGE, n_ics)
    return y0, simulate_ou(y0, n_paths, times, rng)


# --- loss --------------------------------------------------------------------------------------------------------


def gaussian_kl(mean_p: torch.Tensor, std_p: torch.Tensor, mean_q: torch.Tensor, std_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, std_p²) ‖ N(mean_q, std_q²)), elementwise."""
    return torch.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2.0 * std_q**2) - 0.5


def sample_moments(samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased std + 1e-9) over dim 1 (the paths) of (ICs, paths, times) samples, in float64.

    Float64 because at t = 0 every path sits exactly at y0: a float32 mean of M copies can miss y0 by an ulp, which
    gives a spurious std ~1e-7 against the 1e-9 floor and a KL in the thousands; in float64 the mean of M copies of
    a float32 number is exact, so the std there is exactly the floor for model and data alike.
    """
    samples = samples.to(torch.float64)
    return samples.mean(dim=1), samples.std(dim=1) + STD_EPS


def moment_kl(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The moment-matched Gaussian KL (§5): KL(model ‖ data) per IC and time over the sample paths, averaged.

    ``pred`` and ``target`` are (ICs, paths, times); their numbers of paths may differ."""
    mean_p, std_p = sample_moments(pred)
    mean_q, std_q = sample_moments(target)
    return gaussian_kl(mean_p, std_p, mean_q, std_q).mean()


def sample_logp(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean log-density of the data samples under the model's moment-matched Gaussians (the paper's metric)."""
    mean_p, std_p = sample_moments(pred)
    z = (target.to(torch.float64) - mean_p[:, None]) / std_p[:, None]
    return (-0.5 * z**2 - torch.log(std_p[:, None]) - 0.5 * math.log(2.0 * math.pi)).mean()


# --- model -------------------------------------------------------------------------------------------------------


class TimeMLP(torch.nn.Module):
    """(t, x) ↦ MLP([x, t]), 2 → W → W → 1 with Softplus; the drift and the diffusion each are one of these.
    Pure tensor code in t and x (no Python branching on values), so GQ's vmapped node evaluations work; ``calls``
    counts evaluations (the SDE methods' NFE)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = softplus_mlp(2, width, 1)
        self.calls = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        # the solvers keep time in float64 (gqtorch) or the state's dtype (torchsde): cast to the state's
        time = torch.as_tensor(t, device=x.device).to(x.dtype).expand(*x.shape[:-1], 1)
        return self.net(torch.cat([x, time], dim=-1))


class OUModel(torch.nn.Module):
    """The neural SDE of one run: ``forward(y0, solve)`` maps ICs (B,) to sample paths (B, M, K) by the training
    method; :meth:`sample` draws paths with torchsde reversible Heun whatever the method (validation).

    Random streams are its own: ``noise_seed`` seeds the smooth noise's generator (GQ), ``brownian_seed`` a generator
    that draws one torchsde Brownian-motion entropy per training iteration (SDE methods)."""

    def __init__(self, width: int, method: str, n_cosines: int, n_paths: int, times: torch.Tensor, sde_dt: float,
                 noise_seed: int, brownian_seed: int, device: torch.device | str = "cpu"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        self.method, self.n_paths, self.sde_dt = method, n_paths, sde_dt
        device = torch.device(device)
        self.register_buffer("times", times.to(torch.float64), persistent=False)
        noise_generator = torch.Generator(device=device).manual_seed(noise_seed)
        noise = SmoothNoise(n_cosines, float(times[0]), float(times[-1]), (1, 1), generator=noise_generator,
                            dtype=torch.float32, device=device)
        self.func = WongZakaiODE(TimeMLP(width), TimeMLP(width), noise)
        self.brownian_generator = torch.Generator().manual_seed(brownian_seed)
        self.calls_after_forward = 0

    @property
    def noise(self) -> SmoothNoise:
        return self.func.noise

    def _start(self, y0: torch.Tensor) -> torch.Tensor:
        """(B,) ICs → (B·M, 1) trajectory starts, path index fastest."""
        return y0.repeat_interleave(self.n_paths).unsqueeze(-1)

    def _unflatten(self, ys: torch.Tensor, n_ics: int) -> torch.Tensor:
        """(K, B·M, 1) solver output → (B, M, K)."""
        return ys[..., 0].T.reshape(n_ics, self.n_paths, ys.shape[0])

    def next_entropy(self) -> int:
        return int(torch.randint(2**31 - 1, (), generator=self.brownian_generator))

    def forward(self, y0: torch.Tensor, solve: Solver | None = None) -> torch.Tensor:
        x0 = self._start(y0)
        if self.method in GQ_METHODS:
            self.noise.resample(shape=x0.shape)  # one new path per trajectory, kept for this forward + backward
            ys = solve(self.func, x0, self.times)
        else:
            ys = sdeint(self.func.sde(), x0, self.times.to(x0.dtype), dt=self.sde_dt, entropy=self.next_entropy(),
                        adjoint=self.method == "sde-adjoint")
        self.calls_after_forward = self.evaluations()  # where an SDE method's backward count starts
        return self._unflatten(ys, len(y0))

    @torch.no_grad()
    def sample(self, y0: torch.Tensor, entropy: int) -> torch.Tensor:
        """(B, M, K) paths of the trained SDE by torchsde reversible Heun from the Brownian seed ``entropy``."""
        x0 = self._start(y0)
        ys = sdeint(self.func.sde(), x0, self.times.to(x0.dtype), dt=self.sde_dt, entropy=entropy)
        return self._unflatten(ys, len(y0))

    def evaluations(self) -> int:
        """Drift evaluations since construction (the diffusion's count is the same for the SDE methods)."""
        return self.func.drift.calls


def field_parameters(width: int) -> int:
    """P = 2(W² + 5W + 1): drift and diffusion MLPs."""
    return 2 * (width * width + 5 * width + 1)


# --- command line ------------------------------------------------------------------------------------------------


non_negative_int = integer_at_least(0)


at_least_two = integer_at_least(2)


FLAG_HELPS = {
    "--method": "gq (Wong–Zakai ODE, GQ gradients by the paper's rule), gq-auto (the same, the library's default "
                "rule), sde-direct or sde-adjoint (torchsde reversible Heun); default gq",
    "--seed": "first seed: initial weights and the runs' noise; the data have their own fixed seeds (default 0)",
    "--batch-size": f"initial conditions per batch, each with all its paths (default {DEFAULTS['batch_size']})",
}


def configure_task(parser: argparse.ArgumentParser) -> None:
    """The OU flags, beside the harness's."""
    parser.add_argument("--ncosines", type=non_negative_int, default=DEFAULT_NCOSINES,
                        help=f"cosine terms N of the Wong–Zakai noise, gq only (default {DEFAULT_NCOSINES})")
    parser.add_argument("--sde-dt", type=positive_float, default=DEFAULTS["sde_dt"],
                        help=f"reversible Heun step, SDE methods and validation (default {DEFAULTS['sde_dt']})")
    parser.add_argument("--train-ics", type=positive_int, default=DEFAULTS["train_ics"],
                        help=f"training initial conditions (default {DEFAULTS['train_ics']})")
    parser.add_argument("--val-ics", type=positive_int, default=DEFAULTS["val_ics"],
                        help=f"validation initial conditions (default {DEFAULTS['val_ics']})")
    parser.add_argument("--paths", type=at_least_two, default=DEFAULTS["paths"],
                        help=f"sample paths per initial condition, data and model (default {DEFAULTS['paths']})")
    parser.add_argument("--times", type=at_least_two, default=DEFAULTS["times"],
                        help=f"equally spaced times on [0, {T_END:g}] (default {DEFAULTS['times']})")


def variant(args: argparse.Namespace) -> str:
    return f"n{args.ncosines}"


def _dataset(n_ics: int, n_paths: int, times: np.ndarray, seed: int) -> TensorDataset:
    y0, paths = ou_data(n_ics, n_paths, times, seed)
    return TensorDataset(torch.as_tensor(y0, dtype=torch.float32), torch.as_tensor(paths, dtype=torch.float32))


class OUSolver:
    """The harness's ``solve`` for this task: GQ's for ``gq`` (its solver statistics give the NFE), and for the SDE
    methods a counter of drift-network evaluations, split at the end of the model's forward pass (torchsde solves
    inside the model; direct backprop evaluates no network backward, so its backward NFE is None)."""

    def __init__(self, model: OUModel, tol: float, gtol: float):
        self.model, self.gq = model, Solver(model.method if model.method in GQ_METHODS else "gq", tol, gtol)
        self.start = 0

    def __call__(self, func, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.gq(func, y0, t)

    def reset(self) -> None:
        self.gq.reset()
        self.start = self.model.evaluations()

    def nfe(self) -> tuple[int, int | None]:
        if self.model.method in GQ_METHODS:
            return self.gq.nfe()
        forward = self.model.calls_after_forward - self.start
        backward = self.model.evaluations() - self.model.calls_after_forward
        return forward, (backward if self.model.method == "sde-adjoint" else None)


class _Evaluation:
    """The test KL and log-likelihood on the whole validation set, sampled by torchsde reversible Heun from one fixed
    Brownian seed for every method and epoch (so the curves compare models, not noise draws); keeps the last samples
    for the figure."""

    def __init__(self, model: OUModel, val: TensorDataset, entropy: int):
        self.model, self.val, self.entropy = model, val, entropy
        self.samples: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        y0, target = (x.to(self.model.times.device) for x in self.val.tensors)
        self.samples = self.model.sample(y0, self.entropy)
        kl = float(moment_kl(self.samples, target))
        return {"val_loss": kl, "val_metric": kl, "val_logp": float(sample_logp(self.samples, target))}


def build(args: argparse.Namespace, generator: torch.Generator, seed: int):
    """The task for the harness (:mod:`validation.harness.training`): data, the neural SDE, its solve, evaluation,
    random streams and figure."""
    from validation.harness.training import TaskSetup

    device = resolve_device(args.device)
    times = ou_times(args.times)
    train = _dataset(args.train_ics, args.paths, times, TRAIN_SEED)
    val = _dataset(args.val_ics, args.paths, times, VAL_SEED)
    with torch.random.fork_rng(devices=[]):  # the run's weights from its seed, the global RNG left as it was
        torch.manual_seed(seed)
        model = OUModel(args.width, args.method, args.ncosines, args.paths, torch.as_tensor(times), args.sde_dt,
                        noise_seed=1000 * seed + NOISE_SALT, brownian_seed=1000 * seed + BROWNIAN_SALT,
                        device=device)
    eval_entropy = 1000 * seed + EVAL_SALT
    evaluation = _Evaluation(model, val, eval_entropy)

    def finish(record: dict, plan) -> None:
        if evaluation.samples is None:  # resumed a finished run: sample again for the figure
            evaluation()
        plot_solutions(plan.figure, times, *(t.cpu().numpy() for t in val.tensors), evaluation.samples.cpu().numpy(),
                       title=f"{NAME} {args.method} W={args.width} N={args.ncosines} seed {seed}: test KL "
                             f"{record['history']['val_metric'][-1]:.3g}")
        record["figure"] = str(plan.figure)

    details = {
        "ou": {"mu": MU, "theta": THETA, "sigma": SIGMA, "phi": PHI, "t_end": T_END, "y0_range": Y0_RANGE},
        "simulation": "exact Gaussian transitions of the linear SDE (no discretisation error)",
        "seeds": {"train": TRAIN_SEED, "val": VAL_SEED},
        "train_ics": args.train_ics, "val_ics": args.val_ics, "paths": args.paths, "times": args.times,
        "ncosines": args.ncosines if args.method in GQ_METHODS else None, "sde_dt": args.sde_dt,
        "evaluation": f"torchsde reversible Heun, dt {args.sde_dt}, fixed Brownian entropy {eval_entropy}, "
                      "for every method",
        "nfe": "gq: dopri5 solver statistics; sde-*: drift-network evaluations per batch",
    }
    return TaskSetup(
        model=model, field=model.func, train=train, val=val, loss=moment_kl, metric=moment_kl, metric_name="kl",
        data_source=f"generated: time-dependent OU, {args.train_ics} training and {args.val_ics} validation ICs × "
                    f"{args.paths} paths at {args.times} times on [0, {T_END:g}], exact transitions from NumPy seeds "
                    f"{TRAIN_SEED} / {VAL_SEED}",
        details=details, solver=OUSolver(model, args.tol, args.gtol), evaluate=evaluation,
        states={"noise": model.noise.generator, "brownian": model.brownian_generator}, finish=finish)


def _command():
    from validation.harness.training import task_command

    return task_command(sys.modules[__name__])


configure, main = _command()


# --- figure ------------------------------------------------------------------------------------------------------


def plot_solutions(path: Path, times: np.ndarray, y0: np.ndarray, data: np.ndarray, samples: np.ndarray,
                   title: str = "") -> None:
    """Sample paths and marginals (at the paper's time fractions) of model and data for the first three validation
    ICs, with the exact OU marginal; written atomically as PNG. Uses the Agg canvas directly, not pyplot's state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    n_ics = min(PLOT_ICS, len(y0))
    indices = sorted({max(1, round(f * (len(times) - 1))) for f in PLOT_TIME_FRACTIONS})
    fig = Figure(figsize=(3.0 * (1 + len(indices)), 2.3 * n_ics), dpi=72)
    # fixed margins: constrained layout would cost seconds of tick measuring per figure
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.08, top=0.9, wspace=0.25, hspace=0.3)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_ics, 1 + len(indices), squeeze=False)
    for row in range(n_ics):
        mean, var = ou_marginal(y0[row], times)
        ax = axes[row, 0]
        ax.plot(times, data[row, :PLOT_PATHS].T, color="0.6", lw=0.5, alpha=0.6)
        ax.plot(times, samples[row, :PLOT_PATHS].T, color="C0", lw=0.5, alpha=0.6)
        ax.plot(times, mean, "k-", lw=1.2)
        ax.plot(times, mean - 2 * np.sqrt(var), "k--", lw=0.8)
        ax.plot(times, mean + 2 * np.sqrt(var), "k--", lw=0.8)
        ax.set_ylabel(f"y (y0 = {y0[row]:.2f})")
        if row == 0:
            ax.set_title("paths: data grey, model blue")
        for col, k in enumerate(indices, start=1):
            ax = axes[row, col]
            m, s = mean[k], math.sqrt(var[k])
            grid = np.linspace(m - 4 * s, m + 4 * s, 200)
            both = np.concatenate([data[row, :, k], samples[row, :, k], grid[[0, -1]]])
            bins = np.linspace(both.min(), both.max(), 25)  # shared bins, so the two histograms compare
            ax.hist(data[row, :, k], bins=bins, density=True, histtype="stepfilled", color="0.6", alpha=0.6)
            ax.hist(samples[row, :, k], bins=bins, density=True, histtype="stepfilled", color="C0", alpha=0.5)
            ax.plot(grid, np.exp(-0.5 * ((grid - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)), "k-", lw=1.2)
            mp, sp = samples[row, :, k].mean(), samples[row, :, k].std(ddof=1) + STD_EPS
            ax.plot(grid, np.exp(-0.5 * ((grid - mp) / sp) ** 2) / (sp * math.sqrt(2 * math.pi)), "C0-", lw=1.0)
            if row == 0:
                ax.set_title(f"t = {times[k]:.1f} (black: exact)")
    for ax in axes[-1]:
        ax.set_xlabel("t" if ax is axes[-1, 0] else "y")
    if title:
        fig.suptitle(title, fontsize=9)
    # a 64-colour palette PNG: a third of the size of the RGBA one, with no visible loss for line plots
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB").quantize(colors=64)
    with atomic_open(Path(path), "wb") as handle:
        image.save(handle, format="PNG", optimize=True)
