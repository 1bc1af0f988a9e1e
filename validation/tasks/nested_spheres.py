"""Nested spheres (docs/paper.md §3.2): classify 2-D points inside r < 0.4 against the ring 0.7 < r < 0.9.

Points are drawn uniformly in [−1, 1]² by rejection from a seeded generator (the paper's code is unseeded), the
first N of each class kept. The state is the point zero-augmented to 5-D; f = MLP on [z, t] (6 → W → W → 5);
the readout is Linear(5 → 2) on z(1); cross-entropy loss, accuracy metric. P_f = W² + 13W + 5.
"""

from __future__ import annotations

import torch

from validation.tasks.mlp import softplus_mlp, zero_augment

INNER_RADIUS = 0.4
RING = (0.7, 0.9)
AUGMENTED_DIM = 5
N_CLASSES = 2


class NestedSpheresField(torch.nn.Module):
    """f(t, z) = MLP([z, t]): the time enters as one more input column."""

    def __init__(self, width: int):
        super().__init__()
        self.net = softplus_mlp(AUGMENTED_DIM + 1, width, AUGMENTED_DIM)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        column = t.to(z.dtype).expand(*z.shape[:-1], 1)
        return self.net(torch.cat([z, column], dim=-1))


def nested_spheres_data(n_per_class: int, generator: torch.Generator,
                        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(points zero-augmented to (2N, 5), int64 labels (2N,)): class 0 inside r < 0.4, class 1 in the ring.

    Rejection sampling in batches; the first ``n_per_class`` points of each class in draw order are kept, so the
    same generator state always gives the same set.
    """
    inner, ring = [], []
    while len(inner) < n_per_class or len(ring) < n_per_class:
        points = torch.rand(4 * n_per_class + 16, 2, generator=generator, dtype=torch.float64) * 2 - 1
        r = points.norm(dim=1)
        inner.extend(points[r < INNER_RADIUS])
        ring.extend(points[(r > RING[0]) & (r < RING[1])])
    x = torch.stack(inner[:n_per_class] + ring[:n_per_class]).to(dtype)
    labels = torch.cat([torch.zeros(n_per_class, dtype=torch.int64), torch.ones(n_per_class, dtype=torch.int64)])
    return zero_augment(x, AUGMENTED_DIM - 2), labels


def nested_spheres_readout() -> torch.nn.Linear:
    """The classifier on z(1): Linear(5 → 2)."""
    return torch.nn.Linear(AUGMENTED_DIM, N_CLASSES)


# --- the training task -------------------------------------------------------------------------------------------

NAME = "nested-spheres"
HELP = "nested spheres: 2-D points inside a ball vs a ring (docs/paper.md §3.2), cross-entropy, accuracy"
DEFAULTS = {"width": 100, "epochs": 100, "lr": 0.01, "batch_size": 200}
QUICK = {"width": 8, "epochs": 2, "batch_size": 50}
TRAIN_PER_CLASS, VAL_PER_CLASS = 1000, 50
QUICK_TRAIN_PER_CLASS, QUICK_VAL_PER_CLASS = 50, 10


class NestedSpheresModel(torch.nn.Module):
    """Linear(5 → 2) logits on z(1)."""

    def __init__(self, width: int):
        super().__init__()
        self.field = NestedSpheresField(width)
        self.readout = nested_spheres_readout()

    def forward(self, z0: torch.Tensor, solve) -> torch.Tensor:
        t = torch.tensor([0.0, 1.0], dtype=torch.float64, device=z0.device)
        return self.readout(solve(self.field, z0, t)[-1])


def accuracy_percent(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 100.0 * (logits.argmax(dim=1) == labels).double().mean()


def build(args, generator: torch.Generator, seed: int):
    from validation.harness.training import TaskSetup

    n_train, n_val = (QUICK_TRAIN_PER_CLASS, QUICK_VAL_PER_CLASS) if args.quick else (TRAIN_PER_CLASS, VAL_PER_CLASS)
    train = torch.utils.data.TensorDataset(*nested_spheres_data(n_train, generator))
    val = torch.utils.data.TensorDataset(*nested_spheres_data(n_val, generator))
    model = NestedSpheresModel(args.width)
    return TaskSetup(model=model, field=model.field, train=train, val=val,
                     loss=torch.nn.functional.cross_entropy, metric=accuracy_percent, metric_name="accuracy_%",
                     data_source=f"generated: {2 * n_train} training and {2 * n_val} validation points from the "
                                 f"seeded generator")


VARIANT_KEYS = ("gtol",)  # the flags variant() names


def variant(args) -> str:
    text = f"{args.gtol:g}"
    if float(text) != args.gtol:  # :g keeps 6 digits; two values must never share a folder
        text = repr(args.gtol)
    return f"gtol{text}"


def _command():
    import sys

    from validation.harness.training import task_command

    return task_command(sys.modules[__name__])


configure, main = _command()
