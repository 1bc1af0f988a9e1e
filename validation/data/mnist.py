"""MNIST from its IDX files (``train-images-idx3-ubyte.gz`` and friends), as published by LeCun et al.

IDX format: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then one big-endian
uint32 per dimension, then the values in row-major order. Images are (N, 28, 28), labels (N,).
The gzip files are read as published; already-decompressed copies (the name without ``.gz``) and torchvision's
layout (``MNIST/raw/`` under the data directory) are accepted too.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from validation.data.base import DataError, ImageData, check_labels, existing_file
from validation.data.sources import MNIST_FILES, urls

UBYTE = 0x08
SIDE = 28


def _candidates(data_dir: Path, name: str) -> list[Path]:
    plain = name.removesuffix(".gz")
    return [data_dir / name, data_dir / plain, data_dir / "MNIST" / "raw" / name, data_dir / "MNIST" / "raw" / plain]


def find_file(data_dir: Path, name: str) -> Path | None:
    """The first existing copy of the published file ``name`` under ``data_dir``, or None."""
    return next((p for p in _candidates(data_dir, name) if p.is_file()), None)


def missing_files(data_dir: Path, split: str) -> list[str]:
    """The published names of the files of ``split`` that are not under ``data_dir``."""
    return [name for name in MNIST_FILES[split] if find_file(data_dir, name) is None]


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        # BadGzipFile (not gzip, CRC error) is an OSError, a cut-off stream an EOFError, bad deflate data zlib.error.
        raise DataError(f"{path}: cannot read the gzip-compressed IDX data ({type(e).__name__}: {e})") from e


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions; :class:`DataError` names the file if it is bad."""
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: only {len(raw)} bytes, shorter than the {header}-byte IDX header (truncated?)")
    magic = raw[:4]
    if magic != bytes((0, 0, UBYTE, ndim)):
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic.hex()} (expected 0x0000{UBYTE:02x}{ndim:02x}: unsigned bytes, "
            f"{ndim} dimension(s)); not an MNIST {'image' if ndim == 3 else 'label'} file or corrupt"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw)} bytes, but the IDX header declares shape {shape}, which needs {expected} bytes "
            f"({'truncated' if len(raw) < expected else 'trailing data'})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(data_dir: Path, split: str) -> ImageData:
    """Read the MNIST ``split`` ("train": 60,000 digits, "test": 10,000) from the IDX files in ``data_dir``."""
    image_name, label_name = MNIST_FILES[split]
    paths = []
    for name in (image_name, label_name):
        found = find_file(data_dir, name)
        paths.append(found or existing_file(data_dir / name, f"MNIST {split} file {name}", urls("mnist", name)))
    image_path, label_path = paths

    images = read_idx(image_path, 3)
    if images.shape[1:] != (SIDE, SIDE):
        raise DataError(f"{image_path}: images are {images.shape[1]}x{images.shape[2]}, expected {SIDE}x{SIDE}")
    labels = read_idx(label_path, 1).astype(np.int64)
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{label_path} holds {labels.shape[0]} labels but {image_path} holds {images.shape[0]} images"
        )
    check_labels(labels, label_path)
    where = image_path.parent
    return ImageData(
        images=images.reshape(-1, 1, SIDE, SIDE).copy(),  # copy: frombuffer views are read-only
        labels=labels,
        source=f"MNIST {split} split: {len(labels):,} digits from the IDX files {image_path.name} and "
        f"{label_path.name} in {where}",
        name=f"mnist/{split}",
    )
