"""What every gqtorch solver family shares: the accepted step it hands to consumers, and the user's step callbacks.

A solver family (adaptive Runge–Kutta in :mod:`gqtorch.adaptive`, fixed grids and Adams in
:mod:`gqtorch.fixed_grid`) can run as a generator of :class:`AcceptedStep`: output times, event location
(:mod:`gqtorch.events`) and GQ's node placement all read the same steps and the same dense output.

Time inside the solvers is the increasing solver variable ``s = direction·t`` (a Python float); ``direction`` is
+1 for increasing output times and −1 for decreasing ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")
ADJOINT_SUFFIX = "_adjoint"


@dataclass
class AcceptedStep:
    """One accepted step from ``s0`` to ``s1`` (solver variable), with the state at both ends (flat tensors).

    ``state_at(s)`` evaluates the method's dense output for ``s0 ≤ s ≤ s1`` (a flat tensor, differentiable as the
    step is); ``f1`` is the field the method carries to the next step (for FSAL pairs f(t1, y1)). Adaptive
    Runge–Kutta steps also give ``coefficients()``, their quartic's ``(5, n)`` coefficients (see
    :mod:`gqtorch.interp`). Both read buffers the solver reuses: call them before asking for the next step (the
    result stays valid afterwards).
    """

    s0: float
    s1: float
    y0: torch.Tensor
    y1: torch.Tensor
    state_at: Callable[[float], torch.Tensor]
    f1: torch.Tensor | None = None
    coefficients: Callable[[], torch.Tensor] | None = None


def _noop(t0, y0, dt) -> None:
    return None


@dataclass(frozen=True)
class Callbacks:
    """The caller's step callbacks, read off ``func`` as torchdiffeq reads them.

    Each is called as ``callback(t0, y0, dt)`` with ``t0`` a 0-d tensor in the caller's time, ``y0`` in the caller's
    layout and ``dt`` the step (a 0-d tensor, signed like the caller's time): ``step`` before every attempted
    step, then ``accept`` or ``reject`` once its error is known (adaptive methods only).
    """

    step: Callable = _noop
    accept: Callable = _noop
    reject: Callable = _noop

    @classmethod
    def of(cls, func, *, adjoint: bool = False, method: str = "", supported: tuple[str, ...] = CALLBACK_NAMES
           ) -> Callbacks:
        """The callbacks ``func`` defines (the ``*_adjoint`` ones for a backward solve).

        A callback the method cannot call (e.g. ``callback_accept_step`` on a fixed grid) gives a warning, as in
        torchdiffeq, and is not called.
        """
        suffix = ADJOINT_SUFFIX if adjoint else ""
        found = {}
        unsupported = []
        for name in CALLBACK_NAMES:
            callback = getattr(func, name + suffix, None)
            if callback is None:
                continue
            if not callable(callback):
                from gqref.errors import InputError

                raise InputError(f"func.{name + suffix} must be callable as (t0, y0, dt), got "
                                 f"{type(callback).__name__}")
            if name in supported:
                found[name] = callback
            else:
                unsupported.append(name + suffix)
        if unsupported:
            warnings.warn(f"method {method!r} does not call the callbacks {unsupported}", stacklevel=3)
        return cls(step=found.get("callback_step", _noop), accept=found.get("callback_accept_step", _noop),
                   reject=found.get("callback_reject_step", _noop))

    @property
    def any(self) -> bool:
        return self.step is not _noop or self.accept is not _noop or self.reject is not _noop


NO_CALLBACKS = Callbacks()
