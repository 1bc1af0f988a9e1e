"""Peak memory of a stretch of work: CUDA's allocator peak, or on CPU the rise of the resident-set high-water mark.

On CPU the heap is trimmed (``malloc_trim``) and the kernel's high-water mark reset to the current resident size
(``/proc/self/clear_refs``, Linux) at the start; the peak is how far the mark rose above that size. Resolution is a
page; allocator slack counts, as the machine sees it. Elsewhere (no /proc) the CPU measurement reports None.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

KIB = 1024
MIB = 1024 * 1024
STATUS = Path("/proc/self/status")


def _status_bytes(key: str) -> int | None:
    """A size from /proc/self/status (reported in kB), or None where there is no such file or key."""
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1]) * KIB
    return None


class PeakMemory:
    """``start()`` then ``peak_mb()``: the most memory in use above the starting point, in MiB."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.start_bytes: int | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
        except OSError:
            self.start_bytes = None
            return
        self.start_bytes = _status_bytes("VmRSS")

    def peak_mb(self) -> float | None:
        if self.start_bytes is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.start_bytes) / MIB
        peak = _status_bytes("VmHWM")
        return None if peak is None else (peak - self.start_bytes) / MIB
