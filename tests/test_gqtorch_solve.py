"""gqtorch.odeint: lockstep with gqref.solve and torchdiffeq; fixed grids, tuples, float32, backprop, errors."""

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from hypothesis import given
from hypothesis import strategies as st

import gqref
import gqtorch
from gqref import problems as pr
from gqref.strategies import linear_problems, mlp_problems, tolerances
from tests.fields import Counted

torch.set_num_threads(1)
F64 = torch.float64



def linear_field(problem, params=None):
    """y' = A y + b from a linear Problem's params ([A.ravel() row-major, b]), as a torch function."""
    n = problem.state_dim
    p = torch.tensor(problem.params, dtype=F64) if params is None else params
    a, b = p[: n * n].reshape(n, n), p[n * n:]
    return lambda t, y: torch.mv(a.to(y.dtype), y) + b.to(y.dtype)


def softplus(x):
    """log(1 + eˣ): torch's default switches to x above 20, 2e-9 from gqref's softplus there, hence 50."""
    return torch.nn.functional.softplus(x, threshold=50.0)


def mlp_field(problem, params):
    """The softplus MLP of gqref.problems.mlp, layout of gqref.problems.pack_mlp, as a torch function of params."""
    s = problem.state_dim
    time_dependent = problem.name == "mlp_time_dependent"
    d_in = s + int(time_dependent)
    width = (params.numel() - s) // (d_in + 1 + s)
    w1 = params[: width * d_in].reshape(width, d_in)
    b1 = params[width * d_in: width * (d_in + 1)]
    w2 = params[width * (d_in + 1): width * (d_in + 1 + s)].reshape(s, width)
    b2 = params[width * (d_in + 1 + s):]

    def f(t, y):
        z = torch.cat((y, t.reshape(1).to(y.dtype))) if time_dependent else y
        dtype = y.dtype
        return torch.mv(w2.to(dtype), softplus(torch.mv(w1.to(dtype), z) + b1.to(dtype))) + b2.to(dtype)

    return f


def torch_field(problem, params=None):
    if problem.name == "linear":
        return linear_field(problem, params)
    return mlp_field(problem, torch.tensor(problem.params, dtype=F64) if params is None else params)


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-300))


problems_with_torch_fields = st.one_of(linear_problems(max_dim=4), mlp_problems())


# --- (1) lockstep with gqref.solve ------------------------------------------------------------------------------


@given(problem=problems_with_torch_fields, tols=tolerances)
def test_matches_gqref_step_for_step(problem, tols):
    rtol, atol = tols
    ref = gqref.solve(problem.field, problem.y0, problem.t, problem.params, rtol=rtol, atol=atol)
    ys, stats = gqtorch.odeint(torch_field(problem), torch.tensor(problem.y0), torch.tensor(problem.t), rtol=rtol,
                               atol=atol, return_stats=True)
    # Same controller arithmetic on the same error ratios ⇒ the same accepted/rejected sequence; the ratios and
    # outputs differ only by summation order (BLAS vs sequential loops), a few ulps of the state's scale. (Not
    # last_step: near roundoff tolerances those ulps steer the step sizes apart, see assert_twin.)
    assert (stats.nfe, stats.n_accepted, stats.n_rejected) == (ref.stats.nfe, ref.stats.n_accepted,
                                                                ref.stats.n_rejected)
    assert ys.dtype == F64 and ys.shape == ref.ys.shape
    assert relative_error(ys.numpy(), ref.ys) <= 1e-10


# --- (2) torchdiffeq's dopri5 -----------------------------------------------------------------------------------


@given(problem=problems_with_torch_fields, tols=tolerances)
def test_matches_torchdiffeq_dopri5(problem, tols):
    rtol, atol = tols
    y0, t = torch.tensor(problem.y0), torch.tensor(problem.t)
    ours, theirs = Counted(torch_field(problem)), Counted(torch_field(problem))
    ys, stats = gqtorch.odeint(ours, y0, t, rtol=rtol, atol=atol, return_stats=True)
    ref = torchdiffeq.odeint(theirs, y0, t, rtol=rtol, atol=atol, method="dopri5")
    assert ours.nfe == theirs.nfe == stats.nfe
    # torchdiffeq nudges the end-of-step stage time by one ulp (Perturb.PREV); that and summation order are the
    # only differences, so outputs agree to a few ulps of the state's scale.
    assert relative_error(ys.numpy(), ref.numpy()) <= 1e-12


# --- (3) fixed grids --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
@given(problem=linear_problems(max_dim=3), step_size=st.one_of(st.none(), st.floats(0.01, 0.3)))
def test_fixed_grid_matches_torchdiffeq(method, problem, step_size):
    y0, t = torch.tensor(problem.y0), torch.tensor(problem.t)
    options = None if step_size is None else {"step_size": step_size}
    ours, theirs = Counted(linear_field(problem)), Counted(linear_field(problem))
    ys, stats = gqtorch.odeint(ours, y0, t, method=method, options=options, return_stats=True)
    ref = torchdiffeq.odeint(theirs, y0, t, method=method, options=options)
    assert ours.nfe == theirs.nfe == stats.nfe
    # Same grid, same stages; the stage and update sums are grouped differently (tableau vs hand-written).
    assert relative_error(ys.numpy(), ref.numpy()) <= 1e-12
    g = gqref.solve(problem.field, problem.y0, problem.t, problem.params, method=method, step_size=step_size)
    assert stats == g.stats
    assert relative_error(ys.numpy(), g.ys) <= 1e-12


# --- (4) tuple states, decreasing time, norms --------------------------------------------------------------------


def tuple_field(t, state):
    a, b = state  # a: (2,), b: (3, 1)
    da = torch.stack((-0.3 * a[0] + a[1] + torch.sin(t), -a[0] - 0.2 * a[1] + b.sum() * 0.1))
    db = -0.5 * b + a[0] * torch.cos(2.0 * t)
    return da, db


@pytest.mark.parametrize("norm", [None, "max", "callable"])
@pytest.mark.parametrize("decreasing", [False, True])
def test_tuple_states_and_decreasing_time_match_torchdiffeq(norm, decreasing):
    y0 = (torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[0.3], [-1.2], [2.0]], dtype=F64))
    t = torch.linspace(-1.0, 3.0, 6, dtype=F64)
    t = t.flip(0) if decreasing else t
    options = {}
    if norm == "max":
        options = {"norm": "max"}
        theirs_options = {"norm": lambda x: max(v.abs().max() for v in x)}
    elif norm == "callable":
        options = theirs_options = {"norm": lambda x: torch.cat([v.reshape(-1) for v in x]).abs().sum()}
    else:
        theirs_options = {}
    ours, theirs = Counted(tuple_field), Counted(tuple_field)
    ys, stats = gqtorch.odeint(ours, y0, t, rtol=1e-8, atol=1e-9, options=options, return_stats=True)
    ref = torchdiffeq.odeint(theirs, y0, t, rtol=1e-8, atol=1e-9, method="dopri5", options=theirs_options)
    assert isinstance(ys, tuple) and len(ys) == 2
    assert ours.nfe == theirs.nfe == stats.nfe
    for mine, other, block in zip(ys, ref, y0):
        assert mine.shape == (len(t), *block.shape)
        assert relative_error(mine.numpy(), other.numpy()) <= 1e-12


def test_tuple_tolerances_per_block_and_shaped_state():
    y0 = torch.tensor([[1.0, -0.5], [0.2, 0.7]], dtype=F64)  # a 2×2 state: func sees that shape
    t = torch.tensor([2.0, 1.0, 0.0], dtype=F64)
    m = torch.tensor([[-0.2, 1.0], [-1.0, -0.1]], dtype=F64)
    atol = torch.tensor([1e-9, 1e-7], dtype=F64)  # broadcasts over rows
    ours, theirs = Counted(lambda t, y: m @ y), Counted(lambda t, y: m @ y)
    ys = gqtorch.odeint(ours, y0, t, rtol=1e-7, atol=atol)
    ref = torchdiffeq.odeint(theirs, y0, t, rtol=1e-7, atol=atol)
    assert ys.shape == (3, 2, 2) and ours.nfe == theirs.nfe
    assert relative_error(ys.numpy(), ref.numpy()) <= 1e-12
    pair = (y0[0].clone(), y0[1].clone())
    ours, theirs = Counted(lambda t, y: (m @ y[0], m @ y[1])), Counted(lambda t, y: (m @ y[0], m @ y[1]))
    ys = gqtorch.odeint(ours, pair, t, rtol=1e-7, atol=(1e-9, 1e-7))
    ref = torchdiffeq.odeint(theirs, pair, t, rtol=1e-7, atol=(1e-9, 1e-7))
    assert ours.nfe == theirs.nfe
    assert all(relative_error(a.numpy(), b.numpy()) <= 1e-12 for a, b in zip(ys, ref))


def test_single_output_time_returns_y0():
    y0 = torch.tensor([1.0, 2.0], dtype=F64)
    ys, stats = gqtorch.odeint(lambda t, y: -y, y0, torch.tensor([0.5], dtype=F64), return_stats=True)
    assert torch.equal(ys, y0[None]) and stats == gqref.Stats(nfe=1, n_accepted=0, n_rejected=0)


# --- (5) float32 -------------------------------------------------------------------------------------------------


@given(problem=problems_with_torch_fields)
def test_float32_agrees_with_float64_to_float32_accuracy(problem):
    t = torch.tensor(problem.t)
    exact = gqtorch.odeint(torch_field(problem), torch.tensor(problem.y0), t, rtol=1e-12, atol=1e-12)
    ys = gqtorch.odeint(torch_field(problem), torch.tensor(problem.y0, dtype=torch.float32), t, rtol=1e-6,
                        atol=1e-7)
    assert ys.dtype == torch.float32
    # A float32 solve at rtol 1e-6 has local errors of ~1e-6 and roundoff of ~1e-7 per step on states of order
    # one (these problems contract or stay bounded): 1e-4 of the scale leaves two orders of margin.
    scale = max(float(exact.abs().max()), 1.0)
    assert float((ys.double() - exact).abs().max()) <= 1e-4 * scale


# --- (6) backprop = gqref's discrete gradient --------------------------------------------------------------------


@given(data=st.data(), problem=problems_with_torch_fields)
def test_backprop_equals_gqref_discrete_gradient(data, problem):
    rtol, atol = data.draw(tolerances)
    dl_dy = data.draw(gqref.strategies.cotangents(problem))
    t_grad = data.draw(st.booleans())
    y0 = torch.tensor(problem.y0, requires_grad=True)
    params = torch.tensor(problem.params, requires_grad=True)
    t = torch.tensor(problem.t, requires_grad=t_grad)
    ys = gqtorch.odeint(torch_field(problem, params), y0, t, rtol=rtol, atol=atol)
    (torch.from_numpy(dl_dy) * ys).sum().backward()
    ref = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, method="discrete",
                         rtol=rtol, atol=atol, t_grad=t_grad)
    # Both are the exact derivative of the same discrete solution (same steps, stage times moving with t_0, outputs
    # with their own times); they differ only by roundoff accumulated through the steps' Jacobian products.
    scale = max(np.max(np.abs(ref.dL_dy0)), np.max(np.abs(ref.dL_dparams)), 1e-300)
    assert np.max(np.abs(y0.grad.numpy() - ref.dL_dy0)) <= 1e-9 * scale
    assert np.max(np.abs(params.grad.numpy() - ref.dL_dparams)) <= 1e-9 * scale
    if t_grad:
        t_scale = max(scale, np.max(np.abs(ref.dL_dt)))
        assert np.max(np.abs(t.grad.numpy() - ref.dL_dt)) <= 1e-9 * t_scale


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_backprop_through_fixed_grid_matches_torchdiffeq(method):
    problem = pr.linear()
    grads = []
    for solver in (gqtorch.odeint, torchdiffeq.odeint):
        params = torch.tensor(problem.params, requires_grad=True)
        ys = solver(linear_field(problem, params), torch.tensor(problem.y0), torch.tensor(problem.t), method=method,
                    options={"step_size": 0.1})
        ys.square().sum().backward()
        grads.append(params.grad.numpy())
    assert relative_error(*grads) <= 1e-12


def test_step_sizes_are_not_differentiated():
    """With requires_grad on y0, dt must not carry a graph: the stats and outputs equal the no-grad solve."""
    problem = pr.van_der_pol(mu=2.0)
    with torch.no_grad():
        plain, stats = gqtorch.odeint(torch_field_vdp, torch.tensor(problem.y0), torch.tensor(problem.t),
                                      return_stats=True)
    y0 = torch.tensor(problem.y0, requires_grad=True)
    tracked, tracked_stats = gqtorch.odeint(torch_field_vdp, y0, torch.tensor(problem.t), return_stats=True)
    assert stats == tracked_stats and torch.equal(plain, tracked.detach())


def torch_field_vdp(t, y):
    return torch.stack((y[1], 2.0 * (1.0 - y[0] ** 2) * y[1] - y[0]))


# --- (7) errors ---------------------------------------------------------------------------------------------------


def _good():
    return {"func": lambda t, y: -y, "y0": torch.tensor([1.0, 2.0], dtype=F64),
            "t": torch.tensor([0.0, 1.0], dtype=F64)}


BAD_INPUTS = [
    ({"func": 3}, "func"),
    ({"y0": [1.0, 2.0]}, "y0[0]"),
    ({"y0": np.array([1.0])}, "y0"),
    ({"y0": torch.tensor([1, 2])}, "y0"),
    ({"y0": torch.tensor([1.0, math.nan], dtype=F64)}, "y0"),
    ({"y0": torch.empty(0, dtype=F64)}, "y0"),
    ({"y0": ()}, "y0"),
    ({"y0": (torch.ones(2), torch.ones(2, dtype=F64))}, "y0"),
    ({"t": torch.tensor([0.0, 1.0, 1.0], dtype=F64)}, "t"),
    ({"t": torch.tensor([[0.0, 1.0]], dtype=F64)}, "t"),
    ({"t": torch.tensor([0.0, math.inf], dtype=F64)}, "t"),
    ({"rtol": 0.0}, "rtol"),
    ({"rtol": -1e-3}, "rtol"),
    ({"atol": math.nan}, "atol"),
    ({"atol": torch.tensor([1e-9, 1e-9, 1e-9], dtype=F64)}, "atol"),
    ({"atol": torch.tensor([1e-9, -1.0], dtype=F64)}, "atol"),
    ({"method": "bogacki"}, "method"),
    ({"options": {"step_t": [math.nan]}}, "step_t"),
    ({"options": {"step_t": [0.5], "jump_t": [0.5]}}, "step_t"),
    ({"options": {"min_step": 0.5, "max_step": 0.1}}, "min_step"),
    ({"options": {"dfactor": 2.0}}, "dfactor"),
    ({"options": {"dtype": "float32"}}, "dtype"),
    ({"options": {"grid_constructor": None}}, "grid_constructor"),
    ({"options": {"first_step": -0.1}}, "first_step"),
    ({"options": {"max_num_steps": 0}}, "max_num_steps"),
    ({"options": {"norm": "l1"}}, "norm"),
    ({"method": "rk4", "options": {"step_size": 0.0}}, "step_size"),
    ({"method": "rk4", "options": {"first_step": 0.1}}, "first_step"),
    ({"options": {"step_size": 0.1}}, "step_size"),
    ({"options": [("norm", "rms")]}, "options"),
    ({"return_stats": "yes"}, "return_stats"),
    ({"event_fn": lambda t, y: 1.0}, "event_fn"),
    ({"event_fn": lambda t, y: y[0], "t": torch.tensor([0.0, 1.0, 2.0], dtype=F64)}, "event_fn"),
    ({"event_fn": lambda t, y: y[0], "method": "rk4"}, "event_fn"),
    ({"func": lambda t, y: y[:1]}, "func"),
]


@pytest.mark.parametrize(("change", "named"), BAD_INPUTS)
def test_bad_inputs_raise_input_error_naming_the_argument(change, named):
    args = {**_good(), **change}
    func, y0, t = args.pop("func"), args.pop("y0"), args.pop("t")
    with pytest.raises(gqref.InputError, match=named.replace("[", r"\[").replace("]", r"\]")):
        gqtorch.odeint(func, y0, t, **args)


def test_solver_errors_match_gqref():
    # y' = y² from y0 = 1 blows up at t = 1: both solvers stop near there with the same error type.
    @gqref.njit
    def square(t, y, p):
        return y * y

    t = np.array([0.0, 2.0])
    with pytest.raises(gqref.SolverError) as ref:
        gqref.solve(square, np.array([1.0]), t)
    with pytest.raises(type(ref.value)) as ours:
        gqtorch.odeint(lambda t, y: y * y, torch.tensor([1.0], dtype=F64), torch.tensor(t))
    assert abs(ours.value.t - 1.0) < 1e-3 and str(ours.value.t)[:6] in str(ours.value)


def test_nonfinite_field_names_the_time():
    def f(t, y):
        return -y if float(t) < 1.5 else torch.full_like(y, math.nan)

    with pytest.raises(gqref.NonFiniteFieldError) as err:
        gqtorch.odeint(f, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 3.0], dtype=F64))
    assert err.value.t >= 1.5 and repr(err.value.t) in str(err.value)
    with pytest.raises(gqref.NonFiniteFieldError) as err:
        gqtorch.odeint(f, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 3.0], dtype=F64), method="rk4",
                       options={"step_size": 0.25})
    assert err.value.t == 1.5


def test_max_num_steps():
    with pytest.raises(gqref.MaxStepsExceededError, match="max_steps = 5"):
        gqtorch.odeint(torch_field_vdp, torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 20.0], dtype=F64),
                       options={"max_num_steps": 5})


def test_exports():
    assert set(gqtorch.__all__) >= {"odeint", "Stats", "InputError"}
    assert all(hasattr(gqtorch, name) for name in gqtorch.__all__)
