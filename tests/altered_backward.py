"""An identity whose backward pass alters the gradient: planted gradient faults for the tests of gqtorch's checks."""

from collections.abc import Callable

import torch


class _AlteredBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alter):
        ctx.alter = alter
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return ctx.alter(grad), None


def altered_backward(x: torch.Tensor, alter: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """A copy of ``x`` forward; backward, the gradient reaching it is ``alter(grad)``."""
    return _AlteredBackward.apply(x, alter)
