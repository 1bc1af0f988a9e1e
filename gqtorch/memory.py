"""Peak memory of a stretch of work, for :func:`gqtorch.advise`: CUDA's allocator peak, or on CPU (Linux) the rise
of the process's resident-set high-water mark.

CUDA: ``torch.cuda.reset_peak_memory_stats`` at the start; the peak is ``max_memory_allocated`` minus what was
allocated at the start (tensors only; the caching allocator's reserve and the CUDA context are not counted).

CPU: at the start the C heap is trimmed (glibc's ``malloc_trim``, so freed memory the step could reuse does not
hide its need) and the kernel's high-water mark is reset to the current resident size (``/proc/self/clear_refs``);
the peak is how far ``VmHWM`` rose above that size. It is the whole process's memory as the machine sees it
(page resolution, allocator slack and any other thread's allocations included). Where there is no glibc or no
``/proc`` (macOS, Windows, musl) the CPU measurement is None. (``validation.memory`` is the benchmarks' twin; gqtorch
does not import ``validation``.)
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

MIB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int | None:
    """A size from /proc/self/status (reported in kB), or None where there is no such file or key."""
    try:
        lines = _STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def _trim_heap() -> bool:
    """Return freed C-heap memory to the kernel; False where that is not possible (no glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class PeakMemory:
    """``start()``, do the work, then ``peak_mib()``: the most memory in use above the starting point, in MiB.

    ``peak_mib()`` is None where the device's measurement is not available (see the module docstring).
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.start_bytes: int | None = None

    def start(self) -> None:
        """Mark the starting point (and reset the peak counter)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_bytes = torch.cuda.memory_allocated(self.device)
            return
        self.start_bytes = None
        if self.device.type != "cpu" or not _trim_heap():
            return
        try:
            _CLEAR_REFS.write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
        except OSError:
            return
        self.start_bytes = _status_bytes("VmRSS")

    def peak_mib(self) -> float | None:
        """The peak since ``start()`` above the starting point, in MiB (None if not measurable here)."""
        if self.start_bytes is None:
            return None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.start_bytes) / MIB
        peak = _status_bytes("VmHWM")
        return None if peak is None else max(peak - self.start_bytes, 0) / MIB
