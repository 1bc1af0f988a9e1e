"""SDEs trained as ODEs through Wong–Zakai (the paper's §5), and their transfer to torchsde for sampling.

The Stratonovich SDE dX = f(t, X) dt + g(t, X) ∘ dW with diagonal noise is replaced, for training, by the random ODE
dx/dt = f(t, x) + g(t, x)·ξ_N(t), where ξ_N is the derivative of the N-term Karhunen–Loève (sine) expansion of
Brownian motion on [t0, t1] (c = t1 − t0, τ = (t − t0)/c, a_n = (n − ½)π, Z_n ~ N(0, I) independent):

    W_N(t) − W(t0) = sqrt(2c) · Σ_{n=1..N} Z_n sin(a_n τ)/a_n,      ξ_N(t) = sqrt(2/c) · Σ_{n=1..N} Z_n cos(a_n τ).

By Wong–Zakai the ODE's solutions converge to the Stratonovich SDE's as N → ∞. Each forward pass draws one Z (a
tensor (N, *noise_shape)) from a dedicated ``torch.Generator``, never from the global RNG, and keeps it, so the
backward pass of :func:`gqtorch.odeint_adjoint_gq` or :func:`gqtorch.odeint_adjoint` sees the same path. Evaluating
ξ_N(t) is one (N-vector of cosines)·Z contraction: no Python loop, no host sync, ``torch.func.vmap``-compatible.

The same drift and diffusion modules then go, unchanged, into a torchsde SDE (:class:`StratonovichSDE`) sampled with
reversible Heun (:func:`sdeint`); torchsde (the optional extra ``gq[sde]``) does all SDE solving.

Typical training step::

    noise = SmoothNoise(10, t[0], t[-1], y0.shape, generator=1234)
    func = WongZakaiODE(drift, diffusion, noise)
    func.noise.resample()                                  # a new path for this forward + backward pass
    ys = gqtorch.odeint_adjoint_gq(func, y0, t, rtol=1e-3, atol=1e-3)
    loss(ys).backward()                                    # the backward solve sees the same Z
    samples = sdeint(func.sde(), y0, t, dt=0.01)           # evaluation: the trained modules in torchsde
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import torch

from gqref.arguments import count, finite_float
from gqref.errors import InputError
from gqtorch.arguments import host_scalar

__all__ = ["SmoothNoise", "StratonovichSDE", "WongZakaiODE", "brownian_motion", "sdeint"]

SDE_METHOD = "reversible_heun"
SDE_ADJOINT_METHOD = "adjoint_reversible_heun"
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_n_terms(n_terms) -> int:
    return count("n_terms (0 means no noise)", host_scalar("n_terms", n_terms), minimum=0)


def _time(name: str, value) -> float:
    return finite_float(name, host_scalar(name, value))


def _interval(t0, t1) -> tuple[float, float]:
    t0, t1 = _time("t0", t0), _time("t1", t1)
    if not t1 > t0:
        raise InputError(f"t1 must be greater than t0 (the noise lives on [t0, t1]), got t0 = {t0!r}, t1 = {t1!r}")
    return t0, t1


def _shape(shape) -> torch.Size:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise InputError(f"shape must be a tuple of non-negative integers, got {shape!r}") from None
    return torch.Size(count(f"shape[{j}]", d, minimum=0) for j, d in enumerate(dims))


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Same device type and, where both name one, the same index (``cuda`` and ``cuda:0`` agree)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


class SmoothNoise:
    """ξ_N(t) = sqrt(2/c)·Σ_{n≤N} Z_n cos((n − ½)π τ), τ = (t − t0)/c, c = t1 − t0: smooth noise on [t0, t1].

    ``n_terms`` N ≥ 0 (0: ξ ≡ 0, the paper's ablation includes it); ``shape`` the noise's shape, equal to the state's
    for diagonal noise (e.g. (batch, d)); ``generator`` a ``torch.Generator`` on ``device``, an int seed for a new
    one, or None for a new non-deterministically seeded one. The global RNG is never used. Z, shape (N, *shape), is
    drawn at construction and by :meth:`resample`, and read by every evaluation until the next resample: call
    ``resample()`` once before each forward pass, never between a forward pass and its backward pass.

    ``noise(t)`` is ξ_N(t) and ``noise.path(t)`` is W_N(t) − W(t0), for t a number or a tensor of any shape (the
    result has shape ``t.shape + shape``). Both are smooth in t everywhere (solvers may step past t1), but they are a
    Brownian path only on [t0, t1].
    """

    def __init__(self, n_terms: int, t0: float, t1: float, shape: Sequence[int] | int, *,
                 generator: torch.Generator | int | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        self.n_terms = _check_n_terms(n_terms)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _FLOAT_DTYPES:
            raise InputError(f"dtype must be a real floating dtype, got {dtype}")
        self.dtype = dtype
        if isinstance(generator, torch.Generator):
            device = generator.device if device is None else torch.device(device)
            if not _same_device(generator.device, device):
                raise InputError(f"generator is on {generator.device} but the noise is on {device}; pass a "
                                 f"torch.Generator(device={str(device)!r})")
        else:
            device = torch.device("cpu") if device is None else torch.device(device)
            if generator is not None and (not isinstance(generator, numbers.Integral) or isinstance(generator, bool)):
                raise InputError(f"generator must be a torch.Generator, an int seed or None, got "
                                 f"{type(generator).__name__}")
            seed = generator
            try:
                generator = torch.Generator(device=device)
            except RuntimeError as error:
                raise InputError(f"cannot make a random generator on device {device}: {error}") from None
            if seed is None:
                generator.seed()  # non-deterministic, from the OS; touches no global state
            else:
                generator.manual_seed(int(seed))
        self.device = device
        self.generator = generator
        # a_n = (n − ½)π in float64, then cast once: the frequencies are exact to the noise's precision.
        self._freq = ((torch.arange(1, self.n_terms + 1, dtype=torch.float64) - 0.5) * math.pi).to(device, dtype)
        self.resample(t0=t0, t1=t1, shape=shape)

    @property
    def z(self) -> torch.Tensor:
        """The current coefficients Z, shape (n_terms, *shape)."""
        return self._z

    @z.setter
    def z(self, value: torch.Tensor) -> None:
        want = (self.n_terms, *self.shape)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != want:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(f"z must be a tensor of shape (n_terms, *shape) = {want}, got {got}")
        if value.dtype != self.dtype or not _same_device(value.device, self.device):
            raise InputError(f"z must be {self.dtype} on {self.device}, got {value.dtype} on {value.device}")
        self._z = value.detach()
        self._z_flat = self._z.reshape(self.n_terms, self.shape.numel())

    def resample(self, *, t0: float | None = None, t1: float | None = None,
                 shape: Sequence[int] | int | None = None) -> torch.Tensor:
        """Draw a new Z from the generator (optionally for a new interval [t0, t1] or noise shape) and return it."""
        t0, t1 = _interval(self.t0 if t0 is None else t0, self.t1 if t1 is None else t1)
        self.shape = self.shape if shape is None else _shape(shape)
        self.t0, self.t1, self.c = t0, t1, t1 - t0
        self.z = torch.randn((self.n_terms, *self.shape), generator=self.generator, dtype=self.dtype,
                             device=self.device)
        return self._z

    def _tau(self, t) -> torch.Tensor:
        t = t.to(dtype=self.dtype) if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=self.dtype,
                                                                                       device=self.device)
        return (t - self.t0) / self.c

    def basis(self, t) -> torch.Tensor:
        """sqrt(2/c)·cos(a_n τ) for n = 1..N, shape ``t.shape + (N,)``: ξ_N(t) = basis(t) @ Z."""
        return math.sqrt(2.0 / self.c) * torch.cos(self._tau(t).unsqueeze(-1) * self._freq)

    def path_basis(self, t) -> torch.Tensor:
        """sqrt(2c)·sin(a_n τ)/a_n for n = 1..N, shape ``t.shape + (N,)``: W_N(t) − W(t0) = path_basis(t) @ Z.

        Z_n being independent standard normals, Cov(W_N(s), W_N(t)) = path_basis(s)·path_basis(t) per component.
        """
        return math.sqrt(2.0 * self.c) * torch.sin(self._tau(t).unsqueeze(-1) * self._freq) / self._freq

    def _contract(self, basis: torch.Tensor) -> torch.Tensor:
        # One (…, N) × (N, M) product for all components; with N = 0 it is an empty sum, i.e. zeros.
        return (basis @ self._z_flat).reshape(*basis.shape[:-1], *self.shape)

    def __call__(self, t) -> torch.Tensor:
        """ξ_N(t), shape ``t.shape + shape``."""
        return self._contract(self.basis(t))

    def path(self, t) -> torch.Tensor:
        """W_N(t) − W(t0) = ∫_{t0}^t ξ_N, shape ``t.shape + shape``."""
        return self._contract(self.path_basis(t))

    def __repr__(self) -> str:
        return (f"SmoothNoise(n_terms={self.n_terms}, t0={self.t0}, t1={self.t1}, shape={tuple(self.shape)}, "
                f"dtype={self.dtype}, device={self.device})")


def _check_output(name: str, out, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"{name}(t, x) returned {got}; diagonal noise needs the state's shape {tuple(x.shape)}")
    return out


class WongZakaiODE(torch.nn.Module):
    """The ODE dx/dt = drift(t, x) + diffusion(t, x)·ξ_N(t) (diagonal noise: elementwise) for gqtorch's solvers.

    ``drift`` and ``diffusion`` are callables ``(t, x) -> tensor of x's shape`` (``torch.nn.Module``s, so their
    parameters are this module's: ``adjoint_params`` can default); ``noise`` a :class:`SmoothNoise` whose shape and
    dtype are the state's. The forward is pure tensor code, so GQ's nodes run in one ``torch.func.vmap`` call.
    The noise is not a submodule (it has no parameters): ``.to(…)``/``.double()`` leave it where it was built, so
    build it on the state's device and dtype (a mismatch raises :class:`~gqref.errors.InputError`).
    """

    def __init__(self, drift: Callable, diffusion: Callable, noise: SmoothNoise):
        super().__init__()
        for name, fn in (("drift", drift), ("diffusion", diffusion)):
            if not callable(fn):
                raise InputError(f"{name} must be callable as {name}(t, x), got {type(fn).__name__}")
        if not isinstance(noise, SmoothNoise):
            raise InputError(f"noise must be a gqtorch.sde.SmoothNoise, got {type(noise).__name__}")
        self.drift = drift
        self.diffusion = diffusion
        self.noise = noise

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        noise = self.noise
        if x.shape != noise.shape or x.dtype != noise.dtype:
            raise InputError(f"the state ({tuple(x.shape)}, {x.dtype}) must match the noise ({tuple(noise.shape)}, "
                             f"{noise.dtype}) for diagonal noise; resample(shape=…) or build the noise with the "
                             f"state's dtype")
        f = _check_output("drift", self.drift(t, x), x)
        g = _check_output("diffusion", self.diffusion(t, x), x)
        return f + g * noise(t)

    def sde(self) -> StratonovichSDE:
        """The same drift and diffusion modules (shared, not copied) as a torchsde Stratonovich SDE."""
        return StratonovichSDE(self.drift, self.diffusion)


class StratonovichSDE(torch.nn.Module):
    """dX = drift(t, X) dt + diffusion(t, X) ∘ dW with diagonal noise, in torchsde's interface (``f``, ``g``,
    ``sde_type``, ``noise_type``); states are (batch, d), as torchsde requires. Parameters are the modules'."""

    sde_type = "stratonovich"
    noise_type = "diagonal"

    def __init__(self, drift: Callable, diffusion: Callable):
        super().__init__()
        for name, fn in (("drift", drift), ("diffusion", diffusion)):
            if not callable(fn):
                raise InputError(f"{name} must be callable as {name}(t, x), got {type(fn).__name__}")
        self.drift = drift
        self.diffusion = diffusion

    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _check_output("drift", self.drift(t, y), y)

    def g(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _check_output("diffusion", self.diffusion(t, y), y)


def _torchsde():
    try:
        import torchsde
    except ImportError:
        raise ImportError("gqtorch.sde's SDE sampling needs torchsde: pip install 'gq[sde]' (or torchsde)") from None
    return torchsde


def brownian_motion(t0: float, t1: float, shape: Sequence[int], *, entropy: int | None = None,
                    dtype: torch.dtype | None = None, device: torch.device | str | None = None):
    """A torchsde ``BrownianInterval`` on [t0, t1] of the given (batch, d) shape, seeded by ``entropy``.

    Without ``entropy`` a seed comes from the OS: torchsde's own default draws it from NumPy's global RNG.
    ``bm(ta, tb)`` is the increment W(tb) − W(ta) (what the tests compare against closed forms).
    """
    torchsde = _torchsde()
    t0, t1 = _interval(t0, t1)
    if entropy is None:
        entropy = torch.Generator().seed() % (2**31 - 1)
    elif not isinstance(entropy, numbers.Integral) or isinstance(entropy, bool):
        raise InputError(f"entropy must be an int or None, got {entropy!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return torchsde.BrownianInterval(t0=t0, t1=t1, size=tuple(_shape(shape)), dtype=dtype,
                                     device=torch.device("cpu") if device is None else device, entropy=int(entropy),
                                     levy_area_approximation="none")


def sdeint(sde: StratonovichSDE, y0: torch.Tensor, ts: torch.Tensor, *, dt: float = 0.01, bm=None,
           entropy: int | None = None, adjoint: bool = False, adjoint_params=None) -> torch.Tensor:
    """Sample paths (len(ts), batch, d) with torchsde's reversible Heun at fixed step ``dt`` (the paper's setting).

    ``bm``: a torchsde Brownian motion (default: :func:`brownian_motion` seeded by ``entropy``). ``adjoint=True``
    uses ``torchsde.sdeint_adjoint`` with ``adjoint_reversible_heun`` (gradients by the SDE adjoint) instead of
    backprop through the solver.
    """
    torchsde = _torchsde()
    if not isinstance(y0, torch.Tensor) or y0.dim() != 2:
        raise InputError(f"y0 must be a (batch, d) tensor for torchsde, got "
                         f"{tuple(y0.shape) if isinstance(y0, torch.Tensor) else type(y0).__name__}")
    dt = _time("dt", dt)
    if dt <= 0:
        raise InputError(f"dt must be positive, got {dt!r}")
    if bm is None:
        bm = brownian_motion(float(ts[0]), float(ts[-1]), y0.shape, entropy=entropy, dtype=y0.dtype,
                             device=y0.device)
    if adjoint:
        return torchsde.sdeint_adjoint(sde, y0, ts, bm=bm, dt=dt, method=SDE_METHOD, adjoint_method=SDE_ADJOINT_METHOD,
                                       adjoint_params=adjoint_params)
    return torchsde.sdeint(sde, y0, ts, bm=bm, dt=dt, method=SDE_METHOD)
