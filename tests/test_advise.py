"""gqtorch.advise: the caller's model is untouched (bitwise), the memory budget excludes, the recommendation is the
fastest agreeing method, bad input fails clearly; and the ``advise`` validation command runs."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from gqref.errors import InputError
from gqtorch.advise import METHODS, Measurement, advise, agreement_bound, decide
from gqtorch.memory import PeakMemory

TOL = {"rtol": 1e-3, "atol": 1e-3}


class WideField(torch.nn.Module):
    """A softplus MLP 4 → W → W → 4 on a batch of two (g1d's shape): many parameters, a small state."""

    def __init__(self, width: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Softplus(), torch.nn.Linear(width, width),
                                       torch.nn.Softplus(), torch.nn.Linear(width, 4))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1  # a buffer the forward writes: advise must put it back
        return self.net(z)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the benchmarks: on a shared 2-core machine more threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def problem(width: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    field = WideField(width)
    y0 = torch.tensor([[-1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    target = torch.tensor([[1.0], [-1.0]])
    return field, y0, torch.tensor([0.0, 1.0]), lambda ys: torch.mean((ys[-1][:, :1] - target) ** 2)


def bits(x: torch.Tensor) -> bytes:
    return x.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def snapshot(module: torch.nn.Module) -> list:
    return [(p, bits(p), p.grad, None if p.grad is None else bits(p.grad))
            for p in (*module.parameters(), *module.buffers())]


def assert_untouched(module: torch.nn.Module, before: list) -> None:
    for (p, value, grad, grad_value) in before:
        assert bits(p) == value
        assert p.grad is grad  # the same object (or still None)
        if grad is not None:
            assert bits(p.grad) == grad_value


def test_model_parameters_grads_buffers_and_rng_untouched():
    field, y0, t, loss = problem()
    first, second = field.net[0], field.net[2]
    first.weight.grad = torch.randn_like(first.weight)  # an existing gradient
    assert first.bias.grad is None and second.weight.grad is None  # and ones that are None
    field.net[4].bias.requires_grad_(False)  # a frozen parameter is not differentiated, and not touched either
    before = snapshot(field)
    rng = torch.get_rng_state()
    advice = advise(field, y0, t, loss, steps=1, **TOL)
    assert_untouched(field, before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert [r.method for r in advice.rows] == list(METHODS)


def test_untouched_also_when_loss_fn_fails_midway():
    field, y0, t, _ = problem()
    field.net[0].weight.grad = torch.ones_like(field.net[0].weight)
    before = snapshot(field)
    with pytest.raises(InputError, match="scalar"):
        advise(field, y0, t, lambda ys: ys[-1].sum(dim=0), steps=1, **TOL)
    assert_untouched(field, before)


def test_report_rows_nfe_and_reference():
    field, y0, t, loss = problem()
    advice = advise(field, y0, t, loss, steps=2, **TOL)
    assert advice.reference == "direct"
    assert advice.agreement_bound == pytest.approx(100 * 1e-3)
    direct = advice.row("direct")
    assert direct.relative_difference == 0.0 and direct.nfe_backward is None and direct.nfe_forward > 0
    for method in ("adjoint", "seminorm", "gq"):
        row = advice.row(method)
        assert len(row.times_s) == 2 and row.nfe_forward > 0 and row.nfe_backward > 0
        assert row.relative_difference < advice.agreement_bound and row.agrees
    # the recommendation is the fastest of the agreeing rows (no budget here)
    assert advice.recommendation == min(advice.rows, key=lambda r: r.median_s).method
    text = str(advice)
    assert "recommendation: " + advice.recommendation in text and all(m in text for m in METHODS)


def test_reference_without_direct_is_the_adjoint():
    field, y0, t, loss = problem()
    advice = advise(field, y0, t, loss, methods=("gq", "adjoint"), steps=1, **TOL)
    assert advice.reference == "adjoint" and advice.row("adjoint").relative_difference == 0.0
    assert [r.method for r in advice.rows] == ["gq", "adjoint"]


def test_plain_function_needs_adjoint_params():
    field, y0, t, loss = problem()
    params = tuple(field.parameters())

    def func(t, z):
        return field(t, z)

    with pytest.raises(InputError, match="adjoint_params"):
        advise(func, y0, t, loss, steps=1, **TOL)
    advice = advise(func, y0, t, loss, steps=1, adjoint_params=params, methods=("direct", "gq"), **TOL)
    assert advice.row("gq").agrees


@pytest.mark.parametrize("bad, match", [
    ({"methods": ("direct", "backprop")}, "methods"),
    ({"methods": ()}, "methods"),
    ({"steps": 0}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"memory_budget": -1.0}, "memory_budget"),
    ({"return_stats": True}, "return_stats"),
    ({"rtoll": 1e-3}, "rtoll"),
    ({"device": "cuda"}, "device"),
    ({"device": "nonsense"}, "device"),
])
def test_bad_arguments(bad, match):
    field, y0, t, loss = problem()
    with pytest.raises(InputError, match=match):
        advise(field, y0, t, loss, **{"steps": 1, **TOL, **bad})


@pytest.mark.parametrize("loss", [lambda ys: ys[-1], lambda ys: 3.0, lambda ys: ys[-1].sum().reshape(1)])
def test_non_scalar_loss(loss):
    field, y0, t, _ = problem()
    with pytest.raises(InputError, match="scalar"):
        advise(field, y0, t, loss, steps=1, **TOL)


def test_agreement_bound():
    assert agreement_bound(1e-3, 1e-6) == pytest.approx(0.1)
    assert agreement_bound(1e-8, torch.tensor([1e-9, 1e-4])) == pytest.approx(1e-2)
    # no tighter than the arithmetic: float32's epsilon is 1.2e-7
    assert agreement_bound(1e-10, 1e-10, torch.float32) == pytest.approx(100 * torch.finfo(torch.float32).eps)


# --- the selection logic on fabricated rows -------------------------------------------------------------------------

def row(method, ms, diff, peak):
    return Measurement(method=method, times_s=(ms / 1e3,) * 3, peak_mib=peak, nfe_forward=14,
                       nfe_backward=None if method == "direct" else 14, relative_difference=diff)


ROWS = [row("direct", 10.0, 0.0, 50.0), row("adjoint", 5.0, 0.5, 400.0), row("seminorm", 7.0, 1e-4, 300.0),
        row("gq", 9.0, 1e-4, 20.0)]


def test_recommends_fastest_agreeing_method_within_budget():
    advice = decide(ROWS, reference="direct", agreement_bound=0.1, memory_budget_mib=100.0)
    assert advice.recommendation == "gq"
    assert not advice.row("adjoint").agrees and "disagrees" in advice.row("adjoint").note
    assert not advice.row("seminorm").fits_budget and "budget" in advice.row("seminorm").note
    assert advice.row("gq").agrees and advice.row("gq").fits_budget
    assert "Faster but set aside: adjoint" in advice.reason and "seminorm (excluded: peak 300 MiB > budget" in \
        advice.reason
    # without the budget seminorm is the fastest agreeing method; the disagreeing adjoint never is
    assert decide(ROWS, reference="direct", agreement_bound=0.1, memory_budget_mib=None).recommendation == "seminorm"
    # a looser bound lets the (fastest) adjoint in
    assert decide(ROWS, reference="direct", agreement_bound=1.0, memory_budget_mib=None).recommendation == "adjoint"


def test_budget_zero_excludes_all_and_huge_excludes_none():
    none_fit = decide(ROWS, reference="direct", agreement_bound=0.1, memory_budget_mib=0.0)
    assert none_fit.recommendation is None and not any(r.fits_budget for r in none_fit.rows)
    assert none_fit.reason.startswith("no method") and all(m in none_fit.reason for m in METHODS)
    assert "recommendation: none" in str(none_fit)
    all_fit = decide(ROWS, reference="direct", agreement_bound=0.1, memory_budget_mib=1e9)
    assert all(r.fits_budget for r in all_fit.rows) and all_fit.recommendation == "seminorm"


def test_nan_disagrees_and_unmeasured_peak_is_not_excluded():
    rows = [row("direct", 10.0, 0.0, None), row("gq", 5.0, math.nan, None)]
    advice = decide(rows, reference="direct", agreement_bound=0.1, memory_budget_mib=1.0)
    assert advice.recommendation == "direct" and not advice.row("gq").agrees
    assert advice.row("direct").fits_budget and "not measurable" in advice.row("direct").note


# --- the budget on real measurements --------------------------------------------------------------------------------

def test_budget_excludes_the_adjoint_on_a_wide_field():
    """Wide MLP, state 2 × 4: the adjoint carries the P parameters in its augmented state (about 25 MiB at
    W = 400, P = 164k), direct and GQ at most a few MiB. An 8 MiB budget sits between them."""
    probe = PeakMemory("cpu")
    probe.start()
    if probe.peak_mib() is None:
        pytest.skip("no CPU peak-memory measurement on this platform (needs Linux /proc and glibc)")
    field, y0, t, loss = problem(width=400)
    budget = 8.0
    advice = advise(field, y0, t, loss, steps=1, memory_budget=budget, **TOL)
    adjoint, direct, gq = advice.row("adjoint"), advice.row("direct"), advice.row("gq")
    assert adjoint.peak_mib > 2 * budget and budget > 2 * max(direct.peak_mib, gq.peak_mib), str(advice)
    assert not adjoint.fits_budget and "excluded: peak" in adjoint.note
    assert direct.fits_budget and gq.fits_budget
    assert advice.recommendation in ("direct", "gq", "seminorm")
    assert "adjoint (excluded: peak" in advice.reason
    assert "excluded: peak" in str(advice)


# --- the validation command -------------------------------------------------------------------------------------------

def test_validation_advise_command(capsys):
    from validation import advise as command

    parser = argparse.ArgumentParser()
    command.configure(parser)
    assert command.main(parser.parse_args(["--task", "g1d", "--width", "20", "--steps", "1"])) == 0
    out = capsys.readouterr().out
    assert "g1d, width 20" in out and "recommendation: " in out and "Δ∇θ vs direct" in out
    with pytest.raises(SystemExit):
        parser.parse_args(["--task", "g1d", "--width", "0"])
