"""The fixed-grid family (euler, midpoint, rk4, heun2, heun3, explicit/implicit Adams) against torchdiffeq 0.2.5.

gqtorch.fixed_grid.solve_fixed and gqref.fixed_grid.solve_fixed are run directly (flattening as gqtorch.odeint
does) and compared with torchdiffeq.odeint on several problems, both time directions and every option: same
solution, same number of evaluations, and the field evaluated at the very same times (which pins down the grid,
the stage placement, perturb's one-ulp nudges and the Adams ramp-up and corrector iteration counts).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torchdiffeq
from hypothesis import given
from hypothesis import strategies as st
from torchdiffeq._impl.odeint import SOLVERS

import gqref
from gqref.errors import NONFINITE_FIELD, SUCCESS, InputError, NonFiniteFieldError
from gqref.fixed_grid import FIXED_METHODS, FIXED_OPTIONS, event_grid, fixed_options
from gqref.fixed_grid import fixed_steps as ref_fixed_steps
from gqref.fixed_grid import solve_fixed as ref_solve_fixed
from gqref.strategies import linear_problems
from gqtorch.fixed_grid import Tally, fixed_callbacks, fixed_steps, solve_fixed
from gqtorch.fixed_grid import fixed_options as torch_fixed_options
from gqtorch.solve import FlatField
from gqtorch.steps import AcceptedStep
from tests.test_lockstep import torch_linear

torch.set_num_threads(1)

TORCHDIFFEQ_FIXED = ("euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams", "implicit_adams", "fixed_adams")
EPS = np.finfo(np.float64).eps


# --- problems -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """A field in torch (caller's layout) and NumPy (flat) form, with its initial state and output times."""

    name: str
    torch_func: Callable
    numpy_func: Callable
    y0: object  # a tensor or a tuple of tensors
    t: np.ndarray
    step_size: float
    explicit_adams: dict = dataclasses.field(default_factory=dict)  # see options_for

    def options_for(self, method: str) -> dict:
        """The step size and extra options a method is run with on this problem.

        explicit_adams at its default max_order (Adams–Bashforth 11) amplifies rounding differences unless h·|λ|
        is a few 1e-3 (at these problems' usual steps its solution drifts away from the true one, and from
        torchdiffeq's, by factors up to 1e10), so it gets a smaller step, or (the long scalar problem) a lower
        max_order that is stable at the usual step.
        """
        extra = self.explicit_adams if method == "explicit_adams" else {}
        return {"step_size": self.step_size, **extra}

    def flat_y0(self) -> np.ndarray:
        blocks = self.y0 if isinstance(self.y0, tuple) else (self.y0,)
        return np.concatenate([b.reshape(-1).numpy() for b in blocks])


A_LINEAR = np.array([[-0.4, 1.0, 0.0], [-1.0, -0.4, 0.3], [0.0, -0.3, -0.2]])
A_SPIRAL = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def _scalar_field(t, y):
    return 2 * y / t + t**4 * np.sin(2 * t) - t**2 + 4 * t**3


def scalar_exact(t):
    """y = t²(−t² cos 2t/2 + t sin 2t/2 + cos 2t/4 − t + 2t²) solves y' = 2y/t + t⁴ sin 2t − t² + 4t³ (check:
    (y/t²)' = t² sin 2t − 1 + 4t)."""
    return t**2 * (-(t**2) * np.cos(2 * t) / 2 + t * np.sin(2 * t) / 2 + np.cos(2 * t) / 4 - t + 2 * t**2)


def _tuple_torch(t, y):
    m, v = y
    return (torch.tensor([[-0.3, 1.0], [-1.0, -0.3]], dtype=m.dtype) @ m + 0.1 * torch.sin(t),
            -0.5 * v + 0.1 * m.sum())


def _tuple_numpy(t, y, p):
    m, v = y[:4].reshape(2, 2), y[4:]
    dm = np.array([[-0.3, 1.0], [-1.0, -0.3]]) @ m + 0.1 * np.sin(t)
    return np.concatenate([dm.reshape(-1), -0.5 * v + 0.1 * m.sum()])


PROBLEMS = {
    "linear": Problem("linear", lambda t, y: torch.tensor(A_LINEAR) @ y, lambda t, y, p: A_LINEAR @ y,
                      torch.tensor([1.0, 0.5, -0.3], dtype=torch.float64), np.linspace(0.0, 2.0, 6), 0.05,
                      {"step_size": 0.002}),
    "spiral": Problem("spiral", lambda t, y: (y**3) @ torch.tensor(A_SPIRAL), lambda t, y, p: (y**3) @ A_SPIRAL,
                      torch.tensor([0.5, 0.1], dtype=torch.float64), np.linspace(0.0, 1.5, 7), 0.03,
                      {"step_size": 0.003}),
    "scalar": Problem("scalar", lambda t, y: _scalar_field(t, y), lambda t, y, p: _scalar_field(t, y),
                      torch.tensor([scalar_exact(1.0)], dtype=torch.float64), np.linspace(1.0, 8.0, 8), 0.05,
                      {"max_order": 8}),
    "tuple": Problem("tuple", _tuple_torch, _tuple_numpy,
                     (torch.tensor([[1.0, -0.5], [0.2, 0.8]], dtype=torch.float64),
                      torch.tensor([0.3, -0.1, 0.6], dtype=torch.float64)), np.linspace(0.0, 1.5, 5), 0.05,
                     {"step_size": 0.003}),
}


def nonuniform_grid(func, y0, t, n=23):
    """A grid_constructor: n points crowding towards t[0], ends exactly on t[0] and t[-1] (tensor in, tensor out)."""
    times = np.asarray(t, dtype=np.float64)
    grid = times[0] + (times[-1] - times[0]) * np.linspace(0.0, 1.0, n) ** 1.3
    grid[0], grid[-1] = times[0], times[-1]
    return torch.tensor(grid, dtype=t.dtype) if isinstance(t, torch.Tensor) else grid


def option_sets(problem: Problem, method: str) -> dict[str, dict]:
    base = problem.options_for(method)
    h = base.pop("step_size")
    # about as many points as the step_size grid
    grid = functools.partial(nonuniform_grid, n=max(4, round((problem.t[-1] - problem.t[0]) / h)))
    sets = {
        "outputs": {},
        "step": {"step_size": h},
        "cubic": {"step_size": h, "interp": "cubic"},
        "perturb": {"step_size": h, "perturb": True},
        "grid": {"grid_constructor": grid},
        "grid-cubic-perturb": {"grid_constructor": grid, "interp": "cubic", "perturb": True},
        # three steps for 5-8 outputs: several outputs per step, each with its own f(t1, y1)
        "coarse-cubic": {"step_size": (problem.t[-1] - problem.t[0]) / 2.6, "interp": "cubic"},
    }
    return {label: {**options, **base} for label, options in sets.items()}


# --- running the three solvers ------------------------------------------------------------------------------------

class Recorder:
    """Wraps a field: records every evaluation time (as a float) and counts the calls."""

    def __init__(self, func):
        self.func = func
        self.times: list[float] = []

    def __call__(self, t, *rest):
        self.times.append(float(t))
        return self.func(t, *rest)


def _times(problem: Problem, reverse: bool) -> np.ndarray:
    return problem.t[::-1].copy() if reverse else problem.t


def run_torchdiffeq(problem, method, options, reverse=False, rtol=1e-7, atol=1e-9):
    func = Recorder(problem.torch_func)
    t = torch.tensor(_times(problem, reverse))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ys = torchdiffeq.odeint(func, problem.y0, t, method=method, options=dict(options), rtol=rtol, atol=atol)
    blocks = ys if isinstance(ys, tuple) else (ys,)
    return torch.cat([b.reshape(len(t), -1) for b in blocks], dim=1).numpy(), func.times


def _flat_problem(problem: Problem, func):
    blocks = problem.y0 if isinstance(problem.y0, tuple) else (problem.y0,)
    field = FlatField(func, [b.shape for b in blocks], isinstance(problem.y0, tuple))
    return field, torch.cat([b.reshape(-1) for b in blocks])


def run_gqtorch(problem, method, options, reverse=False, rtol=1e-7, atol=1e-9, callbacks=None):
    func = Recorder(problem.torch_func)
    field, y0 = _flat_problem(problem, func)
    t = _times(problem, reverse)
    direction = -1.0 if reverse else 1.0
    kwargs = {} if callbacks is None else {"callbacks": callbacks}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opts = fixed_options(method, options)
        result = solve_fixed(field, y0, (direction * t).tolist(), direction, method, opts, rtol,
                             torch.full_like(y0, atol), grid_args=(problem.torch_func, problem.y0, torch.tensor(t)),
                             **kwargs)
    assert result.status == SUCCESS
    assert result.nfe == len(func.times)
    return result.ys.numpy(), func.times, result


def run_gqref(problem, method, options, reverse=False, rtol=1e-7, atol=1e-9):
    func = Recorder(problem.numpy_func)
    y0 = problem.flat_y0()
    t = _times(problem, reverse)
    direction = -1.0 if reverse else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = ref_solve_fixed(func, None, y0, direction * t, direction, method, fixed_options(method, options),
                                 rtol, np.full(y0.shape, atol))
    assert result.status == SUCCESS
    assert result.nfe == len(func.times)
    return result.ys, func.times, result


# --- parity -------------------------------------------------------------------------------------------------------

def test_every_torchdiffeq_fixed_method_is_offered():
    assert set(TORCHDIFFEQ_FIXED) <= set(FIXED_METHODS)
    assert set(FIXED_METHODS) <= set(SOLVERS)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("method", FIXED_METHODS)
def test_parity_with_torchdiffeq(method, problem, reverse):
    """Same solution (≤ 1e-12 relative), same evaluation count, same evaluation times, for every option set.

    Grids, stage times, perturbation and the Adams history are identical; only the order in which a step's
    weighted sums are added differs (addmv vs torchdiffeq's expression), a few ulps per step, which these stable
    problems (≤ 150 steps) carry to well below 1e-12 of the solution's scale. gqref follows the same arithmetic
    in NumPy: the brief's 1e-10 between the twins is met with orders of magnitude to spare.
    """
    prob = PROBLEMS[problem]
    for label, options in option_sets(prob, method).items():
        theirs, their_times = run_torchdiffeq(prob, method, options, reverse)
        ours, our_times, _ = run_gqtorch(prob, method, options, reverse)
        ref, ref_times, _ = run_gqref(prob, method, options, reverse)
        scale = max(1.0, float(np.max(np.abs(theirs))))
        assert np.all(np.isfinite(theirs)), label
        assert np.max(np.abs(ours - theirs)) <= 1e-12 * scale, label
        assert np.max(np.abs(ref - ours)) <= 1e-10 * scale, label
        assert our_times == their_times, label  # count and every time, perturbed ones bit for bit
        assert ref_times == their_times, label


ADAMS_OPTIONS = [
    {"max_order": 2}, {"max_order": 3}, {"max_order": 4}, {"max_order": 5, "max_iters": 1}, {"max_order": 8},
    {"max_order": 12, "max_iters": 10}, {"max_order": 6, "perturb": True, "interp": "cubic"},
]


@pytest.mark.parametrize("options", ADAMS_OPTIONS, ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()))
@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
def test_adams_options_match_torchdiffeq(method, options):
    """max_order (including the rk4 fallback below 4) and max_iters, on two problems and both directions."""
    high = options.get("max_order", 12) > 8
    for name in ("spiral",) if method == "explicit_adams" and high else ("spiral", "scalar"):
        prob = PROBLEMS[name]
        for reverse in (False, True):
            opts = {**(prob.options_for(method) if high else {"step_size": prob.step_size}), **options}
            theirs, their_times = run_torchdiffeq(prob, method, opts, reverse)
            ours, our_times, _ = run_gqtorch(prob, method, opts, reverse)
            ref, _, _ = run_gqref(prob, method, opts, reverse)
            scale = max(1.0, float(np.max(np.abs(theirs))))
            assert np.max(np.abs(ours - theirs)) <= 1e-12 * scale
            assert np.max(np.abs(ref - ours)) <= 1e-10 * scale
            assert our_times == their_times


def _count_warnings(run) -> tuple[object, int]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run()
    return out, sum("converge" in str(w.message) for w in caught)


@pytest.mark.parametrize("tols", [(1e-7, 1e-9), (1e-15, 1e-18), (1e-3, 1e-4)])
def test_implicit_adams_corrector_matches_torchdiffeq(tols):
    """The corrector's stopping test on dy (rtol/atol, per-component atol), its iteration count, and the warning
    plus dropped history value when it does not converge (a 1e-15 tolerance forces that on most steps)."""
    rtol, atol = tols
    prob = PROBLEMS["scalar"]
    opts = {"step_size": 0.1, "max_iters": 3}
    func = Recorder(prob.torch_func)
    (theirs, n_theirs) = _count_warnings(lambda: torchdiffeq.odeint(
        func, prob.y0, torch.tensor(prob.t), method="implicit_adams", options=opts, rtol=rtol, atol=atol))
    field, y0 = _flat_problem(prob, Recorder(prob.torch_func))

    def ours_run():
        return solve_fixed(field, y0, prob.t.tolist(), 1.0, "implicit_adams", fixed_options("implicit_adams", opts),
                           rtol, torch.full_like(y0, atol))

    ours, n_ours = _count_warnings(ours_run)
    ref, n_ref = _count_warnings(lambda: ref_solve_fixed(
        prob.numpy_func, None, prob.flat_y0(), prob.t, 1.0, "implicit_adams", fixed_options("implicit_adams", opts),
        rtol, np.full(1, atol)))
    assert n_ours == n_theirs == n_ref
    if rtol < 1e-10:
        assert n_ours > 10  # the non-converged path is really exercised
    assert ours.nfe == len(func.times) == ref.nfe
    scale = float(np.max(np.abs(theirs.numpy())))
    assert np.max(np.abs(ours.ys.numpy() - theirs.numpy())) <= 1e-12 * scale
    assert np.max(np.abs(ref.ys - ours.ys.numpy())) <= 1e-10 * scale


def test_max_order_below_four_is_rk4_and_warns():
    prob = PROBLEMS["spiral"]
    with pytest.warns(UserWarning, match="max_order = 3"):
        fixed_options("implicit_adams", {"max_order": 3})
    rk4, _, _ = run_gqtorch(prob, "rk4", {"step_size": 0.05})
    for max_order in (1, 2, 3):
        adams, _, _ = run_gqtorch(prob, "implicit_adams", {"step_size": 0.05, "max_order": max_order})
        assert np.array_equal(adams, rk4)


def test_float32_state_matches_torchdiffeq():
    """In float32 the field sees float32 times (perturbed in float32) as in torchdiffeq."""
    y0 = torch.tensor([0.5, 0.1], dtype=torch.float32)
    a = torch.tensor(A_SPIRAL, dtype=torch.float32)
    t = np.linspace(0.0, 1.5, 7)
    for method in FIXED_METHODS:
        # Adams–Bashforth 11 would amplify float32 rounding (see Problem.options_for): a lower max_order
        options = {"step_size": 0.03, "perturb": True, **({"max_order": 5} if "adams" in method else {})}
        theirs_f = Recorder(lambda t, y: (y**3) @ a)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = torchdiffeq.odeint(theirs_f, y0, torch.tensor(t), method=method, options=options, rtol=1e-4,
                                        atol=1e-6)
        ours_f = Recorder(lambda t, y: (y**3) @ a)
        assert all(isinstance(x, float) for x in ours_f.times)
        field = FlatField(ours_f, [y0.shape], False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # a float32 tolerance: at 1e-7 the corrector's stopping test would be decided by rounding
            result = solve_fixed(field, y0, t.tolist(), 1.0, method, fixed_options(method, options), 1e-4,
                                 torch.full_like(y0, 1e-6))
        assert result.nfe == len(theirs_f.times)
        assert ours_f.times == theirs_f.times
        # same grid and times (t given in float64, as gqtorch reads it); the sums' grouping differs: a few float32
        # ulps per step (50 steps)
        assert torch.allclose(result.ys, theirs, rtol=0, atol=200 * float(torch.finfo(torch.float32).eps))


# --- perturb, callbacks, steps ------------------------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("method", FIXED_METHODS)
def test_perturb_avoids_grid_points(method, reverse):
    """perturb=True: no evaluation at a grid point, but within one ulp of one (start nudged along the direction
    of integration, end nudged back); perturb=False: the grid points are evaluated."""
    prob = PROBLEMS["linear"]
    grid = np.arange(0.0, 2.0 + 1e-12, 0.25)
    grid_set = set(grid.tolist())
    direction = -1.0 if reverse else 1.0
    _, plain, _ = run_gqtorch(prob, method, {"step_size": 0.25}, reverse)
    _, nudged, _ = run_gqtorch(prob, method, {"step_size": 0.25, "perturb": True}, reverse)
    assert grid_set & set(plain)
    assert not grid_set & set(nudged)
    starts = {float(np.nextafter(s, s + direction)) for s in grid_set}
    ends = {float(np.nextafter(s, s - direction)) for s in grid_set}
    assert set(nudged) & starts  # every method evaluates at its steps' starts
    if method not in ("euler", "midpoint", "heun3", "explicit_adams"):  # these never evaluate at a step's end
        assert set(nudged) & ends


def test_callback_step_once_per_grid_step():
    prob = PROBLEMS["tuple"]
    for method in FIXED_METHODS:
        for reverse in (False, True):
            calls: list = []

            def func(t, y):
                return prob.torch_func(t, y)

            func.callback_step = lambda t0, y0, dt, calls=calls: calls.append((float(t0), y0, float(dt)))
            callbacks = fixed_callbacks(func, method)
            _, _, result = run_gqtorch(prob, method, {"step_size": 0.25}, reverse, callbacks=callbacks)
            t = _times(prob, reverse)
            grid = np.append(t[0] + np.sign(t[-1] - t[0]) * 0.25 * np.arange(6), t[-1])
            assert len(calls) == result.n_steps == len(grid) - 1
            assert [c[0] for c in calls] == pytest.approx(grid[:-1].tolist(), abs=1e-15)
            assert [c[2] for c in calls] == pytest.approx(np.diff(grid).tolist(), abs=1e-15)  # signed
            assert isinstance(calls[0][1], tuple) and calls[0][1][0].shape == (2, 2)  # the caller's layout
            assert torch.equal(calls[0][1][0], prob.y0[0])


def test_callbacks_fixed_grid_cannot_call_warn():
    for method in ("euler", "implicit_adams"):
        for name in ("callback_accept_step", "callback_reject_step"):
            def func(t, y):
                return -y

            setattr(func, name, lambda t0, y0, dt: None)
            with pytest.warns(UserWarning, match=name):
                callbacks = fixed_callbacks(func, method)
            assert not callbacks.any

            def adjoint_func(t, y):
                return -y

            setattr(adjoint_func, name + "_adjoint", lambda t0, y0, dt: None)
            adjoint_func.callback_step_adjoint = lambda t0, y0, dt: None
            with pytest.warns(UserWarning, match=name + "_adjoint"):
                callbacks = fixed_callbacks(adjoint_func, method, adjoint=True)
            assert callbacks.step is adjoint_func.callback_step_adjoint


@pytest.mark.parametrize("interp", ["linear", "cubic"])
@pytest.mark.parametrize("method", ["rk4", "implicit_adams"])
def test_fixed_steps_give_the_interpolant(method, interp):
    """fixed_steps yields one AcceptedStep per grid step; state_at is the interpolant solve_fixed outputs use,
    and a cubic step evaluates f(t1, y1) once however often it is read."""
    prob = PROBLEMS["spiral"]
    opts = fixed_options(method, {"step_size": 0.1, "interp": interp})
    field, y0 = _flat_problem(prob, prob.torch_func)
    atol = torch.full_like(y0, 1e-9)
    grid = np.append(np.arange(0.0, 1.45, 0.1), 1.5)
    tally = Tally()
    steps = list(fixed_steps(field, y0, grid.tolist(), 1.0, method, opts, 1e-7, atol, tally=tally))
    nfe_steps = tally.nfe
    assert all(isinstance(step, AcceptedStep) for step in steps)
    assert [s.s0 for s in steps] == grid[:-1].tolist() and [s.s1 for s in steps] == grid[1:].tolist()
    s_out = [0.0, 0.05, 0.37, 0.4, 1.23, 1.5]
    solved = solve_fixed(field, y0, s_out, 1.0, method, opts, 1e-7, atol)
    for j, s in enumerate(s_out[1:], start=1):
        step = next(st for st in steps if st.s0 < s <= st.s1)
        assert torch.allclose(step.state_at(s), solved.ys[j], rtol=0, atol=1e-15)
        assert torch.allclose(step.state_at(s), solved.ys[j], rtol=0, atol=1e-15)  # read twice
    assert torch.equal(steps[5].state_at(steps[5].s1), steps[5].y1)
    read = len({next(i for i, st in enumerate(steps) if st.s0 < s <= st.s1) for s in s_out[1:]} | {5})
    assert tally.nfe - nfe_steps == (read if interp == "cubic" else 0)
    assert tally.status()[0] == SUCCESS


def test_event_grid_needs_step_size_and_accumulates():
    with pytest.raises(InputError, match="step_size"):
        next(event_grid(0.0, fixed_options("rk4", {})))
    with pytest.raises(InputError, match="step_size"):
        next(event_grid(0.0, fixed_options("rk4", {"grid_constructor": nonuniform_grid})))
    points = event_grid(1.0, fixed_options("euler", {"step_size": 0.1}))
    first = [next(points) for _ in range(4)]
    assert first == [1.0, 1.0 + 0.1, 1.0 + 0.1 + 0.1, 1.0 + 0.1 + 0.1 + 0.1]  # t1 = t0 + dt, as torchdiffeq


def test_gqref_fixed_steps_match_solve():
    prob = PROBLEMS["linear"]
    opts = fixed_options("heun3" if "heun3" in FIXED_METHODS else "rk4", {"step_size": 0.1, "interp": "cubic"})
    y0 = prob.flat_y0()
    steps = list(ref_fixed_steps(prob.numpy_func, None, y0, [0.0, 0.1, 0.2, 0.3], 1.0, opts.method, opts, 1e-7,
                                 1e-9))
    solved = ref_solve_fixed(prob.numpy_func, None, y0, np.array([0.0, 0.15, 0.3]), 1.0, opts.method, opts, 1e-7,
                             1e-9)
    assert np.allclose(steps[1].state_at(0.15), solved.ys[1], rtol=0, atol=1e-15)
    assert np.array_equal(steps[-1].y1, solved.steps_ys[-1])


def test_non_finite_field_is_reported_with_its_time():
    def func(t, y):
        return y / (1.05 - t) if float(t) < 1.0 else y * float("nan")

    y0 = torch.tensor([1.0], dtype=torch.float64)
    field = FlatField(func, [y0.shape], False)
    for method in FIXED_METHODS:
        opts = fixed_options(method, {"step_size": 0.25})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = solve_fixed(field, y0, [0.0, 2.0], 1.0, method, opts, 1e-7, torch.full_like(y0, 1e-9))
        assert result.status == NONFINITE_FIELD and result.ys is None
        # the first evaluation at t = 1 ends step 4 for methods with a stage at a step's end, else starts step 5
        ends_on_t1 = method in ("rk4", "heun2", "implicit_adams", "fixed_adams")
        steps_before = 3 if ends_on_t1 else 4
        assert result.s_stop == 1.0 and result.n_steps == steps_before
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the corrector struggles near the pole at 1.05: expected
            ref = ref_solve_fixed(lambda t, y, p: func(torch.tensor(t), torch.tensor(y)).numpy(), None,
                                  y0.numpy(), np.array([0.0, 2.0]), 1.0, method, opts, 1e-7, 1e-9)
        assert ref.status == NONFINITE_FIELD and ref.s_stop == 1.0 and ref.n_steps == steps_before
        with pytest.raises(NonFiniteFieldError):
            list(ref_fixed_steps(lambda t, y, p: y * np.nan, None, y0.numpy(), [0.0, 1.0], 1.0, method, opts,
                                 1e-7, 1e-9))


def test_backprop_matches_torchdiffeq():
    """Gradients flow through every method (history, corrector and interpolants included)."""
    prob = PROBLEMS["spiral"]
    for method in FIXED_METHODS:
        for options in ({"step_size": 0.1}, {"step_size": 0.1, "interp": "cubic", "perturb": True}):
            y0 = prob.y0.clone().requires_grad_(True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs = torchdiffeq.odeint(prob.torch_func, y0, torch.tensor(prob.t), method=method,
                                            options=options)
            (g_theirs,) = torch.autograd.grad(theirs.square().sum(), y0)
            y0b = prob.y0.clone().requires_grad_(True)
            field = FlatField(prob.torch_func, [y0b.shape], False)
            ours = solve_fixed(field, y0b, prob.t.tolist(), 1.0, method, fixed_options(method, options), 1e-7,
                               torch.full((2,), 1e-9, dtype=torch.float64))
            (g_ours,) = torch.autograd.grad(ours.ys.square().sum(), y0b)
            assert torch.allclose(g_ours, g_theirs, rtol=1e-12, atol=1e-12)


# --- options ------------------------------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("euler", {"stepsize": 0.1}, "stepsize"),
    ("rk4", {"max_order": 4}, "max_order"),
    ("euler", {"step_size": 0.0}, "step_size"),
    ("euler", {"step_size": -0.1}, "step_size"),
    ("midpoint", {"step_size": float("nan")}, "step_size"),
    ("midpoint", {"step_size": "0.1"}, "step_size"),
    ("rk4", {"step_size": 0.1, "grid_constructor": nonuniform_grid}, "mutually exclusive"),
    ("rk4", {"grid_constructor": [0.0, 1.0]}, "grid_constructor"),
    ("rk4", {"interp": "quadratic"}, "interp"),
    ("rk4", {"perturb": "yes"}, "perturb"),
    ("rk4", {"perturb": 1}, "perturb"),
    ("implicit_adams", {"max_order": 13}, "max_order"),
    ("implicit_adams", {"max_order": 0}, "max_order"),
    ("explicit_adams", {"max_order": 4.5}, "max_order"),
    ("implicit_adams", {"max_iters": 0}, "max_iters"),
    ("implicit_adams", {"max_iters": True}, "max_iters"),
    ("implicit_adams", {"implicit": False}, "implicit"),
]


@pytest.mark.parametrize(("method", "options", "named"), BAD_OPTIONS)
def test_bad_options_raise_input_error_naming_them(method, options, named):
    with pytest.raises(InputError, match=named):
        fixed_options(method, options)


def test_unknown_option_lists_the_supported_ones():
    with pytest.raises(InputError) as error:
        fixed_options("implicit_adams", {"norm": "rms"})
    for name in FIXED_OPTIONS["implicit_adams"]:
        assert name in str(error.value)
    with pytest.raises(InputError, match="method"):
        fixed_options("dopri5", {})


def test_options_accept_scalar_tensors():
    # gqtorch turns one-element tensors into numbers before gqref's checks (gqref itself is backend-free)
    opts = torch_fixed_options("implicit_adams", {"step_size": torch.tensor(0.1), "max_iters": np.int64(3)})
    assert opts.step_size == pytest.approx(0.1) and opts.max_iters == 3 and isinstance(opts.max_iters, int)
    assert fixed_options("fixed_adams", {}).max_order == 12 and fixed_options("fixed_adams", {}).max_iters == 4


@pytest.mark.parametrize(("grid", "named"), [
    (lambda t: torch.linspace(0.0, 1.0, 5), "from t\\[0\\]"),
    (lambda t: torch.tensor([0.0, 0.9, 0.5, 1.5]), "strictly increasing"),
    (lambda t: torch.tensor([0.0, float("nan"), 1.5]), "NaN"),
    (lambda t: torch.zeros(2, 2), "1-D"),
])
def test_bad_constructed_grid(grid, named):
    prob = PROBLEMS["spiral"]
    field, y0 = _flat_problem(prob, prob.torch_func)
    opts = fixed_options("euler", {"grid_constructor": lambda func, y0, t: grid(t)})
    with pytest.raises(InputError, match=named):
        solve_fixed(field, y0, prob.t.tolist(), 1.0, "euler", opts, 1e-7, torch.full_like(y0, 1e-9),
                    grid_args=(prob.torch_func, prob.y0, torch.tensor(prob.t)))


def test_grid_constructor_sees_the_callers_func_y0_and_t():
    prob = PROBLEMS["tuple"]
    seen = []

    def constructor(func, y0, t):
        seen.append((func, y0, t))
        return t

    field, y0 = _flat_problem(prob, prob.torch_func)
    t = torch.tensor(prob.t[::-1].copy())
    solve_fixed(field, y0, (-prob.t[::-1]).tolist(), -1.0, "euler", fixed_options("euler", {
        "grid_constructor": constructor}), 1e-7, torch.full_like(y0, 1e-9), grid_args=(prob.torch_func, prob.y0, t))
    assert seen == [(prob.torch_func, prob.y0, t)]


def test_huge_step_size_keeps_both_ends():
    """A step larger than the span by more than 1/ε still integrates the span in one step (torchdiffeq's grid
    would collapse to the end point alone)."""
    _, times, result = run_gqtorch(PROBLEMS["linear"], "euler", {"step_size": 1e300})
    assert result.n_steps == 1 and times == [0.0]


# --- convergence --------------------------------------------------------------------------------------------------

ORDERS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


@pytest.mark.parametrize(("method", "options", "order"), [
    *[(m, {}, p) for m, p in ORDERS.items() if m in FIXED_METHODS],
    ("explicit_adams", {"max_order": 4}, 3),  # Adams–Bashforth 3
    ("explicit_adams", {"max_order": 5}, 4),
    ("implicit_adams", {"max_order": 4}, 4),  # AB3 predicted, Adams–Moulton 4 iterated to convergence
    ("implicit_adams", {"max_order": 5, "max_iters": 20}, 5),  # iterated to convergence (4 is not enough)
])
def test_observed_convergence_order(method, options, order):
    """Error at t = 3 of y' = 2y/t + t⁴ sin 2t − t² + 4t³ (exact solution known) for halving steps: the ratio of
    successive errors is 2^p to within 0.2 in p (the next term of the error expansion is O(h) relatively)."""
    errors = []
    for h in (0.02, 0.01, 0.005):
        prob = Problem("scalar", lambda t, y: _scalar_field(t, y), lambda t, y, p: _scalar_field(t, y),
                       torch.tensor([scalar_exact(1.0)], dtype=torch.float64), np.array([1.0, 3.0]), h)
        ys, _, _ = run_gqref(prob, method, {"step_size": h, **options}, rtol=1e-13, atol=1e-13)
        errors.append(abs(ys[-1, 0] - scalar_exact(3.0)))
    observed = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(np.abs(observed - order) < 0.2), (observed, errors)


# --- gqref.solve's fixed-grid path (the legacy kernel, until it calls solve_fixed) --------------------------------

@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@given(problem=linear_problems(max_dim=4), step_size=st.one_of(st.none(), st.floats(0.01, 0.7)))
def test_matches_torchdiffeq_fixed_grid(method, problem, step_size):
    y0, t = problem.y0, problem.t
    ours = gqref.solve(problem.field, y0, t, problem.params, method=method, step_size=step_size)
    options = {} if step_size is None else {"step_size": step_size}
    theirs = torchdiffeq.odeint(torch_linear(problem), torch.tensor(y0), torch.tensor(t), method=method,
                                options=options).numpy()
    # identical grids and formulas; only the grouping of the stage sums differs (a few ulps per step)
    # the last grid point is the last output time, where the interpolation returns the step's end state exactly
    assert np.array_equal(ours.steps.ys[-1], ours.ys[-1])
    steps = ours.stats.n_accepted
    assert np.max(np.abs(ours.ys - theirs)) <= 64 * steps * EPS * max(1.0, np.max(np.abs(theirs)))


@pytest.mark.parametrize("method", ["rk4", "implicit_adams"])
def test_a_single_output_time_takes_no_step(method):
    prob = PROBLEMS["linear"]
    field, y0 = _flat_problem(prob, prob.torch_func)
    for options in ({}, {"step_size": 0.1}):
        result = solve_fixed(field, y0, [0.5], 1.0, method, fixed_options(method, options), 1e-7,
                             torch.full_like(y0, 1e-9))
        assert result.status == SUCCESS and result.nfe == 0 and result.n_steps == 0
        assert torch.equal(result.ys, y0.unsqueeze(0))
        ref = ref_solve_fixed(prob.numpy_func, None, prob.flat_y0(), np.array([0.5]), 1.0, method,
                              fixed_options(method, options), 1e-7, 1e-9)
        assert ref.status == SUCCESS and ref.nfe == 0 and np.array_equal(ref.ys, prob.flat_y0()[None])
