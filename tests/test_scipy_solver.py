"""gqtorch.scipy_solver: parity with torchdiffeq's ``method="scipy_solver"``, min/max step, option checks."""

import math
import warnings

import numpy as np
import pytest
import torch
import torchdiffeq

from gqref.errors import NONFINITE_FIELD, SUCCESS, InputError
from gqtorch.scipy_solver import SOLVERS, scipy_options, scipy_solve
from gqtorch.steps import Callbacks

F64 = torch.float64


class Linear(torch.nn.Module):
    """y' = A y with a fixed, mildly rotating and decaying A (n = 4)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        u = 0.3 * torch.randn(4, 4, generator=g, dtype=torch.float64)
        self.A = torch.nn.Parameter(u - u.T - 0.1 * torch.eye(4, dtype=torch.float64))
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.A @ y


class TimeScalar(torch.nn.Module):
    """A time-dependent scalar field on a state of shape (1,)."""

    def forward(self, t, y):
        return torch.sin(2.0 * t) * y + 0.1 * t


def _flat(func):
    # the contract gqtorch.odeint's FlatField gives: caller-time 0-d t, flat y (here the layout is already flat)
    return lambda t, y: func(t, y)


def _torchdiffeq(func, y0, t, solver="LSODA", rtol=1e-7, atol=1e-9, **extra):
    # torchdiffeq's wrapper builds the time tensor with torch's default dtype when scipy hands it a Python float
    # (LSODA does), rounding t to float32; gqtorch keeps float64 time. A float64 default removes that difference.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's "no effect" warning about torchdiffeq's min_step default
            return torchdiffeq.odeint(func, y0, torch.as_tensor(t), method="scipy_solver", rtol=rtol, atol=atol,
                                      options={"solver": solver, **extra})
    finally:
        torch.set_default_dtype(default)


PROBLEMS = {
    "linear": (Linear, torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=F64)),
    "time_scalar": (TimeScalar, torch.tensor([0.7], dtype=F64)),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("reverse", [False, True])
def test_parity_with_torchdiffeq(solver, problem, reverse):
    make, y0 = PROBLEMS[problem]
    func = make()
    t = np.linspace(0.5, 3.0, 6)
    if reverse:
        t = t[::-1].copy()
    expected = _torchdiffeq(func, y0, t, solver)
    result = scipy_solve(_flat(func), y0, t, 1e-7, 1e-9, {"solver": solver})
    assert result.status == SUCCESS
    assert result.ys.shape == expected.shape
    assert result.ys.dtype == y0.dtype
    # the same scipy steps on the same field values: equal to roundoff (in practice bit for bit)
    torch.testing.assert_close(result.ys, expected, rtol=0, atol=1e-12)
    assert result.n_accepted > 0 and result.nfe > result.n_accepted
    assert result.s_stop == pytest.approx(t[-1] * (-1.0 if reverse else 1.0))


def test_default_solver_is_lsoda_and_output_is_detached():
    func = Linear()
    y0 = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=F64, requires_grad=True)
    t = np.array([0.0, 1.0, 2.0])
    result = scipy_solve(_flat(func), y0, t, 1e-7, 1e-9, None)
    torch.testing.assert_close(result.ys, _torchdiffeq(func, y0, t, "LSODA"), rtol=0, atol=1e-12)
    # as torchdiffeq: a fresh tensor from scipy's array, no graph to y0 or the parameters
    assert not result.ys.requires_grad


def test_single_time_returns_y0_without_evaluating():
    func = Linear()
    y0 = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=F64)
    result = scipy_solve(_flat(func), y0, np.array([1.5]), 1e-7, 1e-9, {"solver": "RK45"})
    assert result.status == SUCCESS and result.nfe == 0 and func.nfe == 0
    torch.testing.assert_close(result.ys, y0[None], rtol=0, atol=0)


def test_float32_state_matches_torchdiffeq():
    func = Linear().float()
    y0 = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float32)
    t = np.linspace(0.0, 2.0, 5)
    result = scipy_solve(_flat(func), y0, t, 1e-6, 1e-8, {"solver": "RK45"})
    assert result.ys.dtype == torch.float32
    torch.testing.assert_close(result.ys, _torchdiffeq(func, y0, t, "RK45", rtol=1e-6, atol=1e-8), rtol=0, atol=0)


@pytest.mark.parametrize("solver", ["RK45", "DOP853", "BDF"])
def test_complex_state(solver):
    y0 = torch.tensor([1.0 + 0.0j], dtype=torch.complex128)
    t = np.array([0.0, 1.0])
    result = scipy_solve(lambda t, y: 1j * y, y0, t, 1e-10, 1e-12, {"solver": solver})
    assert result.ys.dtype == torch.complex128
    assert abs(complex(result.ys[-1, 0]) - complex(np.exp(1j))) < 1e-6


@pytest.mark.parametrize("solver", ["Radau", "LSODA"])
def test_complex_state_rejected_for_solvers_scipy_refuses(solver):
    y0 = torch.tensor([1.0 + 0.0j], dtype=torch.complex128)
    with pytest.raises(InputError, match=solver):
        scipy_solve(lambda t, y: 1j * y, y0, np.array([0.0, 1.0]), 1e-7, 1e-9, {"solver": solver})


def _linear10():
    """torchdiffeq's own min/max-step problem: y' = A y (A skew-symmetric plus a small skew part, n = 10) from
    y(1) = exp(A)·1, output at 10 times in [1, 8]."""
    g = torch.Generator().manual_seed(0)
    u = torch.randn(10, 10, generator=g) * 0.1  # float32, as torchdiffeq's test draws it
    a = (2 * u - (u + u.T)).to(F64)
    y0 = torch.linalg.matrix_exp(a) @ torch.ones(10, dtype=F64)
    return a, y0, np.linspace(1.0, 8.0, 10)


def _counted(a):
    def func(t, y):
        func.nfe += 1
        return a @ y

    func.nfe = 0
    return func


def _lsoda_nfe(a, y0, t, **options):
    func = _counted(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LSODA complains about convergence with a forced large step
        result = scipy_solve(func, y0, t, 1e-7, 1e-9, {"solver": "LSODA", **options})
    assert result.status == SUCCESS and result.nfe == func.nfe
    return result, func.nfe


def test_min_and_max_step_match_torchdiffeq():
    """torchdiffeq's min/max-step settings: the same evaluations and the same numbers for every setting."""
    a, y0, t = _linear10()
    for min_step in (0.0, 2.0):
        for max_step in (math.inf, 5.0, 0.02):
            if min_step > max_step:
                continue  # an InputError (test_bad_options_raise_input_error)
            options = {"min_step": min_step, "max_step": max_step}
            result, nfe = _lsoda_nfe(a, y0, t, **options)
            reference = _counted(a)
            expected = _torchdiffeq(reference, y0, t, **options)
            assert nfe == reference.nfe
            torch.testing.assert_close(result.ys, expected, rtol=0, atol=1e-12)


def test_max_step_is_honoured():
    a, y0, t = _linear10()
    free, _ = _lsoda_nfe(a, y0, t)
    bounded, _ = _lsoda_nfe(a, y0, t, max_step=0.02)
    assert bounded.n_accepted >= 350 > free.n_accepted  # 7 time units in steps of at most 0.02
    # and for an explicit method
    one = torch.ones(1, dtype=F64)
    result = scipy_solve(lambda t, y: -y, one, np.array([0.0, 2.0]), 1e-3, 1e-6, {"solver": "RK45", "max_step": 0.1})
    free = scipy_solve(lambda t, y: -y, one, np.array([0.0, 2.0]), 1e-3, 1e-6, {"solver": "RK45"})
    assert result.n_accepted >= 20 > free.n_accepted


def _scipy_lsoda_reads_min_step() -> bool:
    from scipy.integrate import solve_ivp

    def nfe(min_step):
        return solve_ivp(lambda t, y: -0.3 * y, (1.0, 8.0), np.ones(3), method="LSODA", min_step=min_step,
                         rtol=1e-7, atol=1e-9).nfev

    return nfe(2.0) < nfe(0.0)


def test_min_step_reduces_evaluations():
    """torchdiffeq's check: LSODA with min_step = 2 takes far fewer evaluations (< 50 against > 100)."""
    if not _scipy_lsoda_reads_min_step():
        pytest.skip("this scipy's LSODA ignores min_step (scipy.integrate.solve_ivp itself takes as many steps); "
                    "gqtorch passes it through, as test_min_and_max_step_match_torchdiffeq checks")
    a, y0, t = _linear10()
    assert _lsoda_nfe(a, y0, t, min_step=2.0)[1] < 50 < 100 < _lsoda_nfe(a, y0, t)[1]


@pytest.mark.parametrize("options, match", [
    ({"solver": "rk45"}, "solver"),
    ({"solver": "dopri5"}, "solver"),
    ({"min_step": -1.0}, "min_step"),
    ({"min_step": float("nan")}, "min_step"),
    ({"max_step": 0.0}, "max_step"),
    ({"max_step": "big"}, "max_step"),
    ({"solver": "RK45", "min_step": 0.5}, "min_step"),
    ({"min_step": 3.0, "max_step": 1.0}, "min_step"),
    ({"step_size": 0.1}, "step_size"),
    ({"norm": "rms"}, "norm"),
])
def test_bad_options_raise_input_error(options, match):
    with pytest.raises(InputError, match=match):
        scipy_options(options)
    with pytest.raises(InputError, match=match):
        scipy_solve(lambda t, y: -y, torch.ones(1, dtype=F64), np.array([0.0, 1.0]), 1e-7, 1e-9, options)


def test_options_must_be_a_dict():
    with pytest.raises(InputError, match="options"):
        scipy_options([("solver", "RK45")])


def test_defaults_and_lsoda_only_min_step():
    assert scipy_options(None) == {"method": "LSODA", "max_step": math.inf, "min_step": 0.0}
    assert scipy_options({"solver": "RK23", "max_step": 2}) == {"method": "RK23", "max_step": 2.0}
    assert scipy_options({"solver": "RK45", "min_step": 0}) == {"method": "RK45", "max_step": math.inf}


def test_vector_atol():
    func = Linear()
    y0 = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=F64)
    t = np.array([0.0, 1.0, 2.0])
    atol = torch.tensor([1e-9, 1e-8, 1e-9, 1e-7], dtype=F64)
    result = scipy_solve(_flat(func), y0, t, 1e-7, atol, {"solver": "DOP853"})
    expected = _torchdiffeq(func, y0, t, "DOP853", atol=atol.numpy())
    torch.testing.assert_close(result.ys, expected, rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="atol"):
        scipy_solve(_flat(func), y0, t, 1e-7, np.ones(3), {"solver": "DOP853"})


def test_nonfinite_field_stops_with_its_status():
    def blows_up(t, y):
        return torch.where(t > 0.5, torch.full_like(y, float("nan")), -y)

    result = scipy_solve(blows_up, torch.ones(2, dtype=F64), np.array([0.0, 1.0]), 1e-7, 1e-9, {"solver": "RK45"})
    assert result.status == NONFINITE_FIELD and result.ys is None and result.s_stop > 0.5


def test_failed_solve_reports_a_status_not_short_output():
    # y' = y² from y = 1 blows up at t = 1: scipy fails before t = 2
    result = scipy_solve(lambda t, y: y * y, torch.ones(1, dtype=F64), np.array([0.0, 2.0]), 1e-7, 1e-9,
                         {"solver": "RK45"})
    assert result.status != SUCCESS and result.ys is None
    assert 0.9 < result.s_stop <= 1.0 + 1e-6
    assert result.message


def test_callbacks_warn():
    class WithCallback(torch.nn.Module):
        def forward(self, t, y):
            return -y

        def callback_step(self, t0, y0, dt):
            pass

    func = WithCallback()
    with pytest.warns(UserWarning, match="scipy_solver"):
        callbacks = Callbacks.of(func, method="scipy_solver", supported=())
    assert not callbacks.any
    with pytest.warns(UserWarning, match="scipy_solver"):
        scipy_solve(func, torch.ones(1, dtype=F64), np.array([0.0, 1.0]), 1e-7, 1e-9, {"solver": "RK45"},
                    Callbacks(step=func.callback_step))
