"""``gqref.solve``: validate inputs, run the adaptive or fixed-grid kernel, return a :class:`Solution`."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from gqref._numba import Kernel, bind_field, first_class_field
from gqref.adaptive import ADAPTIVE, DEFAULT_MAX_STEPS, AdaptiveOptions, adaptive_options
from gqref.arguments import count, finite_array, monotone_times, optional_positive_float, positive_float, tolerance
from gqref.controller import DEFAULT_ATOL, DEFAULT_RTOL, SCIPY, Controller, ErrorNorm, as_controller, as_norm
from gqref.errors import InputError, raise_for_status
from gqref.field import VectorField, as_field, complex_output, flat_python_function, writes_into
from gqref.fixed_grid import FIXED_METHODS, FIXED_OPTIONS, fixed_options, solve_fixed
from gqref.interp import fit_matrix
from gqref.tableau import ADAPTIVE_TABLEAUX, DOPRI5, FIXED_GRID_TABLEAUX, Tableau, float_tableau

ADAPTIVE_METHODS = tuple(ADAPTIVE_TABLEAUX)
METHODS = ADAPTIVE_METHODS + tuple(FIXED_METHODS)


@dataclass(frozen=True)
class Steps:
    """The accepted steps of an adaptive solve, in the caller's time direction.

    ``ts[j]`` is where step j ended, ``hs[j]`` its signed size, ``ys[j]`` the state there (shape of y0) and
    ``error_ratios[j]`` its error estimate in units of the tolerance (≤ 1 for an accepted step unless it was at
    ``min_step``; NaN on a fixed grid, which has no estimate).
    """

    ts: np.ndarray
    hs: np.ndarray
    ys: np.ndarray
    error_ratios: np.ndarray
    jumps: np.ndarray | None = None  # jumps[j]: step j ended on a jump_t time (the field restarted after it)


@dataclass(frozen=True)
class Stats:
    """Evaluations of f and steps of one solve. ``last_step``: the size (positive) of an adaptive solve's last
    accepted step that was not cut short to end on a prescribed time (``step_t``, ``jump_t``, or the scipy
    controller's last output), else of its last step; None on a fixed grid. GQ's backward solve starts from it
    (:class:`gqref.gq.BackwardSweep`)."""

    nfe: int
    n_accepted: int
    n_rejected: int
    last_step: float | None = None


@dataclass(frozen=True)
class StepMethod:
    """How a solve stepped, so that its steps can be replayed (:mod:`gqref.dense`, :mod:`gqref.discrete`).

    ``tableau``: the Runge–Kutta tableau the steps used. ``adaptive``: an embedded pair under step control (else a
    fixed grid). ``nudged``: stages with node c = 1 were evaluated one ulp before the step's end (the torchdiffeq
    controller; the scipy one evaluates them at the end). ``jump_t``: the solve's ``jump_t`` option (caller's
    time); ``Steps.jumps`` says which steps ended on one and restarted the field just after it.
    """

    name: str
    tableau: Tableau | None  # None: an Adams method (no Runge–Kutta tableau to replay)
    adaptive: bool
    nudged: bool
    jump_t: tuple[float, ...] = ()


@dataclass(frozen=True)
class Solution:
    """``ys[i]`` is the solution at ``ts[i]``; ``ys`` has shape ``(len(ts), *y0.shape)``; ``method`` says how it
    stepped (None only for a Solution built by hand: read as dopri5 under the torchdiffeq controller)."""

    ts: np.ndarray
    ys: np.ndarray
    steps: Steps
    stats: Stats
    method: StepMethod | None = None


def output_times(t) -> tuple[np.ndarray, float]:
    """(s = direction·t as a fresh float64 array, direction): t must be 1-D, finite and strictly monotone."""
    return monotone_times("t", t)


def _state(y0) -> np.ndarray:
    y0 = np.array(y0, copy=True)
    if y0.dtype.kind in "biu":
        y0 = y0.astype(np.float64)
    if y0.dtype.kind != "f":
        # complex states: the step control compares magnitudes; use gqref.discrete.replay for complex steps
        raise InputError(f"y0 must be a real floating-point array, got dtype {y0.dtype}")
    if y0.size == 0:
        raise InputError("y0 must have at least one element")
    if not np.all(np.isfinite(y0)):
        raise InputError(f"y0 must be finite; it has {int(np.sum(~np.isfinite(y0)))} NaN/inf entries")
    return y0


def _params(params) -> np.ndarray:
    if params is None:
        return np.empty(0)
    # real only: the state is real, so a complex parameter's imaginary part would be silently dropped
    return np.ascontiguousarray(finite_array("params", params))


def prepare_field(field: VectorField, y0: np.ndarray, t0: float, params: np.ndarray, *, in_place: bool = False
                  ) -> tuple[Callable, object]:
    """(the f a kernel should call, the kernel variant): compiled fields run compiled ("specialized" when the field
    asks for kernels of its own: :class:`gqref.VectorField`), others as Python.

    ``in_place``: the caller is a compiled kernel that evaluates through :func:`gqref.field.evaluate`, which calls
    an in-place field with its output row; anything else gets the returning form."""
    if field.compiled:
        if y0.ndim != 1:
            raise InputError(f"a compiled field takes a 1-D state; got y0 of shape {y0.shape} (flatten it)")
        if (field.f, y0.shape, y0.dtype, params.shape) not in _PROBED:
            probe = np.asarray(field.f(t0, y0, params))
            if np.iscomplexobj(probe):
                raise complex_output("f", probe.dtype, t0)
            if probe.shape != y0.shape:
                raise InputError(f"field.f returned shape {probe.shape} at t = {t0!r}; expected the state's "
                                 f"{y0.shape}")
            _PROBED.add((field.f, y0.shape, y0.dtype, params.shape))
        return (field.f_into or field.f) if in_place else field.f, "specialized" if field.specialize else "compiled"
    return flat_python_function(field.f, y0.shape, y0.dtype, "f"), "python"


# (compiled f, state shape, state dtype, params shape) whose output passed prepare_field's shape and dtype check: a
# compiled function's output type is fixed by its argument types, so one probe per signature suffices.
_PROBED: set[tuple] = set()


# A field's first-class kernel time in one process after which its kernels are compiled around it instead. Ski
# rental: specializing costs ~15 s of compile once and saves ~25% of every later solve (first-class runs 1.35×
# slower), so switching once the first-class time reaches 4× the compile cost keeps the total within ~1.3× of the
# better choice in hindsight (worst just after the switch: 75 s against 59 s), and a short run (a test, a gradient
# check) never pays the compile. The results are the same bits either way (tested).
SPECIALIZE_AFTER_S = 60.0
_first_class_seconds: dict[tuple, float] = {}  # (kernel, field) -> first-class kernel time in this process


def run_kernel(kernel: Kernel, variant: str, f: Callable, params: np.ndarray, *args, state_dtype: np.dtype):
    """One of a kernel's speeds on field ``f``: plain Python; compiled with ``f`` as a first-class function; or
    compiled with ``f`` bound in ("specialized"; where its signature does not fit the first-class one; or once its
    first-class time passes :data:`SPECIALIZE_AFTER_S`): :func:`gqref._numba.kernel`. Every kernel takes
    (f, params, …) and calls f on writable 1-D states of ``state_dtype`` that it allocates itself."""
    key = (kernel.first_class, f)
    if variant == "compiled" and _first_class_seconds.get(key, 0.0) < SPECIALIZE_AFTER_S:
        first_class = first_class_field(f, np.dtype(state_dtype), numba.typeof(params), writes_into(f.py_func))
        if first_class is not None:
            start = time.perf_counter()
            result = _reraising(kernel.first_class, first_class, params, *args)
            _first_class_seconds[key] = _first_class_seconds.get(key, 0.0) + time.perf_counter() - start
            return result
    if variant in ("compiled", "specialized"):
        return bind_field(kernel.compiled, f)(params, *args)
    return kernel.python(f, params, *args)


_field_errors = threading.local()  # .sink: a list while this thread runs a first-class kernel, else absent/None
_outer_unraisablehook = sys.unraisablehook


def _field_error_hook(info) -> None:
    """Keep the first error numba reports from this thread's running first-class kernel; pass on everything else."""
    sink = getattr(_field_errors, "sink", None)
    if sink is not None and isinstance(info.object, str) and info.object.startswith("<numba."):
        if not sink:
            sink.append(info)
        return
    _outer_unraisablehook(info)


def _reraising(compiled_kernel: Callable, *args):
    """Run a first-class kernel and raise what the field raised inside it: numba cannot propagate an exception out
    of a first-class call, so it reports it as unraisable (numba's cfunc wrapper, caught by :func:`_field_error_hook`
    for this thread alone, not printed) and the kernel stops on the NaN left in its place
    (:func:`gqref.field.call_into`)."""
    global _outer_unraisablehook
    if sys.unraisablehook is not _field_error_hook:  # installed once, in front of whatever hook is in place
        _outer_unraisablehook, sys.unraisablehook = sys.unraisablehook, _field_error_hook
    outer_sink, _field_errors.sink = getattr(_field_errors, "sink", None), []
    try:
        result = compiled_kernel(*args)
        raised = _field_errors.sink
    finally:
        _field_errors.sink = outer_sink  # a field that itself solves nests its own sink
    if raised:
        raise raised[0].exc_value.with_traceback(raised[0].exc_traceback)
    return result


def _options(options, method: str) -> tuple[AdaptiveOptions | None, dict]:
    """(validated adaptive options or None for a fixed grid, the rest: ``norm``, ``dtype`` or ``step_size``)."""
    if options is not None and not isinstance(options, dict):
        raise InputError(f"options must be a dict, got {type(options).__name__}")
    if method in ADAPTIVE_METHODS:
        return adaptive_options(options, method=method)
    unknown = [key for key in (options or {}) if key not in FIXED_OPTIONS[method]]
    if unknown:
        raise InputError(f"options {unknown} are not supported for method {method!r}; supported: "
                         f"{list(FIXED_OPTIONS[method])}")
    return None, dict(options or {})


def _merge(keyword: str, value, key: str, given: dict, default=None):
    """A setting that may come as a keyword or as an options key, never both."""
    present = given.get(key) is not None
    if value is not None and present:
        raise InputError(f"{keyword}={value!r} and options[{key!r}] = {given[key]!r} set the same thing; give one")
    return given[key] if present else (default if value is None else value)


def _time_dtype(value) -> None:
    """gqref keeps time in float64: options['dtype'] may only ask for that."""
    try:
        ok = np.dtype(value) == np.float64
    except TypeError:
        ok = str(value) == "torch.float64"
    if not ok:
        raise InputError(f"options['dtype'] sets the dtype of time, which gqref keeps in float64; got {value!r}")


def _adaptive_tableau(method: str, control: Controller) -> Tableau:
    """The tableau of an adaptive solve: the controller's own for dopri5 (scipy's embedded weights for "scipy")."""
    if method == "dopri5":
        return control.tableau
    if control.kind == SCIPY:
        raise InputError(f"controller 'scipy' runs method 'dopri5' (scipy's RK45) only, not {method!r}")
    if control.tableau is not DOPRI5:
        raise InputError(f"a Controller with its own tableau ({control.tableau.name!r}) runs method 'dopri5' only, "
                         f"not {method!r}")
    return ADAPTIVE_TABLEAUX[method]


def solve(
    field: VectorField | Callable,
    y0,
    t,
    params=None,
    *,
    rtol: float = DEFAULT_RTOL,
    atol: float | np.ndarray = DEFAULT_ATOL,
    method: str = "dopri5",
    controller: str | Controller = "torchdiffeq",
    norm: str | ErrorNorm | None = None,
    first_step: float | None = None,
    step_size: float | None = None,
    max_steps: int | None = None,
    options: dict | None = None,
) -> Solution:
    """Solve dy/dt = f(t, y, params) from ``y0`` at ``t[0]`` and return the solution at every ``t[i]``.

    ``t`` may increase or decrease (strictly). ``method``: an adaptive embedded pair of
    :data:`gqref.tableau.ADAPTIVE_TABLEAUX` (``"dopri5"`` (default), ``"dopri8"``, ``"bosh3"``, ``"fehlberg2"``,
    ``"adaptive_heun"``, ``"tsit5"``), stepped as torchdiffeq 0.2.5 steps them, or a fixed-grid method of
    :data:`gqref.tableau.FIXED_GRID_TABLEAUX` (on the grid ``t``, or of ``step_size`` when given).

    Adaptive methods: ``controller`` picks torchdiffeq's step control (any method) or scipy's RK45 (dopri5 only),
    ``norm`` the error norm (default ``"rms"``), ``max_steps`` bounds the attempted steps (default
    :data:`DEFAULT_MAX_STEPS`). ``options`` takes torchdiffeq's names (see :class:`gqref.adaptive.AdaptiveOptions`):
    ``first_step``, ``min_step``, ``max_step``, ``step_t``, ``jump_t``, ``safety``, ``ifactor``, ``dfactor``,
    ``max_num_steps`` (= ``max_steps``), ``norm`` (``"rms"``, ``"max"`` or an ErrorNorm: a callable cannot run
    in a compiled kernel) and ``dtype`` (float64 only: time is float64). ``min_step``, ``max_step``, ``step_t`` and
    ``jump_t`` need the torchdiffeq controller. A setting given both as a keyword and as an options key is an
    error. Fixed-grid methods take ``options={"step_size": h}`` (= ``step_size``).

    With the torchdiffeq controller, stages with node c = 1 are evaluated one ulp before the step's end, as
    torchdiffeq does (a float32 state: one float32 ulp, the time torchdiffeq hands a float32 field, passed on as
    float64). Errors: :class:`gqref.errors.InputError` for bad arguments, :class:`gqref.errors.SolverError`
    subclasses when the field returns NaN/inf, the step size underflows, or ``max_steps`` is exceeded.
    """
    field = as_field(field)
    if method not in METHODS:
        raise InputError(f"method must be one of {list(METHODS)}, got {method!r}")
    opts, rest = _options(options, method)
    max_steps = _merge("max_steps", max_steps, "max_num_steps", dict(options or {}), DEFAULT_MAX_STEPS)
    s_out, direction = output_times(t)
    t_given = direction * s_out
    y0 = _state(y0)
    params = _params(params)
    rtol = positive_float("rtol", rtol)
    atol = tolerance("atol", atol, y0.shape)
    atol_vec = np.full(y0.size, atol) if isinstance(atol, float) else atol.copy()
    max_steps = count("max_steps", max_steps)
    flat = y0.reshape(-1)

    if opts is not None:
        if step_size is not None:
            raise InputError(f"step_size applies to the fixed-grid methods ({', '.join(FIXED_GRID_TABLEAUX)}), not "
                             f"{method}")
        given = dict(options or {})
        first_step = optional_positive_float("first_step", _merge("first_step", first_step, "first_step", given))
        norm = _merge("norm", norm, "norm", rest, "rms")
        if "dtype" in rest:
            _time_dtype(rest["dtype"])
        control = as_controller(controller)
        tableau = _adaptive_tableau(method, control)
        if control.kind == SCIPY:
            scipy_free = [key for key in ("min_step", "max_step", "step_t", "jump_t") if given.get(key) is not None]
            if scipy_free:
                raise InputError(f"options {scipy_free} need controller='torchdiffeq'; scipy's RK45 has no such "
                                 f"options here")
        norm_kind, block_id, n_blocks = as_norm(norm).kernel_data(flat.size)
        # a Controller's own constants unless the options set them
        safety, ifactor, dfactor = (getattr(opts if key in given else control, key)
                                    for key in ("safety", "ifactor", "dfactor"))
        min_step, max_step, step_t, jump_t = opts.kernel_args(float(s_out[0]), direction)
        tab = float_tableau(tableau)
        f, variant = prepare_field(field, y0, float(t_given[0]), params, in_place=True)
        status, s_stop, ys, steps_ts, steps_ys, nfe, n_acc, n_rej = run_kernel(
            ADAPTIVE, variant, f, params, flat, s_out, direction, rtol, atol_vec, norm_kind, block_id, n_blocks,
            control.kind, safety, ifactor, dfactor, tableau.order_low, -1.0 if first_step is None else first_step,
            max_steps, tab.a, tab.b, tab.c, tab.e, tab.b_mid, tableau.fsal, fit_matrix(), min_step, max_step, step_t,
            jump_t, state_dtype=flat.dtype,
        )
        cut_at = np.concatenate([step_t, jump_t] + ([s_out[-1:]] if control.kind == SCIPY else []))
        last_step = last_free_step(steps_ts[:n_acc, 0], steps_ts[:n_acc, 1], cut_at)
        steps = Steps(ts=direction * steps_ts[:, 0], hs=direction * steps_ts[:, 1],
                      ys=steps_ys.reshape((-1, *y0.shape)), error_ratios=steps_ts[:, 2].copy(),
                      jumps=steps_ts[:, 3] != 0.0)
        how = StepMethod(name=method, tableau=tableau, adaptive=True, nudged=control.kind != SCIPY,
                         jump_t=opts.jump_t)
    else:
        if first_step is not None:
            raise InputError(f"first_step applies to adaptive methods, not {method!r}")
        rest["step_size"] = optional_positive_float("step_size", _merge("step_size", step_size, "step_size", rest))
        fixed = fixed_options(method, rest)
        f, variant = prepare_field(field, y0, float(t_given[0]), params)
        # a grid_constructor is called as torchdiffeq calls it: the caller's f, y0 and output times
        result = solve_fixed(f, params, flat, s_out, direction, method, fixed, rtol, atol_vec,
                             grid_args=(field.f, y0, t_given))
        status, s_stop, ys, nfe, n_acc, grid = (result.status, result.s_stop, result.ys, result.nfe, result.n_steps,
                                                result.grid)
        n_rej = 0
        last_step = None
        steps = Steps(ts=direction * grid[1:n_acc + 1], hs=direction * np.diff(grid[: n_acc + 1]),
                      ys=result.steps_ys.reshape((-1, *y0.shape)), error_ratios=np.full(n_acc, np.nan))
        tableau = FIXED_GRID_TABLEAUX.get(method)
        how = StepMethod(name=method, tableau=tableau, adaptive=False, nudged=False)
    raise_for_status(int(status), float(direction * s_stop), max_steps=max_steps)
    return Solution(ts=t_given, ys=ys.reshape((len(s_out), *y0.shape)), steps=steps,
                    stats=Stats(nfe=int(nfe), n_accepted=int(n_acc), n_rejected=int(n_rej), last_step=last_step),
                    method=how)


def last_free_step(ends: np.ndarray, sizes: np.ndarray, cut_at: np.ndarray) -> float | None:
    """The size of the last accepted step that does not end on a time in ``cut_at`` (where a step is cut short),
    else of the last step; None without steps. Solver time: ``ends`` and ``cut_at`` compare exactly, as a cut step
    ends on the prescribed time itself."""
    if sizes.size == 0:
        return None
    free = np.flatnonzero(~np.isin(ends, cut_at))
    return float(abs(sizes[free[-1]] if free.size else sizes[-1]))
