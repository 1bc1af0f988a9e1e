"""Twin names: gqref and gqtorch modules of the same file name define the same public names.

For every file name present in both ``gqref/`` and ``gqtorch/`` (``__init__`` included), each twin's public
names must exist in the other twin. A module's public names are those without a leading underscore that it
defines itself: its ``__all__`` when it has one, else the names its top level assigns, ``def``\\ s or
``class``\\ es (a name merely imported into it is not its own). A name exists in the twin when the twin module has
it (defined there or imported into it), or, for a gqref name, when gqtorch takes it from that very gqref module
(``from gqref.x import name``, or ``x.name`` after ``from gqref import x``): one definition serving both twins, the
project's rule for backend-free code.

A name that is genuinely backend-only is listed in :data:`ALLOWED` with why. So this test fails when a public name
is added to one twin only (until the other twin gets it, or ALLOWED says why not), and when an ALLOWED entry no
longer applies (the name was removed, or now exists in the twin): the list stays honest.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEMS = sorted({p.stem for p in (ROOT / "gqref").glob("*.py")} & {p.stem for p in (ROOT / "gqtorch").glob("*.py")})

# Why a name lives in one twin only. Shared reasons, then one entry per name.
NUMPY_API = "gqref's public API (NumPy); gqtorch's is torchdiffeq's odeint family, and its users import this from gqref"
TORCH_API = "gqtorch's public API (torchdiffeq-style); gqref's NumPy API has its own entry points"
EXACT = "an exact (Fraction) tableau, kept in gqref; gqtorch converts gqref's tableaux with torch_tableau"
KERNEL = "part of gqref's numba kernel (array-in, status-out); gqtorch's loop is plain torch"
TORCH = "torch-only: works on tensors, devices or autograd"
NUMPY_ARGS = "an argument check only gqref's NumPy entry points use (gqtorch checks tensors in gqtorch.solve)"
ADAMS = "read by gqref.adams.AdamsStepper, whose algorithm gqtorch.adams.AdamsStepper inherits"
ORDER_CHECK = "checks the exact tableaux' order conditions (tests/test_tableau.py): nothing to run on tensors"
SCIPY_RULES = "gqref's scipy-compatible controller only; gqtorch follows torchdiffeq's rules"

ALLOWED: dict[str, str] = {
    # ---- the packages' public APIs: gqref's NumPy functions, gqtorch's torchdiffeq-style odeint family
    "gqref.ADAPTIVE_TABLEAUX": NUMPY_API,
    "gqref.AdaptiveRule": NUMPY_API,
    "gqref.AutoRule": NUMPY_API,
    "gqref.CONTROLLERS": NUMPY_API,
    "gqref.Controller": NUMPY_API,
    "gqref.DOPRI5": NUMPY_API,
    "gqref.DOPRI5_SCIPY": NUMPY_API,
    "gqref.DenseOutput": NUMPY_API,
    "gqref.Diagnostics": NUMPY_API,
    "gqref.EULER": NUMPY_API,
    "gqref.ErrorNorm": NUMPY_API,
    "gqref.FIXED_GRID_TABLEAUX": NUMPY_API,
    "gqref.GRADIENT_METHODS": NUMPY_API,
    "gqref.Gradient": NUMPY_API,
    "gqref.GradientReport": NUMPY_API,
    "gqref.IntervalRule": NUMPY_API,
    "gqref.MIDPOINT": NUMPY_API,
    "gqref.NoEventError": NUMPY_API,
    "gqref.QUADRATURES": NUMPY_API,
    "gqref.QuadratureAccuracyWarning": NUMPY_API,
    "gqref.QuadratureLimitError": NUMPY_API,
    "gqref.RK4": NUMPY_API,
    "gqref.Solution": NUMPY_API,
    "gqref.StepRule": NUMPY_API,
    "gqref.Steps": NUMPY_API,
    "gqref.Tableau": NUMPY_API,
    "gqref.UnreliableReferenceError": NUMPY_API,
    "gqref.VectorField": NUMPY_API,
    "gqref.check_gradient": NUMPY_API,
    "gqref.dense_output": NUMPY_API,
    "gqref.event_gradient": NUMPY_API,
    "gqref.gauss_kronrod": NUMPY_API,
    "gqref.gauss_legendre": NUMPY_API,
    "gqref.gradient": NUMPY_API,
    "gqref.njit": NUMPY_API,
    "gqref.node_count": NUMPY_API,
    "gqref.quadrature_rule": NUMPY_API,
    "gqref.reference_gradient": NUMPY_API,
    "gqref.solve_until_event": NUMPY_API,
    "gqtorch.Advice": TORCH_API,
    "gqtorch.GradientStats": TORCH_API,
    "gqtorch.SmoothNoise": TORCH_API,
    "gqtorch.StratonovichSDE": TORCH_API,
    "gqtorch.WongZakaiODE": TORCH_API,
    "gqtorch.advise": TORCH_API,
    "gqtorch.odeint": TORCH_API,
    "gqtorch.odeint_adjoint": TORCH_API,
    "gqtorch.odeint_adjoint_gq": TORCH_API,
    "gqtorch.odeint_dense": TORCH_API,
    "gqtorch.odeint_event": TORCH_API,
    "gqtorch.testing": TORCH_API,
    "gqref.adjoint.adjoint_gradient": NUMPY_API,
    "gqtorch.adjoint.odeint_adjoint": TORCH_API,
    "gqtorch.dense.odeint_dense": TORCH_API,
    "gqref.events.EventGradient": NUMPY_API,
    "gqref.events.EventSolution": NUMPY_API,
    "gqref.events.event_gradient": NUMPY_API,
    "gqref.events.solve_until_event": NUMPY_API,
    "gqtorch.events.odeint_event": TORCH_API,
    "gqref.solve.Solution": NUMPY_API,
    "gqref.solve.Steps": NUMPY_API,
    "gqtorch.solve.odeint": TORCH_API,
    # ---- one definition serving both: gqtorch reads it through another gqref module or a shared helper
    "gqref.adams.ADAMS_METHODS": "gqref.fixed_grid's method list reads it; gqtorch.fixed_grid uses gqref.fixed_grid's",
    "gqref.adams.IMPLICIT": ADAMS,
    "gqref.adams.DEFAULT_MAX_ITERS": "read by gqref.fixed_grid's options, which gqtorch shares",
    "gqref.adams.MAX_ORDER": "read by gqref.fixed_grid's options, which gqtorch shares",
    "gqref.adams.MIN_ORDER": "read by gqref.fixed_grid's options, which gqtorch shares",
    "gqref.adams.bashforth": "exact rationals, rounded once into gqref.adams.BASHFORTH",
    "gqref.adams.moulton": "exact rationals, rounded once into gqref.adams.MOULTON",
    "gqref.controller.CONTROLLERS": "presets resolved by gqref.controller.as_controller (gqref's API)",
    "gqref.controller.Controller": "a preset of gqref's API; gqtorch takes torchdiffeq's options",
    "gqref.controller.as_controller": "resolves gqref's `controller=` argument; gqtorch takes torchdiffeq's options",
    "gqref.controller.DFACTOR": "default of gqref.adaptive.AdaptiveOptions, which gqtorch uses",
    "gqref.controller.IFACTOR": "default of gqref.adaptive.AdaptiveOptions, which gqtorch uses",
    "gqref.controller.SAFETY": "default of gqref.adaptive.AdaptiveOptions, which gqtorch uses",
    "gqref.controller.SCIPY_MIN_STEP_ULPS": SCIPY_RULES,
    "gqref.controller.accepts": KERNEL,
    "gqref.refinement.SPLIT_BUDGET": "the split rule's constant: gqtorch runs the rule through gqref's PanelRounds",
    "gqref.refinement.panels_to_split": "the split rule: gqtorch runs it through gqref's PanelRounds",
    "gqref.fixed_grid.END_STAGE_ON_GRID": "read by gqref.fixed_grid's stage placement, which gqtorch imports",
    "gqref.fixed_grid.FIXED_RK_METHODS": "read by gqref.fixed_grid.fixed_options, which gqtorch imports",
    "gqref.fixed_grid.GRID_OPTIONS": "read by gqref.fixed_grid.fixed_options, which gqtorch imports",
    "gqref.fixed_grid.INTERPOLATIONS": "read by gqref.fixed_grid.fixed_options, which gqtorch imports",
    "gqref.fixed_grid.constructed_grid": "read by gqref.fixed_grid.fixed_grid, which gqtorch's torch_grid calls",
    "gqref.fixed_grid.stage_nudges": "read by gqref.fixed_grid's stage plan, which gqtorch imports",
    "gqref.panels.PanelSums": "the protocol gqtorch.panels.TorchPanelSums implements for gqref.panels.refine",
    "gqref.panels.Refinement": "what gqref.panels.refine (shared by both twins) returns",
    "gqref.panels.tolerance_targets": "NumpyPanelSums' error test; TorchPanelSums judges on the device",
    "gqref.panels.CheckMemory": "the type of gqref.panels.AUTO_CHECKS, the one memory both twins import",
    "gqref.tableau.ADAPTIVE_HEUN": EXACT,
    "gqref.tableau.BOSH3": EXACT,
    "gqref.tableau.DOPRI5": EXACT,
    "gqref.tableau.DOPRI5_SCIPY": EXACT,
    "gqref.tableau.DOPRI8": EXACT,
    "gqref.tableau.EULER": EXACT,
    "gqref.tableau.FEHLBERG2": EXACT,
    "gqref.tableau.HEUN2": EXACT,
    "gqref.tableau.HEUN3": EXACT,
    "gqref.tableau.MIDPOINT": EXACT,
    "gqref.tableau.TSIT5": EXACT,
    "gqref.tableau.TSIT5_PAPER": EXACT,
    "gqref.tableau.INTERP_BASIS": "names INTERP_FIT's basis; gqtorch reads the fit's float64 INTERP_FIT_FLOAT",
    "gqref.tableau.INTERP_FIT": "the exact fit; gqtorch reads its float64 rounding INTERP_FIT_FLOAT",
    "gqref.tableau.FloatTableau": "float64 arrays of a tableau; gqtorch.tableau.TorchTableau holds them as tensors",
    "gqref.tableau.Tree": ORDER_CHECK,
    "gqref.tableau.as_float": ORDER_CHECK,
    "gqref.tableau.elementary_weights": ORDER_CHECK,
    "gqref.tableau.order_residuals": ORDER_CHECK,
    "gqref.tableau.rooted_trees": ORDER_CHECK,
    "gqref.tableau.tree_density": ORDER_CHECK,
    "gqref.tableau.tree_order": ORDER_CHECK,
    # ---- gqref's numba kernels: flat float64 arrays, integer status codes
    "gqref.adams.BASHFORTH": ADAMS,
    "gqref.adams.MOULTON": ADAMS,
    "gqref.adams.CorrectorWarning": ADAMS,
    "gqref.adams.corrector_warning": ADAMS,
    "gqref.adaptive.ADAPTIVE": KERNEL,
    "gqref.adaptive.ADAPTIVE_OPTIONS": "the names gqref.adaptive.adaptive_options accepts, which gqtorch calls",
    "gqref.adaptive.DEFAULT_MAX_STEPS": "default of gqref.adaptive.AdaptiveOptions, which gqtorch uses",
    "gqref.controller.ErrorNorm": "gqref's norm choice as kernel codes; gqtorch takes torchdiffeq's norm callables",
    "gqref.controller.NORM_MAX": KERNEL,
    "gqref.controller.NORM_MIXED": KERNEL,
    "gqref.controller.NORM_RMS": KERNEL,
    "gqref.controller.SCIPY": SCIPY_RULES,
    "gqref.controller.scaled_norm": KERNEL,
    "gqref.dense.REFIT": KERNEL,
    "gqref.dense.refit_steps": "gqref replays the steps for their quartics; gqtorch's solver records them",
    "gqref.runge_kutta.NUDGE_NONE": KERNEL,
    "gqref.runge_kutta.NUDGE_STATE": KERNEL,
    "gqref.runge_kutta.dopri5_step": SCIPY_RULES,
    "gqref.runge_kutta.embedded_error": KERNEL,
    "gqref.runge_kutta.one_ulp": KERNEL,
    "gqref.solve.StepMethod": "how to replay a solve (gqref.dense); gqtorch records its dense output instead",
    "gqref.solve.prepare_field": KERNEL + " (picks the compiled or the Python kernel)",
    "gqref.solve.run_kernel": KERNEL + " (runs one of its speeds: Python, first-class field, or the field bound in)",
    "gqref.solve.SPECIALIZE_AFTER_S": KERNEL + " (when a field's kernels stop taking it first-class)",
    "gqref.solve.last_free_step": "reads Stats.last_step off the kernel's step records; gqtorch.adaptive keeps it "
                                  "step by step (StepCounts)",
    "gqref.arguments.finite_array": NUMPY_ARGS,
    "gqref.arguments.monotone_times": NUMPY_ARGS,
    "gqref.arguments.non_negative_float": NUMPY_ARGS,
    "gqref.arguments.optional_positive_float": NUMPY_ARGS,
    "gqref.arguments.tolerance": "NumPy tolerance arrays; gqtorch's flat_atol builds tensors",
    "gqref.augmented.require_vjps": "gqref fields carry hand-written VJPs; gqtorch differentiates with autograd",
    "gqref.adjoint.adjoint_norm": "an ErrorNorm (kernel codes); gqtorch's is the class AdjointNorm",
    "gqref.fixed_grid.GridStep": "gqref's fixed-grid step record; gqtorch yields gqtorch.steps.AcceptedStep",
    "gqref.fixed_grid.cubic_state": "NumPy interpolants; gqtorch's are in gqtorch.fixed_grid's step on tensors",
    "gqref.fixed_grid.linear_state": "NumPy interpolants; gqtorch's are in gqtorch.fixed_grid's step on tensors",
    "gqref.panels.NumpyPanelSums": "gqref's backend of gqref.panels.refine; gqtorch's is TorchPanelSums",
    "gqref.refinement.ROUNDOFF_FLOOR": "float64's floor; gqtorch's uses the integrand dtype's ε",
    "gqref.gq.gq_gradient": "gqref's GQ gradient (gqtorch's is gq_backward inside odeint_adjoint_gq)",
    # ---- torch-only
    "gqtorch.adams.weighted_sum": TORCH,
    "gqtorch.adaptive.StepCounts": TORCH,
    "gqtorch.adaptive.adaptive_steps": TORCH,
    "gqtorch.adaptive.first_nonfinite_stage": TORCH,
    "gqtorch.adjoint.AdjointNorm": TORCH,
    "gqtorch.adjoint.adjoint_backward": TORCH,
    "gqtorch.arguments.host_scalar": TORCH,
    "gqtorch.augmented.AdjointDynamics": TORCH,
    "gqtorch.augmented.BackwardDynamics": TORCH,
    "gqtorch.augmented.GQDynamics": TORCH,
    "gqtorch.controller.BlockRmsNorm": TORCH,
    "gqtorch.controller.Norm": TORCH,
    "gqtorch.controller.UserNorm": TORCH,
    "gqtorch.controller.max_norm": TORCH,
    "gqtorch.controller.rms_norm": TORCH,
    "gqtorch.dense.DenseReader": TORCH,
    "gqtorch.dense.evaluate_quartics": TORCH,
    "gqtorch.events.EventFn": TORCH,
    "gqtorch.events.GRADIENT_REGULARISER": TORCH,
    "gqtorch.events.ImplicitEvent": TORCH,
    "gqtorch.events.find_event": TORCH,
    "gqtorch.events.flat_event_fn": TORCH,
    "gqtorch.events.integrate_until_event": TORCH,
    "gqtorch.fixed_grid.SUPPORTED_CALLBACKS": TORCH,
    "gqtorch.fixed_grid.Tally": TORCH,
    "gqtorch.fixed_grid.fixed_callbacks": TORCH,
    "gqtorch.fixed_grid.torch_grid": TORCH,
    "gqtorch.gq.dense_backward": TORCH,
    "gqtorch.gq.gq_backward": TORCH,
    "gqtorch.gq.interval_backward": TORCH,
    "gqtorch.gq.odeint_adjoint_gq": TORCH_API,
    "gqtorch.interp.interp_powers": TORCH,
    "gqtorch.panels.TorchPanelSums": TORCH,
    "gqtorch.quadrature.kronrod_rule": TORCH,
    "gqtorch.quadrature.reference_rule": TORCH,
    "gqtorch.refinement.node_rows": TORCH,
    "gqtorch.runge_kutta.NUDGEABLE": TORCH,
    "gqtorch.runge_kutta.midpoint_state": TORCH,
    "gqtorch.runge_kutta.stage_times": TORCH,
    "gqtorch.solve.COMPLEX_DTYPES": TORCH,
    "gqtorch.solve.FlatField": TORCH,
    "gqtorch.solve.LOW_PRECISION": TORCH,
    "gqtorch.solve.MethodPlan": TORCH,
    "gqtorch.solve.REAL_DTYPES": TORCH,
    "gqtorch.solve.SCIPY_METHODS": "torchdiffeq's scipy_solver method name; gqref's scipy rules are a controller",
    "gqtorch.solve.STATE_DTYPES": TORCH,
    "gqtorch.solve.flat_atol": TORCH,
    "gqtorch.solve.flat_state": TORCH,
    "gqtorch.solve.host_value": TORCH,
    "gqtorch.solve.integrate_plan": TORCH,
    "gqtorch.solve.plan_method": TORCH,
    "gqtorch.solve.time_grid": TORCH,
    "gqtorch.solve.tolerance_number": TORCH,
    "gqtorch.tableau.TorchTableau": TORCH,
    "gqtorch.tableau.torch_tableau": TORCH,
}


def _own_names(package: str, stem: str) -> set[str]:
    module = importlib.import_module(package if stem == "__init__" else f"{package}.{stem}")
    if hasattr(module, "__all__"):
        return set(module.__all__)
    names = set()
    for node in ast.parse((ROOT / package / f"{stem}.py").read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return {name for name in names if not name.startswith("_")}


def _imported_from_gqref() -> set[tuple[str, str]]:
    """(gqref module, name) for every ``from gqref... import name`` in gqtorch, and every ``module.name`` read
    where gqtorch imports a gqref module itself (``from gqref import adams``)."""
    found = set()
    for path in (ROOT / "gqtorch").glob("*.py"):
        tree = ast.parse(path.read_text())
        modules = {}  # local name -> gqref module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gqref":
                found.update((node.module, alias.name) for alias in node.names)
                if node.module == "gqref":
                    modules.update({alias.asname or alias.name: f"gqref.{alias.name}" for alias in node.names})
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                found.add((modules[node.value.id], node.attr))
    return found


def _one_twin_only(stem: str) -> dict[str, set[str]]:
    """{"gqref": names gqtorch's twin lacks, "gqtorch": names gqref's twin lacks}."""
    shared = _imported_from_gqref()
    modules = {p: importlib.import_module(p if stem == "__init__" else f"{p}.{stem}") for p in ("gqref", "gqtorch")}
    own = {p: _own_names(p, stem) for p in modules}
    gqref_module = "gqref" if stem == "__init__" else f"gqref.{stem}"
    return {
        "gqref": {n for n in own["gqref"] if not hasattr(modules["gqtorch"], n) and (gqref_module, n) not in shared},
        "gqtorch": {n for n in own["gqtorch"] if not hasattr(modules["gqref"], n)},
    }


def _key(package: str, stem: str, name: str) -> str:
    return f"{package}.{name}" if stem == "__init__" else f"{package}.{stem}.{name}"


@pytest.mark.parametrize("stem", STEMS)
def test_twins_define_the_same_public_names(stem):
    lonely = {_key(p, stem, n) for p, names in _one_twin_only(stem).items() for n in names}
    listed = {key for key in ALLOWED if key.split(".")[1] == stem or (stem == "__init__" and key.count(".") == 1)}
    assert not lonely - ALLOWED.keys(), (
        f"public names in one twin only: {sorted(lonely - ALLOWED.keys())}; add them to the other twin, or to "
        f"ALLOWED with why they are backend-only")
    assert not listed - lonely, f"ALLOWED entries that no longer apply (remove them): {sorted(listed - lonely)}"


def test_the_twins_are_the_expected_files():
    """The twin list the test walks (a file renamed in one package only would drop out of it silently)."""
    assert STEMS == ["__init__", "adams", "adaptive", "adjoint", "arguments", "augmented", "controller", "dense",
                     "events", "fixed_grid", "gq", "interp", "panels", "quadrature", "refinement", "runge_kutta",
                     "solve", "tableau"]
