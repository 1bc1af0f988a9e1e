"""gqtorch.odeint_adjoint_gq and gqtorch.odeint_adjoint: twins of gqref's GQ and adjoint gradients, torchdiffeq's
adjoint, tuples, decreasing time, the paper's toy, no ``nfe`` on func, and input errors."""

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
from gqref.errors import InputError
from gqref.strategies import cotangents, tolerances
from tests.test_gqtorch_solve import problems_with_torch_fields, relative_error, torch_field, tuple_field

torch.set_num_threads(1)
F64 = torch.float64
TWIN = 1e-9  # same steps, same nodes: only summation order differs (BLAS vs sequential loops, vmap vs per node)


def run(solver, problem, dl_dy, t_grad=True, **kwargs):
    """(dL/dy0, dL/dparams, dL/dt, stats) from a gqtorch solver on a problem's torch twin."""
    y0 = torch.tensor(problem.y0, requires_grad=True)
    params = torch.tensor(problem.params, requires_grad=True)
    t = torch.tensor(problem.t, requires_grad=t_grad)
    ys, stats = solver(torch_field(problem, params), y0, t, adjoint_params=(params,), return_stats=True, **kwargs)
    (torch.from_numpy(np.asarray(dl_dy)) * ys).sum().backward()
    return y0.grad.numpy(), params.grad.numpy(), t.grad.numpy() if t_grad else None, stats


def assert_twin(ours, ref, t_grad=True):
    dy0, dp, dt, _ = ours
    assert relative_error(dy0, ref.dL_dy0) <= TWIN
    assert relative_error(dp, ref.dL_dparams) <= TWIN
    if t_grad:
        assert relative_error(dt, ref.dL_dt) <= TWIN


# --- (a) GQ = gqref's GQ -----------------------------------------------------------------------------------------


@given(data=st.data(), problem=problems_with_torch_fields)
def test_gq_equals_gqref(data, problem):
    rtol, atol = data.draw(tolerances)
    gtol = data.draw(st.sampled_from([0.1, 0.4, 2.0]))
    t_grad = data.draw(st.booleans())
    dl_dy = data.draw(cotangents(problem))
    ours = run(gqtorch.odeint_adjoint_gq, problem, dl_dy, t_grad=t_grad, rtol=rtol, atol=atol,
               quadrature="interval", gtol=gtol)
    ref = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, method="gq", rtol=rtol,
                         atol=atol, quadrature="interval", gtol=gtol, t_grad=t_grad)
    assert_twin(ours, ref, t_grad)
    stats = ours[3]
    # Same forward steps ⇒ same NFE ⇒ same node counts ⇒ same backward steps.
    assert stats.nfe_forward == ref.diagnostics.nfe_forward
    assert stats.nodes == ref.diagnostics.nodes
    assert (stats.nfe_backward, stats.steps_backward) == (ref.diagnostics.nfe_backward,
                                                           ref.diagnostics.steps_backward)
    assert stats.batched_nodes is True


@pytest.mark.parametrize("problem", [pr.linear(), pr.mlp(12, state_dim=3, time_dependent=True),
                                     pr.mlp(6, state_dim=2, t=np.linspace(0.0, 2.0, 3))],
                         ids=["linear", "mlp_t", "mlp"])
@pytest.mark.parametrize("max_nodes", [64, 2])
def test_gq_equals_gqref_named_problems(problem, max_nodes):
    dl_dy = np.random.default_rng(1).standard_normal((len(problem.t), problem.state_dim))
    ours = run(gqtorch.odeint_adjoint_gq, problem, dl_dy,
               quadrature="interval", gtol=0.5, max_nodes=max_nodes, adjoint_rtol=1e-9,
               adjoint_atol=1e-10)
    ref = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, method="gq",
                         quadrature="interval", gtol=0.5,
                         max_nodes=max_nodes, adjoint_rtol=1e-9, adjoint_atol=1e-10)
    assert_twin(ours, ref)
    assert ours[3].nodes == ref.diagnostics.nodes and max(ours[3].nodes) <= max_nodes


# --- (b) the backsolve adjoint = gqref's and torchdiffeq's -------------------------------------------------------


@pytest.mark.parametrize("method", ["adjoint", "seminorm"])
@given(data=st.data(), problem=problems_with_torch_fields)
def test_adjoint_equals_gqref(method, data, problem):
    rtol, atol = data.draw(tolerances)
    t_grad = data.draw(st.booleans())
    dl_dy = data.draw(cotangents(problem))
    options = {"norm": "seminorm"} if method == "seminorm" else None
    ours = run(gqtorch.odeint_adjoint, problem, dl_dy, t_grad=t_grad, rtol=rtol, atol=atol, adjoint_options=options)
    ref = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, method=method, rtol=rtol,
                         atol=atol, t_grad=t_grad)
    assert_twin(ours, ref, t_grad)
    assert (ours[3].nfe_backward, ours[3].steps_backward) == (ref.diagnostics.nfe_backward,
                                                               ref.diagnostics.steps_backward)


class MLP(torch.nn.Module):
    """A small time-dependent MLP field with two parameter tensors per layer (several norm blocks)."""

    def __init__(self, s=3, width=10):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(s + 1, width), torch.nn.Tanh(), torch.nn.Linear(width, s))
        self.double()

    def forward(self, t, y):
        return self.net(torch.cat((y, t.expand(*y.shape[:-1], 1)), dim=-1))


@pytest.mark.parametrize("seminorm", [False, True])
@pytest.mark.parametrize("decreasing", [False, True])
def test_adjoint_equals_torchdiffeq(seminorm, decreasing):
    func = MLP()
    y0_data = torch.tensor([0.5, -1.0, 0.3], dtype=F64)
    t_data = torch.tensor([0.0, 0.4, 1.1, 2.0], dtype=F64)
    t_data = t_data.flip(0) if decreasing else t_data
    options = {"norm": "seminorm"} if seminorm else None
    grads = []
    for solver in (gqtorch.odeint_adjoint, torchdiffeq.odeint_adjoint):
        func.zero_grad()
        y0, t = y0_data.clone().requires_grad_(), t_data.clone().requires_grad_()
        ys = solver(func, y0, t, rtol=1e-8, atol=1e-9, adjoint_options=options)
        ys.square().sum().backward()
        grads.append([y0.grad.clone(), t.grad.clone(), *(p.grad.clone() for p in func.parameters())])
    # Same steps; torchdiffeq nudges stage times by an ulp (Perturb) and sums in another order.
    for ours, theirs in zip(*grads):
        assert relative_error(ours.numpy(), theirs.numpy()) <= TWIN


def test_adjoint_tuple_state_equals_torchdiffeq():
    y0_data = (torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[0.3], [-1.2], [2.0]], dtype=F64))
    t_data = torch.linspace(2.0, -1.0, 5, dtype=F64)
    grads = []
    for solver in (gqtorch.odeint_adjoint, torchdiffeq.odeint_adjoint):
        y0 = tuple(b.clone().requires_grad_() for b in y0_data)
        t = t_data.clone().requires_grad_()
        a, b = solver(tuple_field, y0, t, rtol=1e-8, atol=1e-9, adjoint_params=())
        (a.square().sum() + b.sin().sum()).backward()
        grads.append([y0[0].grad, y0[1].grad, t.grad])
    for ours, theirs in zip(*grads):
        assert relative_error(ours.numpy(), theirs.numpy()) <= TWIN


# --- (c) tuple states and decreasing time for GQ ------------------------------------------------------------------


def test_gq_decreasing_time_equals_gqref():
    problem = pr.mlp(8, state_dim=2, time_dependent=True, t=[1.5, 0.9, 0.2, -0.5])
    dl_dy = np.random.default_rng(2).standard_normal((4, 2))
    ours = run(gqtorch.odeint_adjoint_gq, problem, dl_dy, quadrature="interval", gtol=0.7)
    ref = gqref.gradient(problem.field, problem.y0, problem.t, problem.params, dl_dy, method="gq",
                         quadrature="interval", gtol=0.7)
    assert_twin(ours, ref)
    assert sum(ours[3].nodes) > 3


@pytest.mark.parametrize("decreasing", [False, True])
def test_gq_tuple_state_matches_direct_backprop(decreasing):
    """The tuple-shaped field has no gqref twin; at tight tolerances GQ must agree with the exact derivative of an
    equally tight solve (both converge to the true gradient as tol → 0)."""
    y0_data = (torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[0.3], [-1.2], [2.0]], dtype=F64))
    t_data = torch.linspace(-1.0, 2.0, 4, dtype=F64)
    t_data = t_data.flip(0) if decreasing else t_data
    grads = []
    for solver in ("gq", "direct"):
        y0 = tuple(b.clone().requires_grad_() for b in y0_data)
        t = t_data.clone().requires_grad_(solver == "gq")
        if solver == "gq":
            ys, _ = gqtorch.odeint_adjoint_gq(tuple_field, y0, t, rtol=1e-11, atol=1e-12,
                                              quadrature="interval", gtol=1.0,
                                              adjoint_params=(), return_stats=True)
        else:
            ys = gqtorch.odeint(tuple_field, y0, t, rtol=1e-11, atol=1e-12)
        assert isinstance(ys, tuple) and ys[1].shape == (4, 3, 1)
        (ys[0].square().sum() + ys[1].sin().sum()).backward()
        grads.append([y0[0].grad, y0[1].grad])
    for ours, theirs in zip(*grads):
        assert relative_error(ours.numpy(), theirs.numpy()) <= 1e-8


# --- (d) the paper's toy ----------------------------------------------------------------------------------------


def test_paper_toy_against_closed_form():
    a_val, z0_val, T = 0.2, 10.0, 20.0
    a = torch.tensor(a_val, dtype=F64, requires_grad=True)
    z0 = torch.tensor([z0_val], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, T], dtype=F64, requires_grad=True)
    ys, stats = gqtorch.odeint_adjoint_gq(lambda t, z: a * z, z0, t, rtol=1e-6, atol=1e-7,
                                          quadrature="interval", gtol=0.4,
                                          adjoint_params=(a,), return_stats=True)
    (ys[-1] ** 2).sum().backward()
    zT = z0_val * math.exp(a_val * T)
    exact = {"z0": 2 * zT * math.exp(a_val * T), "a": 2 * T * zT**2, "T": 2 * a_val * zT**2, "t0": -2 * a_val * zT**2}
    ours = {"z0": z0.grad.item(), "a": a.grad.item(), "T": t.grad[1].item(), "t0": t.grad[0].item()}
    errors = {k: abs(ours[k] - exact[k]) / abs(exact[k]) for k in exact}
    # The paper's NumPy check reached 3e-6 at these tolerances; rtol 1e-6 over e^{4} growth bounds it near 1e-5.
    assert max(errors.values()) <= 1e-5, errors
    assert 40 <= stats.nodes[0] <= 64  # the paper's 40–56 nodes for NFE ≈ 98–140 at C = 0.4


# --- (e) no nfe attribute; plain functions; non-vmappable fields ---------------------------------------------------


def test_module_without_nfe_and_plain_function_agree():
    func = MLP()
    assert not hasattr(func, "nfe")
    y0_data = torch.tensor([0.5, -1.0, 0.3], dtype=F64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    grads = []
    for mode in ("module", "plain"):
        func.zero_grad()
        y0 = y0_data.clone().requires_grad_()
        if mode == "module":
            ys = gqtorch.odeint_adjoint_gq(func, y0, t)
        else:
            ys = gqtorch.odeint_adjoint_gq(lambda t, y: func(t, y), y0, t, adjoint_params=func.parameters())
        ys.square().sum().backward()
        grads.append([y0.grad.clone(), *(p.grad.clone() for p in func.parameters())])
    for ours, theirs in zip(*grads):
        assert torch.equal(ours, theirs)


def test_non_vmappable_field_falls_back_to_a_loop():
    problem = pr.mlp(6, state_dim=2, time_dependent=True)
    dl_dy = np.random.default_rng(3).standard_normal((len(problem.t), 2))
    batched = run(gqtorch.odeint_adjoint_gq, problem, dl_dy, quadrature="interval", gtol=1.0)
    params = torch.tensor(problem.params, requires_grad=True)
    inner = torch_field(problem, params)

    def func(t, y):
        if float(y.detach().sum()) > 1e9:  # data-dependent Python control flow: vmap refuses it
            raise AssertionError
        return inner(t, y)

    y0, t = torch.tensor(problem.y0, requires_grad=True), torch.tensor(problem.t, requires_grad=True)
    ys, stats = gqtorch.odeint_adjoint_gq(func, y0, t,
                                          quadrature="interval", gtol=1.0, adjoint_params=[params], return_stats=True)
    (torch.from_numpy(dl_dy) * ys).sum().backward()
    assert stats.batched_nodes is False and batched[3].batched_nodes is True
    for ours, theirs in zip((y0.grad, params.grad, t.grad), batched[:3]):
        assert relative_error(ours.numpy(), theirs) <= 1e-12


def test_float32_gradients_close_to_float64():
    problem = pr.mlp(8, state_dim=2, time_dependent=True)
    dl_dy = np.random.default_rng(4).standard_normal((len(problem.t), 2))
    exact = run(gqtorch.odeint_adjoint_gq, problem, dl_dy, rtol=1e-10, atol=1e-10, quadrature="interval", gtol=1.0)
    params = torch.tensor(problem.params, dtype=torch.float32, requires_grad=True)
    y0 = torch.tensor(problem.y0, dtype=torch.float32, requires_grad=True)
    ys = gqtorch.odeint_adjoint_gq(torch_field(problem, params), y0, torch.tensor(problem.t), rtol=1e-6, atol=1e-7,
                                   quadrature="interval", gtol=1.0, adjoint_params=(params,))
    assert ys.dtype == torch.float32
    (torch.from_numpy(dl_dy).float() * ys).sum().backward()
    # float32 roundoff (~1e-7 per step) and rtol 1e-6 on an O(1) problem: 1e-4 leaves two orders of margin.
    assert relative_error(y0.grad.double().numpy(), exact[0]) <= 1e-4
    assert relative_error(params.grad.double().numpy(), exact[1]) <= 1e-4


# --- (f) bad inputs ----------------------------------------------------------------------------------------------


def _good():
    return dict(func=lambda t, y: -y, y0=torch.tensor([1.0], dtype=F64), t=torch.tensor([0.0, 1.0], dtype=F64),
                adjoint_params=())


GQ_ONLY_BAD = [({"gtol": 0.0}, "gtol"), ({"gtol": math.nan}, "gtol"), ({"max_nodes": 0}, "max_nodes"),
               ({"max_nodes": 2.5}, "max_nodes")]
BAD = [
    ({"adjoint_params": None}, "adjoint_params"),
    ({"adjoint_params": [1.0]}, "adjoint_params[0]"), ({"adjoint_params": 3}, "adjoint_params"),
    ({"adjoint_rtol": -1.0}, "adjoint_rtol"), ({"adjoint_atol": 0.0}, "adjoint_atol"),
    ({"atol": (1e-9,)}, "adjoint_atol"), ({"rtol": -1.0}, "rtol"),
    ({"y0": [1.0]}, "y0"), ({"t": torch.tensor([0.0, 1.0, 0.5], dtype=F64)}, "t"),
    ({"t": torch.tensor([0, 1])}, "t"), ({"method": "rk45"}, "method"), ({"func": 3}, "func"),
    ({"return_stats": 1}, "return_stats"),
]


def _raises_naming(solver, change, named):
    kwargs = {**_good(), **change}
    func, y0, t = kwargs.pop("func"), kwargs.pop("y0"), kwargs.pop("t")
    with pytest.raises(InputError, match=named.replace("[", r"\[").replace("]", r"\]")):
        solver(func, y0, t, **kwargs)


@pytest.mark.parametrize("solver", [gqtorch.odeint_adjoint_gq, gqtorch.odeint_adjoint])
@pytest.mark.parametrize("change, named", BAD, ids=[n + str(i) for i, (_, n) in enumerate(BAD)])
def test_bad_inputs_raise_input_error_naming_the_argument(solver, change, named):
    _raises_naming(solver, change, named)


@pytest.mark.parametrize("change, named", GQ_ONLY_BAD, ids=[n + str(i) for i, (_, n) in enumerate(GQ_ONLY_BAD)])
def test_gq_only_bad_inputs(change, named):
    _raises_naming(gqtorch.odeint_adjoint_gq, change, named)


@pytest.mark.parametrize("change, named", [
    ({"adjoint_method": "bogacki"}, "adjoint_method"), ({"adjoint_options": {"norm": "max"}}, "adjoint_options"),
    ({"adjoint_options": {"step_size": 0.1}}, "adjoint_options"), ({"adjoint_options": 3}, "adjoint_options"),
    ({"event_fn": lambda t, y: 1.0}, "event_fn"),
])
def test_adjoint_only_bad_inputs(change, named):
    kwargs = {**_good(), **change}
    func, y0, t = kwargs.pop("func"), kwargs.pop("y0"), kwargs.pop("t")
    with pytest.raises(InputError, match=named):
        gqtorch.odeint_adjoint(func, y0, t, **kwargs)


def test_exports():
    assert {"odeint_adjoint", "odeint_adjoint_gq", "GradientStats"} <= set(gqtorch.__all__)


class _SpiralWithTime(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = torch.nn.Parameter(torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64))

    def forward(self, t, y):
        return torch.mm(y**3, self.A) + torch.sin(t)


@pytest.mark.parametrize("method, options, adjoint_method, adjoint_options", [
    ("rk4", {"step_size": 0.05}, None, None),
    ("midpoint", {"step_size": 0.01}, None, None),
    ("euler", None, None, None),
    ("dopri5", None, "rk4", {"step_size": 0.02}),
])
def test_fixed_grid_adjoint_methods_equal_torchdiffeq(method, options, adjoint_method, adjoint_options):
    """adjoint_method defaults to the forward method and adjoint_options to its options, as in torchdiffeq; the
    backward grid is built the same way, so the gradients are the same arithmetic up to summation order."""
    grads = []
    for library in (gqtorch, torchdiffeq):
        func = _SpiralWithTime()
        y0 = torch.tensor([[2.0, 0.0]], dtype=F64, requires_grad=True)
        t = torch.linspace(0.0, 2.0, 5, dtype=F64, requires_grad=True)
        extra = {} if adjoint_method is None else {"adjoint_method": adjoint_method}
        ys = library.odeint_adjoint(func, y0, t, rtol=1e-8, atol=1e-9, method=method, options=options,
                                    adjoint_options=adjoint_options, **extra)
        ys.backward(torch.linspace(-1.0, 1.0, ys.numel(), dtype=F64).reshape(ys.shape))
        grads.append([y0.grad, func.A.grad, t.grad])
    for ours, theirs in zip(*grads):
        assert float((ours - theirs).abs().max()) <= 1e-12 * float(theirs.abs().max())
