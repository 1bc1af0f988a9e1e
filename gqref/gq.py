"""The GQ gradient (Norcliffe & Deisenroth 2023): backward [z, a] only, parameter gradient by Gauß–Legendre sums.

Per interval [t_{i−1}, t_i], from the last: solve [z, a] backwards with the output times t_i, the n_i nodes
(from t_i towards t_{i−1}) and t_{i−1}. The solver never cuts a step to land on a node: each node is read from the
dense output of the step that contains it. At each node add W_j·aᵀ∂f/∂θ (and W_j·a·∂f/∂t); at t_{i−1} re-anchor z
to the forward value and add the incoming gradient to a. The backward step control uses max(rms(z), rms(a)); the
parameters never enter it.
"""

from __future__ import annotations

import numpy as np

from gqref.augmented import backward_dynamics, require_vjps
from gqref.controller import ErrorNorm
from gqref.field import VectorField
from gqref.quadrature import gauss_legendre, node_count
from gqref.solve import Solution, solve


def gq_gradient(field: VectorField, forward: Solution, params: np.ndarray, dL_dy: np.ndarray, *,
                rtol: float, atol: float, gtol: float, max_nodes: int,
                t_grad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(dL/dy0, dL/dparams, dL/dt or None, counters) by GQ."""
    require_vjps(field, ("vjp_y", "vjp_p") + (("vjp_t",) if t_grad else ()))
    t, ys = forward.ts, forward.ys
    shape = ys.shape[1:]
    size = int(np.prod(shape, dtype=np.int64))
    dynamics = backward_dynamics(field, shape, full=False)
    norm = ErrorNorm("mixed", blocks=(size, size))
    state = np.concatenate([ys[-1].ravel(), dL_dy[-1].ravel()])
    dL_dparams = np.zeros(params.size)
    dL_dt = np.zeros(len(t)) if t_grad else None
    dL_dt0 = 0.0
    nfe = steps = 0
    nodes_used = []
    for i in range(len(t) - 1, 0, -1):
        if t_grad:
            incoming = float(np.vdot(np.asarray(field.f(t[i], ys[i], params)).ravel(), dL_dy[i].ravel()))
            dL_dt[i] = incoming
            dL_dt0 -= incoming
            nfe += 1
        n = node_count(gtol, forward.stats.nfe, t[i - 1], t[i], t[0], t[-1], max_nodes)
        nodes, weights = gauss_legendre(n, t[i], t[i - 1])
        orientation = np.sign(t[i] - t[i - 1])  # the integral runs from t_{i−1} to t_i
        back = solve(dynamics, state, np.concatenate([[t[i]], nodes, [t[i - 1]]]), params, rtol=rtol, atol=atol,
                     norm=norm)
        for tau, weight, node_state in zip(nodes, weights, back.ys[1:-1]):
            z_node = node_state[:size].reshape(shape)
            a_node = node_state[size:].reshape(shape)
            dL_dparams += orientation * weight * np.asarray(field.vjp_p(tau, z_node, params, a_node))
            if t_grad:
                dL_dt0 += orientation * weight * float(field.vjp_t(tau, z_node, params, a_node))
        nfe += back.stats.nfe + n  # each node costs one more evaluation (with its VJP)
        steps += back.stats.n_accepted
        nodes_used.append(n)
        state = np.concatenate([ys[i - 1].ravel(), back.ys[-1][size:] + dL_dy[i - 1].ravel()])
    if t_grad:
        dL_dt[0] = dL_dt0
    counters = {"nfe_backward": nfe, "steps_backward": steps, "nodes": tuple(reversed(nodes_used))}
    return state[size:].reshape(shape), dL_dparams, dL_dt, counters
