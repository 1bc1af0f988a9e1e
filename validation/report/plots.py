"""The report's figures (matplotlib, Agg backend, no display needed), each saved atomically as a PNG.

``time_vs_width``: total training time against hidden width, mean ± std error bars, one line per method.
``loss_vs_time``: validation loss against cumulative training wall clock (the pre-training evaluation at 0), one
colour per method; the last seed bold (as the paper plots one run), the other seeds faint.
``toy_errors``: the toy experiment's relative errors against T, one panel per quantity, float32 dashed and float64
solid.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works without a display and in worker processes

import matplotlib.pyplot as plt
import numpy as np

from validation.harness.atomic import atomic_open

METHOD_COLOURS = {"direct": "tab:blue", "adjoint": "tab:orange", "seminorm": "tab:green", "gq": "tab:red",
                  "gq-auto": "tab:pink",
                  "mali": "tab:purple", "aca": "tab:brown", "sde-direct": "tab:cyan", "sde-adjoint": "tab:olive"}
DTYPE_STYLES = {"float32": "--", "float64": "-"}


def _spans_decades(values: Sequence[float]) -> bool:
    """Positive values spanning more than a factor 10: worth a log axis (a narrower range reads better linear)."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    return bool(values) and min(values) > 0 and max(values) > 10 * min(values)


def method_colour(method: str) -> str:
    """A fixed colour per method, so every figure of the report reads the same."""
    return METHOD_COLOURS.get(method, "tab:gray")


def save_figure_atomic(fig: plt.Figure, path: Path, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG through the atomic writer (:mod:`validation.harness.atomic`), then close it.

    The format is given explicitly because the temporary name does not end in .png.
    """
    path = Path(path)
    try:
        with atomic_open(path, "wb") as handle:
            fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _finish(fig: plt.Figure, ax: plt.Axes, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    """Label a one-axes figure, grid and legend it, and save it (:func:`save_figure_atomic`)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return save_figure_atomic(fig, path)


def time_vs_width(series: dict[str, tuple[Sequence[int], Sequence[float], Sequence[float]]], title: str,
                  path: Path) -> Path:
    """``series``: method → (widths, mean times, std times). Log–log axes: widths and times span decades."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method, (widths, means, stds) in series.items():
        ax.errorbar(widths, means, yerr=stds, marker="o", capsize=3, label=method, color=method_colour(method))
    if _spans_decades([w for widths, _, _ in series.values() for w in widths]):
        ax.set_xscale("log")
    if _spans_decades([m for _, means, _ in series.values() for m in means]):
        ax.set_yscale("log")
    return _finish(fig, ax, "hidden width", "total training time (s)", title, path)


def loss_vs_time(curves: dict[str, list[tuple[int, Sequence[float], Sequence[float]]]], title: str,
                 path: Path) -> Path:
    """``curves``: method → [(seed, cumulative times starting at 0, validation losses)], seeds ascending."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    every_loss = []
    for method, runs in curves.items():
        for k, (seed, times, losses) in enumerate(runs):
            last = k == len(runs) - 1
            ax.plot(times, losses, color=method_colour(method), alpha=1.0 if last else 0.3,
                    linewidth=1.8 if last else 0.8, marker="o" if last else None, markersize=3,
                    label=f"{method} (seed {seed})" if last else None)
            every_loss += list(losses)
    if _spans_decades(every_loss):
        ax.set_yscale("log")
    return _finish(fig, ax, "training wall clock (s)", "validation loss", title, path)


def toy_errors(toy: dict, path: Path) -> Path:
    """The toy-gradient JSON's relative errors against T: a panel per quantity, log scale."""
    quantities = toy["quantities"]
    labels = {"L": "L", "dL_dz0": "dL/dz0", "dL_da": "dL/da", "dL_dT": "dL/dT"}
    cols = 2
    rows = (len(quantities) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.6 * rows), sharex=True, squeeze=False)
    T = np.asarray(toy["T"], dtype=float)
    for ax, quantity in zip(axes.flat, quantities):
        for run in toy["runs"]:
            errors = np.array([np.nan if v is None else v for v in run["rel_error"][quantity]], dtype=float)
            errors[errors <= 0] = np.nan  # an exact hit has no place on a log axis
            ax.plot(T, errors, DTYPE_STYLES.get(run["dtype"], ":"), color=method_colour(run["method"]),
                    linewidth=1.0, label=f"{run['method']} {run['dtype']}")
        ax.set_yscale("log")
        ax.set_title(f"relative error of {labels.get(quantity, quantity)}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(quantities):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("T")
    axes.flat[0].legend(fontsize=7, ncol=2)
    config = toy.get("config", {})
    fig.suptitle(f"toy gradient (dz/dt = a·z, L = z(T)²): rtol {config.get('rtol', '?')}, "
                 f"atol {config.get('atol', '?')}, C {config.get('gtol', '?')}; float32 dashed, float64 solid")
    return save_figure_atomic(fig, path)
