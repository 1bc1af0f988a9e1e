"""The loaded data set (:class:`ImageData`), the error every loader raises (:class:`DataError`), and shared checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gqref.errors import InputError

N_CLASSES = 10


class DataError(InputError):
    """A data set could not be loaded: a file is missing, truncated or malformed, or no data directory was given.

    The message names the file (or argument) and says what was wrong and, for a missing file, where to get it.
    """


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images and labels of one split of one data set.

    ``images`` is uint8 of shape ``(N, C, H, W)`` (MNIST ``(N, 1, 28, 28)``, CIFAR-10 and SVHN ``(N, 3, 32, 32)``),
    ``labels`` is int64 of shape ``(N,)`` with values ``0..9``, ``source`` says in one sentence exactly which data
    was read (files and directory, or the embedded subset), ``name`` is ``"<dataset>/<split>"``.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str
    name: str

    def __post_init__(self) -> None:
        # A loader bug must not pass silently into an experiment: check the promised layout once, here.
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"{self.name}: images must be a uint8 array of shape (N, C, H, W)")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.shape != (images.shape[0],):
            raise DataError(f"{self.name}: labels must be an int64 array of shape ({images.shape[0]},)")
        if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
            raise DataError(f"{self.name}: labels must lie in 0..{N_CLASSES - 1}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def check_labels(labels: np.ndarray, path: Path | str, low: int = 0, high: int = N_CLASSES - 1) -> None:
    """Raise :class:`DataError` naming ``path`` and the first offending record if a label is outside ``low..high``."""
    bad = np.flatnonzero((labels < low) | (labels > high))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{path}: label {int(labels[i])} of record {i} is outside {low}..{high} "
            f"({bad.size} bad labels in all); the file is corrupt or not the expected data set"
        )


def existing_file(path: Path, what: str, urls: list[str]) -> Path:
    """Return ``path`` if it is a file; otherwise raise :class:`DataError` saying where to get it."""
    if path.is_file():
        return path
    where = " or ".join(urls)
    raise DataError(
        f"{what} not found: expected the file {path}. Get it from {where} and put it there, "
        "or pass download=True to fetch it"
    )
