"""The continuous backsolve adjoint (torchdiffeq's ``odeint_adjoint``), with the full norm or the seminorm.

Interval by interval from the last output time, solve x = [adj_t, z, a, adj_p] backwards (see
:mod:`gqref.augmented`), then re-anchor z to the forward value and add the incoming gradient to a. The full norm
is the maximum over the blocks adj_t, z, a and each parameter block of their RMS; the seminorm (Kidger et al. 2021,
torchdiffeq's ``adjoint_options=dict(norm="seminorm")``) leaves the parameter blocks out.
"""

from __future__ import annotations

import numpy as np

from gqref.augmented import backward_dynamics
from gqref.controller import ErrorNorm
from gqref.field import VectorField
from gqref.solve import Solution, solve


def adjoint_norm(state_size: int, param_blocks: tuple[int, ...], seminorm: bool) -> ErrorNorm:
    blocks = (1, state_size, state_size, *param_blocks)
    mask = (True, True, True, *(not seminorm for _ in param_blocks))
    return ErrorNorm("mixed", blocks=blocks, mask=mask)


def adjoint_gradient(field: VectorField, forward: Solution, params: np.ndarray, dL_dy: np.ndarray, *,
                     rtol: float, atol: float, seminorm: bool, t_grad: bool,
                     param_blocks: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(dL/dy0, dL/dparams, dL/dt or None, counters) by the backsolve adjoint."""
    t, ys = forward.ts, forward.ys
    shape = ys.shape[1:]
    size = int(np.prod(shape, dtype=np.int64))
    n_params = params.size
    # adj_t is integrated whenever the field can give ∂f/∂t, as torchdiffeq does even when t needs no gradient:
    # it sits in the step control's norm, so a time-dependent field's backward steps depend on it
    dynamics = backward_dynamics(field, shape, full=True, time=t_grad or field.vjp_t is not None,
                                 at=(t[-1], ys[-1], params, dL_dy[-1]))
    norm = adjoint_norm(size, param_blocks, seminorm)
    z = slice(1, 1 + size)
    a = slice(1 + size, 1 + 2 * size)
    x = np.concatenate([[0.0], ys[-1].ravel(), dL_dy[-1].ravel(), np.zeros(n_params)])
    dL_dt = np.zeros(len(t)) if t_grad else None
    nfe = steps = 0
    for i in range(len(t) - 1, 0, -1):
        if t_grad:
            incoming = float(np.vdot(np.asarray(field.f(t[i], ys[i], params)).ravel(), dL_dy[i].ravel()))
            x[0] -= incoming
            dL_dt[i] = incoming
            nfe += 1
        back = solve(dynamics, x, [t[i], t[i - 1]], params, rtol=rtol, atol=atol, norm=norm)
        x = back.ys[-1].copy()
        x[z] = ys[i - 1].ravel()  # re-anchor to the forward solution
        x[a] += dL_dy[i - 1].ravel()
        nfe += back.stats.nfe
        steps += back.stats.n_accepted
    if t_grad:
        dL_dt[0] = x[0]
    return x[a].reshape(shape), x[1 + 2 * size:].copy(), dL_dt, {"nfe_backward": nfe, "steps_backward": steps}
