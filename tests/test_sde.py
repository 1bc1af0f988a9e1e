"""gqtorch.sde: the cosine expansion's covariance, Wong–Zakai convergence on geometric Brownian motion, RNG hygiene,
GQ parity with gqref on the smooth-noise ODE, the transfer to torchsde, and input errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import gqref
import gqtorch
from gqref.errors import InputError
from gqtorch.sde import SmoothNoise, StratonovichSDE, WongZakaiODE, brownian_motion, sdeint
from tests.sde_fields import LinearDrift, TanhDiffusion, flat_params, wong_zakai_field
from tests.test_gqtorch_solve import relative_error

torch.set_num_threads(1)
F64 = torch.float64
EPS = float(np.finfo(np.float64).eps)
SIGMAS = 5.0  # statistical checks: |estimate − expectation| ≤ 5 standard errors (two-sided p ≈ 6e-7 each)


class Scale(torch.nn.Module):
    """x ↦ k·x: GBM's drift (k = μ) and diffusion (k = σ), with k a parameter."""

    def __init__(self, k: float, dtype=F64):
        super().__init__()
        self.k = torch.nn.Parameter(torch.tensor(k, dtype=dtype))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.k * x


class MLP(torch.nn.Module):
    """A small time-dependent MLP on [x, t] (the paper's drift/diffusion shape), seeded by its own generator."""

    def __init__(self, d: int, width: int, seed: int, out=None):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.inner = torch.nn.Linear(d + 1, width, dtype=F64)
        self.outer = torch.nn.Linear(width, d, dtype=F64)
        self.out = out
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator, dtype=F64))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.outer(torch.tanh(self.inner(torch.cat((x, t.expand(*x.shape[:-1], 1)), dim=-1))))
        return h if self.out is None else self.out(h)


def tail_bounds(n_terms: int, c: float) -> tuple[float, float]:
    """Bounds on 2c·Σ_{n>N} 1/a_n², a_n = (n − ½)π: f(x) = 1/(x − ½)² decreases, so
    ∫_{N+1}^∞ f ≤ Σ_{n>N} f(n) ≤ ∫_N^∞ f, i.e. the tail lies in [2c/(π²(N + ½)), 2c/(π²(N − ½))]."""
    return 2.0 * c / (math.pi**2 * (n_terms + 0.5)), 2.0 * c / (math.pi**2 * (n_terms - 0.5))


# --- 1. the cosine expansion's covariance -------------------------------------------------------------------------


@given(t0=st.floats(-5.0, 5.0), c=st.floats(0.1, 10.0), sigma=st.floats(0.0, 1.0), tau=st.floats(0.0, 1.0),
       n_terms=st.integers(1, 400))
@example(t0=0.0, c=1.0, sigma=1.0, tau=1.0, n_terms=1)
def test_covariance_converges_to_min(t0, c, sigma, tau, n_terms):
    """Cov(W_N(s), W_N(t)) = Σ_n φ_n(s)φ_n(t) (Z_n iid standard normal) differs from min(s, t) − t0 by the series'
    tail Σ_{n>N} φ_n(s)φ_n(t), with |φ_n(s)φ_n(t)| ≤ 2c/a_n²: at most 2c/(π²(N − ½))."""
    noise = SmoothNoise(n_terms, t0, t0 + c, (), dtype=F64, generator=0)
    s, t = t0 + sigma * c, t0 + tau * c
    cov = float(noise.path_basis(s) @ noise.path_basis(t))
    exact = min(s, t) - t0
    # Rounding: each of the N products carries a few ulps (τ, sin, sqrt, /, ×) of its size ≤ 2c/a_n², whose sum is
    # ≤ c; τ = (t − t0)/c carries ε(|t| + |t0|)/c, moving each sin by a_n·that. 16(N + 1)ε·(c + |s| + |t| + |t0|)
    # covers both.
    rounding = 16 * (n_terms + 1) * EPS * (c + abs(s) + abs(t) + abs(t0))
    assert abs(cov - exact) <= tail_bounds(n_terms, c)[1] + rounding


@pytest.mark.parametrize("n_terms", [1, 10, 100])
def test_covariance_error_at_the_end_is_the_whole_tail(n_terms):
    """At s = t = t1 every sin(a_n) = ±1, so the error is the full tail: the bound above is tight to O(1/N²)."""
    c = 2.0
    noise = SmoothNoise(n_terms, 1.0, 1.0 + c, (), dtype=F64, generator=0)
    error = c - float(noise.path_basis(1.0 + c).square().sum())
    low, high = tail_bounds(n_terms, c)
    assert low <= error <= high


def test_sampled_covariance_matches_the_finite_n_formula():
    """M paths from one generator: the sample second moments of (W_N(t_k))_k and (ξ_N(t_k))_k match
    path_basis·path_basisᵀ and basis·basisᵀ. For zero-mean jointly Gaussian X, Y the estimator mean(XY) has
    variance (Var X·Var Y + Cov²)/M; each entry is checked to 5 standard errors."""
    m, n_terms = 20_000, 20
    noise = SmoothNoise(n_terms, 0.5, 2.5, (m,), dtype=F64, generator=2024)
    times = torch.tensor([0.7, 1.3, 2.0, 2.5], dtype=F64)
    for values, basis in ((noise.path(times), noise.path_basis(times)), (noise(times), noise.basis(times))):
        sample = values @ values.T / m
        exact = basis @ basis.T
        var = exact.diagonal()
        se = ((var[:, None] * var[None, :] + exact.square()) / m).sqrt()
        assert bool(((sample - exact).abs() <= SIGMAS * se).all())
        assert bool((values.mean(1).abs() <= SIGMAS * (var / m).sqrt()).all())
    # The sampled W_N(t1) has variance close to c (the tail bound), so the sample is Brownian-like, not just
    # self-consistent.
    assert abs(float(noise.path_basis(2.5).square().sum()) - 2.0) <= tail_bounds(n_terms, 2.0)[1]


def test_xi_is_the_derivative_of_the_path():
    """ξ_N = d/dt W_N: the autograd derivative of path(t) against noise(t), to rounding (N terms of a few ulps)."""
    noise = SmoothNoise(30, -1.0, 2.0, (4, 3), dtype=F64, generator=7)
    for t in (-1.0, 0.3, 1.7, 2.0, 2.4):  # 2.4: past t1, where solvers may step
        t = torch.tensor(t, dtype=F64)
        derivative = torch.autograd.functional.jacobian(noise.path, t)  # reverse mode, one row per component
        scale = (noise.basis(t).abs() @ noise.z.reshape(30, -1).abs()).max()
        assert float((derivative - noise(t)).abs().max()) <= 16 * 31 * EPS * float(scale)


def test_zero_terms_is_no_noise():
    noise = SmoothNoise(0, 0.0, 1.0, (3, 2), dtype=F64)
    times = torch.linspace(0.0, 1.0, 5, dtype=F64)
    assert noise.z.shape == (0, 3, 2)
    assert torch.equal(noise(times), torch.zeros(5, 3, 2, dtype=F64))
    assert torch.equal(noise.path(times), torch.zeros(5, 3, 2, dtype=F64))
    # The ODE is then the drift alone: dx/dt = μx.
    func = WongZakaiODE(Scale(0.5), Scale(2.0), noise)
    ys = gqtorch.odeint(func, torch.ones(3, 2, dtype=F64), times, rtol=1e-10, atol=1e-12)
    assert torch.allclose(ys, torch.exp(0.5 * times)[:, None, None].expand(5, 3, 2), rtol=1e-8, atol=0.0)


def test_resample_draws_new_noise_reproducibly():
    a = SmoothNoise(5, 0.0, 1.0, (2,), dtype=F64, generator=3)
    b = SmoothNoise(5, 0.0, 1.0, (2,), dtype=F64, generator=3)
    assert torch.equal(a.z, b.z)  # same seed, same path
    first = a.z.clone()
    a.resample()
    assert not torch.equal(a.z, first)
    a.resample(t0=1.0, t1=4.0, shape=(3, 2))
    assert (a.t0, a.t1, a.c, a.z.shape) == (1.0, 4.0, 3.0, (5, 3, 2))
    assert a(torch.tensor(2.0, dtype=F64)).shape == (3, 2)


# --- 2. Wong–Zakai on geometric Brownian motion ---------------------------------------------------------------------


def test_wong_zakai_gbm():
    """dX = μX dt + σX∘dW (Stratonovich) has X = X0·exp(μ(t − t0) + σW(t)). The ODE dx/dt = μx + σx·ξ_N(t) is
    solved exactly by x = X0·exp(μ(t − t0) + σW_N(t)) for every N, and W_N → W as N grows.

    Truth: a Brownian path of N_ref = 4000 terms (its own truncation variance ≤ 2c/(π²(N_ref − ½)) ≈ 5e-5·c, far
    below the N ≤ 50 errors checked here); the N-term paths are its first N terms (same Z)."""
    mu, sigma, x0, m, n_ref = 0.4, 0.8, 1.5, 200, 4000
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    truth = SmoothNoise(n_ref, 0.0, 1.0, (m,), dtype=F64, generator=5)
    log_truth = math.log(x0) + mu * t[:, None] + sigma * truth.path(t)
    rtol, atol = 1e-10, 1e-12
    rms_errors = []
    for n_terms in (5, 10, 25, 50):
        noise = SmoothNoise(n_terms, 0.0, 1.0, (m,), dtype=F64, generator=0)
        noise.z = truth.z[:n_terms].clone()
        with torch.no_grad():
            ys, stats = gqtorch.odeint(WongZakaiODE(Scale(mu), Scale(sigma), noise), torch.full((m,), x0, dtype=F64),
                                       t, rtol=rtol, atol=atol, options={"norm": "max"}, return_stats=True)
        log_ys = ys.log()
        # (a) exact for every N. With the max norm every path's local error per step is ≤ atol + rtol·|x| as the
        # controller estimates it (the 4th-order estimate bounds the propagated 5th-order solution's error). For
        # the scalar linear ODE x' = a(t)x the flow is a scalar multiplication, so relative (log) errors add up
        # unamplified: ≤ (steps + 1 for the dense output)·(rtol + atol/min|x|).
        solver_bound = (stats.n_accepted + 1) * (rtol + atol / float(ys.abs().min()))
        log_exact = math.log(x0) + mu * t[:, None] + sigma * noise.path(t)
        assert float((log_ys - log_exact).abs().max()) <= solver_bound
        # (b) distance to the SDE's solution: log x_N − log X = σ(W_N − W_ref) + solver error, a Gaussian whose
        # variance is exactly σ²·Σ_{N<n≤N_ref} φ_n(t)². Its mean square over M paths has standard error
        # variance·sqrt(2/M); the solver term adds at most 2·rms·δ + δ².
        variance = sigma**2 * truth.path_basis(t)[:, n_terms:].square().sum(1)
        mean_square = (log_ys - log_truth).square().mean(1)
        slack = 2 * mean_square.sqrt() * solver_bound + solver_bound**2
        assert bool(((mean_square - variance).abs()[1:] <= SIGMAS * variance[1:] * math.sqrt(2 / m)
                     + slack[1:]).all())
        assert float(mean_square[0]) <= solver_bound**2  # both start at X0
        rms_errors.append(float(mean_square.mean().sqrt()))
    # (c) the error decreases with N (in expectation like N^(−1/2): the variance is ≈ σ²·c/(π²N) for τ not small).
    assert rms_errors == sorted(rms_errors, reverse=True)
    assert rms_errors[-1] < rms_errors[0] / 2.5  # sqrt(50/5) ≈ 3.2 expected; 2.5 leaves ≥ 5 SE of the M=200 noise


# --- 3. the global RNG is never touched -----------------------------------------------------------------------------


def test_noise_and_solves_leave_the_global_rng_alone():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(99)
        torch.randn(3)
        expected_next = torch.randn(4)
        torch.manual_seed(99)
        torch.randn(3)
        state = torch.get_rng_state()
        numpy_state = np.random.get_state()[1].copy()

        noise = SmoothNoise(8, 0.0, 1.0, (2, 3), dtype=F64)  # generator=None: a fresh OS-seeded generator
        seeded = SmoothNoise(8, 0.0, 1.0, (2, 3), dtype=F64, generator=1)
        seeded.resample()
        noise.resample(shape=(2, 3))
        noise(torch.tensor(0.3, dtype=F64))
        noise.path(torch.linspace(0.0, 1.0, 4, dtype=F64))
        func = WongZakaiODE(LinearDrift(3, torch.Generator().manual_seed(0)),
                            TanhDiffusion(3, torch.Generator().manual_seed(1)), noise)
        z_before = noise.z.clone()
        y0 = torch.ones(2, 3, dtype=F64, requires_grad=True)
        ys = gqtorch.odeint_adjoint_gq(func, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), rtol=1e-6, atol=1e-8)
        ys.sum().backward()
        assert torch.equal(noise.z, z_before)  # the backward pass saw the forward pass's path

        assert torch.equal(torch.get_rng_state(), state)
        assert np.array_equal(np.random.get_state()[1], numpy_state)
        assert torch.equal(torch.randn(4), expected_next)


def test_sampling_leaves_the_global_rngs_alone():
    pytest.importorskip("torchsde")
    with torch.random.fork_rng(devices=[]):
        state = torch.get_rng_state()
        numpy_state = np.random.get_state()[1].copy()
        sde = StratonovichSDE(Scale(0.1), Scale(0.2))
        sdeint(sde, torch.ones(4, 1, dtype=F64), torch.tensor([0.0, 0.5], dtype=F64), dt=0.1)  # entropy=None
        assert torch.equal(torch.get_rng_state(), state)
        # torchsde's own default would seed its Brownian motion from NumPy's global RNG.
        assert np.array_equal(np.random.get_state()[1], numpy_state)


# --- 4. GQ on the smooth-noise ODE = gqref's GQ ------------------------------------------------------------------


@pytest.mark.parametrize("n_terms", [0, 7])
def test_gq_gradient_equals_gqref(n_terms):
    """The same ODE in both twins (the gqref field is written out by hand in tests/sde_fields.py, with the Z that
    gqtorch drew), the same tolerances: the same steps and nodes, so the gradients agree to summation order
    (1e-9, as in tests/test_gqtorch_gradients.py)."""
    batch, d = 2, 3
    drift = LinearDrift(d, torch.Generator().manual_seed(10))
    diffusion = TanhDiffusion(d, torch.Generator().manual_seed(11))
    noise = SmoothNoise(n_terms, 0.0, 1.5, (batch, d), dtype=F64, generator=12)
    func = WongZakaiODE(drift, diffusion, noise)
    y0_data = torch.tensor([[0.5, -1.0, 0.3], [1.2, 0.1, -0.4]], dtype=F64)
    t_data = torch.tensor([0.0, 0.4, 1.0, 1.5], dtype=F64)
    dl_dy = np.random.default_rng(13).standard_normal((len(t_data), batch, d))
    kwargs = dict(rtol=1e-7, atol=1e-9, gtol=0.5)

    y0 = y0_data.clone().requires_grad_(True)
    t = t_data.clone().requires_grad_(True)
    ys, stats = gqtorch.odeint_adjoint_gq(func, y0, t, return_stats=True, **kwargs)
    (torch.from_numpy(dl_dy) * ys).sum().backward()
    dparams = np.concatenate([p.grad.numpy().ravel() for p in func.parameters()])

    field = wong_zakai_field(noise.z.numpy(), noise.t0, noise.t1, d)
    ref = gqref.gradient(field, y0_data.numpy(), t_data.numpy(), flat_params(drift, diffusion), dl_dy, method="gq",
                         **kwargs)
    assert relative_error(ys.detach().numpy(), ref.diagnostics.forward.ys) <= 1e-9
    assert relative_error(y0.grad.numpy(), ref.dL_dy0) <= 1e-9
    assert relative_error(dparams, ref.dL_dparams) <= 1e-9
    assert relative_error(t.grad.numpy(), ref.dL_dt) <= 1e-9
    assert stats.nodes == ref.diagnostics.nodes
    assert stats.nfe_forward == ref.diagnostics.nfe_forward
    assert stats.batched_nodes is True  # the field ran under torch.func.vmap
    if n_terms == 0:  # no noise: the diffusion cannot matter
        assert not np.any(dparams[d * d + d:])


def test_float32_training_step():
    """The paper's setting: float32 states, a new path per step, GQ with its nodes batched under vmap."""
    batch, d = 5, 2
    drift, diffusion = MLP(d, 8, seed=1).float(), MLP(d, 8, seed=2, out=torch.sigmoid).float()
    func = WongZakaiODE(drift, diffusion, SmoothNoise(10, 0.0, 1.0, (batch, d), dtype=torch.float32, generator=0))
    y0 = torch.randn(batch, d, generator=torch.Generator().manual_seed(1))
    for _ in range(2):
        func.zero_grad()
        func.noise.resample()
        ys, stats = gqtorch.odeint_adjoint_gq(func, y0, torch.linspace(0.0, 1.0, 4), rtol=1e-3, atol=1e-3,
                                              return_stats=True)
        ys.square().mean().backward()
        assert ys.dtype == torch.float32 and stats.batched_nodes is True
        assert all(bool(torch.isfinite(p.grad).all()) for p in func.parameters())


# --- 5. the transfer to torchsde ----------------------------------------------------------------------------------


@pytest.mark.parametrize("adjoint", [False, True])
def test_transfer_to_torchsde_samples_and_differentiates(adjoint):
    pytest.importorskip("torchsde")
    batch, d = 8, 2
    func = WongZakaiODE(MLP(d, 16, seed=1), MLP(d, 16, seed=2, out=torch.sigmoid),
                        SmoothNoise(10, 0.0, 1.0, (batch, d), dtype=F64, generator=0))
    sde = func.sde()
    assert sde.drift is func.drift and sde.diffusion is func.diffusion  # shared, not copied
    assert [id(p) for p in sde.parameters()] == [id(p) for p in func.parameters()]
    y0 = torch.randn(batch, d, dtype=F64, generator=torch.Generator().manual_seed(3))
    ts = torch.linspace(0.0, 1.0, 6, dtype=F64)
    ys = sdeint(sde, y0, ts, dt=0.01, entropy=4, adjoint=adjoint)
    assert ys.shape == (len(ts), batch, d) and bool(torch.isfinite(ys).all())
    assert torch.equal(ys[0], y0)
    ys.square().sum().backward()
    for p in sde.parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and bool(p.grad.abs().sum() > 0)
    # The same modules also drive the ODE.
    assert gqtorch.odeint(func, y0, ts, rtol=1e-6, atol=1e-8).shape == ys.shape


def test_reversible_heun_on_gbm_is_stratonovich():
    """GBM sampled by reversible Heun from the transferred modules. Pathwise, against the closed form on the same
    Brownian increments: the error shrinks at least like the method's strong order ½ (measured ≈ 1: the noise is
    commutative) and is far below the Itô–Stratonovich gap σ²T/2 in log X. In mean: E[X_T] = X0·exp((μ + σ²/2)T)
    for Stratonovich; X0·exp(μT) (the Itô mean, the Stratonovich median) is rejected."""
    pytest.importorskip("torchsde")
    mu, sigma, x0, t_end, m = 0.4, 0.8, 1.5, 1.0, 4000
    sde = StratonovichSDE(Scale(mu), Scale(sigma))
    ts = torch.tensor([0.0, t_end], dtype=F64)
    bm = brownian_motion(0.0, t_end, (m, 1), entropy=11, dtype=F64)
    log_exact = math.log(x0) + mu * t_end + sigma * bm(0.0, t_end)
    errors = []
    for dt in (0.04, 0.01):
        with torch.no_grad():
            x_end = sdeint(sde, torch.full((m, 1), x0, dtype=F64), ts, dt=dt, bm=bm)[-1]
        errors.append(float((x_end.log() - log_exact).square().mean().sqrt()))
    assert errors[1] <= errors[0] / 2  # strong order ≥ ½: a 4× smaller dt at least halves the error
    assert errors[1] < 0.1 * sigma**2 * t_end / 2
    # Mean: X's sample mean vs the Stratonovich expectation, 5 standard errors (sample std / sqrt(M)) plus the
    # discretisation's own contribution, which is known exactly on these paths: mean(X̂ − X).
    se = float(x_end.std()) / math.sqrt(m)
    bias = abs(float((x_end - log_exact.exp()).mean()))
    stratonovich_mean = x0 * math.exp((mu + sigma**2 / 2) * t_end)
    assert abs(float(x_end.mean()) - stratonovich_mean) <= SIGMAS * se + bias
    assert abs(float(x_end.mean()) - x0 * math.exp(mu * t_end)) > SIGMAS * se + bias


# --- 6. input errors --------------------------------------------------------------------------------------------


def _noise(**kwargs):
    args = dict(n_terms=3, t0=0.0, t1=1.0, shape=(2,), dtype=F64)
    args.update(kwargs)
    return SmoothNoise(args.pop("n_terms"), args.pop("t0"), args.pop("t1"), args.pop("shape"), **args)


BAD_NOISE = [
    ({"n_terms": -1}, "n_terms"),
    ({"n_terms": 2.5}, "n_terms"),
    ({"n_terms": True}, "n_terms"),
    ({"n_terms": "3"}, "n_terms"),
    ({"t1": 0.0}, "t1"),
    ({"t0": 2.0}, "t1"),
    ({"t0": math.nan}, "t0"),
    ({"t1": math.inf}, "t1"),
    ({"shape": (2, -1)}, "shape"),
    ({"shape": "ab"}, "shape"),
    ({"dtype": torch.int64}, "dtype"),
    ({"generator": "seed"}, "generator"),
    ({"generator": torch.Generator(), "device": "meta"}, "generator"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_NOISE, ids=[f"{name}-{i}" for i, (_, name) in enumerate(BAD_NOISE)])
def test_bad_noise_arguments(kwargs, name):
    with pytest.raises(InputError, match=name):
        _noise(**kwargs)


def test_bad_resample_and_z():
    noise = _noise()
    with pytest.raises(InputError, match="t1"):
        noise.resample(t1=-1.0)
    assert (noise.t0, noise.t1) == (0.0, 1.0)  # a refused resample changes nothing
    with pytest.raises(InputError, match="z"):
        noise.z = torch.zeros(2, 2, dtype=F64)
    with pytest.raises(InputError, match="z"):
        noise.z = torch.zeros(3, 2, dtype=torch.float32)


def test_state_and_noise_must_match():
    noise = _noise(shape=(2, 3))
    t = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InputError, match="noise"):  # state shape ≠ noise shape
        gqtorch.odeint(WongZakaiODE(Scale(0.1), Scale(0.2), noise), torch.ones(3, 2, dtype=F64), t)
    with pytest.raises(InputError, match="noise"):  # state dtype ≠ noise dtype
        gqtorch.odeint(WongZakaiODE(Scale(0.1), Scale(0.2), noise), torch.ones(2, 3), t)
    with pytest.raises(InputError, match="diffusion"):  # not diagonal noise
        WongZakaiODE(Scale(0.1), lambda t, x: x[..., :1], noise)(t[0], torch.ones(2, 3, dtype=F64))
    with pytest.raises(InputError, match="noise"):
        WongZakaiODE(Scale(0.1), Scale(0.2), "noise")
    with pytest.raises(InputError, match="drift"):
        WongZakaiODE(3, Scale(0.2), noise)


def test_bad_sdeint_arguments():
    pytest.importorskip("torchsde")
    sde = StratonovichSDE(Scale(0.1), Scale(0.2))
    ts = torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(InputError, match="y0"):
        sdeint(sde, torch.ones(3, dtype=F64), ts)
    with pytest.raises(InputError, match="dt"):
        sdeint(sde, torch.ones(3, 1, dtype=F64), ts, dt=0.0)
    with pytest.raises(InputError, match="entropy"):
        brownian_motion(0.0, 1.0, (3, 1), entropy=1.5)
