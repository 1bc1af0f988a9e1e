"""The one place that decides how gqref's kernels are compiled.

Every kernel is written once in Numba-compatible Python. Helpers are marked :func:`jitable`: called from Python they
are plain functions, called from a compiled kernel they are compiled inline. :func:`kernel` returns the versions of
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
import numpy as np
from numba import types
from numba.core.registry import CPUDispatcher
from numba.extending import register_jitable

try:  # numba's (private) address of a compiled function for a first-class call; without it every field is bound
    from numba.experimental.function_type import _get_wrapper_address
except ImportError:  # pragma: no cover - depends on the numba version
    _get_wrapper_address = None

# IEEE semantics (no fastmath) so compiled and plain runs agree bit for bit; numpy's error model so a division
# by zero gives inf (as the plain path does with numpy scalars) rather than raising inside a kernel.
NUMBA_OPTIONS = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

# Helpers are inlined into the kernels at numba's IR level: a call that passes arrays otherwise costs reference
# counting at the boundary, which measured ~25% of a Dormand–Prince step on small states.
jitable = register_jitable(inline="always")


class Kernel(NamedTuple):
    python: Callable
    compiled: Callable
    first_class: Callable


def kernel(source: Callable) -> Kernel:
    """The speeds of one kernel source: plain Python, and compiled in two ways.

    ``first_class`` takes the field as a first-class function (:class:`FirstClassField`): numba types it by its
    signature alone, so this kernel compiles once per process for every field of that signature. ``compiled`` takes
    the field's dispatcher itself (through :func:`bind_field`): numba types that by the field's identity, so it
    compiles once per process and field (10–20 s each); it serves ``VectorField(specialize=True)`` and fields whose
    compiled signature does not fit the first-class one (:func:`first_class_field`).

    Neither is cached on disk: numba's cache checks only the kernel's own file, so an edit to a helper it inlines
    from another module (``gqref.field.call_into``, …) would leave a stale kernel running the old code.
    """
    no_disk_cache = {**NUMBA_OPTIONS, "cache": False}
    return Kernel(python=source, compiled=numba.njit(**no_disk_cache)(source),
                  first_class=numba.njit(**no_disk_cache)(source))


class FirstClassField(types.WrapperAddressProtocol):
    """A compiled field as numba's first-class function of one signature (the address of its compiled code)."""

    def __init__(self, signature, address: int):
        self._signature, self._address = signature, address

    def signature(self):
        return self._signature

    def __wrapper_address__(self) -> int:
        return self._address


@cache
def first_class_field(f: Callable, state_dtype: np.dtype, params_type, in_place: bool) -> FirstClassField | None:
    """``f`` compiled for (t, 1-D C state of ``state_dtype``, params[, out]) as a first-class function, or None if
    that does not fit (another return type, a compile error for these types, a dtype numba lacks, or a numba without
    this API): then the caller binds it, and numba's own error, if any, comes from there."""
    if _get_wrapper_address is None:
        return None
    try:
        state_type = types.Array(numba.from_dtype(state_dtype), 1, "C")
        args = (types.float64, state_type, params_type) + ((state_type,) if in_place else ())
        returns = types.none if in_place else state_type
        compiled = f.overloads.get(args)
        if compiled is None:  # (a field with explicit signatures cannot compile more: only its own ones fit)
            f.compile(args)
            compiled = f.overloads[args]
    except Exception:  # any failure: the bound path reports it in numba's own words
        return None
    if compiled.signature.return_type != returns:
        return None
    signature = returns(*args)
    return FirstClassField(signature, _get_wrapper_address(f, signature))


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
