"""A tiny SDE model in both twins, for the GQ parity test of the Wong–Zakai ODE.

Drift f(t, x) = x Aᵀ + b, diffusion g(t, x) = tanh(x Wᵀ + c) (diagonal noise), on states x of shape (batch, d).
The torch side is two ``nn.Module``s used through :class:`gqtorch.sde.WongZakaiODE`; the gqref side is the same
ODE dx/dt = f + g·ξ(t) written by hand in NumPy with its VJPs, ξ from the same Z. Parameters are flattened in
``module.parameters()`` order: A, b (drift), then W, c (diffusion).
"""

import math

import numpy as np
import torch

import gqref


class _Affine(torch.nn.Module):
    """x ↦ activation(x Wᵀ + bias), W (d × d) then bias drawn from ``generator``, scaled by ``scale``."""

    scale = 1.0

    def __init__(self, d: int, generator: torch.Generator):
        super().__init__()
        self.weight = torch.nn.Parameter(self.scale * torch.randn(d, d, generator=generator, dtype=torch.float64))
        self.bias = torch.nn.Parameter(self.scale * torch.randn(d, generator=generator, dtype=torch.float64))

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.activation(x @ self.weight.T + self.bias)


class LinearDrift(_Affine):
    scale = 0.3


class TanhDiffusion(_Affine):
    scale = 0.5

    def activation(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


def flat_params(*modules: torch.nn.Module) -> np.ndarray:
    return np.concatenate([p.detach().numpy().ravel() for m in modules for p in m.parameters()])


def wong_zakai_field(z: np.ndarray, t0: float, t1: float, d: int) -> gqref.VectorField:
    """dx/dt = x Aᵀ + b + tanh(x Wᵀ + c)·ξ(t) with ξ(t) = sqrt(2/c)·Σ_n Z_n cos(a_n τ), as a gqref field."""
    n_terms = z.shape[0]
    c_len = t1 - t0
    freq = (np.arange(1, n_terms + 1) - 0.5) * math.pi
    z_flat = z.reshape(n_terms, int(np.prod(z.shape[1:])))
    shape = z.shape[1:]

    def unpack(p):
        k = d * d
        return p[:k].reshape(d, d), p[k:k + d], p[k + d:2 * k + d].reshape(d, d), p[2 * k + d:]

    def xi(t):
        return (math.sqrt(2.0 / c_len) * np.cos(freq * (t - t0) / c_len) @ z_flat).reshape(shape)

    def dxi_dt(t):
        return (-math.sqrt(2.0 / c_len) * (freq / c_len) * np.sin(freq * (t - t0) / c_len) @ z_flat).reshape(shape)

    def f(t, y, p):
        a_mat, b, w, c = unpack(p)
        return y @ a_mat.T + b + np.tanh(y @ w.T + c) * xi(t)

    def vjp_y(t, y, p, a):
        a_mat, _, w, c = unpack(p)
        v = a * xi(t) * (1.0 - np.tanh(y @ w.T + c) ** 2)
        return a @ a_mat + v @ w

    def vjp_p(t, y, p, a):
        _, _, w, c = unpack(p)
        v = a * xi(t) * (1.0 - np.tanh(y @ w.T + c) ** 2)
        return np.concatenate([(a.T @ y).ravel(), a.sum(0), (v.T @ y).ravel(), v.sum(0)])

    def vjp_t(t, y, p, a):
        _, _, w, c = unpack(p)
        return float(np.sum(a * np.tanh(y @ w.T + c) * dxi_dt(t)))

    return gqref.VectorField(f=f, vjp_t=vjp_t, vjp_y=vjp_y, vjp_p=vjp_p, name="wong-zakai-tiny")
