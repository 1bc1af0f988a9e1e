"""The Ornstein–Uhlenbeck task (docs/paper.md §3.5): quick runs of its three methods, the exact data generator against
the OU moment equations, the moment-matched Gaussian KL, resume, and RNG hygiene."""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import quad, solve_ivp

from validation.harness.training import result_path
from validation.tasks import ornstein_uhlenbeck as ou

SIGMAS = 5.0  # statistical checks: |estimate − expectation| ≤ 5 standard errors (two-sided p ≈ 6e-7 each)
QUICK_WIDTH = ou.QUICK["width"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ou.configure(parser)
    return parser.parse_args(argv)


def _run(out: Path, method: str, extra: list[str] = ()) -> dict:
    args = _parse(["--quick", "--method", method, "--out", str(out), "--no-progress", "--threads", "1", *extra])
    assert ou.main(args) == 0
    return json.loads(_path(out, method).read_text())


def _path(out: Path, method: str) -> Path:
    return result_path(out, ou.NAME, "n10", QUICK_WIDTH, method, 0)


def _rng_states() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _same_rng_states(a: tuple, b: tuple) -> bool:
    np_a, np_b = a[1], b[1]
    return (torch.equal(a[0], b[0]) and a[2] == b[2] and np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1])
            and np_a[2:] == np_b[2:])


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> dict:
    """One --quick run of each method (2 epochs), with the global RNG states around them."""
    out = tmp_path_factory.mktemp("ou")
    before = _rng_states()
    records = {method: _run(out, method) for method in ou.METHODS}
    return {"out": out, "records": records, "rng_before": before, "rng_after": _rng_states()}


# --- the training runs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ou.METHODS)
def test_quick_run_writes_a_complete_result(quick_runs, method):
    record = quick_runs["records"][method]
    history = record["history"]
    assert record["finished"] and record["epochs_done"] == 2
    assert record["task"] == ou.NAME and record["method"] == method and record["variant"] == "n10"
    assert record["width"] == QUICK_WIDTH and record["metric_name"] == "kl"
    assert record["parameters_field"] == record["parameters_total"] == 2 * (QUICK_WIDTH**2 + 5 * QUICK_WIDTH + 1)
    assert record["config"]["method"] == method and record["config"]["paths"] == ou.QUICK["paths"]
    assert record["environment"]["packages"]["torch"]
    # index 0 of the validation histories is the evaluation before training
    for key in ("val_loss", "val_metric", "val_logp"):
        assert len(history[key]) == 3
    for key in ("epoch_time_s", "train_loss", "nfe_forward", "nfe_backward", "peak_memory_mb"):
        assert len(history[key]) == 2
    assert all(t > 0 for t in history["epoch_time_s"])
    assert all(math.isfinite(v) and v >= 0 for v in history["train_loss"] + history["val_metric"])
    assert history["val_loss"] == history["val_metric"]
    assert all(math.isfinite(v) for v in history["val_logp"])
    if method in ("gq", "gq-auto"):  # dopri5's statistics: a step costs 6 evaluations
        assert all(n >= 6 for n in history["nfe_forward"] + history["nfe_backward"])
    else:  # reversible Heun: one drift evaluation per step (at quick's dt 0.1 on [0, 10], about 100)
        assert all(n >= 100 for n in history["nfe_forward"])
        if method == "sde-direct":
            assert history["nfe_backward"] == [None, None]
        else:
            assert all(n >= 100 for n in history["nfe_backward"])
    figure = _path(quick_runs["out"], method).with_suffix(".png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(quick_runs["out"].rglob(".*.tmp"))


def test_methods_share_data_and_initial_weights(quick_runs):
    """At one seed the pre-training evaluation (same weights, same validation Brownian motion) is identical."""
    first = {m: r["history"]["val_metric"][0] for m, r in quick_runs["records"].items()}
    assert len(set(first.values())) == 1


def test_sde_adjoint_follows_sde_direct(quick_runs):
    """Same Brownian draws, and the reversible-Heun adjoint reproduces backprop's gradient up to rounding."""
    direct = quick_runs["records"]["sde-direct"]["history"]
    adjoint = quick_runs["records"]["sde-adjoint"]["history"]
    np.testing.assert_allclose(adjoint["train_loss"], direct["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(adjoint["val_metric"], direct["val_metric"], rtol=1e-4)


def test_training_leaves_the_global_rngs_untouched(quick_runs):
    assert _same_rng_states(quick_runs["rng_before"], quick_runs["rng_after"])


@pytest.mark.parametrize("method", ["gq", "sde-direct"])
def test_resume_continues_from_the_last_finished_epoch(tmp_path, quick_runs, method):
    """The checkpoint restores weights, optimiser and the noise generators: 1 + 1 epochs equal 2."""
    _run(tmp_path, method, ["--epochs", "1"])
    resumed = _run(tmp_path, method, ["--epochs", "2", "--resume"])
    reference = quick_runs["records"][method]
    assert resumed["finished"] and resumed["epochs_done"] == 2
    for key in ("train_loss", "val_metric", "nfe_forward"):
        assert resumed["history"][key] == reference["history"][key]


def test_method_flag_takes_this_tasks_methods(capsys):
    assert _parse(["--method", "sde-adjoint"]).method == "sde-adjoint"
    assert _parse([]).method == "gq" and _parse([]).ncosines == 10
    for argv in (["--method", "direct"], ["--ncosines", "-1"], ["--paths", "1"]):
        with pytest.raises(SystemExit) as info:
            _parse(argv)
        assert info.value.code == 2


def test_model_shapes_and_parameter_count():
    times = torch.linspace(0.0, 10.0, 6, dtype=torch.float64)
    model = ou.OUModel(7, "gq", 3, 4, times, 0.5, noise_seed=1, brownian_seed=2)
    assert sum(p.numel() for p in model.parameters()) == ou.field_parameters(7) == 2 * (49 + 35 + 1)
    y0 = torch.tensor([0.5, -1.0, 2.0])
    samples = model.sample(y0, entropy=5)
    assert samples.shape == (3, 4, 6)
    assert torch.equal(samples[:, :, 0], y0[:, None].expand(3, 4))  # every path starts at its IC


# --- the data ----------------------------------------------------------------------------------------------------


def test_data_are_reproducible_from_the_seed_and_leave_numpy_alone():
    before = _rng_states()
    times = ou.ou_times(11)
    y0, paths = ou.ou_data(5, 4, times, ou.TRAIN_SEED)
    y0_again, paths_again = ou.ou_data(5, 4, times, ou.TRAIN_SEED)
    assert np.array_equal(y0, y0_again) and np.array_equal(paths, paths_again)
    assert not np.array_equal(ou.ou_data(5, 4, times, ou.VAL_SEED)[0], y0)
    assert paths.shape == (5, 4, 11) and np.array_equal(paths[:, :, 0], np.repeat(y0[:, None], 4, axis=1))
    assert np.all(np.abs(y0) <= 3.0)
    assert np.allclose(ou.ou_times(101)[1], 0.1) and ou.ou_times(101)[-1] == 10.0
    assert _same_rng_states(before, _rng_states())


def _moment_odes(y0: float, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """m' = μt − θm, v' = −2θv + (σ + φt)², m(0) = y0, v(0) = 0, integrated numerically (independent of the
    module's closed-form transitions)."""

    def rhs(t, mv):
        return [ou.MU * t - ou.THETA * mv[0], -2.0 * ou.THETA * mv[1] + (ou.SIGMA + ou.PHI * t) ** 2]

    sol = solve_ivp(rhs, (0.0, times[-1]), [y0, 0.0], t_eval=times, rtol=1e-11, atol=1e-12)
    return sol.y[0], sol.y[1]


def test_closed_form_marginals_solve_the_moment_equations():
    times = ou.ou_times(101)
    m_ode, v_ode = _moment_odes(1.3, times)
    mean, var = ou.ou_marginal(1.3, times)
    np.testing.assert_allclose(mean, m_ode, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(var, v_ode, rtol=1e-8, atol=1e-10)
    # the mean by hand: m(t) = e^{−θt}y0 + μ(t/θ − (1 − e^{−θt})/θ²)
    t = times
    by_hand = np.exp(-ou.THETA * t) * 1.3 + ou.MU * (t / ou.THETA - (1 - np.exp(-ou.THETA * t)) / ou.THETA**2)
    np.testing.assert_allclose(mean, by_hand, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t, dt", [(0.0, 0.1), (3.7, 0.1), (2.0, 1.0), (9.9, 0.1), (0.0, 10.0)])
def test_transition_matches_quadrature(t, dt):
    """Mean shift ∫ e^{−θ(Δ−u)} μ(t + u) du and variance ∫ e^{−2θ(Δ−u)} (σ + φ(t + u))² du (Itô isometry)."""
    decay, shift, var = ou.ou_transition(t, dt)
    shift_q = quad(lambda u: np.exp(-ou.THETA * (dt - u)) * ou.MU * (t + u), 0.0, dt, epsabs=0, epsrel=1e-13)[0]
    var_q = quad(lambda u: np.exp(-2 * ou.THETA * (dt - u)) * (ou.SIGMA + ou.PHI * (t + u)) ** 2, 0.0, dt,
                 epsabs=0, epsrel=1e-13)[0]
    assert decay == pytest.approx(math.exp(-ou.THETA * dt), rel=1e-15)
    assert shift == pytest.approx(shift_q, rel=1e-12)
    assert var == pytest.approx(var_q, rel=1e-12)


def _check_normal_sample(x: np.ndarray, mean: float, var: float) -> None:
    n = len(x)
    assert abs(x.mean() - mean) <= SIGMAS * math.sqrt(var / n)
    # the sample variance of n Gaussians has standard error var·sqrt(2/(n − 1))
    assert abs(x.var(ddof=1) - var) <= SIGMAS * var * math.sqrt(2.0 / (n - 1))


@pytest.mark.parametrize("index", [1, 50, 100])
def test_simulated_paths_have_the_ou_moments(index):
    times = ou.ou_times(101)
    paths = ou.simulate_ou(np.array([2.0]), 20_000, times, np.random.default_rng(7))
    m_ode, v_ode = _moment_odes(2.0, times)
    _check_normal_sample(paths[0, :, index], m_ode[index], v_ode[index])


@pytest.mark.parametrize("index", [50, 100])
def test_the_training_set_has_the_ou_moments(index):
    """The actual training data (200 ICs × 45 paths, seed 982846947), standardised by each IC's exact moments, are
    N(0, 1) at a time."""
    times = ou.ou_times(101)
    y0, paths = ou.ou_data(200, 45, times, ou.TRAIN_SEED)
    mean, var = ou.ou_marginal(y0, times[index])
    z = (paths[:, :, index] - mean[:, None]) / math.sqrt(var)
    _check_normal_sample(z.ravel(), 0.0, 1.0)
    _, v_ode = _moment_odes(0.0, times)  # the variance does not depend on y0
    assert var == pytest.approx(v_ode[index], rel=1e-8)


# --- the loss ----------------------------------------------------------------------------------------------------


def test_kl_is_zero_for_identical_moments():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(3, 45, 11, generator=generator)
    target[:, :, 0] = torch.tensor([0.3, -1.7, 2.9])[:, None]  # every path starts at its IC
    assert float(ou.moment_kl(target, target)) == 0.0
    shuffled = target[:, torch.randperm(45, generator=generator)]  # same samples, other order: same moments
    assert abs(float(ou.moment_kl(shuffled, target))) <= 1e-12
    # at t = 0, model and data sit at y0 with different numbers of paths: the KL there is exactly 0
    starts = torch.tensor([0.3, -1.7, 2.9])[:, None, None]
    assert float(ou.moment_kl(starts.expand(3, 8, 1), starts.expand(3, 45, 1))) == 0.0


def test_kl_matches_the_closed_form_gaussian_kl():
    """Two samples m ∓ s/√2 have mean m and unbiased std s, so the moment-matched KL is the closed form."""
    mean_p, std_p, mean_q, std_q = 0.4, 0.7, -0.2, 1.3

    def two_samples(m, s):
        return torch.tensor([m - s / math.sqrt(2), m + s / math.sqrt(2)], dtype=torch.float64).reshape(1, 2, 1)

    kl = float(ou.moment_kl(two_samples(mean_p, std_p), two_samples(mean_q, std_q)))
    sp, sq = std_p + ou.STD_EPS, std_q + ou.STD_EPS  # the loss's std floor, as in the paper
    closed = math.log(sq / sp) + (sp**2 + (mean_p - mean_q) ** 2) / (2 * sq**2) - 0.5
    assert kl == pytest.approx(closed, rel=1e-12)
    f64 = torch.float64
    reference = torch.distributions.kl_divergence(
        torch.distributions.Normal(torch.tensor(mean_p, dtype=f64), torch.tensor(sp, dtype=f64)),
        torch.distributions.Normal(torch.tensor(mean_q, dtype=f64), torch.tensor(sq, dtype=f64)))
    assert kl == pytest.approx(float(reference), rel=1e-12)
    # the floor moves the KL by O(1e-9) only
    unfloored = math.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5
    assert kl == pytest.approx(unfloored, abs=1e-8) and kl > 0


def test_kl_averages_over_ics_and_times_and_has_gradients():
    pred = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    target = torch.randn(2, 7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mean_p, std_p = pred.mean(1), pred.std(1) + ou.STD_EPS
    mean_q, std_q = target.mean(1), target.std(1) + ou.STD_EPS
    entries = torch.distributions.kl_divergence(torch.distributions.Normal(mean_p, std_p),
                                                torch.distributions.Normal(mean_q, std_q))
    loss = ou.moment_kl(pred, target)
    assert float(loss.detach()) == pytest.approx(float(entries.detach().mean()), rel=1e-10)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


def test_sample_logp_is_the_gaussian_log_density():
    pred = torch.randn(2, 6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    target = torch.randn(2, 9, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mean, std = pred.mean(1), pred.std(1) + ou.STD_EPS
    expected = torch.distributions.Normal(mean[:, None], std[:, None]).log_prob(target).mean()
    assert float(ou.sample_logp(pred, target)) == pytest.approx(float(expected), rel=1e-10)


def test_records_carry_their_config_hash(quick_runs):
    from validation.harness.training import config_hash

    for method, record in quick_runs["records"].items():
        assert record["config_hash"] == config_hash(record["config"])
        assert _path(quick_runs["out"], method).name == "seed0.json"  # --quick's defaults: the plain name


def test_explicit_flags_win_over_quick_and_get_their_own_file(tmp_path):
    from validation.harness.training import plan_runs

    args = _parse(["--quick", "--paths", "45", "--sde-dt", "0.01", "--out", str(tmp_path)])
    (plan,) = plan_runs(ou, args)
    # 45 and 0.01 are the paper's defaults, given explicitly: kept; the rest is --quick's
    assert (args.paths, args.sde_dt, args.times, args.width) == (45, 0.01, ou.QUICK["times"], QUICK_WIDTH)
    assert plan.path == _path(tmp_path, "gq").with_name(f"seed0-{plan.config_hash}.json")


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path):
    _run(tmp_path, "sde-direct", ["--epochs", "1"])
    with pytest.raises(SystemExit, match=r"--paths 8 → 9 \(checkpoint → now\)"):
        _run(tmp_path, "sde-direct", ["--epochs", "2", "--resume", "--paths", "9"])
