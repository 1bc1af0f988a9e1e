"""``load_images``: one entry point for every data set and split, from a data directory or the embedded subset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from validation.data import cifar10, mnist, svhn
from validation.data.base import DataError, ImageData
from validation.data.embedded import load_embedded_mnist
from validation.data.sources import CIFAR10_ARCHIVE, CIFAR10_FILES, SVHN_FILES, urls

DATASETS = ("mnist", "cifar10", "svhn")
SPLITS = ("train", "test")

_LOADERS: dict[str, Callable[[Path, str], ImageData]] = {
    "mnist": mnist.load_mnist,
    "cifar10": cifar10.load_cifar10,
    "svhn": svhn.load_svhn,
}
_MISSING: dict[str, Callable[[Path, str], list[str]]] = {
    "mnist": mnist.missing_files,
    "cifar10": cifar10.missing_files,
    "svhn": svhn.missing_files,
}


def _needs_data_dir(dataset: str, split: str) -> DataError:
    if dataset == "cifar10":
        what = (
            f"the CIFAR-10 binary batches {', '.join(CIFAR10_FILES[split])} (in it or in its cifar-10-batches-bin/ "
            f"folder), extracted from {' or '.join(urls('cifar10', CIFAR10_ARCHIVE))}"
        )
    else:
        name = SVHN_FILES[split]
        what = f"the SVHN file {name} from {' or '.join(urls('svhn', name))}"
    return DataError(
        f"dataset {dataset!r} needs a data directory (data_dir / --data-dir) holding {what}; "
        "or pass download=True with a data directory to fetch it there"
    )


def load_images(dataset: str, split: str, data_dir: str | Path | None = None, download: bool = False) -> ImageData:
    """Load one split of an image classification data set as uint8 images (N, C, H, W) and int64 labels 0..9.

    ``dataset`` is one of :data:`DATASETS` ("mnist", "cifar10", "svhn"), ``split`` "train" or "test".
    ``data_dir`` holds the files in their published formats (MNIST IDX ``.gz``, CIFAR-10 binary batches, SVHN
    ``.mat``). Without it, MNIST falls back to the embedded subset of 5,000 real digits (see
    :mod:`validation.data.embedded`); CIFAR-10 and SVHN need it. ``download=True`` first fetches the files that
    are missing from ``data_dir`` (checksum-verified). The result's ``source`` says exactly which data was read.
    Any problem raises :class:`DataError` naming the argument or the file.
    """
    if dataset not in DATASETS:
        raise DataError(f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if data_dir is None:
        if download:
            raise DataError("download=True needs a data_dir to download into")
        if dataset == "mnist":
            return load_embedded_mnist(split)
        raise _needs_data_dir(dataset, split)
    root = Path(data_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"data_dir {root} is not a directory")
    if download and _MISSING[dataset](root, split):
        from validation.data.download import download_dataset  # urllib/tarfile/tqdm only when downloading

        download_dataset(dataset, split, root)
    return _LOADERS[dataset](root, split)
