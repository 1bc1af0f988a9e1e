"""Shared helpers for validation results: the software/machine description and atomic JSON writes (the writer
itself is :mod:`validation.atomic`'s)."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from validation import atomic

PACKAGES = ("numpy", "numba", "scipy", "torch", "torchdiffeq")


def environment() -> dict[str, Any]:
    """Versions of Python and the numeric packages, and the machine, for the record of a run."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "packages": versions,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically and durably (:func:`validation.atomic.write_json_atomic`)."""
    atomic.write_json_atomic(path, data)
