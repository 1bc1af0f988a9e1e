"""Optional download of the published data files, each checked against its published MD5 and written atomically.

A file is streamed into a temporary file in the destination folder, its MD5 is compared with the table in
:mod:`validation.data.sources`, and only then is it renamed onto its final name (fsync-ed, by
:mod:`validation.harness.atomic`): an interrupted or corrupted download never leaves a file under the real
name. Mirrors are tried in order. urllib only.
CIFAR-10's archive is verified, then only its six expected ``.bin`` members are extracted, by exact name, as
regular files (no path from the archive is ever used), each written atomically too.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from validation.data import cifar10, mnist, svhn
from validation.data.base import DataError
from validation.data.sources import CIFAR10_ARCHIVE, CIFAR10_DIR, CIFAR10_FILES, MD5, MIRRORS
from validation.harness.atomic import atomic_open, make_dirs

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT_S = 60.0


def md5_of(path: Path) -> str:
    """The MD5 hex digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)  # a checksum against corruption, not a security measure
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(url: str, out: BinaryIO, desc: str, progress: bool | None) -> str:
    """Copy ``url``'s body into ``out``; return its MD5. Raises urllib's/http.client's errors on failure."""
    from tqdm import tqdm

    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        disable = None if progress is None else not progress  # None: tqdm shows the bar only on a terminal
        with tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=disable) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)
    return digest.hexdigest()


def fetch(name: str, dest_dir: Path, bases: Sequence[str], md5: str, *, progress: bool | None = None) -> Path:
    """Download ``name`` from the first of the base URLs ``bases`` that serves it with MD5 ``md5``.

    The file ends up at ``dest_dir / name`` or not at all; :class:`DataError` lists every mirror's failure
    (a checksum mismatch names the expected and the actual MD5).
    """
    if not bases:
        raise DataError(f"cannot download {name}: no mirror URL is configured")
    dest = dest_dir / name
    try:
        make_dirs(dest_dir)
        with tempfile.TemporaryFile(dir=dest_dir):
            pass  # can files be written there at all? (then a failure below is the mirror's)
    except OSError as e:
        raise DataError(f"cannot write the download of {name} into {dest_dir} ({e})") from e
    failures = []
    for base in bases:
        url = base + name
        try:
            # the atomic writer removes the temporary when the block raises: a mismatch leaves nothing behind
            with atomic_open(dest, "wb", suffix=".part") as out:
                actual = _stream(url, out, name, progress)
                if actual != md5:
                    raise DataError(f"checksum mismatch for {url}: expected MD5 {md5}, got {actual}")
            return dest
        except (OSError, http.client.HTTPException, ValueError) as e:
            # URLError/HTTPError/timeouts are OSErrors, a cut-off body an HTTPException, a mismatch a DataError.
            failures.append(str(e) if isinstance(e, DataError) else f"{url}: {type(e).__name__}: {e}")
            log.warning("download of %s failed: %s", url, failures[-1])
    raise DataError(f"could not download {name} into {dest_dir}: " + "; ".join(failures))


def _copy_atomic(src: BinaryIO, dest: Path) -> None:
    with atomic_open(dest, "wb", suffix=".part") as out:
        shutil.copyfileobj(src, out, CHUNK)


def extract_cifar10(archive: Path, data_dir: Path) -> Path:
    """Extract the six CIFAR-10 batches of ``archive`` into ``data_dir/cifar-10-batches-bin``; return that folder."""
    target = data_dir / CIFAR10_DIR
    wanted = {f"{CIFAR10_DIR}/{n}": n for names in CIFAR10_FILES.values() for n in names}
    found: set[str] = set()
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None:
                    continue  # readme, meta file, or anything unexpected: never written
                if not member.isfile():
                    raise DataError(f"{archive}: member {member.name} is not a regular file")
                src = tar.extractfile(member)
                if src is None:
                    raise DataError(f"{archive}: member {member.name} cannot be read")
                with src:
                    _copy_atomic(src, target / name)
                found.add(name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: cannot extract the CIFAR-10 archive ({type(e).__name__}: {e})") from e
    missing = sorted(set(wanted.values()) - found)
    if missing:
        raise DataError(f"{archive}: the archive lacks {', '.join(f'{CIFAR10_DIR}/{n}' for n in missing)}")
    return target


def _download_cifar10(data_dir: Path, bases: Sequence[str], progress: bool | None) -> None:
    archive = data_dir / CIFAR10_ARCHIVE
    if archive.is_file():
        # The user put the archive here: check it, extract it, and leave it in place.
        actual = md5_of(archive)
        if actual != MD5[CIFAR10_ARCHIVE]:
            raise DataError(
                f"{archive}: checksum mismatch: expected MD5 {MD5[CIFAR10_ARCHIVE]}, got {actual}; "
                "delete it to download it again"
            )
        extract_cifar10(archive, data_dir)
        return
    fetch(CIFAR10_ARCHIVE, data_dir, bases, MD5[CIFAR10_ARCHIVE], progress=progress)
    extract_cifar10(archive, data_dir)
    archive.unlink()  # the batches are what is read; the 162 MB archive is not kept


def download_dataset(
    dataset: str, split: str, data_dir: Path, *, mirrors: Sequence[str] | None = None, progress: bool | None = None
) -> None:
    """Fetch the files of ``dataset``'s ``split`` that are missing from ``data_dir`` (present files are kept).

    ``mirrors`` overrides the base URLs of :data:`validation.data.sources.MIRRORS` (each ends in ``/``).
    """
    bases = list(mirrors) if mirrors is not None else MIRRORS[dataset]
    if dataset == "mnist":
        for name in mnist.missing_files(data_dir, split):
            fetch(name, data_dir, bases, MD5[name], progress=progress)
    elif dataset == "svhn":
        for name in svhn.missing_files(data_dir, split):
            fetch(name, data_dir, bases, MD5[name], progress=progress)
    elif dataset == "cifar10":
        if cifar10.missing_files(data_dir, split):
            _download_cifar10(data_dir, bases, progress)
    else:
        raise DataError(f"no download is defined for dataset {dataset!r}")

