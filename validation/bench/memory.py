"""Peak memory of one training step, measured in a fresh process (CPU: the resident-set high-water mark).

The child builds the model and data, runs one warm-up step (lazy imports and caches are not the step's
memory), then measures one training step with :class:`gqtorch.memory.PeakMemory`: how far the resident-set
high-water mark rose above the starting size, i.e. the memory the step itself needed beyond the model —
gradients, the autograd graph (direct), the augmented states (adjoint), the node batch (GQ). A fresh process per
measurement keeps
one method's allocator state from hiding another's. The number of calls of the field comes back too (GQ's batched
node call counts once).
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from gqtorch.memory import PeakMemory
from validation.bench.steps import solvers, training_step


def _measure(task: str, width: int, method: str, tolerance: float) -> dict:
    torch.set_num_threads(1)
    setup = training_step(task, width)
    solve = solvers(tolerance)[method]
    counted = _CountingField(setup.field)
    setup.field = counted
    setup.step(solve)  # warm-up: lazy imports and one-time set-up are not the step's memory
    counted.calls = 0
    peak = PeakMemory("cpu")
    peak.start()
    setup.step(solve)
    return {"peak_memory_mb": peak.peak_mib(), "nfe": counted.calls}


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
    done = subprocess.run([sys.executable, "-m", "validation.bench.memory", args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement of {method} on {task} (width {width}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_measure(*json.loads(sys.argv[1]))))
