"""How compiled fields reach the solver kernels: as first-class functions (one kernel compile per process for every
field of a signature), or specialized (the field inlined, one compile per field); both give the same bits."""

import dataclasses
import importlib
import sys
import threading
from types import SimpleNamespace

import numba
import numpy as np
import pytest

import gqref
from gqref import problems as P
from gqref._numba import first_class_field
from gqref.adaptive import ADAPTIVE
from gqref.dense import REFIT, dense_output

solve_module = importlib.import_module("gqref.solve")  # the module: gqref.solve is the function


def _solve(field, problem, **kwargs):
    return gqref.solve(field, problem.y0, problem.t, problem.params, rtol=1e-8, atol=1e-8, **kwargs)


def test_specialized_and_first_class_kernels_agree_bit_for_bit():
    # the same IEEE operations in the same order (no fastmath, so no contraction either way): only the call differs.
    # One field: each specialized kernel compiles for tens of seconds (the cost the first-class path removes).
    problem = P.van_der_pol(mu=5.0)
    first = _solve(problem.field, problem)
    special = _solve(dataclasses.replace(problem.field, specialize=True), problem)
    assert first.stats == special.stats
    assert np.array_equal(first.ys, special.ys) and np.array_equal(first.steps.ys, special.steps.ys)


def test_every_field_of_a_signature_shares_one_kernel_compile():
    """The compile-time claim itself: after one field, two more add no specialization of the first-class kernels."""
    def solve_and_refit(name):
        problem = getattr(P, name)()
        dense_output(problem.field, _solve(problem.field, problem), problem.params)

    solve_and_refit("van_der_pol")
    compiled = [tuple(kernel.first_class.signatures) for kernel in (ADAPTIVE, REFIT)]
    for name in ("lotka_volterra", "forced_linear"):
        solve_and_refit(name)
    assert [tuple(kernel.first_class.signatures) for kernel in (ADAPTIVE, REFIT)] == compiled


def test_a_field_whose_compiled_signature_does_not_fit_is_bound_instead():
    @numba.njit
    def strided(t, y, p):  # returns a non-contiguous view: not the first-class signature's C-contiguous array
        out = np.empty(2 * y.shape[0])
        out[::2] = -y
        return out[::2]

    assert first_class_field(strided, np.dtype(np.float64), numba.typeof(np.empty(0)), False) is None
    sol = gqref.solve(gqref.VectorField(strided), np.array([1.0, 2.0]), np.array([0.0, 1.0]), rtol=1e-10,
                      atol=1e-12)
    # y' = −y: the solution is y0·e^{−t}, within the tolerance-scaled global error
    np.testing.assert_allclose(sol.ys[-1], np.array([1.0, 2.0]) * np.exp(-1.0), rtol=1e-8)


def test_specialize_must_be_a_bool():
    with pytest.raises(gqref.InputError, match=r"VectorField\.specialize must be True or False"):
        gqref.VectorField(P.van_der_pol().field.f, specialize="yes")


@gqref.njit
def _decays(t, y, p):
    return -y


@gqref.njit
def _refuses_late(t, y, p):
    if t > 0.5:
        raise ValueError("this field refuses t > 0.5")
    return -y


@gqref.njit
def _refuses_late_in_place(t, y, p, out):
    out[0] = -y[0]  # a partial write first: the kernel must not carry on from it
    if t > 0.5:
        raise ValueError("this field refuses t > 0.5")
    out[1] = -y[1]


@pytest.mark.parametrize("field", [_refuses_late, _refuses_late_in_place], ids=["returning", "in-place"])
def test_an_exception_inside_a_first_class_field_is_raised_not_swallowed(field, monkeypatch):
    # numba cannot propagate it out of a first-class call (it hands back a null array): without the re-raise this
    # read the null array (a segfault) or integrated on from a partial write (a silent wrong answer)
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)  # the hook in place; restored after the test
    monkeypatch.setattr(solve_module, "_outer_unraisablehook", solve_module._outer_unraisablehook)
    with pytest.raises(ValueError, match=r"refuses t > 0\.5"):
        gqref.solve(gqref.VectorField(field), np.array([1.0, 2.0]), np.array([0.0, 1.0]))
    # installed once in front of the hook in place, and the field's error was raised, not reported to that hook
    assert sys.unraisablehook is solve_module._field_error_hook
    assert solve_module._outer_unraisablehook == seen.append
    assert seen == []


def test_field_errors_stay_with_their_own_thread():
    """Two solves at once (the kernels release the GIL): the failing field's error reaches its own caller only,
    and an unrelated unraisable error still reaches the hook that was in place."""
    results = {}

    def run(name, field):
        try:
            results[name] = gqref.solve(gqref.VectorField(field), np.array([1.0, 2.0]), np.linspace(0.0, 1.0, 200),
                                        rtol=1e-10, atol=1e-12)
        except ValueError as error:
            results[name] = error

    threads = [threading.Thread(target=run, args=(name, field)) for name, field in
               (("fails", _refuses_late), ("works", _decays))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(results["fails"], ValueError)
    assert isinstance(results["works"], gqref.Solution)
    np.testing.assert_allclose(results["works"].ys[-1], np.array([1.0, 2.0]) * np.exp(-1.0), rtol=1e-8)
    seen = []
    outer = solve_module._outer_unraisablehook
    solve_module._outer_unraisablehook = seen.append
    try:  # outside a kernel, and from no numba wrapper: both go on to the hook that was in place
        solve_module._field_error_hook(SimpleNamespace(object="<numba.core.cpu.CPUContext>", exc_value=None))
        solve_module._field_error_hook(SimpleNamespace(object="something else", exc_value=None))
    finally:
        solve_module._outer_unraisablehook = outer
    assert len(seen) == 2


def test_a_field_with_explicit_signatures_is_called_first_class():
    state = numba.types.float64[::1]
    signature = state(numba.types.float64, state, numba.typeof(np.empty(0)))
    decay = numba.njit(signature)(lambda t, y, p: -y)
    assert first_class_field(decay, np.dtype(np.float64), numba.typeof(np.empty(0)), False) is not None


@pytest.mark.parametrize("method", ["gq", "adjoint"])
def test_a_compiled_vjp_of_the_wrong_length_is_named_not_broadcast(method):
    # the compiled backward dynamics copy a VJP's output without looking, and numba broadcasts a length-1 result
    # into the whole slice: a silently wrong gradient unless the output is checked (once per signature) first
    @gqref.njit
    def vjp_y_scalar(t, y, p, a):
        return -a[:1] * p[0]  # length 1, for a 2-D state

    @gqref.njit
    def f(t, y, p):
        return -p[0] * y

    @gqref.njit
    def vjp_p(t, y, p, a):
        return np.array([-(a * y).sum()])

    @gqref.njit
    def vjp_t(t, y, p, a):
        return 0.0

    field = gqref.VectorField(f, vjp_t=vjp_t, vjp_y=vjp_y_scalar, vjp_p=vjp_p)
    with pytest.raises(gqref.InputError, match=r"field\.vjp_y returned shape \(1,\)"):
        gqref.gradient(field, np.array([1.0, 2.0]), np.array([0.0, 1.0]), np.array([0.5]), np.ones((2, 2)),
                       method=method)


def test_a_field_that_ran_long_enough_first_class_is_specialized(monkeypatch):
    """After SPECIALIZE_AFTER_S of first-class kernel time a field's kernels are compiled around it: same bits."""
    problem = P.van_der_pol(mu=5.0)
    f = gqref.njit(problem.field.f.py_func)  # a dispatcher of its own, so no other test's time counts
    monkeypatch.setattr(solve_module, "SPECIALIZE_AFTER_S", 1e-9)  # any first-class solve takes longer
    first = _solve(gqref.VectorField(f), problem)
    assert solve_module._first_class_seconds[(ADAPTIVE.first_class, f)] > 1e-9
    bound_before = solve_module.bind_field.cache_info().currsize
    special = _solve(gqref.VectorField(f), problem)
    assert solve_module.bind_field.cache_info().currsize == bound_before + 1  # the bound kernel was built for it
    assert first.stats == special.stats and np.array_equal(first.ys, special.ys)
