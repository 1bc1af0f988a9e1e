"""The scipy controller's growth cap right after a rejection, pinned against scipy's RK45 itself."""

import numpy as np
from scipy.integrate import solve_ivp

import gqref


def van_der_pol(t, y, p):
    return np.array([y[1], p[0] * (1.0 - y[0] ** 2) * y[1] - y[0]])


def test_readme_van_der_pol_matches_scipy_step_for_step():
    t = np.linspace(0.0, 20.0, 11)
    p = np.array([5.0])
    ours = gqref.solve(van_der_pol, [2.0, 0.0], t, p, rtol=1e-8, atol=1e-8, controller="scipy")
    theirs = solve_ivp(lambda s, y: van_der_pol(s, y, p), (0.0, 20.0), [2.0, 0.0], method="RK45", rtol=1e-8,
                       atol=1e-8, dense_output=True)
    # the same accepted steps and evaluations; removing the cap after a rejection gives 3398 evaluations
    assert theirs.nfev == 3374
    assert ours.stats.nfe == theirs.nfev
    assert ours.stats.n_accepted == len(theirs.t) - 1
    # step ends agree to the roundoff drift the lockstep tests bound (here far inside 1e-9 of the span)
    assert np.max(np.abs(ours.steps.ts - theirs.t[1:])) <= 1e-9 * 20.0
    assert np.max(np.abs(ours.ys - theirs.sol(t).T)) <= 1e-7  # both within their 1e-8 tolerances of each other


def test_growth_after_a_rejection_is_capped_like_scipy():
    """A first step far too large is rejected; the retry's error is then far below tolerance, so without the cap
    the next step would grow by up to 10x. scipy keeps it at the retry's size."""

    def decay(t, y, p):
        return -y

    t = [0.0, 4.0]
    ours = gqref.solve(decay, [1.0], t, rtol=1e-6, atol=1e-9, controller="scipy", first_step=3.0)
    calls = []

    def counted(s, y):
        calls.append(s)
        return -y

    theirs = solve_ivp(counted, (0.0, 4.0), [1.0], method="RK45", rtol=1e-6, atol=1e-9, first_step=3.0)
    h = np.diff(theirs.t)
    # the situation the cap governs happens here: the first accepted step follows rejections, and the step after
    # it is exactly as long (capped growth factor 1), although its error ratio was small enough to grow
    assert theirs.nfev > 6 * (len(theirs.t) - 1) + 1  # rejections happened
    assert h[1] == h[0]
    assert ours.stats.nfe == theirs.nfev == len(calls)
    assert ours.stats.n_accepted == len(theirs.t) - 1
    assert ours.steps.hs[1] == ours.steps.hs[0]  # the capped factor is exactly 1, on our side too
    # step sizes: the same arithmetic up to the error estimate's summation order (see tests/test_lockstep.py)
    assert np.max(np.abs(np.abs(ours.steps.hs) - h)) <= 1e-9 * 4.0
