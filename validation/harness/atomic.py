"""Durable atomic file writes: every file validation writes goes through :func:`atomic_open`.

A reader, or a run resumed after ``kill -9`` or a power cut, sees either the old file or the complete new one, never
a part: the data go to a temporary file in the same folder (``.<name>.<random>.tmp``, hidden, so result scans skip
it), which is flushed and ``fsync``-ed, then ``os.replace``-d onto the name, and the folder is ``fsync``-ed so that
the rename itself is on disk. Folders the write creates are ``fsync``-ed into their parents the same way. The file
gets the permissions a plain ``open`` would give it (0o666 less the umask), not ``mkstemp``'s 0o600.

A process killed between creating and renaming its temporary leaves the temporary behind (nothing runs at SIGKILL);
:func:`remove_stale_temporaries` deletes those of one file, and the training harness calls it before a run writes.

Nothing here depends on the rest of the package, so the module can move to gqref unchanged if the libraries need it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TEMP_SUFFIX = ".tmp"


def _umask() -> int:
    # os.umask can only be read by setting it; set it straight back (the window is a few instructions)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """``fsync`` a folder, so that the entries created, renamed or removed in it are on disk.

    Platforms that cannot open a folder (Windows) or fsync one (some network file systems) skip it: there the rename
    is as durable as the file system makes it.
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """``mkdir -p`` that also ``fsync``-s each new folder's parent, so the new path survives a crash."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            new.mkdir()
        fsync_dir(new.parent)


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb", *, suffix: str = TEMP_SUFFIX, **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit make it ``path``, durably.

    ``mode`` is "wb" or "w" (with ``open_kwargs`` such as ``encoding`` for text); ``suffix`` ends the temporary's
    name (downloads use ".part"). If the block raises, the temporary is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON with a final newline."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def read_json_object(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it cannot be read, is not JSON or is not an object (a half-written
    or foreign file)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def temporaries_of(path: Path) -> list[Path]:
    """The temporaries :func:`atomic_open` may have left for ``path`` (``.<name>.<random>.tmp`` beside it)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return [p for p in path.parent.glob(f".{glob_escape(path.name)}.*{TEMP_SUFFIX}") if p.is_file()]


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporaries a killed writer of ``path`` left; return them. Call it only when no other process
    is writing ``path`` (for a training run: before it starts writing its own files)."""
    removed = []
    for tmp in temporaries_of(path):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    if removed:
        fsync_dir(Path(path).parent)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters quoted (a file named ``seed[1].json`` stays literal)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
