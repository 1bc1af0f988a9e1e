"""Tensors as the numbers gqref's validators judge (:mod:`gqref.arguments`), so both twins accept the same things.

torchdiffeq takes a 0-d (or one-element) tensor wherever it takes a number (``rtol=torch.tensor(1e-6)``), so gqtorch
reads such a tensor as a Python number first and then applies gqref's rule to it: a bool tensor is still a bool, a
NaN still a NaN. Tensors of any other size, or complex ones, are refused here, naming the argument.
"""

from __future__ import annotations

import torch

from gqref.errors import InputError


def host_scalar(name: str, value):
    """A 0-d or one-element real tensor as a Python number (one host transfer); anything else unchanged."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.numel() != 1:
        raise InputError(f"{name} must be a number or a one-element tensor, got a tensor of shape "
                         f"{tuple(value.shape)}")
    if value.is_complex():
        raise InputError(f"{name} must be real, got a {value.dtype} tensor")
    return value.detach().reshape(()).item()
