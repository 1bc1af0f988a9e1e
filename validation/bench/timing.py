"""The one timing protocol of every benchmark: interleaved rounds of warm calls, garbage collector off, medians.

A solver's first call after another's meets the cache and allocator state that one left, so each timed call
follows an untimed call of the same solver; the rounds interleave the solvers in a shuffled order so that drifts in
machine load hit all of them alike, and results are reported as medians and ratios from one run.
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm import tqdm

from validation.harness.environment import environment

QUICK_REPEATS = 3  # --quick: a smoke run, not a measurement


def start(title: str, settings: str, *, versions: bool = False) -> dict:
    """Print a benchmark's heading (its title, its settings and the platform: with the Python and package versions
    on a line of their own when ``versions``) and return :func:`environment` for its JSON record."""
    env = environment()
    print(f"## {title}\n")
    if not versions:
        print(f"{settings}; {env['platform']}\n")
        return env
    print(settings)
    print(f"{env['platform']}; Python {env['python']}, "
          + ", ".join(f"{k} {v}" for k, v in env["packages"].items()) + "\n")
    return env


def quick_repeats(repeats: int, quick: bool) -> int:
    """The rounds a run makes: at most :data:`QUICK_REPEATS` for ``--quick``."""
    return min(repeats, QUICK_REPEATS) if quick else repeats


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block (the other solvers are single-threaded too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_interleaved(solvers: dict[Any, Callable[[], Any]], repeats: int, progress: bool = True,
                     seed: int = 0) -> dict[Any, list[float]]:
    """Wall times of ``repeats`` calls of every solver: one timed call of each per round, in a shuffled order.

    Each timed call follows one untimed call of the same solver, so it measures a solver in steady state rather
    than the cache and allocator state the previous solver left (see the module docstring), while the rounds still
    interleave the solvers against drifts in machine load. As in :mod:`timeit`, the garbage collector is off
    during the calls (it collects, untimed, before each round).
    """
    times: dict[Any, list[float]] = {key: [] for key in solvers}
    keys = list(solvers)
    rng = random.Random(seed)
    sys.stdout.flush()  # keep printed output ahead of the progress bar
    gc_was_enabled = gc.isenabled()
    try:
        for _ in tqdm(range(repeats), desc="rounds", unit="round", file=sys.stderr, disable=not progress):
            gc.enable()
            gc.collect()
            gc.disable()
            rng.shuffle(keys)
            for key in keys:
                solvers[key]()  # untimed: settle caches and allocator for this solver
                start = time.perf_counter()
                solvers[key]()
                times[key].append(time.perf_counter() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    return times
