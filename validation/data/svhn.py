"""SVHN (cropped digits) from its MATLAB files ``train_32x32.mat`` / ``test_32x32.mat``, read with scipy.

Each file holds ``X``, uint8 of shape (32, 32, 3, N) (height, width, channel, image), and ``y``, shape (N, 1),
with labels 1..10 where 10 stands for the digit 0; the digit 0 is mapped to label 0, so labels are the digits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from validation.data.base import DataError, ImageData, check_labels, existing_file
from validation.data.sources import SVHN_FILES, urls

SIDE = 32


def missing_files(data_dir: Path, split: str) -> list[str]:
    """The .mat file of ``split`` if it is not in ``data_dir``."""
    name = SVHN_FILES[split]
    return [] if (data_dir / name).is_file() else [name]


def _as_uint8(x: np.ndarray, path: Path) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    # Another numeric type is accepted only if it holds exactly the byte values (a re-saved copy, say).
    if x.dtype.kind not in "iuf" or not np.all((x >= 0) & (x <= 255) & (x == np.round(x))):
        raise DataError(f"{path}: X has dtype {x.dtype} with values that are not the bytes 0..255")
    return x.astype(np.uint8)


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``X`` and ``y`` of an SVHN .mat file as images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9."""
    from scipy.io import loadmat  # scipy's io is a slow import; only SVHN needs it

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as e:
        # loadmat signals a bad file with MatReadError, OSError, ValueError, IndexError, ...: all mean "corrupt".
        raise DataError(f"{path}: cannot read the MATLAB file ({type(e).__name__}: {e}); truncated or corrupt?") from e
    absent = [k for k in ("X", "y") if k not in mat]
    if absent:
        raise DataError(f"{path}: the MATLAB file has no variable(s) {', '.join(absent)}; not an SVHN 32x32 file")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    if x.ndim != 4 or x.shape[:3] != (SIDE, SIDE, 3):
        raise DataError(f"{path}: X has shape {x.shape}, expected (32, 32, 3, N)")
    n = x.shape[3]
    if y.shape not in ((n, 1), (n,), (1, n)):
        raise DataError(f"{path}: y has shape {y.shape}, expected ({n}, 1) for the {n} images in X")
    if y.dtype.kind not in "iuf" or not np.all(y == np.round(y)):
        raise DataError(f"{path}: y holds non-integer labels (dtype {y.dtype})")
    labels = y.reshape(n).astype(np.int64)
    check_labels(labels, path, low=1, high=10)
    labels[labels == 10] = 0
    images = np.ascontiguousarray(_as_uint8(x, path).transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return images, labels


def load_svhn(data_dir: Path, split: str) -> ImageData:
    """Read the SVHN ``split`` ("train": 73,257 digits, "test": 26,032) from its .mat file in ``data_dir``."""
    name = SVHN_FILES[split]
    path = existing_file(data_dir / name, f"SVHN {split} file {name}", urls("svhn", name))
    images, labels = read_mat(path)
    return ImageData(
        images=images,
        labels=labels,
        source=f"SVHN {split} split: {len(labels):,} digits from {path} (label 10 read as digit 0)",
        name=f"svhn/{split}",
    )
