"""The software and machine a result was produced on, stored in every record."""

from __future__ import annotations

import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

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

