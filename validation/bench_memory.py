"""Peak memory of one training step, measured in a fresh process (CPU: the resident-set high-water mark).

The child builds the model and data, runs one warm-up step (lazy imports and caches are not the step's
memory), returns freed heap pages to the system (``malloc_trim``), resets the
kernel's resident-set high-water mark to the current size (``/proc/self/clear_refs``, Linux), runs one training
step and reports how far the high-water mark rose above the starting size: the memory the step itself needed
beyond the model — gradients, the autograd graph (direct), the augmented states (adjoint), the node batch (GQ).
Resolution is a page (4 KiB); allocator slack counts, as the machine sees it. A fresh process per measurement keeps
one method's allocator state from hiding another's. The number of calls of the field comes back too (GQ's batched
node call counts once).
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import torch

KIB = 1024
MIB = 1024 * 1024


def _measure(task: str, width: int, method: str, tolerance: float) -> dict:
    from validation.bench_gradients import solvers, training_step

    torch.set_num_threads(1)
    setup = training_step(task, width)
    solve = solvers(tolerance)[method]
    counted = _CountingField(setup.field)
    setup.field = counted
    setup.step(solve)  # warm-up: lazy imports and one-time set-up are not the step's memory
    counted.calls = 0
    before = _reset_peak()
    setup.step(solve)
    after = _status_bytes("VmHWM")
    return {"peak_memory_mb": (after - before) / MIB, "nfe": counted.calls}


def _status_bytes(key: str) -> int:
    """A size from /proc/self/status (reported in kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * KIB
    raise RuntimeError(f"/proc/self/status has no {key} (peak-memory measurement needs Linux)")


def _reset_peak() -> int:
    """Trim the heap, reset the high-water mark to the current resident size and return that size."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
    return _status_bytes("VmRSS")


class _CountingField(torch.nn.Module):
    """Counts calls of the field (GQ's batched node call counts once) without touching the user's module."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, t, z):
        self.calls += 1
        return self.inner(t, z)


def measure_in_subprocess(task: str, width: int, method: str, tolerance: float) -> dict:
    """Run :func:`_measure` in a fresh interpreter and return its result."""
    args = json.dumps([task, width, method, tolerance])
    done = subprocess.run([sys.executable, "-m", "validation.bench_memory", args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {method} on {task} (width {width}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_measure(*json.loads(sys.argv[1]))))
