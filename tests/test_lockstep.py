"""Lockstep with the peers: torchdiffeq 0.2.5's dopri5 and scipy's RK45, on hypothesis-generated problems."""

import numpy as np
import torch
import torchdiffeq
from hypothesis import given
from scipy.integrate import solve_ivp

import gqref
from gqref.strategies import linear_problems, tolerances
from tests.fields import Counted, decay_oscillator

EPS = np.finfo(float).eps
torch.set_num_threads(1)



def torch_linear(problem):
    n = problem.state_dim
    a, b = torch.tensor(problem.params[: n * n].reshape(n, n)), torch.tensor(problem.params[n * n:])
    return lambda s, y: a @ y + b


@given(problem=linear_problems(max_dim=4), tols=tolerances)
def test_matches_torchdiffeq_dopri5(problem, tols):
    y0, t = problem.y0, problem.t
    rtol, atol = tols
    ours = gqref.solve(problem.field, y0, t, problem.params, rtol=rtol, atol=atol)
    func = Counted(torch_linear(problem))
    theirs = torchdiffeq.odeint(func, torch.tensor(y0), torch.tensor(t), rtol=rtol, atol=atol, method="dopri5")
    # Same evaluations ⇒ same accepted and rejected steps. Outputs: the same arithmetic up to summation order
    # (torch reduces the 7 stage terms in its own order), so they agree to a few ulps of the state's scale.
    assert ours.stats.nfe == func.nfe
    scale = np.max(np.abs(theirs.numpy()))
    assert np.max(np.abs(ours.ys - theirs.numpy())) <= 1e-12 * scale


def test_matches_torchdiffeq_on_a_nonautonomous_field():
    t = np.linspace(3.0, -2.0, 7)
    ours = gqref.solve(gqref.VectorField(decay_oscillator), np.array([1.0, -1.0]), t, rtol=1e-9, atol=1e-10)
    func = Counted(lambda s, y: torch.tensor(decay_oscillator.py_func(float(s), y.numpy(), None)))
    theirs = torchdiffeq.odeint(func, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.tensor(t),
                                rtol=1e-9, atol=1e-10)
    assert ours.stats.nfe == func.nfe
    assert np.max(np.abs(ours.ys - theirs.numpy())) <= 1e-12 * np.max(np.abs(theirs.numpy()))


def initial_probe_condition(f, y0, rtol, atol, t):
    """|f0| / |f(y0 + h0·f0) − f0| for Hairer's probe step h0: how much the probe's difference cancels."""
    direction = np.sign(t[-1] - t[0])
    f0 = direction * f(y0)
    scale = atol + np.abs(y0) * rtol
    d0, d1 = np.sqrt(np.mean((y0 / scale) ** 2)), np.sqrt(np.mean((f0 / scale) ** 2))
    h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, abs(t[-1] - t[0]))
    difference = np.max(np.abs(direction * f(y0 + h0 * f0) - f0))
    return np.max(np.abs(f0)) / difference if difference > 0 else 0.0


@given(problem=linear_problems(max_dim=4), tols=tolerances)
def test_steps_match_scipy_rk45(problem, tols):
    y0, t, p = problem.y0, problem.t, problem.params
    rtol, atol = tols

    def linear_py(s, y, p):
        return problem.field.f.py_func(s, y, p)

    ours = gqref.solve(problem.field, y0, t, p, rtol=rtol, atol=atol, controller="scipy")
    theirs = solve_ivp(lambda s, y: linear_py(s, y, p), (t[0], t[-1]), y0, method="RK45", rtol=rtol, atol=atol,
                       dense_output=True)
    assert theirs.success
    # Same accepted steps and the same evaluations (so the same rejections).
    assert ours.stats.n_accepted == len(theirs.t) - 1
    assert ours.stats.nfe == theirs.nfev
    assert ours.steps.ts[-1] == theirs.t[-1]  # both clip the last step onto the final time
    # Step sizes come from the error estimate err = h·Σ e_j k_j: 7 terms of size ≤ |h|·max|f| that cancel down
    # to |err| = ratio·(atol + rtol·|y|). Its relative rounding is ≤ 7ε·|h|·max|f| / |err| (scipy sums with
    # BLAS/FMA, we sequentially) and a fifth of it (the controller's exponent) reaches the next step size unless
    # the growth cap of 10 binds. The first step carries the rounding of the initial-step probe f(t0 + h0) − f0,
    # likewise a fifth of it. The controller is deadbeat for err ∝ h⁵ (h_next = h·(tol/err)^(1/5) does not depend
    # on h), so perturbations do not compound: step times drift by at most the sum of the steps' perturbations.
    y_prev = np.vstack([y0, ours.steps.ys[:-1]])
    f_size = np.array([np.max(np.abs(linear_py(0.0, y, p))) for y in y_prev])
    h, ratio = np.abs(ours.steps.hs), ours.steps.error_ratios
    err_size = ratio * np.min(atol + rtol * np.abs(y_prev), axis=1)
    with np.errstate(divide="ignore"):  # ratio 0 means an exact step: growth capped, nothing to round
        capped = 0.9 * ratio ** -0.2 >= 10.0
    relative = np.where(capped, 0.0, 7 * EPS * h * f_size / np.where(capped, 1.0, err_size) / 5)
    first = h[0] * (initial_probe_condition(lambda y: linear_py(0.0, y, p), y0, rtol, atol, t) * 7 * EPS / 5)
    drift = first + np.cumsum(np.r_[0.0, h[1:] * relative[:-1]])
    span = abs(t[-1] - t[0])
    assert np.all(np.abs(ours.steps.ts - theirs.t[1:]) <= 4 * EPS * span + drift)
    # States at our step times agree with scipy's own dense solution there to roundoff of the state's scale
    # (the interpolant is evaluated within an ulp-sized distance of scipy's step ends).
    at_our_times = theirs.sol(ours.steps.ts).T
    assert np.max(np.abs(ours.steps.ys - at_our_times)) <= 1e-12 * max(1.0, np.max(np.abs(at_our_times)))
    # Output times: both evaluate a quartic dense output of the same step.
    scale = max(1.0, np.max(np.abs(ours.ys)))
    assert np.max(np.abs(ours.ys - theirs.sol(t).T)) <= 1e-12 * scale
