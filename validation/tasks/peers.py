"""The paper's two extra baselines for the toy experiment, MALI and ACA, through TorchDiffEqPack (optional).

TorchDiffEqPack is installed with ``pip install --no-deps TorchDiffEqPack==1.0.1`` (the Makefile does; it needs
only torch). Where it is missing, :func:`available` says so and the toy experiment reports the two methods as
unavailable rather than failing. Settings are the paper's (docs/paper.md §4): MALI is ``odesolve_adjoint_sym12`` with
``sym12async`` and cubic interpolation, ACA is ``odesolve_adjoint`` with ``Dopri5`` and polynomial interpolation,
both with ``h=None`` and ``neval_max=1e6``. TorchDiffEqPack integrates to a single end time given as a number, so
these methods give no gradient with respect to T.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch

PEERS = ("mali", "aca")
NEVAL_MAX = 1_000_000
SETTINGS = {
    "mali": {"function": "odesolve_adjoint_sym12", "method": "sym12async", "interpolation_method": "cubic"},
    "aca": {"function": "odesolve_adjoint", "method": "Dopri5", "interpolation_method": "polynomial"},
}


def available() -> bool:
    """Whether TorchDiffEqPack can be imported here."""
    return importlib.util.find_spec("TorchDiffEqPack") is not None


def solve_to_end(peer: str, func: Callable, y0: torch.Tensor, t0: float, t1: float, rtol: float,
                 atol: float) -> torch.Tensor:
    """z(t1) by the peer's adjoint solver; backprop through it gives the peer's gradients (y0, func's params)."""
    if peer not in SETTINGS:
        raise ValueError(f"peer must be one of {list(PEERS)}, got {peer!r}")
    import TorchDiffEqPack

    settings = SETTINGS[peer]
    options = {"t0": t0, "t1": t1, "rtol": rtol, "atol": atol, "method": settings["method"],
               "interpolation_method": settings["interpolation_method"], "h": None, "t_eval": None,
               "neval_max": NEVAL_MAX, "print_neval": False}
    return getattr(TorchDiffEqPack, settings["function"])(func, y0, options=options)
