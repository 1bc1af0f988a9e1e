"""A small mutation pass over gq's numerical core: one single-point mutant per test run, with a score.

Usage (never on a working copy you care about: the script edits files in ``--repo`` and restores them after each
mutant, but a killed process can leave a mutant behind; work in a clone)::

    git clone -q . /tmp/mut && ln -s "$PWD/.venv" /tmp/mut/.venv
    PYTHONPATH=/tmp/mut .venv/bin/python tools/mutate.py --repo /tmp/mut --out /tmp/mut/mutation

Options: ``--files`` restricts the catalogue to mutants in those files; ``--tests`` replaces each mutant's own test
files; ``--extra-tests`` appends test files to every mutant's (e.g. new tests); ``--ids`` runs only those mutants;
``--operators`` keeps only mutants of those operators; ``--timeout`` is the wall-clock limit per mutant (a mutant
that makes its tests run past it counts as killed by timeout, and the summary says so); ``--list`` prints the
catalogue; ``--generate FILE`` prints every candidate single-point mutant the operators can make in FILE (to pick
new catalogue entries from). The summary goes to ``OUT.json`` and ``OUT.md``, each written atomically after every
mutant, so an interrupted pass keeps what it ran.

Operators (the catalogue's ``op`` field; ``--generate`` finds candidates for the mechanical ones):

- ``arith``: flip ``+``/``-``, ``*``/``/`` (and ``**`` ↔ ``*``);
- ``compare``: ``<`` ↔ ``<=``, ``>`` ↔ ``>=``, ``==`` ↔ ``!=``;
- ``constant``: change a numeric constant (0.9 → 0.8, 1/5 → 1/4, 10.0 → 5.0, a rational's numerator by one);
- ``drop``: drop a term of a sum, a factor, or a statement;
- ``index``: off-by-one in an index or a range bound;
- ``negate``: negate an expression or a condition;
- ``swap``: swap two arguments (or two operands).

Each catalogue entry names the exact source text it replaces (``old``, which must occur exactly once in the file,
or once on the line holding ``anchor``) and its replacement (``new``); a mutant whose ``old`` is not found is
reported as ``stale`` (the source changed) and is not scored. Mutants judged equivalent (no observable behaviour
can differ) carry ``equivalent`` with the reason; they run like the others but are left out of the score.

The tests are run with ``-x`` and the repository's default markers (slow tests excluded), with
``PYTHONDONTWRITEBYTECODE=1`` so no mutant's bytecode is cached, and the file's original bytes and timestamps are
restored after each run (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass, field
from pathlib import Path

# --- Test groups: which default-suite files exercise which part of the core --------------------------------------

NOT_COMPILED = ["--deselect", "tests/test_gq_quadrature.py::test_compiled_field_dense_output_and_gq"]  # 70 s of JIT
NOT_SMOKE = ["--deselect", "tests/test_gqtorch_quadrature.py::test_benchmark_smoke"]  # a benchmark script's run
TESTS = {
    "tableau": ["tests/test_tableau.py", "tests/test_oracle_controller.py", "tests/test_linear_closed_form.py",
                "tests/test_gqtorch_torchdiffeq_problems.py"],
    "controller": ["tests/test_oracle_controller.py", "tests/test_linear_closed_form.py", "tests/test_lockstep.py",
                   "tests/test_gqtorch_torchdiffeq_problems.py"],
    "torch_controller": ["tests/test_gqtorch_torchdiffeq_problems.py", "tests/test_lockstep.py"],
    "quadrature": ["tests/test_quadrature.py", "tests/test_gq_quadrature.py", *NOT_COMPILED],
    "kronrod": ["tests/test_quadrature.py", "tests/test_gq_quadrature.py", *NOT_COMPILED],
    "panels": ["tests/test_gqtorch_quadrature.py", "tests/test_gq_auto.py", *NOT_SMOKE],
    "refinement": ["tests/test_gq_quadrature.py", "tests/test_gqtorch_quadrature.py", *NOT_COMPILED, *NOT_SMOKE],
    "gq": ["tests/test_gq_quadrature.py", "tests/test_gqtorch_quadrature.py", *NOT_COMPILED, *NOT_SMOKE],
    "adjoint": ["tests/test_oracle.py", "tests/test_gradients.py"],
    "torch_gq": ["tests/test_gqtorch_quadrature.py", "tests/test_gqtorch_gradients.py", *NOT_SMOKE],
    "torch_refinement": ["tests/test_gqtorch_quadrature.py", *NOT_SMOKE],
}


@dataclass
class Mutant:
    id: str
    file: str
    op: str
    old: str
    new: str
    tests: str
    anchor: str = ""
    equivalent: str = ""  # the reason, for a mutant no test can kill


def m(op, old, new, anchor="", equivalent=""):
    """One catalogue entry: its id, file and test group come from the group around it in ``GROUPS``."""
    return dict(op=op, old=old, new=new, anchor=anchor, equivalent=equivalent)


# --- The catalogue -------------------------------------------------------------------------------------------------

GROUPS = [  # (file, test group, {mutant id: entry}), in catalogue order
    # tableaux: one coefficient, node or weight of each adaptive pair, the dense-output basis
    ("gqref/tableau.py", "tableau", {
        "tab-dopri5-a": m("constant", "[F(3, 40), F(9, 40)]", "[F(3, 40), F(9, 41)]"),
        "tab-dopri5-c": m("constant", "F(3, 10), F(4, 5), F(8, 9)", "F(3, 10), F(4, 5), F(7, 9)"),
        "tab-dopri5-blow": m("constant", "F(649, 6300), F(1, 60)", "F(649, 6300), F(1, 61)"),
        "tab-dopri5-bmid": m("constant", "F(11237099, 235043384)", "F(11237098, 235043384)"),
        "tab-scipy-blow": m("constant", "F(187, 2100), F(1, 40)", "F(187, 2100), F(1, 41)"),
        "tab-bosh3-blow": m("constant", "F(7, 24), F(1, 4), F(1, 3), F(1, 8)", "F(7, 24), F(1, 4), F(1, 3), F(1, 9)"),
        "tab-bosh3-a": m("constant", "[F(2, 9), F(1, 3), F(4, 9)]", "[F(2, 9), F(1, 3), F(5, 9)]"),
        "tab-fehlberg-b": m("constant", "b=(F(1, 512), F(255, 256), F(1, 512))",
            "b=(F(1, 512), F(255, 256), F(1, 256))"),
        "tab-fehlberg-order": m("constant", "    order_low=1,\n    b_mid=(F(0), F(1, 2), F(0)),",
            "    order_low=2,\n    b_mid=(F(0), F(1, 2), F(0)),"),
        "tab-heun-blow": m("swap", "b_low=(F(0), F(1)),", "b_low=(F(1), F(0)),"),
        "tab-heun-bmid": m("constant", "b_mid=(F(1, 2), F(0)),", "b_mid=(F(1, 3), F(0)),"),
        "tab-dopri8-b": m("constant", "F(-528747749, 2220607170), F(1, 4), F(0),",
            "F(-528747749, 2220607170), F(1, 5), F(0),"),
        "tab-dopri8-order": m("constant", "    order_low=7,\n    b_mid=_dopri8_dense",
            "    order_low=6,\n    b_mid=_dopri8_dense"),
        "tab-dopri8-dense": m("constant", "\"-6.3448349392860401388\"", "\"-6.3448349392860401288\"",
            equivalent="a change of 1e-17 in a coefficient of size 6.3 (float64 ulp 9e-16): the float tableau is "
                       "bit for bit the same, and the exact mid-point conditions move by 1.6e-19, inside the 1e-17 "
                       "to which the published 20-digit coefficients satisfy them"),
        "tab-tsit5-c": m("constant", "F(161, 1000), F(327, 1000), F(9, 10)", "F(161, 1000), F(328, 1000), F(9, 10)"),
        "tab-tsit5-e": m("drop", "b_low=tuple(x - e for x, e in zip(_TSIT5_B4, _TSIT5_E)),",
            "b_low=tuple(x - 0 * e for x, e in zip(_TSIT5_B4, _TSIT5_E)),"),
        "tab-tsit5-root": m("constant", "_TSIT5_B1_ROOT = F(\"1.329989018975412\")",
            "_TSIT5_B1_ROOT = F(\"1.3299890189751412\")"),
        "tab-interp": m("constant", "(F(-8), F(-8), F(16), F(-2), F(2)),", "(F(-8), F(-8), F(16), F(-2), F(3)),"),
        "tab-fsal": m("compare", "return self.b[-1] == 0 and", "return self.b[-1] != 0 and"),
        "tab-errw": m("arith", "return tuple(x - y for x, y in zip(self.b, self.b_low))",
            "return tuple(y - x for x, y in zip(self.b, self.b_low))"),
    }),
    # controller constants and rules (gqref, read by both twins)
    ("gqref/controller.py", "controller", {
        "ctl-safety": m("constant", "SAFETY = 0.9", "SAFETY = 0.8"),
        "ctl-ifactor": m("constant", "IFACTOR = 10.0", "IFACTOR = 5.0"),
        "ctl-dfactor": m("constant", "DFACTOR = 0.2", "DFACTOR = 0.25"),
        "ctl-accept-td": m("compare", "return ratio <= 1.0 if kind", "return ratio < 1.0 if kind"),
        "ctl-accept-scipy": m("compare", "else ratio < 1.0", "else ratio <= 1.0"),
        "ctl-td-zero": m("constant", "            return dt * ifactor\n", "            return dt * 5.0\n"),
        "ctl-td-shrink": m("compare", "shrink_limit = 1.0 if ratio < 1.0 else dfactor",
            "shrink_limit = 1.0 if ratio <= 1.0 else dfactor"),
        "ctl-td-shrink-const": m("constant", "shrink_limit = 1.0 if ratio < 1.0 else dfactor",
            "shrink_limit = 0.9 if ratio < 1.0 else dfactor"),
        "ctl-td-exponent": m("index", "safety / ratio ** (1.0 / (order_low + 1))",
            "safety / ratio ** (1.0 / (order_low + 2))"),
        "ctl-td-minmax": m("swap",
            "return dt * min(ifactor, max(safety / ratio ** (1.0 / (order_low + 1)), shrink_limit))",
            "return dt * max(ifactor, min(safety / ratio ** (1.0 / (order_low + 1)), shrink_limit))"),
        "ctl-scipy-exponent": m("negate", "exponent = -1.0 / (order_low + 1)", "exponent = 1.0 / (order_low + 1)"),
        "ctl-scipy-cap": m("drop", "            factor = min(1.0, factor)\n", "            pass\n"),
        "ctl-scipy-reject": m("swap", "return dt * max(dfactor, safety * ratio**exponent)",
            "return dt * min(dfactor, safety * ratio**exponent)"),
        "ctl-rtol-scale": m("swap", "scale[i] = atol[i] + rtol * max(abs(y0[i]), abs(y1[i]))",
            "scale[i] = atol[i] + rtol * min(abs(y0[i]), abs(y1[i]))"),
        "ctl-rms-mean": m("drop", "return np.sqrt(total / n)", "return np.sqrt(total)"),
        "ctl-mixed-count": m("constant", "counts[j] += 1.0", "counts[j] += 2.0"),
        "ctl-init-frac": m("constant", "INITIAL_STEP_FRACTION = 0.01", "INITIAL_STEP_FRACTION = 0.02"),
        "ctl-init-growth": m("constant", "INITIAL_STEP_GROWTH_LIMIT = 100.0", "INITIAL_STEP_GROWTH_LIMIT = 10.0"),
        "ctl-init-small": m("constant", "INITIAL_STEP_SMALL_NORM = 1e-5", "INITIAL_STEP_SMALL_NORM = 1e-4"),
        "ctl-init-exp": m("index", "h1 = (INITIAL_STEP_FRACTION / max(d1, d2)) ** (1.0 / (order_low + 1))",
            "h1 = (INITIAL_STEP_FRACTION / max(d1, d2)) ** (1.0 / order_low)"),
        "ctl-init-cap": m("drop", "        h = min(h, interval)\n", "        pass\n"),
        "ctl-scipy-ulps": m("constant", "SCIPY_MIN_STEP_ULPS = 10.0", "SCIPY_MIN_STEP_ULPS = 1.0"),
    }),
    # the adaptive loops
    ("gqref/adaptive.py", "controller", {
        "loop-reject-flag": m("negate", "rejected_before = False if accepted else True",
            "rejected_before = True if accepted else False"),
        "loop-clip": m("compare", "clipped = t_hi + dt > s_end", "clipped = t_hi + dt >= s_end",
            equivalent="when t_hi + dt == s_end exactly, both branches give dt = s_end - t_hi and t_next = s_end"),
        "loop-minstep": m("compare", "accepted = accepts(kind, ratio) or (kind != SCIPY and dt <= min_step)",
            "accepted = accepts(kind, ratio) or (kind != SCIPY and dt < min_step)"),
        "loop-fsal-copy": m("index", "k[0, m] = k[last, m]", "k[0, m] = k[last - 1, m]"),
        "loop-clamp": m("swap", "dt = min(max(dt, min_step), max_step)\n                if not (t_hi",
            "dt = max(min(dt, min_step), max_step)\n                if not (t_hi"),
        "loop-step-t": m("index", "if on_step and i_step < n_step_t - 1:", "if on_step and i_step < n_step_t - 2:"),
        "loop-scipy-repr": m("drop", "dt = (t_hi + dt) - t_hi  # scipy steps", "dt = dt  # scipy steps"),
    }),
    ("gqref/runge_kutta.py", "controller", {
        "step-nudge": m("negate", "t_end_stage = one_ulp(t1, -np.inf, y0.itemsize == 4)",
            "t_end_stage = one_ulp(t1, np.inf, y0.itemsize == 4)"),
        # the error estimate both steps share (was dopri5_step's own loop)
        "step-err": m("swap", "acc += k[j, i] * (dt * e[j])\n", "acc += k[j, i] * (dt * e[j - 1])\n"),
    }),
    # gqtorch's loop and controller
    ("gqtorch/adaptive.py", "torch_controller", {
        "tloop-accept": m("compare", "accepted = ratio <= 1.0 or dt <= min_step",
            "accepted = ratio < 1.0 or dt <= min_step"),
        "tloop-reject-flag": m("negate", "rejected_before = not accepted", "rejected_before = accepted",
            equivalent="torchdiffeq's next_step (kind TORCHDIFFEQ) never reads rejected_before; only scipy's rule "
                       "does"),
        "tloop-fsal": m("index", "f_next = k[last]", "f_next = k[last - 1]"),
        "tloop-clamp": m("swap", "        dt = min(max(dt, min_step), max_step)\n        rejected_before",
            "        dt = max(min(dt, min_step), max_step)\n        rejected_before"),
    }),
    ("gqtorch/controller.py", "torch_controller", {
        "tctl-init-exp": m("index", "h1 = (INITIAL_STEP_FRACTION / max(d1, d2)) ** (1.0 / (order_low + 1))",
            "h1 = (INITIAL_STEP_FRACTION / max(d1, d2)) ** (1.0 / (order_low + 2))"),
        "tctl-init-growth": m("drop", "return min(INITIAL_STEP_GROWTH_LIMIT * h0, h1), True, True",
            "return h1, True, True"),
        "tctl-scale": m("swap", "scale = torch.add(atol, torch.maximum(y0_abs, y1_abs), alpha=rtol)",
            "scale = torch.add(atol, torch.minimum(y0_abs, y1_abs), alpha=rtol)"),
        "tctl-block": m("constant", "weights[r, starts[j]:starts[j] + sizes[j]] = 1.0 / sizes[j]",
            "weights[r, starts[j]:starts[j] + sizes[j]] = 1.0 / (sizes[j] + 1)"),
        "tctl-rms": m("drop", "return torch.linalg.vector_norm(x).mul_(1.0 / math.sqrt(x.numel()))",
            "return torch.linalg.vector_norm(x)"),
    }),
    # quadrature: Gauß–Legendre, the node rule, Kronrod
    ("gqref/quadrature.py", "quadrature", {
        "q-half": m("arith", "half = 0.5 * (b - a)", "half = 0.5 * (b + a)"),
        "q-mid": m("arith", "mid = 0.5 * (a + b)", "mid = 0.5 * (a - b)"),
        "q-ceil": m("drop", "return int(max(1, math.ceil(share)))", "return int(max(1, share))"),
        "q-cap": m("compare", "if not share < max_nodes:", "if not share <= max_nodes:",
            equivalent="at share == max_nodes (an integer) both branches return max_nodes: ceil(share) = share"),
        "q-share": m("swap", "share = gtol * nfe * abs(t_next - t_prev) / abs(t_last - t_first)",
            "share = gtol * nfe * abs(t_last - t_first) / abs(t_next - t_prev)"),
    }),
    ("gqref/kronrod.py", "kronrod", {
        "k-degree": m("constant", "return 3 * n + 1 if n % 2 == 0 else 3 * n + 2",
            "return 3 * n + 1 if n % 2 == 0 else 3 * n + 1"),
        "k-beta": m("constant", "beta[1:] = k[1:] ** 2 / (4.0 * k[1:] ** 2 - 1.0)",
            "beta[1:] = k[1:] ** 2 / (4.0 * k[1:] ** 2 + 1.0)"),
        "k-weights": m("constant", "weights = b[0] * vectors[0, order] ** 2",
            "weights = 2.0 * b[0] * vectors[0, order] ** 2"),
        "k-gauss-pos": m("index", "gauss[1::2] = gauss_weights", "gauss[0:-1:2] = gauss_weights[:n]"),
        "k-abs": m("drop", "    return mid + half * nodes, abs(half) * kronrod, abs(half) * gauss",
            "    return mid + half * nodes, half * kronrod, abs(half) * gauss"),
    }),
    # the auto rule's panels
    ("gqref/panels.py", "panels", {
        "p-child-min": m("swap", "return max(STEP_NODES, min(self.n, STEP_NODES * steps))",
            "return min(STEP_NODES, max(self.n, STEP_NODES * steps))"),
        "p-split-mid": m("index", "k = len(self.cuts) // 2",
            "k = len(self.cuts) // 2 - 1 if len(self.cuts) > 1 else 0"),
        "p-first-min": m("constant", "FIRST_ROUND_MIN_NODES", "FIRST_ROUND_MIN_NODES + 1",
            anchor="return [max(FIRST_ROUND_MIN_NODES"),
        "p-error": m("drop", "np.abs((self.kronrod - self.gauss).sum(axis=0))", "np.abs(self.kronrod.sum(axis=0))"),
        "p-roundoff": m("constant", "roundoff = ROUNDOFF_ULPS * np.finfo(np.float64).eps",
            "roundoff = 0.0 * np.finfo(np.float64).eps"),
        "p-target": m("swap", "target[block] = np.maximum(atol + rtol * scale, roundoff[block])",
            "target[block] = np.minimum(atol + rtol * scale, roundoff[block])"),
        "p-scale-floor": m("drop", "scale = max(np.max(np.abs(integral[block]), initial=0.0), floor)",
            "scale = np.max(np.abs(integral[block]), initial=0.0)"),
        "p-budget": m("compare", "over = np.flatnonzero(extra - first_round > max_nodes)",
            "over = np.flatnonzero(extra - first_round >= max_nodes)"),
        "p-reuse": m("compare", "done.worst <= REUSE_MARGIN", "done.worst <= 10 * REUSE_MARGIN"),
    }),
    ("gqref/refinement.py", "panels", {  # the split rule the auto rule shares (gqref.refinement.panels_to_split)
        "p-chosen": m("compare", "np.argmax(left <= SPLIT_BUDGET)) + 1 if np.any(left <= SPLIT_BUDGET)",
            "np.argmax(left <= SPLIT_BUDGET)) + 0 if np.any(left <= SPLIT_BUDGET)"),
    }),
    ("gqref/panels.py", "panels", {
        "p-width": m("constant", "return 2 * self.n + 1", "return 2 * self.n + 2"),
    }),
    # adaptive Gauß–Kronrod (gqref.refinement)
    ("gqref/refinement.py", "refinement", {
        "r-split": m("constant", "SPLIT_BUDGET = 0.5", "SPLIT_BUDGET = 0.9"),
        "r-error-gk": m("swap", "integral, error = g_all.sum(axis=0), np.abs(np.array(done_d).sum(axis=0))",
            "integral, error = g_all.sum(axis=0), np.abs(np.array(done_d)).sum(axis=0)"),
        "r-cut": m("constant", "            cut = 0.5 * (a + b)\n", "            cut = 0.4 * (a + b)\n"),
        "r-returns-g": m("swap", "g_all, e_all = np.array(done_g), np.abs(np.array(done_d))",
            "g_all, e_all = np.array(done_g) + np.array(done_d), np.abs(np.array(done_d))"),
        "r-floor": m("constant", "ROUNDOFF_FLOOR = ROUNDOFF_ULPS * np.finfo(np.float64).eps",
            "ROUNDOFF_FLOOR = 1e4 * ROUNDOFF_ULPS * np.finfo(np.float64).eps"),
        "r-limit": m("compare", "over = self.nodes_used - self.first_round > self.max_refinement_nodes",
            "over = self.nodes_used > self.max_refinement_nodes"),
        "r-kronrod-n": m("constant", "DEFAULT_KRONROD_N = STEP_NODES", "DEFAULT_KRONROD_N = STEP_NODES + 1"),
    }),
    # GQ sweeps (gqref)
    ("gqref/rules.py", "gq", {
        "g-step-nodes": m("constant", "STEP_NODES = 3", "STEP_NODES = 2"),
        "g-paper-c": m("constant", "PAPER_C = 0.1", "PAPER_C = 0.2"),
    }),
    ("gqref/gq.py", "gq", {
        "g-orientation": m("negate", "orientation = np.sign(t[i] - t[i - 1])",
            "orientation = np.sign(t[i - 1] - t[i])"),
    }),
    ("gqref/dense.py", "gq", {  # the step panels both twins' GQ read (gqref.dense.step_panels)
        "g-clip": m("index", "ends[-1] = t[g]", "ends[-1] = t[g + 1]"),
    }),
    ("gqref/gq.py", "gq", {
        "g-reanchor": m("drop", "back.ys[-1][self.size:] + self.dL_dy[i - 1].ravel()", "back.ys[-1][self.size:]"),
        "g-incoming": m("negate", "self.dL_dt0 -= incoming", "self.dL_dt0 += incoming"),
        "g-step-half": m("arith", "    half = 0.5 * (hi - lo)\n    times = (0.5 * (lo + hi))[:, None]",
            "    half = 0.5 * (lo - hi)\n    times = (0.5 * (lo + hi))[:, None]"),
        "g-nfe": m("drop", "sweep.nfe += n  # each node", "sweep.nfe += 0  # each node"),
        "g-norm": m("swap", "self.norm = ErrorNorm(\"mixed\", blocks=(self.size, self.size))",
            "self.norm = ErrorNorm(\"rms\")"),
    }),
    # the backsolve adjoint (gqref)
    ("gqref/adjoint.py", "adjoint", {
        "adj-seminorm": m("negate", "mask = (True, True, True, *(not seminorm for _ in param_blocks))",
            "mask = (True, True, True, *(seminorm for _ in param_blocks))"),
        "adj-incoming": m("negate", "x[0] -= incoming", "x[0] += incoming"),
        "adj-reanchor": m("drop", "x[a] += dL_dy[i - 1].ravel()", "pass"),
        "adj-blocks": m("swap", "blocks = (1, state_size, state_size, *param_blocks)",
            "blocks = (state_size, 1, state_size, *param_blocks)"),
    }),
    # GQ sweeps (gqtorch)
    ("gqtorch/gq.py", "torch_gq", {
        "tg-orientation": m("negate", "orientation = math.copysign(1.0, t[i] - t[i - 1])",
            "orientation = math.copysign(1.0, t[i - 1] - t[i])"),
        "tg-half": m("arith", "half, mid = 0.5 * (t[i - 1] - t[i]), 0.5 * (t[i] + t[i - 1])",
            "half, mid = 0.5 * (t[i] - t[i - 1]), 0.5 * (t[i] + t[i - 1])"),
        "tg-step-half": m("arith", "    half = 0.5 * (hi - lo)\n    times = (0.5 * (lo + hi))[:, None] + half",
            "    half = 0.5 * (hi + lo)\n    times = (0.5 * (lo + hi))[:, None] + half"),
        "tg-nfe": m("drop", "stats.nfe_backward = sweep.nfe + int(sum(nodes_used))", "stats.nfe_backward = sweep.nfe"),
    }),
    ("gqtorch/refinement.py", "torch_refinement", {
        "tr-floor": m("constant", "floor = ROUNDOFF_ULPS * torch.finfo(dtype).eps",
            "floor = 0.0 * torch.finfo(dtype).eps"),
        "tr-error": m("swap", "error = done_d.sum(dim=0).abs()", "error = done_d.abs().sum(dim=0)"),
        # stale since the host side (panels, cuts) is gqref's PanelRounds for both twins: r-cut mutates it
        "tr-cut": m("constant", "            cut = 0.5 * (a + b)\n", "            cut = 0.4 * (a + b)\n"),
    }),
    ("gqtorch/panels.py", "torch_gq", {
        "tp-diff": m("swap", "row = self._weighted(panel.group, times, (wk, wk - wg))",
            "row = self._weighted(panel.group, times, (wk, wg - wk))",
            equivalent="D_p enters only through |Σ_p D_p| and |D_p|: the sign of every D_p flips together"),
        "tp-weights": m("swap", "row = self._weighted(panel.group, times, (wk, wk - wg))",
            "row = self._weighted(panel.group, times, (wg, wk - wg))"),
    }),
]
CATALOGUE = [Mutant(id, file, tests=tests, **entry) for file, tests, entries in GROUPS
             for id, entry in entries.items()]


# --- Operators, for --generate ---------------------------------------------------------------------------------------

SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*", "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=", "!=": "=="}
OPERATOR_OF = {"+": "arith", "-": "arith", "*": "arith", "/": "arith", "<": "compare", "<=": "compare",
               ">": "compare", ">=": "compare", "==": "compare", "!=": "compare"}


def generate(path: Path) -> list[dict]:
    """Every mechanical single-point candidate in ``path``: operator flips, constants, negations, index ±1."""
    source = path.read_text()
    lines = source.splitlines(keepends=True)
    out = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    for i, tok in enumerate(tokens):
        (row, col), (_, end) = tok.start, tok.end
        line = lines[row - 1]
        if line.lstrip().startswith(("#", '"""')) or tok.type == tokenize.STRING:
            continue
        if tok.type == tokenize.OP and tok.string in SWAPS:
            prev = tokens[i - 1]
            if tok.string == "-" and prev.type == tokenize.OP and prev.string in "([,=:":
                out.append(dict(op="negate", line=row, old=line, new=line[:col] + line[end:]))
                continue
            out.append(dict(op=OPERATOR_OF[tok.string], line=row, old=line,
                            new=line[:col] + SWAPS[tok.string] + line[end:]))
        elif tok.type == tokenize.NUMBER:
            try:
                value = float(tok.string)
            except ValueError:
                continue
            if tokens[i - 1].string == "[" or tokens[i + 1].string == "]":
                new = str(int(value) + 1) if value.is_integer() else repr(value)
                out.append(dict(op="index", line=row, old=line, new=line[:col] + new + line[end:]))
            else:
                new = repr(value * 0.9 if value else 1.0)
                out.append(dict(op="constant", line=row, old=line, new=line[:col] + new + line[end:]))
        elif tok.type == tokenize.NAME and tok.string in ("min", "max") and tokens[i + 1].string == "(":
            out.append(dict(op="swap", line=row, old=line,
                            new=line[:col] + ("max" if tok.string == "min" else "min") + line[end:]))
        elif tok.type == tokenize.NAME and tok.string in ("if", "while") and tokens[i + 1].string != "not":
            out.append(dict(op="negate", line=row, old=line,
                            new=line[:end] + " not (" + line[end:].strip().rstrip(":") + "):\n"))
    return out


# --- Running ----------------------------------------------------------------------------------------------------------

@dataclass
class Result:
    id: str
    file: str
    op: str
    status: str  # killed | timeout | survived | stale | error
    seconds: float
    equivalent: str = ""
    killer: str = ""
    diff: str = ""
    tests: list[str] = field(default_factory=list)


def apply(source: str, mutant: Mutant) -> str | None:
    """The mutated source, or None when ``old`` is not found exactly once (in the anchored line, if any)."""
    if mutant.anchor:
        lines = source.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if mutant.anchor in line]
        if len(hits) != 1 or lines[hits[0]].count(mutant.old) != 1:
            return None
        lines[hits[0]] = lines[hits[0]].replace(mutant.old, mutant.new)
        return "".join(lines)
    if source.count(mutant.old) != 1:
        return None
    return source.replace(mutant.old, mutant.new)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(text)
        name = handle.name
    os.replace(name, path)


def killer_of(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0]
    return ""


def run_one(repo: Path, mutant: Mutant, tests: list[str], timeout: float, python: str) -> Result:
    target = repo / mutant.file
    original = target.read_bytes()
    stat = target.stat()
    mutated = apply(original.decode(), mutant)
    if mutated is None:
        return Result(mutant.id, mutant.file, mutant.op, "stale", 0.0, mutant.equivalent, tests=tests)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "CI": os.environ.get("CI", "true"),
           "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(repo / ".numba_cache"))}
    command = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *tests]
    start = time.monotonic()
    try:
        target.write_text(mutated)
        process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            code = None
    finally:
        target.write_bytes(original)
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    seconds = time.monotonic() - start
    if code is None:
        status = "timeout"
    elif code == 0:
        status = "survived"
    elif code in (1, 2):  # test failures, or a collection/import error the mutant caused
        status = "killed"
    else:
        status = "error"
    tail = "\n".join(output.splitlines()[-3:])
    return Result(mutant.id, mutant.file, mutant.op, status, round(seconds, 1), mutant.equivalent,
                  killer=killer_of(output) or (tail if status == "error" else ""), tests=tests,
                  diff=f"- {mutant.old.strip()}\n+ {mutant.new.strip()}")


def summarise(results: list[Result]) -> dict:
    scored = [r for r in results if not r.equivalent and r.status in ("killed", "timeout", "survived")]
    killed = [r for r in scored if r.status in ("killed", "timeout")]
    return {
        "scored": len(scored),
        "killed": len(killed),
        "killed_by_timeout": sum(r.status == "timeout" for r in scored),
        "score": round(len(killed) / len(scored), 4) if scored else None,
        "survivors": [r.id for r in scored if r.status == "survived"],
        "equivalent": {r.id: r.equivalent for r in results if r.equivalent},
        "equivalent_killed": [r.id for r in results if r.equivalent and r.status in ("killed", "timeout")],
        "stale": [r.id for r in results if r.status == "stale"],
        "errors": [r.id for r in results if r.status == "error"],
    }


def markdown(summary: dict, results: list[Result]) -> str:
    lines = [f"# Mutation pass: {summary['killed']}/{summary['scored']} killed (score {summary['score']}), "
             f"{summary['killed_by_timeout']} of them by timeout", "",
             "| id | file | op | status | s | killer / reason |", "|---|---|---|---|---|---|"]
    for r in results:
        note = f"equivalent: {r.equivalent}" if r.equivalent else r.killer
        lines.append(f"| {r.id} | {r.file} | {r.op} | {r.status} | {r.seconds} | {note.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the clone to mutate (files are restored)")
    parser.add_argument("--files", nargs="*", default=None, help="only mutants in these files (repo-relative)")
    parser.add_argument("--tests", nargs="*", default=None, help="run these test files for every mutant")
    parser.add_argument("--extra-tests", nargs="*", default=[], help="append these test files to every mutant's")
    parser.add_argument("--ids", nargs="*", default=None, help="only these mutant ids")
    parser.add_argument("--operators", nargs="*", default=None,
                        help="only these operators: arith compare constant drop index negate swap")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (past it: killed by timeout)")
    parser.add_argument("--out", type=Path, default=None, help="summary path stem (writes .json and .md)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--generate", type=Path, default=None, help="print candidate mutants of a file and exit")
    args = parser.parse_args(argv)

    if args.generate is not None:
        for candidate in generate(args.generate):
            print(f"{args.generate}:{candidate['line']}: {candidate['op']}: {candidate['new'].strip()}")
        return 0
    chosen = [m for m in CATALOGUE
              if (args.files is None or m.file in args.files) and (args.ids is None or m.id in args.ids)
              and (args.operators is None or m.op in args.operators)]
    if args.list:
        for m in chosen:
            print(f"{m.id:22} {m.file:22} {m.op:9} {m.old.strip()!r} -> {m.new.strip()!r}"
                  + (f"  [equivalent: {m.equivalent}]" if m.equivalent else ""))
        return 0
    repo = args.repo.resolve()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *sorted({m.file for m in chosen})], cwd=repo,
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        print(f"refusing: {repo} has uncommitted changes in the files to mutate:\n{dirty}", file=sys.stderr)
        return 2
    results: list[Result] = []

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    for number, mutant in enumerate(chosen, 1):
        tests = list(args.tests if args.tests is not None else TESTS[mutant.tests]) + list(args.extra_tests)
        result = run_one(repo, mutant, tests, args.timeout, args.python)
        results.append(result)
        print(f"[{number}/{len(chosen)}] {result.id}: {result.status} ({result.seconds} s) {result.killer}",
              flush=True)
        if args.out is not None:
            summary = summarise(results)
            write_atomic(args.out.with_suffix(".json"),
                         json.dumps({"summary": summary, "results": [asdict(r) for r in results]}, indent=1))
            write_atomic(args.out.with_suffix(".md"), markdown(summary, results))
    summary = summarise(results)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
