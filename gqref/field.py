"""VectorField: a right-hand side f(t, y, p) and its vector–Jacobian products.

Conventions (shared by every gqref algorithm):

- ``f(t, y, p) -> dy/dt`` with ``y`` the state and ``p`` a parameter array (empty when the field has none), or the
  in-place form ``f(t, y, p, out)`` that writes dy/dt into ``out`` (detected: exactly four required positional
  parameters). The in-place form lets a compiled solve run without allocating per evaluation; everywhere else
  (VJPs by complex step, the augmented backward fields, Python callers of ``VectorField.f``) gqref calls it
  through a returning wrapper, so ``VectorField.f`` is always ``f(t, y, p) -> dy/dt`` and ``VectorField.f_into``
  keeps the in-place function.
- ``vjp_t(t, y, p, a) -> a·∂f/∂t`` (a scalar), ``vjp_y(t, y, p, a) -> aᵀ∂f/∂y`` (shape of ``y``),
  ``vjp_p(t, y, p, a) -> aᵀ∂f/∂p`` (shape of ``p``). The solver needs only ``f``; the gradient methods use the VJPs.

When every function given is a numba ``@njit`` function (see :func:`gqref.njit`), whole integrations run compiled;
otherwise the same algorithm runs as plain Python. Compiled fields see the state as a 1-D array.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import lru_cache

import numpy as np
from numba import types
from numba.extending import overload

from gqref._numba import is_compiled, jitable, njit_closure
from gqref.errors import InputError, NonFiniteFieldError


@dataclass(frozen=True)
class VectorField:
    """A right-hand side and (optionally) its VJPs; see the module docstring for the signatures.

    ``specialize`` (compiled fields): compile the solver's kernels around this field, its code inlined, instead of
    calling it as a first-class function. Solves of small states run 1.3–1.4× faster, but each (kernel, field)
    pair then compiles in every process (10–20 s each); by default the kernels compile once per process for every
    field of the same signature (:func:`gqref._numba.kernel`), and specialize to a field only once its solves have
    taken :data:`gqref.solve.SPECIALIZE_AFTER_S` (60 s) in this process.
    Fields derived from this one (the backward dynamics) inherit it.
    """

    f: Callable
    vjp_t: Callable | None = None
    vjp_y: Callable | None = None
    vjp_p: Callable | None = None
    name: str = ""
    f_into: Callable | None = dataclass_field(default=None, repr=False)  # set from an in-place f, see the module
    specialize: bool = False

    def __post_init__(self):
        for role in ("f", "vjp_t", "vjp_y", "vjp_p", "f_into"):
            function = getattr(self, role)
            if function is not None and not callable(function):
                raise InputError(f"VectorField.{role} must be callable, got {type(function).__name__}")
        if not isinstance(self.specialize, bool):
            raise InputError(f"VectorField.specialize must be True or False, got {self.specialize!r}")
        if self.f_into is None and writes_into(self.f):
            object.__setattr__(self, "f_into", self.f)  # frozen: set once, here
            object.__setattr__(self, "f", returning_form(self.f))

    @property
    def compiled(self) -> bool:
        """True when every function given is numba-compiled, so kernels can run compiled."""
        given = [fn for fn in (self.f, self.vjp_t, self.vjp_y, self.vjp_p) if fn is not None]
        return all(is_compiled(fn) for fn in given)


def as_field(field: VectorField | Callable) -> VectorField:
    """Accept a VectorField or a bare ``f(t, y, p)``."""
    if isinstance(field, VectorField):
        return field
    if callable(field):
        return VectorField(f=field)
    raise InputError(f"field must be a gqref.VectorField or a callable f(t, y, p), got {type(field).__name__}")


def flat_python_function(function: Callable, shape: tuple[int, ...], dtype, role: str) -> Callable:
    """Wrap a plain-Python ``f(t, y, p)`` so kernels can call it on flat arrays; checks the returned shape."""
    size = int(np.prod(shape, dtype=np.int64))

    real = np.dtype(dtype).kind != "c"

    def flat(t, y, p):
        out = np.asarray(function(t, y.reshape(shape), p))
        if real and np.iscomplexobj(out):
            raise complex_output(role, out.dtype, t)
        out = out.astype(dtype, copy=False)
        if out.size != size or (out.shape != shape and out.ndim != 1):
            raise InputError(
                f"field.{role} returned shape {out.shape} at t = {float(t)!r}; expected the state's {shape}"
            )
        return out.reshape(size)

    return flat


def complex_output(role: str, dtype, t) -> InputError:
    """A real state's field returned complex values: casting them would silently drop the imaginary part."""
    return InputError(f"field.{role} returned complex values (dtype {dtype}) at t = {float(np.real(t))!r} for a real "
                      "state; return real values (gq solves real ODEs: split a complex state into its real and "
                      "imaginary parts)")


def vjp_value(role: str, value, t, shape: tuple[int, ...]) -> np.ndarray:
    """A VJP's result checked where it is used: real, of ``shape`` (the state's for vjp_y, the parameters' for
    vjp_p, () for vjp_t; a flat array of that size also passes) and finite. A NaN here would otherwise become a
    NaN gradient with no error, so it raises :class:`NonFiniteFieldError` naming the VJP and the time."""
    out = np.asarray(value)
    if np.iscomplexobj(out):
        raise complex_output(role, out.dtype, t)
    size = int(np.prod(shape, dtype=np.int64))
    if out.shape != tuple(shape) and not (out.ndim == 1 and out.size == size) and not (shape == () and out.size == 1):
        raise InputError(f"field.{role} returned shape {out.shape} at t = {float(t)!r}; expected {tuple(shape)}")
    if not np.all(np.isfinite(out)):
        raise NonFiniteFieldError(f"field.{role} returned a non-finite value (NaN or inf) at t = {float(t)!r}",
                                  float(t))
    return out.astype(np.float64, copy=False).reshape(shape)


@lru_cache(maxsize=1024)  # inspect.signature costs tens of µs, and every solve builds a VectorField
def writes_into(function: Callable) -> bool:
    """True for the in-place form ``f(t, y, p, out)``: exactly four required positional parameters."""
    try:
        parameters = inspect.signature(getattr(function, "py_func", function)).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: the returning form
        return False
    if any(q.kind is inspect.Parameter.VAR_POSITIONAL for q in parameters):
        return False
    required = [q for q in parameters if q.default is inspect.Parameter.empty
                and q.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    return len(required) == 4


@lru_cache(maxsize=256)
def returning_form(f_into: Callable) -> Callable:
    """``f(t, y, p) -> dy/dt`` around an in-place ``f_into(t, y, p, out)`` (compiled when it is).

    The output takes y's dtype (complex when complex-stepped: gqref's complex-step VJPs pass complex t, y and p
    together), or for a Python f the common type of y and p."""
    if is_compiled(f_into):
        def compiled(t, y, p):
            out = np.empty_like(y)
            f_into(t, y, p, out)
            return out
        return njit_closure(compiled)

    def plain(t, y, p):
        y = np.asarray(y)
        out = np.empty(y.shape, dtype=np.result_type(y, np.asarray(p), np.float64))
        f_into(t, y, p, out)
        return out
    return plain


def call_into(f, t, y, p, out):
    """out ← f(t, y, p) for a returning f (in Python; compiled, an in-place f is called with ``out``)."""
    value = f(t, y, p)
    for i in range(out.shape[0]):
        out[i] = value[i]


@overload(call_into, inline="always")
def _call_into_compiled(f, t, y, p, out):
    # decided at compile time from the field's own signature: the in-place form writes straight into out
    if isinstance(f, types.FunctionType):
        # A first-class call cannot propagate an exception: numba reports it (gqref.solve.run_kernel re-raises it
        # after the kernel) and hands back a null result. NaN where that result would be makes the kernel stop at
        # once with its non-finite status, instead of reading the null array or carrying on from a partial write.
        if len(f.signature.args) == 4:
            def first_class_into(f, t, y, p, out):
                out[:] = np.nan
                f(t, y, p, out)
            return first_class_into

        def first_class_returning(f, t, y, p, out):
            value = f(t, y, p)
            if value.shape[0] != out.shape[0]:  # the null array of a raised exception (prepare_field checked sizes)
                out[:] = np.nan
                return
            for i in range(out.shape[0]):
                out[i] = value[i]
        return first_class_returning
    if isinstance(f, types.Dispatcher) and writes_into(f.dispatcher.py_func):
        def into(f, t, y, p, out):
            f(t, y, p, out)
        return into
    return call_into  # the returning form: the Python body above, compiled


@jitable
def evaluate(f, direction, s, y, p, out):
    """out ← direction·f(direction·s, y, p): the field in the solver's increasing time s = direction·t."""
    call_into(f, direction * s, y, p, out)
    if direction != 1.0:
        for i in range(out.shape[0]):
            out[i] = -out[i]


@jitable
def all_finite(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# VJPs derived by complex step, for fields given without them.

COMPLEX_STEP = 1e-30
"""h of the complex step: Im f(x + i·h·e_j)/h = ∂f/∂x_j + O(h²·|f'''|), and with no subtraction there is no
cancellation, so any h far below √ε·|x| gives the derivative to roundoff; 1e-30 leaves h·|x| far above the
subnormal range for |x| ≥ 1e-270 and h² far below roundoff for any third derivative below 1e280."""

VJP_ROLES = ("vjp_t", "vjp_y", "vjp_p")


def _complex_step_python(f: Callable) -> tuple[Callable, Callable, Callable]:
    """vjp_t, vjp_y, vjp_p of a Python f by complex step: one evaluation per column of the Jacobian.

    Every evaluation passes complex t, y and p (so a compiled f needs a single complex specialization)."""
    h = COMPLEX_STEP

    def column(t, y, p):
        """Im f(t, y, p)/h, flat (t, y, p already complex, one of them stepped)."""
        return np.imag(np.asarray(f(t, y, p))).reshape(-1) / h

    def vjp_t(t, y, p, a):
        y = np.asarray(y)
        col = column(complex(t) + 1j * h, y.astype(np.complex128), np.asarray(p, dtype=np.complex128))
        return float(np.dot(np.asarray(a, dtype=np.float64).reshape(-1), col))

    def vjp_y(t, y, p, a):
        y = np.asarray(y)
        flat_y = y.astype(np.complex128).reshape(-1)
        a_flat = np.asarray(a, dtype=np.float64).reshape(-1)
        tc, pc = complex(t), np.asarray(p, dtype=np.complex128)
        out = np.empty(flat_y.size)
        for j in range(flat_y.size):
            flat_y[j] += 1j * h
            out[j] = np.dot(a_flat, column(tc, flat_y.reshape(y.shape), pc))
            flat_y[j] = y.flat[j]
        return out.reshape(y.shape)

    def vjp_p(t, y, p, a):
        p = np.asarray(p, dtype=np.float64)
        pc = p.astype(np.complex128)
        a_flat = np.asarray(a, dtype=np.float64).reshape(-1)
        tc, yc = complex(t), np.asarray(y).astype(np.complex128)
        out = np.empty(p.size)
        for k in range(p.size):
            pc[k] += 1j * h
            out[k] = np.dot(a_flat, column(tc, yc, pc))
            pc[k] = p[k]
        return out

    return vjp_t, vjp_y, vjp_p


def _complex_step_compiled(f: Callable) -> tuple[Callable, Callable, Callable]:
    """The same three VJPs as numba closures around a compiled f, so the gradient kernels stay compiled."""

    h = COMPLEX_STEP

    def vjp_t(t, y, p, a):
        value = f(t + 1j * h, y + 0j, p + 0j)
        acc = 0.0
        for i in range(a.shape[0]):
            acc += a[i] * value[i].imag
        return acc / h

    def vjp_y(t, y, p, a):
        n = y.shape[0]
        yc, pc = y + 0j, p + 0j
        out = np.empty(n)
        for j in range(n):
            yc[j] = y[j] + 1j * h
            value = f(t + 0j, yc, pc)
            yc[j] = y[j]
            acc = 0.0
            for i in range(n):
                acc += a[i] * value[i].imag
            out[j] = acc / h
        return out

    def vjp_p(t, y, p, a):
        yc, pc = y + 0j, p + 0j
        out = np.empty(p.shape[0])
        for k in range(p.shape[0]):
            pc[k] = p[k] + 1j * h
            value = f(t + 0j, yc, pc)
            pc[k] = p[k]
            acc = 0.0
            for i in range(a.shape[0]):
                acc += a[i] * value[i].imag
            out[k] = acc / h
        return out

    return njit_closure(vjp_t), njit_closure(vjp_y), njit_closure(vjp_p)


@lru_cache(maxsize=64)
def _complex_step_vjps(f: Callable, compiled: bool) -> tuple[Callable, Callable, Callable]:
    """One set per field function, so repeated gradients reuse the compiled closures (and their caches)."""
    return _complex_step_compiled(f) if compiled else _complex_step_python(f)


def _not_complex_steppable(reason: str) -> InputError:
    return InputError(
        f"field: {reason}. gqref derives missing VJPs by complex step, which needs an f(t, y, p) that accepts "
        "complex t, y and p and is real-analytic in them (no .real, abs, real-typed output buffers or branches on "
        "complex values). Pass the VJPs yourself: gqref.VectorField(f, vjp_t=..., vjp_y=..., vjp_p=...)")


def probe_complex_step(f: Callable, t0: float, y0: np.ndarray, params: np.ndarray, time: bool = True) -> None:
    """Check at (t0, y0, params) that complex-stepping f gives its derivative; raise InputError if not.

    Two probes along one fixed direction v in (t, y, p) (t left out unless ``time``): f must return complex
    output for complex input (a real result means the imaginary part was dropped), and the complex-step
    directional derivative must agree with central differences at steps δ and δ/2 to within 10× their own
    difference plus 1e-6 of the derivative's scale (roundoff and truncation of the differences are far below
    that, so a disagreement means f discards the imaginary part somewhere). A field can pass at this point and
    still be non-analytic elsewhere; the probe catches the usual real-only code, not every one.
    """
    h = COMPLEX_STEP
    y0 = np.asarray(y0, dtype=np.float64)
    params = np.asarray(params, dtype=np.float64)
    rng = np.random.default_rng(0)  # a fixed, generic direction: no coordinate is special
    v_t = rng.uniform(0.5, 1.0) if time else 0.0
    v_y = rng.uniform(0.5, 1.0, y0.shape) * rng.choice([-1.0, 1.0], y0.shape)
    v_p = rng.uniform(0.5, 1.0, params.shape) * rng.choice([-1.0, 1.0], params.shape)
    try:
        value = np.asarray(f(complex(t0) + 1j * h * v_t, y0 + 1j * h * v_y, params + 1j * h * v_p))
    except Exception as error:  # any failure on complex input means complex step cannot be used
        raise _not_complex_steppable(f"f raised {type(error).__name__} on complex input "
                                     f"({str(error).splitlines()[0] if str(error) else 'no message'})") from error
    if not np.iscomplexobj(value):
        raise _not_complex_steppable(f"f returned real output (dtype {value.dtype}) for complex input, so the "
                                     "imaginary part that carries the derivative was discarded")
    cs = np.imag(value).reshape(-1) / h
    scale = max(1.0, float(np.max(np.abs(y0), initial=0.0)), float(np.max(np.abs(params), initial=0.0)), abs(t0))
    delta = 1e-4 * scale  # central differences: truncation ~δ²|f'''|, roundoff ~ε|f|/δ, both ≪ 1e-6 here

    def central(d):
        plus = np.asarray(f(t0 + d * v_t, y0 + d * v_y, params + d * v_p), dtype=np.float64).reshape(-1)
        minus = np.asarray(f(t0 - d * v_t, y0 - d * v_y, params - d * v_p), dtype=np.float64).reshape(-1)
        return (plus - minus) / (2.0 * d)

    coarse, fine = central(delta), central(delta / 2)
    f0 = np.asarray(f(t0, y0, params), dtype=np.float64).reshape(-1)
    allowed = 10.0 * np.max(np.abs(coarse - fine)) + 1e-6 * max(np.max(np.abs(fine)), np.max(np.abs(f0)), 1e-300)
    miss = float(np.max(np.abs(cs - fine))) if cs.size else 0.0
    if not miss <= allowed:
        raise _not_complex_steppable(f"its complex-step derivative differs from central differences by {miss:.3e} "
                                     f"(allowed {allowed:.3e}) at t = {t0!r}, so f discards part of the imaginary "
                                     "input")


def complete_vjps(field: VectorField, t0: float, y0: np.ndarray, params: np.ndarray,
                  roles: tuple[str, ...] = VJP_ROLES) -> tuple[VectorField, dict[str, str]]:
    """``field`` with each missing VJP among ``roles`` derived by complex step, and how each VJP was obtained.

    Hand-written VJPs are kept ("given"); missing ones become "complex step": aᵀ·J with J's column j =
    Im f(x + i·h·e_j)/h (h = :data:`COMPLEX_STEP`), exact to roundoff. Cost per call: vjp_y takes dim(y)
    evaluations of f, vjp_p dim(p), vjp_t one. Assumption: f accepts complex t, y, p and is real-analytic there;
    :func:`probe_complex_step` checks that at (t0, y0, params) first and raises :class:`InputError` (asking for the
    VJPs) rather than fall back to a less accurate derivative.
    """
    missing = tuple(role for role in roles if getattr(field, role) is None)
    sources = {role: "given" for role in VJP_ROLES if getattr(field, role) is not None}
    if not missing:
        return field, sources
    probe_complex_step(field.f, t0, y0, params, time="vjp_t" in missing)
    derived = dict(zip(VJP_ROLES, _complex_step_vjps(field.f, field.compiled)))
    replaced = dataclasses.replace(field, **{role: derived[role] for role in missing})
    sources.update({role: "complex step" for role in missing})
    return replaced, sources
