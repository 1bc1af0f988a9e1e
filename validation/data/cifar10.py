"""CIFAR-10 from its binary version (``cifar-10-binary.tar.gz``, extracted to ``cifar-10-batches-bin/``).

Each ``.bin`` batch is a sequence of 3,073-byte records: one label byte (0..9), then 3,072 pixel bytes: the 1,024
red values of the 32x32 image in row-major order, then green, then blue; that is already (C, H, W) order.
The batches are read from ``<data_dir>/cifar-10-batches-bin/`` when that folder exists, else from ``<data_dir>``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from validation.data.base import DataError, ImageData, check_labels
from validation.data.sources import CIFAR10_ARCHIVE, CIFAR10_DIR, CIFAR10_FILES, urls

SIDE = 32
RECORD = 1 + 3 * SIDE * SIDE


def batch_dir(data_dir: Path) -> Path:
    """The folder the batches are read from: the extracted archive's folder if present, else ``data_dir``."""
    extracted = data_dir / CIFAR10_DIR
    return extracted if extracted.is_dir() else data_dir


def missing_files(data_dir: Path, split: str) -> list[str]:
    """The batch files of ``split`` that are not in :func:`batch_dir`."""
    folder = batch_dir(data_dir)
    return [name for name in CIFAR10_FILES[split] if not (folder / name).is_file()]


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one binary batch: images (n, 3, 32, 32) uint8 and labels (n,) int64; :class:`DataError` if bad."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot read the CIFAR-10 batch ({e})") from e
    if raw.size == 0 or raw.size % RECORD:
        raise DataError(
            f"{path}: {raw.size} bytes is not a positive multiple of the {RECORD}-byte CIFAR-10 record "
            "(1 label byte + 3,072 pixel bytes); the file is truncated or not a CIFAR-10 binary batch"
        )
    records = raw.reshape(-1, RECORD)
    labels = records[:, 0].astype(np.int64)
    check_labels(labels, path)
    return records[:, 1:].reshape(-1, 3, SIDE, SIDE), labels


def load_cifar10(data_dir: Path, split: str) -> ImageData:
    """Read the CIFAR-10 ``split`` ("train": data_batch_1..5.bin, 50,000 images; "test": test_batch.bin, 10,000)."""
    folder = batch_dir(data_dir)
    missing = missing_files(data_dir, split)
    if missing:
        archive = data_dir / CIFAR10_ARCHIVE
        hint = (
            f"{archive} is there: extract it (tar -xzf {archive} -C {data_dir}) or pass download=True"
            if archive.is_file()
            else f"get {' or '.join(urls('cifar10', CIFAR10_ARCHIVE))} and extract it into {data_dir}, "
            "or pass download=True"
        )
        raise DataError(
            f"CIFAR-10 {split} batch file(s) not found: expected {', '.join(str(folder / n) for n in missing)}; {hint}"
        )
    parts = [read_batch(folder / name) for name in CIFAR10_FILES[split]]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    files = ", ".join(CIFAR10_FILES[split])
    return ImageData(
        images=images,
        labels=labels,
        source=f"CIFAR-10 {split} split: {len(labels):,} images from the binary batches {files} in {folder}",
        name=f"cifar10/{split}",
    )
