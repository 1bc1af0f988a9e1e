"""Argument validation shared by both twins: one rule for what every public function accepts.

Numbers may be Python or numpy scalars (``np.float32(1e-6)``, ``np.int64(64)``) or 0-d numpy arrays; gqtorch turns
0-d and one-element tensors into Python numbers first (:mod:`gqtorch.arguments`) and then calls these. A bool is
never a number here (``gtol=True`` is a mistake, not 1.0), NaN and inf are refused unless a validator says
otherwise, and every refusal is an :class:`~gqref.errors.InputError` that names the argument, shows the value and
says what was expected.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from gqref.errors import InputError


def _unwrap(value):
    """A 0-d numpy array as its scalar (np.array(1e-6) is a number to the caller); anything else unchanged."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value[()]
    return value


def _is_real(value) -> bool:
    # np.bool_ is not a numbers.Real, but bool is: refuse both explicitly
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def real_number(name: str, value, *, low: float | None = None, low_open: bool = False, high: float | None = None,
                high_open: bool = False, allow_inf: bool = False, expected: str | None = None) -> float:
    """``value`` as a float in the given range; NaN always refused, ±inf unless ``allow_inf``."""
    value = _unwrap(value)
    ok = _is_real(value) and not math.isnan(value) and (allow_inf or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if expected is None:
            parts = [f"> {low:g}" if low_open else f">= {low:g}"] if low is not None else []
            parts += [f"< {high:g}" if high_open else f"<= {high:g}"] if high is not None else []
            expected = f"a {'' if allow_inf else 'finite '}real number{' ' + ' and '.join(parts) if parts else ''}"
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def positive_float(name: str, value) -> float:
    """A finite number > 0 (tolerances, step sizes, node-rule constants)."""
    return real_number(name, value, low=0.0, low_open=True, expected="a positive finite number")


def non_negative_float(name: str, value) -> float:
    """A finite number ≥ 0 (absolute quadrature tolerances)."""
    return real_number(name, value, low=0.0, expected="a non-negative finite number")


def optional_positive_float(name: str, value) -> float | None:
    """None, or a positive finite number."""
    return None if value is None else positive_float(name, value)


def finite_float(name: str, value) -> float:
    """Any finite real number (a time)."""
    return real_number(name, value, expected="a finite real number")


def count(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer (Python or numpy; not a bool, not a float such as 3.0) in [minimum, maximum]."""
    value = _unwrap(value)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value >= minimum and (
        maximum is None or value <= maximum)
    if not ok:
        if maximum is not None:
            expected = f"an integer in [{minimum}, {maximum}]"
        else:
            expected = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
        raise InputError(f"{name} must be {expected}, got {value!r}")
    return int(value)


def flag(name: str, value) -> bool:
    """True or False (numpy's bools too); 0, 1 and None are not flags."""
    value = _unwrap(value)
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def real_array(name: str, value, *, dtype=np.float64) -> np.ndarray:
    """``value`` as a fresh real array of ``dtype``; complex, boolean and non-numeric values are refused (a complex
    value cast to real would silently lose its imaginary part)."""
    try:
        array = np.array(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{name} must be a real numeric array: {error}") from None
    if array.dtype.kind == "c":
        raise InputError(f"{name} must be real, got dtype {array.dtype} (gq solves real ODEs: split a complex "
                         "quantity into its real and imaginary parts)")
    if array.dtype.kind not in "fiu":
        raise InputError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    return array.astype(dtype, copy=False)


def finite_array(name: str, value, *, shape: tuple[int, ...] | None = None, shape_of: str = "",
                 dtype=np.float64) -> np.ndarray:
    """A real array with no NaN or inf (and ``shape``, when given: that of ``shape_of``, for the message)."""
    array = real_array(name, value, dtype=dtype)
    if shape is not None and array.shape != tuple(shape):
        raise InputError(f"{name} must have the shape of {shape_of}, {tuple(shape)}; got {array.shape}" if shape_of
                         else f"{name} must have shape {tuple(shape)}, got {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(f"{name} must be finite; it has {int(bad.sum())} NaN/inf entries")
    return array


def tolerance(name: str, value, shape: tuple[int, ...] | None = None) -> float | np.ndarray:
    """A positive finite number, or (with ``shape``) an array of them broadcasting to ``shape``, returned flat."""
    if np.ndim(value) == 0 or shape is None:
        return positive_float(name, value)
    array = real_array(name, value)
    try:
        array = np.broadcast_to(array, shape)
    except ValueError:
        raise InputError(f"{name} of shape {array.shape} does not broadcast to the state's shape {tuple(shape)}") \
            from None
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise InputError(f"{name} must be positive and finite in every entry")
    return np.ascontiguousarray(array).reshape(-1)


def monotone_times(name: str, value) -> tuple[np.ndarray, float]:
    """(s = direction·t as a fresh float64 array, direction): 1-D, at least one time, finite, strictly increasing
    or strictly decreasing (no repeats)."""
    t = real_array(name, value)
    if t.ndim != 1 or t.size < 1:
        raise InputError(f"{name} must be a 1-D array of at least one time, got shape {t.shape}")
    finite = np.isfinite(t)
    if not finite.all():
        raise InputError(f"{name} must be finite; {name}[{int(np.argmin(finite))}] is not")
    steps = t[1:] - t[:-1]
    if (steps > 0).all():
        return t, 1.0
    if (steps < 0).all():
        return -t, -1.0
    bad = int(np.argmin(steps > 0)) if steps[0] > 0 else int(np.argmin(steps < 0))
    raise InputError(f"{name} must be strictly increasing or strictly decreasing (no repeats); {name}[{bad}] = "
                     f"{float(t[bad])!r} and {name}[{bad + 1}] = {float(t[bad + 1])!r} break the order")
