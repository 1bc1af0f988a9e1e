"""gqref's adaptive solver for every embedded pair and every torchdiffeq option, against torchdiffeq 0.2.5 and
gqtorch.

Parity means the same step sequence: the same number of evaluations (so the same accepted and rejected steps) and
outputs equal up to summation order. Two implementations that sum the stages in different orders agree on an
error estimate err = dt·Σ e_j k_j only to about ε·Σ|dt·e_j·k_j|, so their next step sizes differ by that
relative amount divided by the controller's order. Where err is itself near roundoff (error ratios far below 1)
that difference is large, the step sequences drift apart and the outputs differ by the dense output's own error
times the drift — legitimately, between any two implementations. The problems and tolerances below are chosen so
every step's error is resolved (well above roundoff), as the test checks through the recorded error ratios.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gqref
import gqtorch
from gqref.errors import InputError
from gqref.problems import VAN_DER_POL_FIELD
from gqref.tableau import ADAPTIVE_TABLEAUX
from tests.fields import Counted
from validation.bench.problems import linear_field as linear  # y' = A y, A (n × n, row-major) in p

torchdiffeq = pytest.importorskip("torchdiffeq")
torch.set_num_threads(1)
F64 = torch.float64

# The installed torchdiffeq (0.2.5) has no tsit5; that pair is checked against gqtorch only.
TORCHDIFFEQ_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
METHODS = tuple(ADAPTIVE_TABLEAUX)
# Same steps, summation order aside: outputs agree to a few ulps of the solution's scale, amplified at most by
# the steps' count (each step's rounding is carried forward, not compounded: the problems are stable or mildly
# unstable over these spans). 1e-12 relative leaves two orders of magnitude over what is observed (~1e-14).
TORCHDIFFEQ_RTOL = 1e-12
# gqtorch runs the same algorithm in torch; 1e-10 is the twins' contract.
GQTORCH_RTOL = 1e-10
# dopri8 is the exception: its dense output is the common quartic, 4th order against the steps' 8th, so the outputs
# carry an interpolation error (~1e-6 here) far above the solution's. Summation order moves the error estimate by
# ε·Σ|dt·e_j·k_j| (relative ~1e-7 at ratio·tol ~ 1e-10), the next step size by an eighth of that, and the
# interpolation error with the step's position: ~1e-6 × 1e-8 × (a few outputs and steps) — observed ≤ 2e-11.
DOPRI8_RTOL = 1e-10


@gqref.njit
def forced(t, y, p):
    """y' = 2y/t + t⁴ sin 2t − t² + 4t³ (linear, time-dependent, with a closed form)."""
    return np.array([2.0 * y[0] / t + t**4 * math.sin(2.0 * t) - t**2 + 4.0 * t**3])


def forced_exact(t):
    """(y/t²)' = t² sin 2t − 1 + 4t integrated from y(1) = 1/2 + ... (chosen so the constant is zero)."""
    t = np.asarray(t, dtype=np.float64)
    antiderivative = (-t**2 * np.cos(2 * t) / 2 + t * np.sin(2 * t) / 2 + np.cos(2 * t) / 4 - t + 2 * t**2)
    return t**2 * antiderivative


@gqref.njit
def jump(t, y, p):
    """Discontinuous at t = p[0]: y' = −y/2 before, y² after (torchdiffeq's test field)."""
    if t < p[0]:
        return -0.5 * y
    return y * y


def torch_linear(matrix):
    a = torch.tensor(matrix)
    return lambda t, y: a @ y


def torch_forced(t, y):
    return 2.0 * y / t + t**4 * torch.sin(2.0 * t) - t**2 + 4.0 * t**3


def torch_vdp(t, y):
    return torch.stack((y[1], (1.0 - y[0] ** 2) * y[1] - y[0]))


def torch_jump(at):
    return lambda t, y: -0.5 * y if t < at else y * y


def _rotation_matrix():
    return np.array([[-0.1, 2.0], [-2.0, -0.1]])


def _system_matrix():
    """A 10×10 stable system with a spread of time scales (eigenvalues' real parts in [−1.5, −0.1])."""
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    skew = rng.normal(size=(10, 10))
    return q @ np.diag(-np.linspace(0.1, 1.5, 10)) @ q.T + 0.5 * (skew - skew.T)


class Problem:
    def __init__(self, name, field, torch_f, params, y0, t):
        self.name, self.field, self.torch_f, self.params = name, field, torch_f, np.asarray(params, dtype=float)
        self.y0, self.t = np.asarray(y0, dtype=float), np.asarray(t, dtype=float)


PROBLEMS = {
    "rotation": Problem("rotation", linear, torch_linear(_rotation_matrix()), _rotation_matrix().ravel(),
                        [1.0, 0.5], np.linspace(0.0, 6.0, 7)),
    "system10": Problem("system10", linear, torch_linear(_system_matrix()), _system_matrix().ravel(),
                        np.linspace(-1.0, 1.0, 10), np.linspace(0.0, 4.0, 5)),
    "forced": Problem("forced", forced, torch_forced, [], forced_exact([1.0]), np.linspace(1.0, 8.0, 8)),
    "van_der_pol": Problem("van_der_pol", VAN_DER_POL_FIELD, torch_vdp, [1.0], [2.0, 0.0], np.linspace(0, 6, 7)),
    "forced_reversed": Problem("forced_reversed", forced, torch_forced, [], forced_exact([8.0]),
                               np.linspace(8.0, 1.0, 8)),
    "rotation_reversed": Problem("rotation_reversed", linear, torch_linear(_rotation_matrix()),
                                 _rotation_matrix().ravel(), [1.0, 0.5], np.linspace(3.0, -3.0, 5)),
}

# Per method, tolerances where every step's error is resolved (see the module docstring) and the solve stays
# cheap: the low-order pairs take many small steps, so they get looser tolerances.
TOLERANCES = {
    "dopri5": (1e-7, 1e-9),
    "dopri8": (1e-9, 1e-11),
    "bosh3": (1e-6, 1e-8),
    "fehlberg2": (1e-5, 1e-7),
    "adaptive_heun": (1e-4, 1e-6),
    "tsit5": (1e-7, 1e-9),
}


# Hairer's initial step is built for the controller's order; for dopri8 (order 8) it gives a first step whose error
# is at roundoff (ratio ~1e-7·tol), whose size then differs between implementations: start dopri8 on a resolved step.
FIRST_STEP = {"dopri8": {"first_step": 0.2}}


def ours(problem: Problem, method: str, options=None, **kwargs) -> gqref.Solution:
    rtol, atol = kwargs.pop("tols", None) or TOLERANCES[method]
    return gqref.solve(problem.field, problem.y0, problem.t, problem.params, rtol=rtol, atol=atol, method=method,
                       options=options, **kwargs)


def torch_options(options):
    return None if options is None else {k: torch.tensor(v, dtype=F64) if k in ("step_t", "jump_t") else v
                                         for k, v in options.items()}


def theirs(problem: Problem, method: str, options=None, tols=None) -> tuple[np.ndarray, int]:
    rtol, atol = tols or TOLERANCES[method]
    func = Counted(problem.torch_f)
    ys = torchdiffeq.odeint(func, torch.tensor(problem.y0), torch.tensor(problem.t), rtol=rtol, atol=atol,
                            method=method, options=torch_options(options))
    return ys.numpy(), func.nfe


def twin(problem: Problem, method: str, options=None, tols=None) -> tuple[np.ndarray, int]:
    rtol, atol = tols or TOLERANCES[method]
    ys, stats = gqtorch.odeint(problem.torch_f, torch.tensor(problem.y0), torch.tensor(problem.t), rtol=rtol,
                               atol=atol, method=method, options=torch_options(options), return_stats=True)
    return ys.numpy(), stats.nfe


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("problem", list(PROBLEMS), ids=str)
@pytest.mark.parametrize(("reference", "method"), [("torchdiffeq", m) for m in TORCHDIFFEQ_METHODS]
                         + [("gqtorch", m) for m in METHODS])
def test_matches_reference(reference, method, problem):
    """gqref against torchdiffeq (the methods it has) and against its twin gqtorch (every method)."""
    problem = PROBLEMS[problem]
    options = FIRST_STEP.get(method)
    solution = ours(problem, method, options)
    ys, nfe = (theirs if reference == "torchdiffeq" else twin)(problem, method, options)
    assert solution.stats.nfe == nfe
    if reference == "torchdiffeq":
        # every step's error resolved: ratios far above roundoff (the smallest observed is ~1e-7, the first steps)
        assert np.min(solution.steps.error_ratios) > 1e-8
        rtol = DOPRI8_RTOL if method == "dopri8" else TORCHDIFFEQ_RTOL
    else:
        rtol = GQTORCH_RTOL
    assert relative_difference(solution.ys, ys) <= rtol


@pytest.mark.parametrize("method", METHODS)
def test_forced_problem_is_solved_to_tolerance(method):
    """The closed form: the global error stays within a modest multiple of the tolerance's scale."""
    problem = PROBLEMS["forced"]
    solution = ours(problem, method, FIRST_STEP.get(method))
    rtol = TOLERANCES[method][0]
    # global error ≈ accumulated local errors (~rtol each, over a few hundred steps on a growing solution), and
    # dopri8's quartic dense output adds its own ~1e-6
    bound = max(1000 * rtol, 1e-5 if method == "dopri8" else 0.0)
    assert relative_difference(solution.ys[:, 0], forced_exact(problem.t)) <= bound


@pytest.mark.parametrize("method", TORCHDIFFEQ_METHODS)
def test_initial_step_matches_torchdiffeq(method):
    """Hairer's initial step with the controller's order, as torchdiffeq selects it (the first step is accepted
    on these problems, so it is the first recorded size)."""
    from torchdiffeq._impl.misc import _rms_norm, _select_initial_step

    problem = PROBLEMS["van_der_pol"]
    rtol, atol = TOLERANCES[method]
    solution = ours(problem, method)
    order = ADAPTIVE_TABLEAUX[method].order
    y0 = torch.tensor(problem.y0)
    h0 = _select_initial_step(problem.torch_f, torch.tensor(0.0, dtype=F64), y0, order - 1,
                              torch.tensor(rtol, dtype=F64), torch.tensor(atol, dtype=F64), _rms_norm)
    assert solution.steps.hs[0] == pytest.approx(float(h0), rel=1e-14)


# --- torchdiffeq's options ----------------------------------------------------------------------------------------

# Each option on the rotation (both directions) with dopri5 and with a non-FSAL pair (fehlberg2's y1 is b's
# combination, not its last stage's input), each compared with torchdiffeq and gqtorch as above.
OPTIONS = {
    "min_step": {"min_step": 0.35},  # above the controller's choice: steps with error ratios > 1 are accepted
    "max_step": {"max_step": 0.05},
    "step_t": {"step_t": [0.77, 2.5, -1.25, 4.1]},  # -1.25: outside the forward span, ignored by it
    "controller_constants": {"safety": 0.8, "ifactor": 4.0, "dfactor": 0.3},
    "first_step": {"first_step": 0.01},
    "max_num_steps": {"max_num_steps": 10_000},
}


@pytest.mark.parametrize("problem", ["rotation", "rotation_reversed"])
@pytest.mark.parametrize("method", ["dopri5", "fehlberg2", "bosh3"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_options_match_torchdiffeq_and_gqtorch(option, method, problem):
    problem = PROBLEMS[problem]
    options = OPTIONS[option]
    solution = ours(problem, method, options)
    ys, nfe = theirs(problem, method, options)
    assert solution.stats.nfe == nfe
    assert relative_difference(solution.ys, ys) <= TORCHDIFFEQ_RTOL
    ys, nfe = twin(problem, method, options)
    assert solution.stats.nfe == nfe
    assert relative_difference(solution.ys, ys) <= GQTORCH_RTOL
    sizes = np.abs(solution.steps.hs)
    if option == "min_step":
        assert np.all(sizes[:-1] >= 0.35) and np.max(solution.steps.error_ratios) > 1.0
    if option == "max_step":
        assert np.max(sizes) <= 0.05
    if option == "step_t":  # steps end exactly on the prescribed times inside the span
        inside = [s for s in options["step_t"] if min(problem.t) < s < max(problem.t)]
        assert set(inside) <= set(solution.steps.ts.tolist())
    if option == "first_step":
        assert sizes[0] == 0.01 or solution.stats.n_rejected > 0


def jump_problem(t) -> Problem:
    return Problem("jump", jump, torch_jump(0.5), [0.5], [1.0, 2.0], t)


# Not dopri8 (torchdiffeq's own jump test leaves it out too): the step shortened onto the jump has an error near
# roundoff for an 8th-order pair, so the size of the step after it differs between implementations (observed 1e-8
# in reversed time even at rtol 1e-11).
@pytest.mark.parametrize("t", [[0.0, 1.0], [1.0, 0.0], [0.0, 0.25, 0.5, 0.75, 1.0]], ids=str)
@pytest.mark.parametrize("method", [m for m in TORCHDIFFEQ_METHODS if m != "dopri8"])
def test_jump_t_matches_torchdiffeq_and_saves_evaluations(method, t):
    """torchdiffeq's own check (fewer evaluations with the jump declared) on its test field, plus parity.

    Without jump_t the controller finds the discontinuity by rejecting steps across it; with it, the step ends on
    the jump (its c = 1 stages one ulp before, on the near side) and the field restarts one ulp after."""
    problem = jump_problem(t)
    tols = (1e-6, 1e-6)
    options = {"jump_t": [0.5]}
    plain = ours(problem, method, tols=tols)
    declared = ours(problem, method, options, tols=tols)
    assert declared.stats.nfe < plain.stats.nfe
    assert 0.5 in declared.steps.ts.tolist() and np.count_nonzero(declared.steps.jumps) == 1
    # Parity for the declared jump only: without it, the rejected steps shrink onto the discontinuity until their
    # stage times sit within a few ulps of it, where which side a stage lands on depends on the rounding of
    # t0 + c·dt — between any two implementations (observed: same NFE, outputs 1e-10 apart).
    ys, nfe = theirs(problem, method, options, tols=tols)
    assert declared.stats.nfe == nfe
    assert relative_difference(declared.ys, ys) <= TORCHDIFFEQ_RTOL
    ys, nfe = twin(problem, method, options, tols=tols)
    assert declared.stats.nfe == nfe
    assert relative_difference(declared.ys, ys) <= GQTORCH_RTOL


def test_jump_and_step_times_together():
    """A step_t inside a step that a jump_t also shortens: the jump wins, as in torchdiffeq."""
    problem = jump_problem([0.0, 1.0])
    options = {"jump_t": [0.5], "step_t": [0.3, 0.45, 0.9]}
    solution = ours(problem, "dopri5", options, tols=(1e-6, 1e-6))
    ys, nfe = theirs(problem, "dopri5", options, tols=(1e-6, 1e-6))
    assert solution.stats.nfe == nfe
    assert relative_difference(solution.ys, ys) <= TORCHDIFFEQ_RTOL
    assert {0.3, 0.45, 0.5, 0.9} <= set(solution.steps.ts.tolist())


def test_float32_state_is_nudged_by_float32_ulps():
    """The c = 1 stage of the step ending on the jump sees float32's neighbour of 0.5 (torchdiffeq casts the time
    to the state's dtype before nudging), and the restart its neighbour above."""
    seen = []

    def f(t, y, p):
        seen.append(t)
        return -0.5 * y if t < 0.5 else y * y

    gqref.solve(f, np.array([1.0, 2.0], dtype=np.float32), [0.0, 1.0], rtol=1e-5, atol=1e-5,
                options={"jump_t": [0.5]})
    below = float(np.nextafter(np.float32(0.5), np.float32(0.0)))
    above = float(np.nextafter(np.float32(0.5), np.float32(1.0)))
    assert below in seen and above in seen
    assert not [t for t in seen if below < t < above]  # nothing at the jump itself or between


# --- keyword/option conflicts and bad options -------------------------------------------------------------------

@pytest.mark.parametrize(("options", "kwargs", "names"), [
    ({"bogus": 1}, {}, ["bogus"]),
    ({"min_step": -1.0}, {}, ["min_step"]),
    ({"min_step": 0.5, "max_step": 0.1}, {}, ["min_step", "max_step"]),
    ({"max_step": 0.0}, {}, ["max_step"]),
    ({"step_t": [0.5], "jump_t": [0.5]}, {}, ["step_t", "jump_t"]),
    ({"step_t": [0.5, float("nan")]}, {}, ["step_t"]),
    ({"jump_t": "soon"}, {}, ["jump_t"]),
    ({"safety": 0.0}, {}, ["safety"]),
    ({"ifactor": 0.5}, {}, ["ifactor"]),
    ({"dfactor": 1.5}, {}, ["dfactor"]),
    ({"max_num_steps": 0}, {}, ["max_num_steps"]),
    ({"first_step": -0.1}, {}, ["first_step"]),
    ({"first_step": 0.1}, {"first_step": 0.2}, ["first_step"]),
    ({"max_num_steps": 10}, {"max_steps": 10}, ["max_steps", "max_num_steps"]),
    ({"norm": "max"}, {"norm": "rms"}, ["norm"]),
    ({"norm": lambda x: x.max()}, {}, ["norm"]),
    ({"dtype": np.float32}, {}, ["dtype"]),
    ({"step_t": [0.5]}, {"controller": "scipy"}, ["step_t", "scipy"]),
    ({}, {"method": "bosh3", "controller": "scipy"}, ["scipy", "bosh3"]),
    ({"min_step": 0.1}, {"method": "rk4"}, ["min_step", "rk4"]),
    ([("first_step", 0.1)], {}, ["options", "dict"]),
])
def test_bad_options_name_themselves(options, kwargs, names):
    with pytest.raises(InputError) as raised:
        gqref.solve(forced, [1.0], [1.0, 2.0], options=options, **kwargs)
    for name in names:
        assert name in str(raised.value)


def test_options_and_keywords_agree():
    """Each option set through options and through the old keywords gives the same solve."""
    problem = PROBLEMS["rotation"]
    a = ours(problem, "dopri5", {"first_step": 0.01, "max_num_steps": 500, "norm": "max"})
    b = ours(problem, "dopri5", first_step=0.01, max_steps=500, norm="max")
    assert np.array_equal(a.ys, b.ys) and a.stats == b.stats
    assert a.method.name == "dopri5" and a.method.adaptive and a.method.nudged


def test_rk4_takes_step_size_as_an_option():
    problem = PROBLEMS["rotation"]
    a = gqref.solve(problem.field, problem.y0, problem.t, problem.params, method="rk4", options={"step_size": 0.1})
    b = gqref.solve(problem.field, problem.y0, problem.t, problem.params, method="rk4", step_size=0.1)
    assert np.array_equal(a.ys, b.ys)


# --- the gradient machinery replays any adaptive pair -------------------------------------------------------------

COMPLEX_STEP = 1e-200  # far below any rounding: Im f(x + ih)/h is f'(x) to working precision


@gqref.njit
def jump_vjp_t(t, y, p, a):
    return 0.0


@gqref.njit
def jump_vjp_y(t, y, p, a):
    if t < p[0]:
        return -0.5 * a
    return 2.0 * y * a


@gqref.njit
def jump_vjp_p(t, y, p, a):
    return np.zeros(1)  # the jump's time is not differentiated (the field is flat in it away from it)


JUMP_FIELD = gqref.VectorField(jump, jump_vjp_t, jump_vjp_y, jump_vjp_p, name="jump")


def python_field(field: gqref.VectorField) -> gqref.VectorField:
    """The same field through its .py_func versions, which accept complex inputs."""
    return gqref.VectorField(*(getattr(field, r).py_func for r in ("f", "vjp_t", "vjp_y", "vjp_p")))


def complex_step(field, forward, y0, t, params, cot, which):
    """∂/∂(one of y0, params, t) of Σ cot·ys through the frozen-step map, by complex-step replays."""
    from gqref.discrete import FrozenSteps, replay

    plan = FrozenSteps.of(forward)
    inputs = [np.asarray(y0, dtype=complex), np.asarray(params, dtype=complex), np.asarray(t, dtype=complex)]
    out = np.zeros(inputs[which].size)
    for k in range(out.size):
        args = [v.copy() for v in inputs]
        args[which][k] += 1j * COMPLEX_STEP
        # only the perturbed input is complex: a field may compare t or params (the jump field does)
        t_k = args[2] if which == 2 else np.asarray(t, dtype=float)
        p_k = args[1] if which == 1 else np.asarray(params, dtype=float)
        out[k] = np.sum(cot * replay(python_field(field), args[0], t_k, p_k, plan)).imag / COMPLEX_STEP
    return out


@pytest.mark.parametrize("method", ["dopri8", "bosh3", "fehlberg2", "adaptive_heun", "tsit5"])
def test_discrete_gradient_of_any_pair_equals_complex_step(method):
    """fehlberg2 and adaptive_heun are not FSAL (y1 is b's combination): the reverse sweep routes y1's cotangent
    through b; both are exact derivatives of the same map and differ by a reverse sweep's rounding (≤ 1e-12)."""
    from gqref.discrete import discrete_gradient

    y0, t, params = np.array([2.0, 0.0]), np.linspace(0.0, 3.0, 4), np.array([1.0])
    rtol, atol = TOLERANCES[method]
    forward = gqref.solve(VAN_DER_POL_FIELD, y0, t, params, rtol=rtol, atol=atol, method=method,
                          options=FIRST_STEP.get(method))
    cot = np.cos(np.arange(forward.ys.size)).reshape(forward.ys.shape)
    grads = discrete_gradient(VAN_DER_POL_FIELD, forward, params, cot, t_grad=True)[:3]
    for which, ours_grad in enumerate(grads):
        reference = complex_step(VAN_DER_POL_FIELD, forward, y0, t, params, cot, which)
        assert relative_difference(ours_grad, reference) <= 1e-12


@pytest.mark.parametrize("t", [[0.0, 0.3, 1.0], [1.0, 0.7, 0.0]], ids=str)
def test_discrete_gradient_through_a_jump_restart(t):
    from gqref.discrete import discrete_gradient

    y0, params = np.array([1.0, 2.0]), np.array([0.5])
    forward = gqref.solve(JUMP_FIELD, y0, t, params, rtol=1e-7, atol=1e-9, options={"jump_t": [0.5]})
    assert np.count_nonzero(forward.steps.jumps) == 1
    cot = np.ones_like(forward.ys)
    dy0 = discrete_gradient(JUMP_FIELD, forward, params, cot, t_grad=False)[0]
    assert relative_difference(dy0, complex_step(JUMP_FIELD, forward, y0, t, params, cot, 0)) <= 1e-12


@pytest.mark.parametrize(("method", "options"), [("bosh3", None), ("fehlberg2", None), ("dopri8", None),
                                                 ("dopri5", {"jump_t": [0.5]}), ("adaptive_heun", {"step_t": [0.3]})])
def test_dense_output_of_any_pair_reproduces_the_solve(method, options):
    from gqref.dense import dense_output

    y0, t, params = np.array([1.0, 2.0]), np.linspace(0.0, 1.0, 6), np.array([0.5])
    solution = gqref.solve(JUMP_FIELD, y0, t, params, rtol=1e-6, atol=1e-8, method=method, options=options)
    dense = dense_output(JUMP_FIELD, solution, params)
    assert np.array_equal(dense.evaluate(t[1:]), solution.ys[1:])
    scipy = gqref.solve(JUMP_FIELD, y0, t, params, rtol=1e-6, atol=1e-8, controller="scipy")
    assert np.array_equal(dense_output(JUMP_FIELD, scipy, params).evaluate(t[1:]), scipy.ys[1:])


def test_gradient_machinery_refuses_fixed_grids():
    from gqref.dense import dense_output
    from gqref.discrete import discrete_gradient

    y0, t, params = np.array([2.0, 0.0]), np.linspace(0.0, 1.0, 3), np.array([1.0])
    fixed = gqref.solve(VAN_DER_POL_FIELD, y0, t, params, method="rk4", step_size=0.1)
    with pytest.raises(InputError, match="rk4"):
        dense_output(VAN_DER_POL_FIELD, fixed, params)
    with pytest.raises(InputError, match="rk4"):
        discrete_gradient(VAN_DER_POL_FIELD, fixed, params, np.ones_like(fixed.ys), t_grad=False)
