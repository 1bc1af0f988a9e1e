"""Where each data set's files come from: the file names, the published MD5 of each, and the download mirrors.

Every number is defined once, here. Sources of the checksums:

- MNIST ``*-idx?-ubyte.gz``: torchvision's ``torchvision/datasets/mnist.py`` (``MNIST.resources``).
- SVHN ``train_32x32.mat`` / ``test_32x32.mat``: torchvision's ``torchvision/datasets/svhn.py`` (``split_list``).
- CIFAR-10 ``cifar-10-binary.tar.gz``: the data set's page, https://www.cs.toronto.edu/~kriz/cifar.html
  ("CIFAR-10 binary version (suitable for C programs)"). No checksums are published for the ``.bin`` members,
  so the archive is verified before they are extracted.

``MIRRORS`` holds base URLs (ending in ``/``) tried in order; tests point them at a local server.
"""

from __future__ import annotations

MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}

MIRRORS: dict[str, list[str]] = {
    # yann.lecun.com often refuses downloads now; the PyTorch CI mirror serves the identical files.
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    "cifar10": ["https://www.cs.toronto.edu/~kriz/"],
    "svhn": ["http://ufldl.stanford.edu/housenumbers/"],
}

# The files each (data set, split) is read from, as published (for CIFAR-10: the archive that holds them).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_DIR = "cifar-10-batches-bin"  # the folder the archive extracts to
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
SVHN_FILES: dict[str, str] = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def urls(dataset: str, filename: str) -> list[str]:
    """The download URLs of ``filename`` of ``dataset``, one per mirror, in the order they are tried."""
    return [base + filename for base in MIRRORS[dataset]]
