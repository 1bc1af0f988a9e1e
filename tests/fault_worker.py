"""Child processes for tests/test_validation_faults.py, forked from the test process.

Importing it loads what every run would otherwise import itself (every command module, which ``build_parser``
imports, and torch's lazily imported compiler stack, which creating Adam pulls in), so a forked run costs its
training, not seconds of imports.
"""

from __future__ import annotations

import importlib
import os
import signal
import stat
import sys
import threading

import torch._dynamo  # noqa: F401 - imported lazily by torch.optim.Adam: seconds per run otherwise
from tqdm import tqdm

from validation.__main__ import COMMANDS, main

for _module in COMMANDS.values():
    importlib.import_module(_module)


def cli(argv: list[str]) -> None:
    """A child's body: the command line, its exit status the process's."""
    # a lock of its own, as a separately started run has: tqdm's default write lock holds a process-shared
    # semaphore inherited across the fork, and a sibling SIGKILL-ed while holding it blocked every later run
    tqdm.set_lock(threading.RLock())
    sys.exit(main(argv))


def cli_killed_at_write(argv: list[str], call: str, n: int) -> None:
    """The command line, SIGKILL-ed at the n-th ``os.<call>`` of a file by the atomic writer: mid-write, with the
    data in a temporary (fsync of a file; folders' fsyncs are not counted) or just before the rename (replace)."""
    real = getattr(os, call)
    count = [0]

    def die(*args):
        if call == "replace" or stat.S_ISREG(os.fstat(args[0]).st_mode):
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)

    setattr(os, call, die)
    cli(argv)
