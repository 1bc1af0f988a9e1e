"""Bad input, table-driven, across both twins: every public function refuses the same things with an InputError
naming the argument, and accepts the same things (numpy scalars everywhere, 0-d tensors wherever torchdiffeq takes
them). Each case runs in milliseconds: refusals happen before any solve, acceptances solve a 2-state decay."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gqref
import gqtorch
from gqref import InputError, VectorField
from gqref.kronrod import gauss_kronrod
from gqref.rules import AdaptiveRule, AutoRule, IntervalRule

NAN, INF = math.nan, math.inf


# --- gqref: a decay dy/dt = −p·y, its VJPs, a loss cotangent ------------------------------------------------------

def _f(t, y, p):
    return -p[0] * y


def _vjp_y(t, y, p, a):
    return -p[0] * a


def _vjp_p(t, y, p, a):
    return np.array([-np.sum(a * y)])


def _vjp_t(t, y, p, a):
    return 0.0


FIELD = VectorField(_f, vjp_t=_vjp_t, vjp_y=_vjp_y, vjp_p=_vjp_p)
Y0, T, P = np.array([1.0, 2.0]), np.array([0.0, 0.5, 1.0]), np.array([0.5])
DL = np.ones((3, 2))


def ref_solve(**kw):
    args = {"field": FIELD, "y0": Y0, "t": T, "params": P}
    args.update(kw)
    return gqref.solve(args.pop("field"), args.pop("y0"), args.pop("t"), args.pop("params"), **args)


def ref_gradient(**kw):
    args = {"field": FIELD, "y0": Y0, "t": T, "params": P, "dL_dy": DL}
    args.update(kw)
    return gqref.gradient(args.pop("field"), args.pop("y0"), args.pop("t"), args.pop("params"), args.pop("dL_dy"),
                          **args)


def decay_field(**roles) -> VectorField:
    """The decay with some of its functions replaced (a faulty VJP)."""
    return VectorField(**{"f": _f, "vjp_t": _vjp_t, "vjp_y": _vjp_y, "vjp_p": _vjp_p, **roles})


REF_REFUSED = [
    # tolerances: bools, NaN, inf, zero, negative, strings
    (ref_solve, {"rtol": True}, "rtol must be a positive finite number, got True"),
    (ref_solve, {"rtol": np.True_}, "rtol must be a positive finite number"),
    (ref_solve, {"rtol": NAN}, "rtol must be a positive finite number, got nan"),
    (ref_solve, {"rtol": INF}, "rtol must be a positive finite number, got inf"),
    (ref_solve, {"rtol": 0.0}, "rtol must be a positive finite number"),
    (ref_solve, {"rtol": -1e-6}, "rtol must be a positive finite number"),
    (ref_solve, {"rtol": "1e-6"}, "rtol must be a positive finite number, got '1e-6'"),
    (ref_solve, {"rtol": np.float64(NAN)}, "rtol must be a positive finite number"),
    (ref_solve, {"atol": True}, "atol must be a positive finite number, got True"),
    (ref_solve, {"atol": NAN}, "atol must be a positive finite number"),
    (ref_solve, {"atol": np.array([1e-9, 0.0])}, "atol must be positive and finite in every entry"),
    (ref_solve, {"atol": np.array([1e-9, NAN])}, "atol must be positive and finite in every entry"),
    (ref_solve, {"atol": np.ones(3)}, "atol of shape (3,) does not broadcast"),
    (ref_solve, {"atol": np.array([1e-9 + 1j, 1e-9])}, "atol must be real"),
    # counts
    (ref_solve, {"max_steps": True}, "max_steps must be a positive integer, got True"),
    (ref_solve, {"max_steps": 2.5}, "max_steps must be a positive integer"),
    (ref_solve, {"max_steps": np.float64(10.0)}, "max_steps must be a positive integer"),
    (ref_solve, {"max_steps": 0}, "max_steps must be a positive integer"),
    (ref_solve, {"first_step": NAN}, "first_step must be a positive finite number"),
    (ref_solve, {"first_step": True}, "first_step must be a positive finite number"),
    # times
    (ref_solve, {"t": [0.0, 1.0, 1.0]}, "t must be strictly increasing or strictly decreasing"),
    (ref_solve, {"t": [0.0, 1.0, 0.5]}, "t[1] = 1.0 and t[2] = 0.5 break the order"),
    (ref_solve, {"t": [0.0, NAN]}, "t must be finite; t[1] is not"),
    (ref_solve, {"t": [[0.0, 1.0]]}, "t must be a 1-D array"),
    (ref_solve, {"t": [0.0, 1.0 + 1j]}, "t must be real"),
    (ref_solve, {"t": [True, False]}, "t must be a real numeric array, got dtype bool"),
    # state, parameters, field output
    (ref_solve, {"y0": [1.0, NAN]}, "y0 must be finite"),
    (ref_solve, {"y0": [1.0 + 1j, 0.0]}, "y0 must be a real floating-point array"),
    (ref_solve, {"y0": np.empty(0)}, "y0 must have at least one element"),
    (ref_solve, {"params": [NAN]}, "params must be finite"),
    (ref_solve, {"params": [0.5 + 0.1j]}, "params must be real, got dtype complex128"),
    (ref_solve, {"field": lambda t, y, p: -y + 0j}, "field.f returned complex values"),
    (ref_solve, {"field": lambda t, y, p: np.ones(3)}, "field.f returned shape (3,)"),
    # adaptive and fixed-grid options
    (ref_solve, {"options": {"max_num_steps": True}}, "options['max_num_steps'] must be a positive integer"),
    (ref_solve, {"options": {"safety": NAN}}, "options['safety'] must be a finite real number > 0"),
    (ref_solve, {"options": {"dfactor": 2.0}}, "options['dfactor'] must be in (0, 1]"),
    (ref_solve, {"options": {"max_step": True}}, "options['max_step'] must be"),
    (ref_solve, {"options": {"step_t": [NAN]}}, "options['step_t'] must hold finite times"),
    (ref_solve, {"options": {"jump_t": [0.5j]}}, "options['jump_t'] must be real"),
    (ref_solve, {"method": "rk4", "options": {"step_size": True}}, "step_size must be a positive finite number"),
    (ref_solve, {"method": "rk4", "step_size": -0.1}, "step_size must be a positive finite number, got -0.1"),
    (ref_solve, {"method": "rk4", "options": {"perturb": 1}}, "options['perturb'] must be True or False, got 1"),
    (ref_solve, {"method": "implicit_adams", "options": {"max_iters": True}}, "options['max_iters'] must be"),
    (ref_solve, {"method": "implicit_adams", "options": {"max_order": 99}}, "options['max_order'] must be an "
                                                                             "integer in [1,"),
    (ref_solve, {"method": "rk45"}, "method must be one of"),
    # gradient-only arguments
    (ref_gradient, {"gtol": True}, "AutoRule: rtol (gtol) must be a positive finite number, got True"),
    (ref_gradient, {"gtol": NAN}, "rtol (gtol) must be a positive finite number"),
    (ref_gradient, {"gtol": -1.0}, "rtol (gtol) must be a positive finite number"),
    (ref_gradient, {"gtol": INF, "quadrature": "interval"}, "IntervalRule: C (gtol) must be a positive finite"),
    (ref_gradient, {"gatol": NAN}, "atol (gatol) must be a non-negative finite number"),
    (ref_gradient, {"gatol": -1.0, "quadrature": "adaptive"}, "atol (gatol) must be a non-negative"),
    (ref_gradient, {"max_nodes": 0}, "max_nodes must be a positive integer"),
    (ref_gradient, {"max_nodes": 2.0}, "max_nodes must be a positive integer, got 2.0"),
    (ref_gradient, {"max_nodes": True, "quadrature": "interval"}, "max_nodes must be a positive integer, got True"),
    (ref_gradient, {"strict": 1}, "AutoRule: strict must be True or False, got 1"),
    (ref_gradient, {"adjoint_rtol": True}, "adjoint_rtol must be a positive finite number, got True"),
    (ref_gradient, {"adjoint_rtol": NAN}, "adjoint_rtol must be a positive finite number"),
    (ref_gradient, {"adjoint_atol": 0.0}, "adjoint_atol must be a positive finite number"),
    (ref_gradient, {"t_grad": 1}, "t_grad must be True or False, got 1"),
    (ref_gradient, {"t_grad": None}, "t_grad must be True or False, got None"),
    (ref_gradient, {"dL_dy": DL + 1j}, "dL_dy must be real"),
    (ref_gradient, {"dL_dy": np.full((3, 2), NAN)}, "dL_dy must be finite"),
    (ref_gradient, {"dL_dy": np.ones((2, 2))}, "dL_dy must have the shape of Solution.ys"),
    (ref_gradient, {"params": [0.5 + 0j]}, "params must be real"),
    (ref_gradient, {"method": "adjoint", "param_blocks": (1.5,)}, "param_blocks[0] must be a non-negative integer"),
    (ref_gradient, {"method": "adjoint", "param_blocks": (2, -1)}, "param_blocks[1] must be a non-negative integer"),
    (ref_gradient, {"quadrature": "simpson"}, "quadrature must be one of"),
    (ref_gradient, {"atol": np.array([1e-9, 1e-8])}, "adjoint_atol must be given (a positive number) when atol is"),
    # a VJP of the wrong shape or type is reported as that VJP, not as f
    (ref_gradient, {"field": decay_field(vjp_y=lambda t, y, p, a: np.ones(3))}, "field.vjp_y returned shape (3,)"),
    (ref_gradient, {"field": decay_field(vjp_y=lambda t, y, p, a: np.ones(3)), "method": "adjoint"},
     "field.vjp_y returned shape (3,)"),
    (ref_gradient, {"field": decay_field(vjp_y=lambda t, y, p, a: np.ones(3)), "method": "discrete"},
     "field.vjp_y returned shape (3,)"),
    (ref_gradient, {"field": decay_field(vjp_p=lambda t, y, p, a: np.ones(2)), "quadrature": "interval"},
     "field.vjp_p returned shape (2,)"),
    (ref_gradient, {"field": decay_field(vjp_p=lambda t, y, p, a: np.array([1j]))}, "field.vjp_p returned complex"),
    # rule objects and quadrature helpers
    (lambda: IntervalRule(C=True), {}, "IntervalRule: C (gtol) must be a positive finite number, got True"),
    (lambda: AutoRule(recheck_every=0), {}, "AutoRule: recheck_every must be a positive integer"),
    (lambda: AdaptiveRule(rtol=INF), {}, "AdaptiveRule: rtol (gtol) must be a positive finite number"),
    (lambda: gqref.gauss_legendre(True), {}, "n must be a positive integer, got True"),
    (lambda: gauss_kronrod(0), {}, "n must be an integer in [1,"),
    (lambda: gqref.node_count(NAN, 10, 0.0, 1.0, 0.0, 1.0), {}, "gtol must be a positive finite number"),
    (lambda: gqref.solve_until_event(FIELD, Y0, 0.0, P, lambda t, y, p: y[0] - 0.5, t_max=NAN), {},
     "t_max must be a finite real number, got nan"),
]


@pytest.mark.parametrize(("call", "kwargs", "message"), REF_REFUSED,
                         ids=[f"{i}-{next(iter(kw), 'call')}" for i, (_, kw, _) in enumerate(REF_REFUSED)])
def test_gqref_refuses(call, kwargs, message):
    with pytest.raises(InputError) as caught:
        call(**kwargs)
    assert message in str(caught.value)


REF_ACCEPTED = [
    (ref_solve, {"rtol": np.float32(1e-6), "atol": np.float32(1e-8)}),
    (ref_solve, {"rtol": np.array(1e-6)}),  # a 0-d array is a number
    (ref_solve, {"max_steps": np.int64(1000), "first_step": np.float64(0.01)}),
    (ref_solve, {"options": {"max_num_steps": np.int32(1000), "safety": np.float32(0.9)}}),
    (ref_solve, {"method": "rk4", "options": {"step_size": np.float32(0.25), "perturb": np.False_}}),
    (ref_solve, {"t": np.array([0, 1, 2], dtype=np.int64), "params": np.array([1], dtype=np.int32)}),
    (ref_gradient, {"max_nodes": np.int64(20)}),
    (ref_gradient, {"max_nodes": np.int64(20), "quadrature": "interval"}),
    (ref_gradient, {"gtol": np.float32(1e-5), "gatol": np.float64(0.0), "strict": np.bool_(False)}),
    (ref_gradient, {"gtol": 1e300, "quadrature": "interval"}),  # a huge C: capped at max_nodes, no overflow
    (ref_gradient, {"t_grad": np.True_, "adjoint_rtol": np.float32(1e-6), "adjoint_atol": np.array(1e-8)}),
    (ref_gradient, {"method": "adjoint", "param_blocks": (np.int64(1),)}),
]


@pytest.mark.parametrize(("call", "kwargs"), REF_ACCEPTED, ids=[str(i) for i in range(len(REF_ACCEPTED))])
def test_gqref_accepts(call, kwargs):
    call(**kwargs)


# --- gqtorch: the same decay as an nn.Module --------------------------------------------------------------------

class Decay(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y


def _y0():
    return torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)


def _t():
    return torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)


SOLVERS = {"odeint": gqtorch.odeint, "odeint_adjoint": gqtorch.odeint_adjoint,
           "odeint_adjoint_gq": gqtorch.odeint_adjoint_gq}


def run_torch(name: str, **kw):
    """Solve with ``name`` and backpropagate through the result (so the backward's arguments are used too)."""
    args = {"func": Decay(), "y0": _y0(), "t": _t()}
    args.update(kw)
    out = SOLVERS[name](args.pop("func"), args.pop("y0"), args.pop("t"), **args)
    ys = out[0] if isinstance(out, tuple) else out
    ys.sum().backward()
    return ys


# the same refusals for all three drop-ins
COMMON_REFUSED = [
    ({"rtol": True}, "rtol must be a positive finite number, got True"),
    ({"rtol": NAN}, "rtol must be a positive finite number, got nan"),
    ({"rtol": -1.0}, "rtol must be a positive finite number"),
    ({"rtol": torch.tensor(True)}, "rtol must be a positive finite number, got True"),
    ({"rtol": torch.tensor([1e-6, 1e-6])}, "rtol must be a number or a one-element tensor"),
    ({"rtol": torch.tensor(1e-6 + 0j)}, "rtol must be real"),
    ({"atol": True}, "atol must be a positive finite number, got True"),
    ({"atol": INF}, "atol must be a positive finite number, got inf"),
    ({"t": torch.tensor([0.0, 1.0, 0.5])}, "t must be strictly increasing or strictly decreasing"),
    ({"t": torch.tensor([0.0, NAN])}, "t must be finite"),
    ({"y0": torch.tensor([NAN, 1.0])}, "y0 must be finite"),
    ({"y0": torch.tensor([1, 2])}, "y0 must be a floating tensor"),
    ({"return_stats": 1}, "return_stats must be True or False, got 1"),
    ({"options": {"max_num_steps": True}}, "options['max_num_steps'] must be a positive integer"),
    ({"options": {"first_step": NAN}}, "options['first_step'] must be"),
    ({"method": "rk4", "options": {"step_size": torch.tensor(-0.1)}}, "options['step_size'] must be a positive"),
]
TORCH_REFUSED = [(name, kw, message) for name in SOLVERS for kw, message in COMMON_REFUSED] + [
    ("odeint", {"atol": torch.tensor([1e-9, -1.0])}, "atol must be positive and finite in every entry"),
    ("odeint", {"atol": np.array([1e-9, NAN])}, "atol must be positive and finite in every entry"),
    ("odeint", {"t": torch.tensor([0.0, 1.0 + 1j])}, "t must be real"),
    ("odeint", {"t": torch.tensor([False, True])}, "t must be a real numeric array, got dtype bool"),
    ("odeint_adjoint_gq", {"atol": torch.tensor([1e-9, 1e-8])}, "adjoint_atol must be given (a positive number)"),
    ("odeint_adjoint", {"adjoint_rtol": True}, "adjoint_rtol must be a positive finite number, got True"),
    ("odeint_adjoint", {"adjoint_atol": torch.tensor(NAN)}, "adjoint_atol must be a positive finite number"),
    ("odeint_adjoint_gq", {"adjoint_rtol": np.float64(-1.0)}, "adjoint_rtol must be a positive finite number"),
    ("odeint_adjoint_gq", {"gtol": True}, "AutoRule: rtol (gtol) must be a positive finite number, got True"),
    ("odeint_adjoint_gq", {"gtol": torch.tensor(NAN)}, "rtol (gtol) must be a positive finite number, got nan"),
    ("odeint_adjoint_gq", {"gatol": -1.0}, "atol (gatol) must be a non-negative finite number"),
    ("odeint_adjoint_gq", {"max_nodes": 0}, "max_nodes must be a positive integer"),
    ("odeint_adjoint_gq", {"max_nodes": torch.tensor(2.5)}, "max_nodes must be a positive integer, got 2.5"),
    ("odeint_adjoint_gq", {"strict": 1}, "strict must be True or False, got 1"),
    ("odeint_adjoint_gq", {"quadrature": "interval", "gtol": INF}, "C (gtol) must be a positive finite number"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), TORCH_REFUSED,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(TORCH_REFUSED)])
def test_gqtorch_refuses(name, kwargs, message):
    with pytest.raises(InputError) as caught:
        run_torch(name, **kwargs)
    assert message in str(caught.value)


COMMON_ACCEPTED = [
    {"rtol": torch.tensor(1e-6), "atol": torch.tensor(1e-8)},
    {"rtol": np.float32(1e-6), "atol": np.float64(1e-8)},
    {"rtol": torch.tensor([1e-6])},  # one element, as torchdiffeq
    {"return_stats": np.bool_(True)},
    {"options": {"max_num_steps": np.int64(1000)}},
    {"options": {"max_num_steps": torch.tensor(1000)}},
    {"method": "rk4", "options": {"step_size": torch.tensor(0.25)}},
    {"method": "rk4", "options": {"step_size": np.float32(0.25)}},
]
TORCH_ACCEPTED = [(name, kw) for name in SOLVERS for kw in COMMON_ACCEPTED] + [
    ("odeint", {"atol": np.array([1e-8, 1e-9])}),  # per component, as a tensor would be
    ("odeint_adjoint", {"adjoint_rtol": torch.tensor(1e-6), "adjoint_atol": np.float32(1e-8)}),
    ("odeint_adjoint_gq", {"adjoint_rtol": torch.tensor(1e-6), "adjoint_atol": np.float32(1e-8)}),
    ("odeint_adjoint_gq", {"gtol": torch.tensor(1e-5), "gatol": np.float64(0.0), "strict": np.bool_(False)}),
    ("odeint_adjoint_gq", {"max_nodes": np.int64(30)}),
    ("odeint_adjoint_gq", {"max_nodes": torch.tensor(8), "quadrature": "interval"}),
    ("odeint_adjoint_gq", {"gtol": 1e300, "quadrature": "interval"}),  # capped at max_nodes, no overflow
]


@pytest.mark.parametrize(("name", "kwargs"), TORCH_ACCEPTED,
                         ids=[f"{name}-{i}" for i, (name, _) in enumerate(TORCH_ACCEPTED)])
def test_gqtorch_accepts(name, kwargs):
    ys = run_torch(name, **kwargs)
    assert bool(torch.isfinite(ys).all())


def test_tables_are_large_enough():
    refused = len(REF_REFUSED) + len(TORCH_REFUSED)
    accepted = len(REF_ACCEPTED) + len(TORCH_ACCEPTED)
    assert refused + accepted >= 80, (refused, accepted)


@pytest.mark.parametrize(("ref_kwargs", "torch_kwargs", "message"), [
    ({"rtol": True}, {"rtol": True}, "rtol must be a positive finite number, got True"),
    ({"atol": NAN}, {"atol": NAN}, "atol must be a positive finite number, got nan"),
    ({"t": [0.0, 1.0, 1.0]}, {"t": torch.tensor([0.0, 1.0, 1.0])}, "t must be strictly increasing"),
    ({"gtol": True}, {"gtol": True}, "AutoRule: rtol (gtol) must be a positive finite number, got True"),
    ({"max_nodes": 0}, {"max_nodes": 0}, "AutoRule: max_nodes must be a positive integer, got 0"),
    ({"strict": 1}, {"strict": 1}, "AutoRule: strict must be True or False, got 1"),
    ({"adjoint_rtol": NAN}, {"adjoint_rtol": NAN}, "adjoint_rtol must be a positive finite number, got nan"),
])
def test_twins_refuse_with_the_same_message(ref_kwargs, torch_kwargs, message):
    with pytest.raises(InputError) as ref_error:
        ref_gradient(**ref_kwargs)
    with pytest.raises(InputError) as torch_error:
        run_torch("odeint_adjoint_gq", **torch_kwargs)
    assert message in str(ref_error.value) and message in str(torch_error.value)
