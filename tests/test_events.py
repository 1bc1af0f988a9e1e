"""Event location (gqtorch.events, gqref.events): torchdiffeq parity, closed forms, the twins against each other.

Closed-form problems:

- a ball dropped from height h under gravity g, state [x, v], x' = v, v' = −g, event x = 0: t* = √(2h/g),
  dt*/dh = 1/√(2gh), dt*/dg = −√(2h/g)/(2g). dopri5 (and RK4) integrate this quadratic exactly and their dense
  outputs reproduce it, so the only error in t* is the bisection's, at most tol/2 = atol/2 (tol is torchdiffeq's
  atol), and the gradients' relative error is of the same order.
- exponential decay y' = −k y from y0 to the threshold c: t* = ln(y0/c)/k, dt*/dy0 = 1/(k y0), dt*/dk = −t*/k,
  dt*/dc = −1/(k c). Here the solve's own error (relative, a small multiple of rtol) moves t* by
  δy/|y'(t*)| = δy/(k c); the bounds below are 100·rtol relative, far above that and far below O(1) mistakes.
"""

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from torchdiffeq._impl.interp import _interp_evaluate
from torchdiffeq._impl.misc import _check_inputs
from torchdiffeq._impl.odeint import SOLVERS

import gqref
from gqref.errors import InputError
from gqref.events import NoEventError, event_gradient, solve_until_event
from gqtorch.events import (
    bisection_count,
    combine_event_fn,
    event_tolerance,
    flat_event_fn,
    integrate_until_event,
    odeint_event,
)
from gqtorch.interp import interp_evaluate
from gqtorch.steps import AcceptedStep

F64 = torch.float64
H, G = 2.5, 9.81  # the ball's height and gravity
Y0, K, C = 3.0, 0.7, 0.5  # decay from Y0 at rate K to the threshold C


# --------------------------------------------------------------------------------------------------------------------
# step generators for integrate_until_event (until gqtorch.odeint takes event_fn itself)


def torchdiffeq_steps(func, y0, t0, direction, rtol=1e-7, atol=1e-9):
    """torchdiffeq's own dopri5 steps as AcceptedSteps, in the solver time s = direction·t: the solver is built by
    torchdiffeq's input normalisation exactly as its odeint builds it."""
    t = torch.tensor([t0, t0 + direction], dtype=F64)
    _, f, y0, t, rtol, atol, method, options, _, _ = _check_inputs(func, y0, t, rtol, atol, "dopri5", None, None,
                                                                   SOLVERS)
    solver = SOLVERS[method](func=f, y0=y0, rtol=rtol, atol=atol, **options)
    solver._before_integrate(t[:1])
    state = solver.rk_state
    while True:
        new = solver._adaptive_step(state)
        if new.t1 != state.t1:  # accepted
            coeff, a, b = new.interp_coeff, new.t0, new.t1

            def state_at(s, coeff=coeff, a=a, b=b):
                return _interp_evaluate(coeff, a, b, torch.tensor(s, dtype=F64))

            yield AcceptedStep(s0=float(a), s1=float(b), y0=state.y1, y1=new.y1, state_at=state_at, f1=new.f1)
        state = new


def rk4_steps(func, y0, t0, direction, h):
    """Classical RK4 with fixed steps and cubic Hermite dense output, in the solver time s = direction·t."""
    s, y = direction * t0, y0

    def f(s_, y_):
        return direction * func(torch.tensor(direction * s_, dtype=F64), y_)

    f0 = f(s, y)
    while True:
        k1 = f0
        k2 = f(s + h / 2, y + h / 2 * k1)
        k3 = f(s + h / 2, y + h / 2 * k2)
        k4 = f(s + h, y + h * k3)
        y1 = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        f1 = f(s + h, y1)

        def state_at(r, s0=s, y0_=y, y1_=y1, f0_=f0, f1_=f1):
            x = (r - s0) / h
            return ((1 + 2 * x) * (1 - x) ** 2 * y0_ + x * (1 - x) ** 2 * h * f0_ + x * x * (3 - 2 * x) * y1_
                    + x * x * (x - 1) * h * f1_)

        yield AcceptedStep(s0=s, s1=s + h, y0=y, y1=y1, state_at=state_at, f1=f1)
        s, y, f0 = s + h, y1, f1


# --------------------------------------------------------------------------------------------------------------------
# fields


class Ball(torch.nn.Module):
    def __init__(self, g=G):
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=F64))

    def forward(self, t, y):
        return torch.stack([y[1], -self.g * torch.ones_like(y[0])])


def ball_hits_ground(t, y):
    return y[0]


class Decay(torch.nn.Module):
    def __init__(self, k=K):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k, dtype=F64))

    def forward(self, t, y):
        return -self.k * y


class Threshold(torch.nn.Module):
    """Event y − c with its own parameter c."""

    def __init__(self, c=C):
        super().__init__()
        self.c = torch.nn.Parameter(torch.tensor(c, dtype=F64))

    def forward(self, t, y):
        return y[0] - self.c


class Forced(torch.nn.Module):
    """A non-autonomous 2-D field for parity checks."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([[-0.3, 1.2], [-1.1, -0.2]], dtype=F64))

    def forward(self, t, y):
        return self.w @ y + torch.stack([torch.sin(t), 0.5 * torch.cos(2 * t)])


class Spiral(torch.nn.Module):
    """An autonomous 2-D field: gqref's dopri5 takes torchdiffeq's steps on it (torchdiffeq nudges stage times by an
    ulp, which moves the steps of a time-dependent field by far more than roundoff)."""

    def forward(self, t, y):
        return torch.tensor(_W) @ y + torch.tensor([0.4, -0.3], dtype=F64)


def forced_event(t, y):
    return torch.stack([y[0] - 0.2 * t, y[1] + 0.8])  # two outputs: the first to cross zero wins


# gqref twins (numpy, with hand-written VJPs)

def _ball_f(t, y, p):
    return np.array([y[1], -p[0]])


BALL = gqref.VectorField(
    f=_ball_f,
    vjp_t=lambda t, y, p, a: 0.0,
    vjp_y=lambda t, y, p, a: np.array([0.0, a[0]]),
    vjp_p=lambda t, y, p, a: np.array([-a[1]]),
)
DECAY = gqref.VectorField(
    f=lambda t, y, p: -p[0] * y,
    vjp_t=lambda t, y, p, a: 0.0,
    vjp_y=lambda t, y, p, a: -p[0] * a,
    vjp_p=lambda t, y, p, a: np.array([-(a @ y)]),
)
_W = np.array([[-0.3, 1.2], [-1.1, -0.2]])
FORCED = gqref.VectorField(
    f=lambda t, y, p: _W @ y + np.array([np.sin(t), 0.5 * np.cos(2 * t)]),
    vjp_t=lambda t, y, p, a: a[0] * np.cos(t) - a[1] * np.sin(2 * t),
    vjp_y=lambda t, y, p, a: _W.T @ a,
    vjp_p=lambda t, y, p, a: np.zeros(0),
)


SPIRAL = gqref.VectorField(
    f=lambda t, y, p: _W @ y + np.array([0.4, -0.3]),
    vjp_t=lambda t, y, p, a: 0.0,
    vjp_y=lambda t, y, p, a: _W.T @ a,
    vjp_p=lambda t, y, p, a: np.zeros(0),
)


def _forced_event_np(t, y, p):
    return np.array([y[0] - 0.2 * t, y[1] + 0.8])


# --------------------------------------------------------------------------------------------------------------------
# integrate_until_event


def _torchdiffeq_event(func, y0, t0, direction, event_fn, rtol=1e-7, atol=1e-9):
    t = torch.tensor([t0, t0 + direction], dtype=F64)
    return torchdiffeq.odeint(func, y0, t, event_fn=event_fn, rtol=rtol, atol=atol)


@pytest.mark.parametrize("direction", [1.0, -1.0])
@pytest.mark.parametrize("problem", ["ball", "forced"])
def test_integrate_until_event_matches_torchdiffeq(direction, problem):
    if problem == "ball":
        func, y0, t0, event = Ball(), torch.tensor([H, 0.0], dtype=F64), 0.0, ball_hits_ground
    else:
        func, y0, t0, event = Forced(), torch.tensor([1.0, 0.3], dtype=F64), 0.5, forced_event
    with torch.no_grad():
        event_t, solution = _torchdiffeq_event(func, y0, t0, direction, event)
        s_event, y_event = integrate_until_event(torchdiffeq_steps(func, y0, t0, direction),
                                                 flat_event_fn(event, lambda y: y, t0, y0), direction * t0, y0,
                                                 direction, 1e-9)
    # the same steps and the same bisection: the same numbers (to roundoff; in practice bit for bit)
    assert abs(direction * s_event - event_t.item()) <= 1e-12
    torch.testing.assert_close(y_event, solution[-1], rtol=0, atol=1e-12)


def test_bisection_count_is_torchdiffeqs():
    assert bisection_count(0.0, 1.0, 1e-9) == math.ceil(math.log2(1e9))
    assert bisection_count(0.0, 1e-10, 1e-9) <= 0  # a step shorter than tol: no halving, its midpoint
    assert bisection_count(0.0, 1.0, 0.25) == 2


def test_rk4_generator_finds_the_ball_to_tol():
    func, y0 = Ball(), torch.tensor([H, 0.0], dtype=F64)
    tol = 1e-10
    with torch.no_grad():
        s_event, y_event = integrate_until_event(rk4_steps(func, y0, 0.0, 1.0, 0.05),
                                                 flat_event_fn(ball_hits_ground, lambda y: y, 0.0, y0), 0.0, y0,
                                                 1.0, tol)
    # RK4 and the cubic Hermite reproduce the quadratic fall exactly: only the bisection's tol/2 remains
    assert abs(s_event - math.sqrt(2 * H / G)) <= tol
    assert abs(float(y_event[0])) <= G * math.sqrt(2 * H / G) * tol


def test_rk4_generator_in_reverse_time():
    # a ball thrown so that, run backwards from t0 = 0, it was at x = 0 at t = −1: x(t) = 1 + (G/2 + 1)·t − …
    # simpler: x(t) = a + b t − G t²/2 with x(−1) = 0 exactly
    b = 3.0
    a = b + G / 2  # x(−1) = a − b − G/2 = 0
    func, y0 = Ball(), torch.tensor([a, b], dtype=F64)
    with torch.no_grad():
        s_event, _ = integrate_until_event(rk4_steps(func, y0, 0.0, -1.0, 0.03),
                                           flat_event_fn(ball_hits_ground, lambda y: y, 0.0, y0), 0.0, y0, -1.0,
                                           1e-10)
    assert abs(-s_event - (-1.0)) <= 1e-10


def test_event_at_the_start_returns_the_start():
    y0 = torch.tensor([0.0, 1.0], dtype=F64)
    s, y = integrate_until_event(iter(()), flat_event_fn(ball_hits_ground, lambda y: y, 2.0, y0), 2.0, y0, 1.0,
                                 1e-9)
    assert s == 2.0 and y is y0


def test_no_event_raises():
    y0 = torch.tensor([H, 0.0], dtype=F64)
    steps = rk4_steps(Ball(), y0, 0.0, 1.0, 0.01)
    few = (next(steps) for _ in range(5))
    with pytest.raises(NoEventError, match="no event") as info:
        integrate_until_event(few, flat_event_fn(ball_hits_ground, lambda y: y, 0.0, y0), 0.0, y0, 1.0, 1e-9)
    assert info.value.t == pytest.approx(0.05)
    assert isinstance(info.value, gqref.SolverError)


def test_bad_event_functions_and_arguments():
    y0 = torch.tensor([H, 0.0], dtype=F64)
    with pytest.raises(InputError, match="tensor"):
        flat_event_fn(lambda t, y: 1.0, lambda y: y, 0.0, y0)
    with pytest.raises(InputError, match="callable"):
        flat_event_fn("x", lambda y: y, 0.0, y0)
    with pytest.raises(InputError, match="non-finite"):
        flat_event_fn(lambda t, y: y[0] * float("nan"), lambda y: y, 0.0, y0)
    nan_later = flat_event_fn(lambda t, y: y[0] if t < 0.1 else y[0] * float("nan"), lambda y: y, 0.0, y0)
    with pytest.raises(InputError, match="NaN"):
        integrate_until_event(rk4_steps(Ball(), y0, 0.0, 1.0, 0.05), nan_later, 0.0, y0, 1.0, 1e-9)
    with pytest.raises(InputError, match="direction"):
        integrate_until_event(iter(()), flat_event_fn(ball_hits_ground, lambda y: y, 0.0, y0), 0.0, y0, 2.0, 1e-9)
    with pytest.raises(InputError, match="atol"):
        event_tolerance(torch.tensor([1e-9, 1e-8]))
    with pytest.raises(InputError, match="positive"):
        event_tolerance(0.0)
    with pytest.raises(InputError, match="single number"):
        event_tolerance(np.array([1e-9, 1e-8]))
    with pytest.raises(InputError, match="positive"):
        event_tolerance("small")
    assert event_tolerance(torch.tensor(1e-9, dtype=F64)) == 1e-9


def test_combined_event_follows_torchdiffeq():
    y0 = torch.tensor([1.0, -2.0], dtype=F64)
    combined = combine_event_fn(lambda t, y: torch.stack([y[0], y[1], t]), torch.tensor(1.0, dtype=F64), y0)
    # signs at the start: (+, −, +); min of (1, 2, 1) is 1; later (0.5, −3 → 3, 0.2) gives 0.2
    assert float(combined(torch.tensor(1.0, dtype=F64), y0)) == 1.0
    assert float(combined(torch.tensor(0.2, dtype=F64), torch.tensor([0.5, -3.0], dtype=F64))) == 0.2


def test_tuple_state_event_location():
    def func(t, y):
        x, v = y
        return v, -G * torch.ones_like(x)

    y0 = (torch.tensor([H], dtype=F64), torch.tensor([0.0], dtype=F64))
    flat = torch.cat(y0)

    def split(y):
        return y[:1], y[1:]

    def event(t, y):
        return y[0][0]

    with torch.no_grad():
        event_t, solution = torchdiffeq.odeint(func, y0, torch.tensor([0.0, 1.0], dtype=F64), event_fn=event)
        s_event, y_event = integrate_until_event(
            torchdiffeq_steps(lambda t, y: torch.cat(func(t, split(y))), flat, 0.0, 1.0),
            flat_event_fn(event, split, 0.0, flat), 0.0, flat, 1.0, 1e-9)
    assert abs(s_event - event_t.item()) <= 1e-12
    torch.testing.assert_close(y_event, torch.cat([solution[0][-1], solution[1][-1]]), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------------------------------
# odeint_event against torchdiffeq's, through torchdiffeq.odeint


def _grads(outputs, inputs):
    return torch.autograd.grad(outputs, inputs, allow_unused=True)


@pytest.mark.parametrize("reverse_time", [False, True])
def test_odeint_event_matches_torchdiffeq_with_gradients(reverse_time):
    func = Forced()
    y0 = torch.tensor([1.0, 0.3], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    results = []
    for implementation in ("torchdiffeq", "gqtorch"):
        if implementation == "torchdiffeq":
            event_t, solution = torchdiffeq.odeint_event(func, y0, t0, event_fn=forced_event,
                                                         reverse_time=reverse_time)
        else:
            event_t, solution = odeint_event(func, y0, t0, event_fn=forced_event, reverse_time=reverse_time,
                                             odeint_interface=torchdiffeq.odeint)
        # a loss on both outputs, so both reroutings (time and state) are exercised
        loss = 2.0 * event_t + (solution[-1] ** 2).sum() + 0.3 * solution[0].sum()
        results.append((event_t.detach(), solution.detach(), _grads(loss, (y0, t0, func.w))))
    (te, se, ge), (tg, sg, gg) = results
    assert float(te) == float(tg)
    torch.testing.assert_close(sg, se, rtol=0, atol=0)
    for a, b in zip(gg, ge):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_odeint_event_tuple_state_matches_torchdiffeq():
    def func(t, y):
        x, v = y
        return v, -G * torch.ones_like(x)

    h = torch.tensor([H], dtype=F64, requires_grad=True)
    v0 = torch.tensor([0.5], dtype=F64, requires_grad=True)

    def event(t, y):
        return y[0][0]

    results = []
    for interface in (None, torchdiffeq.odeint):
        y0 = (h, v0)
        if interface is None:
            event_t, solution = torchdiffeq.odeint_event(func, y0, torch.tensor(0.0, dtype=F64), event_fn=event)
        else:
            event_t, solution = odeint_event(func, y0, torch.tensor(0.0, dtype=F64), event_fn=event,
                                             odeint_interface=interface)
        assert isinstance(solution, tuple) and solution[0].shape == (2, 1)
        loss = event_t + solution[1][-1].sum()
        results.append((event_t.item(), _grads(loss, (h, v0))))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _ball_event(interface, h=H, g=G):
    ball = Ball(g)
    height = torch.tensor(h, dtype=F64, requires_grad=True)
    y0 = torch.stack([height, torch.zeros((), dtype=F64)])
    event_t, solution = odeint_event(ball, y0, torch.tensor(0.0, dtype=F64), event_fn=ball_hits_ground,
                                     odeint_interface=interface, atol=1e-10, rtol=1e-8)
    dh, dg = _grads(event_t, (height, ball.g))
    return event_t.item(), float(dh), float(dg), solution


def test_ball_closed_form_through_odeint_event():
    t_event, dh, dg, solution = _ball_event(torchdiffeq.odeint)
    exact = math.sqrt(2 * H / G)
    # bisection to atol = 1e-10 on an exact dense output: |error| ≤ atol/2; the derivatives inherit t*'s relative
    # error, plus torchdiffeq's backprop through its step sizes (which the exact quadratic makes harmless)
    assert abs(t_event - exact) <= 1e-10
    assert dh == pytest.approx(1 / math.sqrt(2 * G * H), rel=1e-9)
    assert dg == pytest.approx(-exact / (2 * G), rel=1e-9)
    assert solution.shape == (2, 2)
    assert solution[-1, 1].item() == pytest.approx(-G * exact, rel=1e-9)


def test_decay_closed_form_and_event_parameters():
    """dt*/dc needs ∂c/∂θ (the event function's own parameter): torchdiffeq leaves that term out."""
    rtol, atol = 1e-9, 1e-11
    decay, threshold = Decay(), Threshold()
    y0 = torch.tensor([Y0], dtype=F64, requires_grad=True)
    event_t, _ = odeint_event(decay, y0, torch.tensor(0.0, dtype=F64), event_fn=threshold,
                              odeint_interface=torchdiffeq.odeint, rtol=rtol, atol=atol)
    dy0, dk, dc = _grads(event_t, (y0, decay.k, threshold.c))
    exact = math.log(Y0 / C) / K
    bound = 100 * rtol  # the solve's relative error moves t* by δy/(k c); 100·rtol is far above it
    assert event_t.item() == pytest.approx(exact, rel=bound)
    assert float(dy0) == pytest.approx(1 / (K * Y0), rel=bound)
    assert float(dk) == pytest.approx(-exact / K, rel=bound)
    assert float(dc) == pytest.approx(-1 / (K * C), rel=bound)

    # torchdiffeq's own rerouting gives the same y0 and k derivatives but none for c
    event_t, _ = torchdiffeq.odeint_event(decay, y0, torch.tensor(0.0, dtype=F64), event_fn=threshold, rtol=rtol,
                                          atol=atol)
    ty0, tk, tc = _grads(event_t, (y0, decay.k, threshold.c))
    torch.testing.assert_close(ty0, dy0, rtol=1e-12, atol=0)
    torch.testing.assert_close(tk, dk, rtol=1e-12, atol=0)
    assert tc is None


def test_odeint_event_validates():
    with pytest.raises(InputError, match="func"):
        odeint_event(3, torch.ones(1), 0.0, event_fn=ball_hits_ground, odeint_interface=torchdiffeq.odeint)
    with pytest.raises(InputError, match="event_fn"):
        odeint_event(Decay(), torch.ones(1), 0.0, event_fn=None, odeint_interface=torchdiffeq.odeint)
    with pytest.raises(InputError, match="t0"):
        odeint_event(Decay(), torch.ones(1), torch.zeros(2), event_fn=ball_hits_ground,
                     odeint_interface=torchdiffeq.odeint)
    with pytest.raises(InputError, match="reverse_time"):
        odeint_event(Decay(), torch.ones(1), 0.0, event_fn=ball_hits_ground, reverse_time=1,
                     odeint_interface=torchdiffeq.odeint)


# --------------------------------------------------------------------------------------------------------------------
# gqref.events: closed forms and the twin


def _ball_jac(t, y, p):
    return 0.0, np.array([1.0, 0.0]), np.zeros(1)


@pytest.mark.parametrize("jac", [_ball_jac, None])
def test_gqref_ball_closed_form(jac):
    atol = 1e-10
    found = solve_until_event(BALL, [H, 0.0], 0.0, [G], lambda t, y, p: y[0], t_max=10.0, rtol=1e-8, atol=atol)
    exact = math.sqrt(2 * H / G)
    assert abs(found.t_event - exact) <= atol  # exact dense output: only the bisection's atol/2
    assert found.step >= 0 and found.y_event[0] == pytest.approx(0.0, abs=G * exact * atol)
    grad = event_gradient(BALL, [H, 0.0], 0.0, [G], lambda t, y, p: y[0], t_max=10.0, rtol=1e-8, atol=atol,
                          event_jac=jac)
    assert grad.t_event == found.t_event
    assert grad.dL_dy0[0] == pytest.approx(1 / math.sqrt(2 * G * H), rel=1e-9)
    assert grad.dL_dparams[0] == pytest.approx(-exact / (2 * G), rel=1e-9)
    # x(t*) = h + v0 t* − G t*²/2 = 0 gives dt*/dv0 = −t*/(v0 − G t*) = 1/G for a ball starting at rest
    assert grad.dL_dy0[1] == pytest.approx(1 / G, rel=1e-8)
    # an autonomous field: shifting t0 shifts t* one for one
    assert grad.dL_dt0 == pytest.approx(1.0, rel=1e-8)


def test_gqref_decay_closed_form_with_event_parameter():
    rtol, atol = 1e-9, 1e-11

    def event(t, y, p):
        return y[0] - p[1]  # p = [k, c]: the field reads p[0], the event p[1]

    field = gqref.VectorField(
        f=lambda t, y, p: -p[0] * y,
        vjp_t=lambda t, y, p, a: 0.0,
        vjp_y=lambda t, y, p, a: -p[0] * a,
        vjp_p=lambda t, y, p, a: np.array([-(a @ y), 0.0]),
    )
    grad = event_gradient(field, [Y0], 0.0, [K, C], event, t_max=20.0, rtol=rtol, atol=atol)
    exact = math.log(Y0 / C) / K
    bound = 100 * rtol  # see the module docstring
    assert grad.t_event == pytest.approx(exact, rel=bound)
    assert grad.dL_dy0[0] == pytest.approx(1 / (K * Y0), rel=bound)
    assert grad.dL_dparams[0] == pytest.approx(-exact / K, rel=bound)
    assert grad.dL_dparams[1] == pytest.approx(-1 / (K * C), rel=bound)


def _gqref_steps(found):
    """gqref's accepted steps and their dense output as gqtorch AcceptedSteps (solver time s = direction·t)."""
    dense = found.dense
    ys = found.solution.steps.ys
    for j in range(len(dense.coeffs)):
        coeffs = torch.tensor(dense.coeffs[j])
        s0, s1 = float(dense.starts[j]), float(dense.starts[j + 1])

        def state_at(s, coeffs=coeffs, s0=s0, s1=s1):
            return interp_evaluate(coeffs, s0, s1, [s])[0]

        y_start = torch.tensor(found.solution.ys[0] if j == 0 else ys[j - 1])
        yield AcceptedStep(s0=s0, s1=s1, y0=y_start, y1=torch.tensor(ys[j]), state_at=state_at)


@pytest.mark.parametrize("direction", [1.0, -1.0])
@pytest.mark.parametrize("problem", ["spiral", "forced"])
def test_gqref_and_gqtorch_locate_the_same_event_on_the_same_steps(direction, problem):
    """The search itself: gqtorch's integrate_until_event on gqref's steps gives gqref's event time to roundoff."""
    field = SPIRAL if problem == "spiral" else FORCED
    found = solve_until_event(field, [1.0, 0.3], 0.5, None, _forced_event_np, t_max=0.5 + 10 * direction)
    y0 = torch.tensor([1.0, 0.3], dtype=F64)
    s_event, y_event = integrate_until_event(_gqref_steps(found), flat_event_fn(forced_event, lambda y: y, 0.5, y0),
                                             0.5 * direction, y0, direction, 1e-9)
    assert abs(found.t_event - direction * s_event) <= 1e-12
    np.testing.assert_allclose(found.y_event, y_event.numpy(), rtol=0, atol=1e-12)


def test_gqref_event_near_torchdiffeqs():
    """gqref's own solve against torchdiffeq's steps: the error estimate is a difference of nearly equal terms, so
    its rounding (summation order) moves step sizes by ~1e-8 relative and the states by a fraction of the solve's
    error; the event times then agree to well within the tolerance's effect (bound 1e-8 at rtol = 1e-7)."""
    for direction in (1.0, -1.0):
        y0 = torch.tensor([1.0, 0.3], dtype=F64)
        with torch.no_grad():
            s_event, y_event = integrate_until_event(torchdiffeq_steps(Spiral(), y0, 0.5, direction),
                                                     flat_event_fn(forced_event, lambda y: y, 0.5, y0),
                                                     0.5 * direction, y0, direction, 1e-9)
        found = solve_until_event(SPIRAL, [1.0, 0.3], 0.5, None, _forced_event_np, t_max=0.5 + 10 * direction)
        assert abs(found.t_event - direction * s_event) <= 1e-8
        np.testing.assert_allclose(found.y_event, y_event.numpy(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("direction", [1.0, -1.0])
@pytest.mark.parametrize("problem", ["spiral", "forced"])
def test_gqtorch_solver_and_gqref_event_times_agree(direction, problem):
    """gqtorch's own dopri5 steps (adaptive_steps) against gqref's solve: ≤ 1e-10 at rtol = 1e-9 (the step sizes
    differ by the error estimate's rounding, which moves the states by far less than the solve's error)."""
    from gqref.adaptive import AdaptiveOptions
    from gqref.tableau import DOPRI5
    from gqtorch import adaptive
    from gqtorch.controller import rms_norm
    from gqtorch.tableau import torch_tableau

    rtol, atol = 1e-9, 1e-11
    func, field = (Spiral(), SPIRAL) if problem == "spiral" else (Forced(), FORCED)
    y0 = torch.tensor([1.0, 0.3], dtype=F64)
    with torch.no_grad():
        steps = adaptive.adaptive_steps(func, y0, 0.5 * direction, direction, rtol, torch.full((2,), atol, dtype=F64),
                                        rms_norm, torch_tableau(DOPRI5, F64, "cpu"), AdaptiveOptions(),
                                        adaptive.StepCounts())
        s_event, y_event = integrate_until_event(steps, flat_event_fn(forced_event, lambda y: y, 0.5, y0),
                                                 0.5 * direction, y0, direction, atol)
    found = solve_until_event(field, [1.0, 0.3], 0.5, None, _forced_event_np, t_max=0.5 + 10 * direction, rtol=rtol,
                              atol=atol)
    assert abs(found.t_event - direction * s_event) <= 1e-10
    np.testing.assert_allclose(found.y_event, y_event.numpy(), rtol=0, atol=1e-10)


def test_gqref_gradient_matches_gqtorch_odeint_event():
    """gqref's implicit gradient against gqtorch.odeint_event over torchdiffeq.odeint: both differentiate the same
    computed solution, torchdiffeq additionally through its step sizes, so they agree to about rtol."""
    rtol, atol = 1e-9, 1e-11
    func = Forced()
    y0 = torch.tensor([1.0, 0.3], dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    event_t, _ = odeint_event(func, y0, t0, event_fn=forced_event, odeint_interface=torchdiffeq.odeint, rtol=rtol,
                              atol=atol)
    dy0, dt0 = _grads(event_t, (y0, t0))
    grad = event_gradient(FORCED, [1.0, 0.3], 0.5, None, _forced_event_np, t_max=20.0, rtol=rtol, atol=atol)
    assert abs(grad.t_event - event_t.item()) <= 1e-10
    np.testing.assert_allclose(grad.dL_dy0, dy0.numpy(), rtol=1e-6)
    assert grad.dL_dt0 == pytest.approx(float(dt0), rel=1e-6)


def test_gqref_gradient_of_a_loss_on_time_and_state():
    """L = 2 t* + |y(t*)|²: both cotangents go through the implicit function theorem, in gqref and in
    gqtorch.odeint_event (over torchdiffeq.odeint, whose backprop also moves the step sizes: agreement ~ rtol)."""
    rtol, atol = 1e-9, 1e-11
    for reverse_time in (False, True):
        func = Forced()
        y0 = torch.tensor([1.0, 0.3], dtype=F64, requires_grad=True)
        event_t, solution = odeint_event(func, y0, torch.tensor(0.5, dtype=F64), event_fn=forced_event,
                                         reverse_time=reverse_time, odeint_interface=torchdiffeq.odeint, rtol=rtol,
                                         atol=atol)
        (dy0,) = _grads(2.0 * event_t + (solution[-1] ** 2).sum(), (y0,))
        y_event = solution[-1].detach().numpy()
        grad = event_gradient(FORCED, [1.0, 0.3], 0.5, None, _forced_event_np, t_max=-20.0 if reverse_time else 20.0,
                              dL_dt_event=2.0, dL_dy_event=2.0 * y_event, rtol=rtol, atol=atol)
        np.testing.assert_allclose(grad.dL_dy0, dy0.numpy(), rtol=1e-6)


def test_gqref_no_event_and_bad_inputs():
    with pytest.raises(NoEventError, match="t_max"):
        solve_until_event(BALL, [H, 0.0], 0.0, [G], lambda t, y, p: y[0], t_max=0.1)
    with pytest.raises(InputError, match="1-D"):
        solve_until_event(BALL, [[H, 0.0]], 0.0, [G], lambda t, y, p: y[0], t_max=1.0)
    with pytest.raises(InputError, match="t_max"):
        solve_until_event(BALL, [H, 0.0], 0.0, [G], lambda t, y, p: y[0], t_max=0.0)
    with pytest.raises(InputError, match="tol"):
        solve_until_event(BALL, [H, 0.0], 0.0, [G], lambda t, y, p: y[0], t_max=1.0, atol=np.ones(2))
    with pytest.raises(InputError, match="non-finite"):
        solve_until_event(BALL, [H, 0.0], 0.0, [G], lambda t, y, p: np.nan, t_max=1.0)
    found = solve_until_event(BALL, [0.0, 1.0], 0.0, [G], lambda t, y, p: y[0], t_max=1.0)
    assert found.t_event == 0.0 and found.step == -1
    with pytest.raises(InputError, match="zero at t0"):
        event_gradient(BALL, [0.0, 1.0], 0.0, [G], lambda t, y, p: y[0], t_max=1.0)


def _adaptive_interface(func, y0, t, *, event_fn, rtol=1e-7, atol=1e-9):
    """A minimal odeint(event_fn=…) on gqtorch's own dopri5 steps (adaptive_steps): the wiring gqtorch.odeint is to
    get, for a tensor y0 of shape (n,)."""
    from gqref.adaptive import AdaptiveOptions
    from gqref.tableau import DOPRI5
    from gqtorch.adaptive import StepCounts, adaptive_steps
    from gqtorch.controller import rms_norm
    from gqtorch.tableau import torch_tableau

    direction = 1.0 if float(t[1]) > float(t[0]) else -1.0
    s0 = direction * float(t[0])
    steps = adaptive_steps(func, y0, s0, direction, rtol, torch.full_like(y0, atol), rms_norm,
                           torch_tableau(DOPRI5, y0.dtype, y0.device), AdaptiveOptions(), StepCounts())
    s_event, y_event = integrate_until_event(steps, flat_event_fn(event_fn, lambda y: y, t[0].detach(), y0), s0, y0,
                                             direction, event_tolerance(atol))
    return torch.tensor(direction * s_event, dtype=t.dtype), torch.stack([y0, y_event])


@pytest.mark.parametrize("problem", ["spiral", "forced"])
def test_odeint_event_on_gqtorch_steps_matches_gqref_discrete_gradient(problem):
    """gqtorch's steps (adaptive_steps, sizes frozen under backprop) + odeint_event against gqref's event time and
    its implicit gradient with the discrete derivative: the same map up to the step sizes' rounding (≤ 1e-10 in
    t*, 1e-7 relative in the gradient at rtol = 1e-9)."""
    rtol, atol = 1e-9, 1e-11
    for reverse_time in (False, True):
        func = Spiral() if problem == "spiral" else Forced()
        y0 = torch.tensor([1.0, 0.3], dtype=F64, requires_grad=True)
        event_t, solution = odeint_event(func, y0, torch.tensor(0.5, dtype=F64), event_fn=forced_event,
                                         reverse_time=reverse_time, odeint_interface=_adaptive_interface, rtol=rtol,
                                         atol=atol)
        (dy0,) = _grads(event_t, (y0,))
        grad = event_gradient(SPIRAL if problem == "spiral" else FORCED, [1.0, 0.3], 0.5, None, _forced_event_np,
                              t_max=-20.0 if reverse_time else 20.0, rtol=rtol, atol=atol)
        assert abs(grad.t_event - event_t.item()) <= 1e-10
        np.testing.assert_allclose(dy0.numpy(), grad.dL_dy0, rtol=1e-7)
        np.testing.assert_allclose(solution[-1].detach().numpy(), grad.gradient.diagnostics.forward.ys[-1], atol=1e-10)


def test_lazily_fitted_dense_output_keeps_its_graph():
    """A step may fit its dense output on first use and keep it (gqtorch.adaptive does): the bisection's
    evaluations must not fix it without a graph, or y_event (and every implicit gradient) loses y0."""
    y0 = torch.tensor([H, 0.0], dtype=F64, requires_grad=True)

    def lazy(steps):
        for step in steps:
            cache = {}

            def state_at(s, step=step, cache=cache):
                if "fit" not in cache:
                    cache["fit"] = (step.y0 * 1.0, step.y1 * 1.0)  # a linear "fit", made in the current grad mode
                a, b = cache["fit"]
                return a + (s - step.s0) / (step.s1 - step.s0) * (b - a)

            yield AcceptedStep(s0=step.s0, s1=step.s1, y0=step.y0, y1=step.y1, state_at=state_at)

    _, y_event = integrate_until_event(lazy(rk4_steps(Ball(), y0, 0.0, 1.0, 0.05)),
                                       flat_event_fn(ball_hits_ground, lambda y: y, 0.0, y0), 0.0, y0, 1.0, 1e-9)
    assert y_event.requires_grad
    (dy0,) = _grads(y_event[1], (y0,))
    assert dy0 is not None


# --------------------------------------------------------------------------------------------------------------------
# through gqtorch.odeint


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_gqtorch_odeint_event_matches_gqref(direction):
    """gqtorch.odeint(event_fn=…) against gqref.events on the same problem: ≤ 1e-10 at rtol = 1e-9 (see
    test_gqtorch_solver_and_gqref_event_times_agree), and the state there."""
    import gqtorch

    rtol, atol = 1e-9, 1e-11
    y0 = torch.tensor([1.0, 0.3], dtype=F64)
    t = torch.tensor([0.5, 0.5 + direction], dtype=F64)
    event_t, solution = gqtorch.odeint(Forced(), y0, t, event_fn=forced_event, rtol=rtol, atol=atol)
    found = solve_until_event(FORCED, [1.0, 0.3], 0.5, None, _forced_event_np, t_max=0.5 + 10 * direction, rtol=rtol,
                              atol=atol)
    assert isinstance(event_t, torch.Tensor) and event_t.dtype == t.dtype
    assert solution.shape == (2, 2)
    assert abs(event_t.item() - found.t_event) <= 1e-10
    np.testing.assert_allclose(solution[-1].detach().numpy(), found.y_event, rtol=0, atol=1e-10)
    torch.testing.assert_close(solution[0], y0, rtol=0, atol=0)


def test_gqtorch_odeint_event_near_torchdiffeq():
    import gqtorch

    for direction in (1.0, -1.0):
        y0 = torch.tensor([1.0, 0.3], dtype=F64)
        t = torch.tensor([0.5, 0.5 + direction], dtype=F64)
        ours_t, ours = gqtorch.odeint(Forced(), y0, t, event_fn=forced_event)
        with torch.no_grad():
            theirs_t, theirs = torchdiffeq.odeint(Forced(), y0, t, event_fn=forced_event)
        # the step sizes differ by the error estimate's rounding (see test_gqref_event_near_torchdiffeqs)
        assert abs(ours_t.item() - theirs_t.item()) <= 1e-8
        torch.testing.assert_close(ours.detach(), theirs, rtol=0, atol=1e-8)


def _closed_forms(interface, reverse_time):
    """The ball and the decay through odeint_event with ``interface`` (None: gqtorch.odeint)."""
    if not reverse_time:
        t_event, dh, dg, _ = _ball_event(interface)
        exact = math.sqrt(2 * H / G)
        assert abs(t_event - exact) <= 1e-10  # exact dense output: the bisection's atol/2 only
        assert dh == pytest.approx(1 / math.sqrt(2 * G * H), rel=1e-9)
        assert dg == pytest.approx(-exact / (2 * G), rel=1e-9)
    rtol, atol = 1e-9, 1e-11
    decay, threshold = Decay(), Threshold()
    y0 = torch.tensor([Y0], dtype=F64, requires_grad=True)
    if reverse_time:
        # backwards from t0 = 0 under y' = +k y: y(t) = Y0·exp(k t) reaches C at t* = −ln(Y0/C)/k < 0
        event_t, _ = odeint_event(lambda t, y: decay.k * y, y0, torch.tensor(0.0, dtype=F64), event_fn=threshold,
                                  reverse_time=True, odeint_interface=interface, rtol=rtol, atol=atol)
        exact, sign = -math.log(Y0 / C) / K, -1.0
    else:
        event_t, _ = odeint_event(decay, y0, torch.tensor(0.0, dtype=F64), event_fn=threshold,
                                  odeint_interface=interface, rtol=rtol, atol=atol)
        exact, sign = math.log(Y0 / C) / K, 1.0
    dy0, dk, dc = _grads(event_t, (y0, decay.k, threshold.c))
    bound = 100 * rtol  # see the module docstring
    assert event_t.item() == pytest.approx(exact, rel=bound)
    assert float(dy0) == pytest.approx(sign / (K * Y0), rel=bound)  # t* = ±ln(C/Y0)/k
    assert float(dk) == pytest.approx(-exact / K, rel=bound)
    assert float(dc) == pytest.approx(-sign / (K * C), rel=bound)


@pytest.mark.parametrize("reverse_time", [False, True])
def test_closed_forms_through_torchdiffeq_interface(reverse_time):
    _closed_forms(torchdiffeq.odeint, reverse_time)


@pytest.mark.parametrize("reverse_time", [False, True])
def test_closed_forms_through_gqtorch(reverse_time):
    _closed_forms(None, reverse_time)


def test_gqtorch_gradients_match_gqref_discrete():
    """Backprop through gqtorch (steps frozen) and gqref's discrete gradient differentiate the same map up to the
    step sizes' rounding differences: 1e-7 relative at rtol = 1e-9."""
    rtol, atol = 1e-9, 1e-11
    func = Forced()
    y0 = torch.tensor([1.0, 0.3], dtype=F64, requires_grad=True)
    event_t, _ = odeint_event(func, y0, torch.tensor(0.5, dtype=F64), event_fn=forced_event, rtol=rtol, atol=atol)
    (dy0,) = _grads(event_t, (y0,))
    grad = event_gradient(FORCED, [1.0, 0.3], 0.5, None, _forced_event_np, t_max=20.0, rtol=rtol, atol=atol)
    assert abs(grad.t_event - event_t.item()) <= 1e-10
    np.testing.assert_allclose(dy0.numpy(), grad.dL_dy0, rtol=1e-7)


# --------------------------------------------------------------------------------------------------------------------
# fixed grids: gqtorch.fixed_grid's steps against torchdiffeq's fixed-grid event handling


@pytest.mark.parametrize("direction", [1.0, -1.0])
@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_grid_events_match_torchdiffeq(method, interp, direction):
    """(Not explicit_adams: its order-12 Adams–Bashforth at this step size amplifies the roundoff differences
    between the two implementations' coefficients, ~1e-13 at t = 0.9 to ~1e-9 at t = 1.3, so it is a test of the
    method's stability rather than of the event search.)"""
    from gqref.fixed_grid import event_grid, fixed_options
    from gqtorch.fixed_grid import fixed_steps

    options = {"step_size": 0.01, "interp": interp}
    y0 = torch.tensor([1.0, 0.3], dtype=F64)
    t = torch.tensor([0.5, 0.5 + direction], dtype=F64)
    func = Forced()
    with torch.no_grad():
        event_t, solution = torchdiffeq.odeint(func, y0, t, event_fn=forced_event, method=method, options=options,
                                               atol=1e-9)
        opts = fixed_options(method, options)
        steps = fixed_steps(func, y0, event_grid(0.5 * direction, opts), direction, method, opts, 1e-7,
                            torch.full((2,), 1e-9, dtype=F64))
        s_event, y_event = integrate_until_event(steps, flat_event_fn(forced_event, lambda y: y, 0.5, y0),
                                                 0.5 * direction, y0, direction, 1e-9)
    # the same grid, the same stages up to summation order, the same bisection
    assert abs(direction * s_event - event_t.item()) <= 1e-12
    torch.testing.assert_close(y_event, solution[-1], rtol=0, atol=1e-12)
