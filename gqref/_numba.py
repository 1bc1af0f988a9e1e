"""The one place that decides how gqref's kernels are compiled.

Every kernel is written once in Numba-compatible Python. Helpers are marked :func:`jitable`: called from Python they
are plain functions, called from a compiled kernel they are compiled inline. :func:`kernel` returns both versions of
an entry point, so the same source runs compiled (for numba fields) or as plain Python (for any other callable).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

# A repo-local cache (ignored by git) unless the user chose one; must be set before numba is imported.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))

import numba
from numba.core.registry import CPUDispatcher
from numba.extending import register_jitable

# IEEE semantics (no fastmath) so compiled and plain runs agree bit for bit; numpy's error model so a division
# by zero gives inf (as the plain path does with numpy scalars) rather than raising inside a kernel.
NUMBA_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

# Helpers are inlined into the kernels at numba's IR level: a call that passes arrays otherwise costs reference
# counting at the boundary, which measured ~25% of a Dormand–Prince step on small states.
jitable = register_jitable(inline="always")


class Kernel(NamedTuple):
    python: Callable
    compiled: Callable


def kernel(source: Callable) -> Kernel:
    """Both speeds of one kernel source.

    Kernels take the field's compiled function as an argument, and numba keys its on-disk cache on that function's
    identity (an address that changes every process), so caching a kernel never hits and only fills the cache
    directory: kernels compile once per process and field instead (seconds); fields themselves are cached.
    """
    return Kernel(python=source, compiled=numba.njit(**{**NUMBA_OPTIONS, "cache": False})(source))


@cache
def bind_field(compiled_kernel: Callable, f: Callable) -> Callable:
    """``compiled_kernel`` with its first argument (a compiled field) fixed: ``bind_field(k, f)(*rest)`` is
    ``k(f, *rest)``, compiled once per (kernel, field).

    Why: numba types a function-valued argument in Python on every call (~10–20 µs, a dispatcher's type is built
    anew each time), while arrays and numbers take its C fast path. Inside the closure the field is a constant.
    """
    names = ", ".join(list(inspect.signature(compiled_kernel.py_func).parameters)[1:])
    namespace = {"kernel": compiled_kernel, "f": f}
    exec(f"def bound({names}):\n    return kernel(f, {names})\n", namespace)
    return njit_closure(namespace["bound"])


def njit(function: Callable) -> Callable:
    """Compile a user-facing numba function (vector fields, VJPs) with the project's options."""
    return numba.njit(**NUMBA_OPTIONS)(function)


def njit_closure(function: Callable) -> Callable:
    """Compile a function built at run time around other compiled functions (numba cannot cache closures)."""
    return numba.njit(**{**NUMBA_OPTIONS, "cache": False})(function)


def is_compiled(function: object) -> bool:
    """True for a numba ``@njit`` function (which a compiled kernel can call)."""
    return isinstance(function, CPUDispatcher)
