"""The adaptive step-size controllers pinned: every attempted step, accepted or rejected, against the peer libraries.

Fixed examples only (no hypothesis draws), so a changed controller rule or constant fails here under every
hypothesis profile. Three independent references:

- the update rules themselves, against the formulas of torchdiffeq 0.2.5 (``_optimal_step_size``) and scipy's
  ``RK45._step_impl``, written out here with their own constants (safety 0.9, growth limit 10, shrink limit 0.2);
- torchdiffeq: the sequence of attempted steps (t0, dt, accepted) it reports through ``callback_accept_step`` and
  ``callback_reject_step``, for every adaptive method, against gqtorch's (the same callbacks) and against gqref's
  accepted steps, rejection count and evaluation count. The installed torchdiffeq (0.2.5) has no tsit5: its
  solver is built here from torchdiffeq's own generic adaptive RK class (as later torchdiffeq versions define
  tsit5) with gqref's tsit5 coefficients, so what is pinned for tsit5 is the controller, not the tableau (which
  tests/test_tableau.py checks against the order conditions);
- scipy: ``scipy.integrate.RK45`` stepped by hand, each attempt read off the times its field is called at, against
  gqref's ``controller="scipy"``.

The problems are chosen so that every branch of the rules runs: rejected first steps (a first step far too large,
then shrinking by the 0.2 limit or by safety·ratio^(−1/order)), growth capped at 10 (a field every pair integrates
exactly: the error estimate is roundoff, so the step grows by exactly the cap), rejections in the middle of a run
(van der Pol's fast transitions), Hairer's initial step (no first_step), a non-autonomous field (the stage nodes
c matter), min_step/max_step and step_t.
"""

import numpy as np
import pytest
import torch
import torchdiffeq
from scipy.integrate import RK45

import gqref
import gqtorch
from gqref.controller import SCIPY, TORCHDIFFEQ, accepts, next_step
from gqref.tableau import TSIT5, float_tableau

METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5")
ORDER_LOW = {"dopri5": 4, "dopri8": 7, "bosh3": 2, "fehlberg2": 1, "adaptive_heun": 1, "tsit5": 4}
# Step sizes of two implementations of the same arithmetic differ by the roundoff of their error estimates: the
# estimate Σ e_j k_j cancels O(1) stage values down to O(tol), so its relative roundoff is ~ε·|k|/|err| ≈ 1e-16/1e-8,
# entering the step as its 1/order power and carried along in the times (measured: at most 3e-9 here). 1e-7 is 30×
# that, and 1e5 times below the smallest change a rule or constant makes (safety 0.9 → 0.89 moves a step by 1e-2).
STEP_RTOL = 1e-7
# dopri8 is so accurate that its first steps' error ratios are ~1e-6: there the same roundoff is 1e-5 of the ratio,
# 1e-6 of the step (measured 2e-6); 1e-4 still sees any change of a rule or constant.
STEP_RTOL_FOR = {"dopri8": 1e-4}


# --- the update rules, against the peers' formulas -----------------------------------------------------------------

def torchdiffeq_factor(ratio, order_low, accepted_shrink_limit=1.0):
    """torchdiffeq 0.2.5's _optimal_step_size for last_step = 1: 10 when the ratio is 0, else
    min(10, max(0.9/ratio^(1/order), d)) with d = 1 for ratio < 1 (accepted steps never shrink), else 0.2."""
    if ratio == 0.0:
        return 10.0
    d = accepted_shrink_limit if ratio < 1.0 else 0.2
    return min(10.0, max(0.9 / ratio ** (1.0 / (order_low + 1)), d))


def scipy_factor(ratio, accepted, rejected_before):
    """scipy's RK45: accepted → min(10, 0.9·ratio^(−1/5)) (10 at ratio 0), capped at 1 right after a rejection;
    rejected → max(0.2, 0.9·ratio^(−1/5))."""
    if accepted:
        factor = 10.0 if ratio == 0.0 else min(10.0, 0.9 * ratio ** (-1.0 / 5.0))
        return min(1.0, factor) if rejected_before else factor
    return max(0.2, 0.9 * ratio ** (-1.0 / 5.0))


RATIOS = (0.0, 1e-12, 1e-3, 0.3, 0.5, 0.9, 0.99, 1.0, 1.01, 2.0, 4.0, 100.0, 1e6)


@pytest.mark.parametrize("order_low", [1, 2, 4, 7])
def test_torchdiffeq_update_rule(order_low):
    for ratio in RATIOS:
        accepted = accepts(TORCHDIFFEQ, ratio)
        assert accepted == (ratio <= 1.0)  # torchdiffeq accepts at ratio exactly 1
        for dt in (1.0, 0.37, 2.5e-3):
            for rejected_before in (False, True):  # torchdiffeq's rule has no memory of the last attempt
                got = next_step(TORCHDIFFEQ, dt, ratio, accepted, rejected_before, 0.9, 10.0, 0.2, order_low)
                want = dt * torchdiffeq_factor(ratio, order_low)
                assert got == pytest.approx(want, rel=1e-15, abs=0.0), (ratio, dt)
    # the boundary cases, by hand: ratio 1 is accepted yet shrinks by 0.9 (its limit is 0.2, not 1); just below 1
    # the step cannot shrink; a huge ratio hits the 0.2 floor; a tiny or zero one the growth cap 10
    assert next_step(TORCHDIFFEQ, 1.0, 1.0, True, False, 0.9, 10.0, 0.2, order_low) == 0.9
    assert next_step(TORCHDIFFEQ, 1.0, 0.999, True, False, 0.9, 10.0, 0.2, order_low) == 1.0
    assert next_step(TORCHDIFFEQ, 1.0, 1e30, False, False, 0.9, 10.0, 0.2, order_low) == 0.2
    assert next_step(TORCHDIFFEQ, 1.0, 1e-300, True, False, 0.9, 10.0, 0.2, order_low) == 10.0
    assert next_step(TORCHDIFFEQ, 1.0, 0.0, True, False, 0.9, 10.0, 0.2, order_low) == 10.0
    # the options reach the rule: a caller's safety, ifactor and dfactor
    assert next_step(TORCHDIFFEQ, 1.0, 0.0, True, False, 0.5, 3.0, 0.1, order_low) == 3.0
    assert next_step(TORCHDIFFEQ, 1.0, 1e30, False, False, 0.5, 3.0, 0.1, order_low) == 0.1
    assert next_step(TORCHDIFFEQ, 1.0, 1.0, True, False, 0.5, 3.0, 0.1, order_low) == 0.5


def test_scipy_update_rule():
    for ratio in RATIOS:
        accepted = accepts(SCIPY, ratio)
        assert accepted == (ratio < 1.0)  # scipy rejects at ratio exactly 1
        for dt in (1.0, 0.37):
            for rejected_before in (False, True):
                got = next_step(SCIPY, dt, ratio, accepted, rejected_before, 0.9, 10.0, 0.2, 4)
                want = dt * scipy_factor(ratio, accepted, rejected_before)
                assert got == pytest.approx(want, rel=1e-15, abs=0.0), (ratio, dt, rejected_before)
    # unlike torchdiffeq's, scipy's accepted steps may shrink (ratio 0.9 → 0.9·0.9^(−1/5) < 1)
    assert next_step(SCIPY, 1.0, 0.9, True, False, 0.9, 10.0, 0.2, 4) < 1.0
    assert next_step(SCIPY, 1.0, 0.0, True, True, 0.9, 10.0, 0.2, 4) == 1.0  # growth capped after a rejection
    assert next_step(SCIPY, 1.0, 0.0, True, False, 0.9, 10.0, 0.2, 4) == 10.0


# --- problems, each written once for numpy (gqref, scipy) and once for torch (gqtorch, torchdiffeq) -----------------

def vdp_np(t, y, p):
    return np.array([y[1], 5.0 * (1.0 - y[0] * y[0]) * y[1] - y[0]])


def vdp_torch(t, y):
    return torch.stack((y[1], 5.0 * (1.0 - y[0] * y[0]) * y[1] - y[0]))


def decay_np(t, y, p):
    return -y


def decay_torch(t, y):
    return -y


def constant_np(t, y, p):
    return np.ones_like(y)


def constant_torch(t, y):
    return torch.ones_like(y)


def forced_np(t, y, p):
    return np.array([np.cos(3.0 * t) * y[0] + np.sin(t), -0.5 * y[1] + t * y[0]])


def forced_torch(t, y):
    return torch.stack((torch.cos(3.0 * t) * y[0] + torch.sin(t), -0.5 * y[1] + t * y[0]))


# name: (numpy field, torch field, y0, t, rtol, atol, options)
PROBLEMS = {
    # Hairer's initial step, then rejections at every fast transition of the relaxation oscillation
    "van-der-pol": (vdp_np, vdp_torch, [2.0, 0.0], [0.0, 1.0, 3.0], 1e-5, 1e-7, {}),
    # a first step far too large: rejected (shrink limited by 0.2 or by safety·ratio^(−1/order)), then growth
    "rejected-first-step": (decay_np, decay_torch, [1.0], [0.0, 4.0], 1e-6, 1e-9, {"first_step": 3.0}),
    # every pair integrates y' = 1 exactly: the estimate is roundoff or 0, so each step is 10× the last
    "capped-growth": (constant_np, constant_torch, [0.0], [0.0, 50.0], 1e-6, 1e-9, {"first_step": 1e-3}),
    # stage times matter; min_step/max_step bound every attempt
    "forced": (forced_np, forced_torch, [1.0, 0.0], [0.0, 1.5, 3.0], 1e-6, 1e-8, {}),
    "bounded": (vdp_np, vdp_torch, [2.0, 0.0], [0.0, 2.0], 1e-7, 1e-7, {"min_step": 0.03, "max_step": 0.1}),
    "step_t": (forced_np, forced_torch, [1.0, 0.0], [0.0, 2.5], 1e-5, 1e-8, {"step_t": [0.5, 1.25, 2.0]}),
}


class Recorder(torch.nn.Module):
    """A torch field that logs every attempted step (t0, dt, accepted) through torchdiffeq's callbacks."""

    def __init__(self, rhs):
        super().__init__()
        self.rhs = rhs
        self.log = []
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.rhs(t, y)

    def callback_accept_step(self, t0, y0, dt):
        self.log.append((float(t0), float(dt), True))

    def callback_reject_step(self, t0, y0, dt):
        self.log.append((float(t0), float(dt), False))


def torch_attempts(solver, name, method):
    _, rhs, y0, t, rtol, atol, options = PROBLEMS[name]
    func = Recorder(rhs)
    with torch.no_grad():
        solver(func, torch.tensor(y0, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), rtol=rtol,
               atol=atol, method=method, options=dict(options))
    return func.log, func.nfe


def assert_same_attempts(ours, theirs, rtol):
    assert [a for _, _, a in ours] == [a for _, _, a in theirs]  # the same accept/reject pattern, step by step
    np.testing.assert_allclose([t for t, _, _ in ours], [t for t, _, _ in theirs], rtol=rtol, atol=1e-300)
    np.testing.assert_allclose([h for _, h, _ in ours], [h for _, h, _ in theirs], rtol=rtol, atol=0.0)


def torchdiffeq_tsit5():
    """A torchdiffeq solver class for tsit5: its generic adaptive RK solver (controller, FSAL hand-on, nudged end
    stage, quartic dense output) with the coefficients as float64 tensors."""
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _ButcherTableau

    tab = float_tableau(TSIT5)

    def tensor(x):
        return torch.tensor(np.asarray(x), dtype=torch.float64)

    class Tsit5Solver(RKAdaptiveStepsizeODESolver):
        order = 5  # the exponent 1/order of torchdiffeq's step-size update: order_low + 1
        tableau = _ButcherTableau(alpha=tensor(tab.c[1:]), beta=[tensor(tab.a[i, :i]) for i in range(1, TSIT5.stages)],
                                  c_sol=tensor(tab.b), c_error=tensor(tab.e))
        mid = tensor(tab.b_mid)

    return Tsit5Solver


@pytest.fixture(scope="module")
def torchdiffeq_runs():
    from torchdiffeq._impl.odeint import SOLVERS

    assert "tsit5" not in SOLVERS  # a torchdiffeq that has its own: use it (drop this shim)
    SOLVERS["tsit5"] = torchdiffeq_tsit5()
    try:
        yield {(name, method): torch_attempts(torchdiffeq.odeint, name, method)
               for name in PROBLEMS for method in METHODS}
    finally:
        SOLVERS.pop("tsit5")


def test_the_problems_exercise_every_branch(torchdiffeq_runs):
    """Guards the guard: the pinned runs contain rejections (first and mid-run), growth capped at exactly 10×,
    steps at min_step and max_step, and steps ending on step_t."""
    log, _ = torchdiffeq_runs[("rejected-first-step", "dopri5")]
    assert not log[0][2] and log[-1][2]
    log, _ = torchdiffeq_runs[("step_t", "dopri5")]
    assert any(not a for _, _, a in log[3:])
    for method in METHODS:
        log, _ = torchdiffeq_runs[("capped-growth", method)]
        hs = [h for _, h, _ in log]
        assert all(a for _, _, a in log) and hs[:5] == pytest.approx([1e-3, 1e-2, 1e-1, 1.0, 10.0], rel=1e-12)
    log, _ = torchdiffeq_runs[("bounded", "dopri5")]
    hs = [h for _, h, _ in log]
    assert min(hs) == 0.03 and max(hs) == 0.1
    log, _ = torchdiffeq_runs[("step_t", "dopri5")]
    ends = [t + h for t, h, a in log if a]
    for s in (0.5, 1.25, 2.0):
        assert min(abs(e - s) for e in ends) <= 1e-15


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_gqtorch_attempts_equal_torchdiffeq(torchdiffeq_runs, name, method):
    theirs, their_nfe = torchdiffeq_runs[(name, method)]
    ours, our_nfe = torch_attempts(gqtorch.odeint, name, method)
    assert_same_attempts(ours, theirs, STEP_RTOL_FOR.get(method, STEP_RTOL))
    assert our_nfe == their_nfe


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_gqref_steps_equal_torchdiffeq(torchdiffeq_runs, name, method):
    theirs, their_nfe = torchdiffeq_runs[(name, method)]
    f, _, y0, t, rtol, atol, options = PROBLEMS[name]
    options = dict(options)
    first_step = options.pop("first_step", None)
    ours = gqref.solve(f, y0, t, rtol=rtol, atol=atol, method=method, first_step=first_step,
                       options=options or None)
    accepted = [(t0 + h, h) for t0, h, a in theirs if a]
    assert ours.stats.n_accepted == len(accepted)
    assert ours.stats.n_rejected == sum(not a for _, _, a in theirs)
    assert ours.stats.nfe == their_nfe
    rtol = STEP_RTOL_FOR.get(method, STEP_RTOL)
    np.testing.assert_allclose(ours.steps.ts, [e for e, _ in accepted], rtol=rtol, atol=1e-300)
    np.testing.assert_allclose(ours.steps.hs, [h for _, h in accepted], rtol=rtol, atol=0.0)


# --- gqref's scipy controller against scipy's RK45, attempt by attempt ----------------------------------------------

def scipy_attempts(f, y0, t_end, rtol, atol, first_step=None):
    """(accepted steps [(t_end_of_step, h)], rejections before each accepted step, nfev) of RK45 stepped by hand.

    Each attempt evaluates the field 6 times (stages 2–7; FSAL), the 5th at t + h (node c = 1): so the calls made
    during one ``step()`` are its attempts, all rejected but the last.
    """
    calls = []

    def fun(t, y):
        calls.append(t)
        return f(t, y, None)

    solver = RK45(fun, 0.0, np.array(y0, dtype=float), t_end, rtol=rtol, atol=atol, first_step=first_step)
    steps, rejections = [], []
    while solver.status == "running":
        t_old, before = solver.t, len(calls)
        solver.step()
        new = calls[before:]
        assert len(new) % 6 == 0
        rejections.append(len(new) // 6 - 1)
        steps.append((solver.t, solver.t - t_old))
    assert solver.status == "finished"
    return steps, rejections, solver.nfev


SCIPY_PROBLEMS = {
    "van-der-pol": (vdp_np, [2.0, 0.0], 3.0, 1e-6, 1e-8, None),
    "rejected-first-step": (decay_np, [1.0], 4.0, 1e-6, 1e-9, 3.0),  # rejection, then growth capped at 1
    "forced": (forced_np, [1.0, 0.0], 3.0, 1e-7, 1e-9, None),
    "short-interval": (decay_np, [1.0], 1e-3, 1e-3, 1e-6, None),  # initial step capped by the interval
}


@pytest.mark.parametrize("name", sorted(SCIPY_PROBLEMS))
def test_gqref_scipy_controller_equals_rk45(name):
    f, y0, t_end, rtol, atol, first_step = SCIPY_PROBLEMS[name]
    theirs, rejections, nfev = scipy_attempts(f, y0, t_end, rtol, atol, first_step)
    ours = gqref.solve(f, y0, [0.0, t_end], rtol=rtol, atol=atol, controller="scipy", first_step=first_step)
    assert ours.stats.nfe == nfev
    assert ours.stats.n_accepted == len(theirs)
    assert ours.stats.n_rejected == sum(rejections)
    np.testing.assert_allclose(ours.steps.hs, [h for _, h in theirs], rtol=STEP_RTOL, atol=0.0)
    assert ours.steps.ts[-1] == t_end  # scipy's last step lands on the end exactly
    if name == "rejected-first-step":
        assert rejections[0] > 0 and ours.steps.hs[1] == ours.steps.hs[0]  # capped at factor 1 after rejections
    if name == "short-interval":
        assert len(theirs) == 1 and ours.steps.hs[0] == t_end


def tuple_rhs(t, y):
    a, b = y
    return -0.5 * a, torch.stack((b[1], -b[0] - 0.1 * b[1]))


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_tuple_state_norm_equals_torchdiffeq(method):
    """A tuple state: torchdiffeq's default norm is the max over the blocks of each block's RMS. Blocks of sizes 1
    and 2 with different scales make both the per-block mean and the max matter."""
    runs = []
    for solver in (torchdiffeq.odeint, gqtorch.odeint):
        func = Recorder(tuple_rhs)
        y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0, 3.0], dtype=torch.float64))
        with torch.no_grad():
            solver(func, y0, torch.tensor([0.0, 4.0], dtype=torch.float64), rtol=1e-6, atol=1e-8, method=method)
        runs.append((func.log, func.nfe))
    (theirs, their_nfe), (ours, our_nfe) = runs
    assert_same_attempts(ours, theirs, STEP_RTOL)
    assert our_nfe == their_nfe
