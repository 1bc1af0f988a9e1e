"""Image classification (docs/paper.md §3.4): MNIST, CIFAR-10 or SVHN through a convolutional neural ODE.

Encoder: BatchNorm2d(C_in) → ReLU → Conv3×3(C_in → 10, no padding) → MaxPool2 → ReLU → Conv3×3(10 → 10, no
padding) → flatten, so the ODE state is 10×11×11 = 1210 for 28-pixel images and 10×13×13 = 1690 for 32-pixel ones.
ODE function (autonomous, no norm layers): reshape to 10×H×W → Conv3×3(10 → W, pad 1) → Softplus → Conv3×3(W → W,
pad 1) → Softplus → Conv3×3(W → 10, pad 1) → flatten; P_f = 9W² + 182W + 10. Decoder on z(1): Linear(S → 50) →
ReLU → Linear(50 → 10). Cross-entropy loss, test accuracy in %, t = [0, 1].

Data are the published train and test splits read by :mod:`validation.data` (``--data-dir``, ``--download``);
without a data directory MNIST is the embedded subset of 5,000 real digits, and CIFAR-10 and SVHN stop with a
message saying which files to put where. Pixels are scaled to [0, 1] (uint8 / 255), with no normalisation or
augmentation, as torchvision's ``ToTensor``. Results go to ``<out>/images/<dataset>/b<batch>/w<W>/<method>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from validation.data import DATASETS, DataError, load_images
from validation.harness.cli import UsageError

NAME = "images"
HELP = "image classification: MNIST, CIFAR-10 or SVHN with a convolutional neural ODE (docs/paper.md §3.4), accuracy"
DEFAULTS = {"width": 50, "epochs": 15, "lr": 0.001, "batch_size": 32}
QUICK = {"width": 4, "epochs": 2, "batch_size": 16}
QUICK_TRAIN, QUICK_TEST = 64, 32  # --quick keeps this many images of each split (the first ones)
STATE_CHANNELS = 10
DECODER_HIDDEN = 50
N_CLASSES = 10


def field_parameters(width: int) -> int:
    """P_f of the convolutional ODE function at ``width`` hidden channels: 9W² + 182W + 10 (docs/paper.md §3.4)."""
    return 9 * width * width + 182 * width + 10


def encoded_side(side: int) -> int:
    """The side of the ODE state's feature maps for ``side``-pixel images: conv (−2), max-pool (÷2), conv (−2)."""
    return (side - 2) // 2 - 2


class ConvField(torch.nn.Module):
    """f(z): three 3×3 convolutions with Softplus between them, on the state seen as 10 maps of side × side.

    Pure tensor code that reshapes with −1 for every leading dimension, so one call takes a batch (B, S), a single
    state (S,), or runs under ``torch.func.vmap`` (GQ evaluates all its nodes in one call that way).
    """

    def __init__(self, width: int, side: int):
        super().__init__()
        self.side = side
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(STATE_CHANNELS, width, 3, padding=1), torch.nn.Softplus(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.Softplus(),
            torch.nn.Conv2d(width, STATE_CHANNELS, 3, padding=1))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        maps = z.reshape(-1, STATE_CHANNELS, self.side, self.side)
        return self.net(maps).reshape(z.shape)


class ImageODEModel(torch.nn.Module):
    """Encoder → ODE solve on [0, 1] → decoder; takes uint8 images (B, C, H, H) and returns logits (B, 10).

    The images stay uint8 until here (a quarter of float32's memory for the data sets, and for host-to-device
    copies); they are scaled to [0, 1] in the parameters' dtype.
    """

    def __init__(self, channels: int, side: int, width: int):
        super().__init__()
        self.state_side = encoded_side(side)
        if self.state_side < 1:
            raise ValueError(f"images of side {side} are too small for the encoder (need at least 8 pixels)")
        self.state_size = STATE_CHANNELS * self.state_side ** 2
        self.encoder = torch.nn.Sequential(
            torch.nn.BatchNorm2d(channels), torch.nn.ReLU(),
            torch.nn.Conv2d(channels, STATE_CHANNELS, 3), torch.nn.MaxPool2d(2), torch.nn.ReLU(),
            torch.nn.Conv2d(STATE_CHANNELS, STATE_CHANNELS, 3), torch.nn.Flatten())
        self.field = ConvField(width, self.state_side)
        self.decoder = torch.nn.Sequential(
            torch.nn.Linear(self.state_size, DECODER_HIDDEN), torch.nn.ReLU(),
            torch.nn.Linear(DECODER_HIDDEN, N_CLASSES))

    def forward(self, images: torch.Tensor, solve) -> torch.Tensor:
        dtype = self.decoder[0].weight.dtype
        x = images.to(dtype) / 255.0
        z0 = self.encoder(x)
        t = torch.tensor([0.0, 1.0], dtype=torch.float64, device=z0.device)
        return self.decoder(solve(self.field, z0, t)[-1])


def accuracy_percent(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return 100.0 * (logits.argmax(dim=1) == labels).double().mean()


def configure_task(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="mnist", help="data set (default mnist)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the data set's files in their published formats (default: none; MNIST "
                             "then uses the embedded 5,000-digit subset, CIFAR-10 and SVHN need it)")
    parser.add_argument("--download", action="store_true",
                        help="fetch the missing files into --data-dir first (checksum-verified)")


VARIANT_KEYS = ("dataset", "batch_size")  # the flags variant() names


def variant(args: argparse.Namespace) -> str:
    return f"{args.dataset}/b{args.batch_size}"


def _split(args: argparse.Namespace, split: str, keep: int | None) -> tuple[torch.utils.data.TensorDataset, str]:
    try:
        data = load_images(args.dataset, split, data_dir=args.data_dir, download=args.download)
    except DataError as error:
        # a missing or bad file is the user's to fix: a message naming the flags, no traceback
        flags = f"--dataset {args.dataset}" + (f" --data-dir {args.data_dir}" if args.data_dir else "")
        raise UsageError(f"{flags}: {error}") from None
    images, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels)
    if keep is not None:
        images, labels = images[:keep], labels[:keep]
    return torch.utils.data.TensorDataset(images, labels), data.source


def build(args: argparse.Namespace, generator: torch.Generator, seed: int):
    """The task for ``args``; ``generator`` is unused (the data are fixed files and the split is the published one)."""
    from validation.harness.training import TaskSetup

    train, train_source = _split(args, "train", QUICK_TRAIN if args.quick else None)
    val, val_source = _split(args, "test", QUICK_TEST if args.quick else None)
    _, channels, side, other = train.tensors[0].shape
    if side != other:
        raise UsageError(f"--dataset {args.dataset}: expected square images, got {side}x{other}")
    try:
        model = ImageODEModel(channels, side, args.width)
    except ValueError as error:  # images too small for the encoder: the data set is the user's
        raise UsageError(f"--dataset {args.dataset}: {error}") from None
    source = f"train: {train_source}; test: {val_source}"
    if args.quick:
        source += f" (--quick: only the first {len(train)} training and {len(val)} test images)"
    details = {"dataset": args.dataset, "image_shape": [channels, side, side], "state_size": model.state_size,
               "n_train": len(train), "n_val": len(val)}
    return TaskSetup(model=model, field=model.field, train=train, val=val,
                     loss=torch.nn.functional.cross_entropy, metric=accuracy_percent, metric_name="accuracy_%",
                     data_source=source, details=details)


def _command():
    from validation.harness.training import task_command

    return task_command(sys.modules[__name__])


configure, main = _command()
