"""Run torchdiffeq 0.2.5's own test suite, unchanged, against gqtorch, and count results per subtest.

``python -m validation.compat.torchdiffeq_suite --tests DIR [--adjoint gqtorch|gq] [--json OUT]``

``DIR`` is the ``tests/`` folder of a torchdiffeq 0.2.5 checkout (``git clone https://github.com/rtqichen/torchdiffeq
-b v0.2.5``, or the sdist); without ``--tests`` the ``TORCHDIFFEQ_TESTS`` environment variable names it. The tests
are read where they lie, never copied into this repository.

How: a shim package named ``torchdiffeq`` is written to a temporary folder; it binds torchdiffeq's names to gqtorch
(``odeint``; ``odeint_adjoint`` to ``gqtorch.odeint_adjoint`` with ``--adjoint gqtorch`` or to
``gqtorch.odeint_adjoint_gq`` at its defaults with ``--adjoint gq``; ``odeint_event``/``odeint_dense`` when gqtorch
has them). A subprocess (:mod:`validation.compat._child`) puts the shim first on ``sys.path``, checks that
``import torchdiffeq`` finds it, and runs the ``*_tests.py`` modules with unittest under :class:`SubtestResult`,
which records every ``self.subTest(...)`` block as one result (a test without subtests is one result; an error
outside a test's subtests is one more). Each subtest (and each stretch between them) gets ``--timeout`` seconds.

Output: a table per test (passed/total), the failures grouped by message, and the pass rate with and without
:data:`EXCLUDED` tests (those that read torchdiffeq internals no drop-in can have); ``--json`` writes every result.
Exit status: 0 when the suite ran (failing tests are the measurement, not an error), 1 when the subprocess died
(partial results are still reported), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import unittest
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from validation.harness.atomic import write_json_atomic

ENV_TESTS = "TORCHDIFFEQ_TESTS"
ADJOINT_MODES: dict[str, str] = {"gqtorch": "odeint_adjoint", "gq": "odeint_adjoint_gq"}
DEFAULT_PATTERN = "*_tests.py"
DEFAULT_TIMEOUT_S = 300.0
# test id -> why it cannot pass against any drop-in; counted, shown apart, and left out of the second pass rate
EXCLUDED: dict[str, str] = {
    "norm_tests.TestNorms.test_adjoint_norm": "reads torchdiffeq's internal autograd node",
}
REPO_ROOT = Path(__file__).resolve().parents[2]
HOW_TO_GET_TESTS = (
    "pass --tests DIR (or set TORCHDIFFEQ_TESTS) naming the tests/ directory of a torchdiffeq 0.2.5 checkout, "
    "e.g. `git clone --depth 1 -b v0.2.5 https://github.com/rtqichen/torchdiffeq` and use torchdiffeq/tests"
)

SHIM_SOURCE = '''"""torchdiffeq's names bound to {backend} by validation.compat.torchdiffeq_suite ({mode!r})."""

import {backend} as _gq

__version__ = "0.2.5"
GQ_ADJOINT_MODE = {mode!r}
odeint = _gq.odeint
odeint_adjoint = _gq.{adjoint}
BOUND = {{"odeint": "{backend}.odeint", "odeint_adjoint": "{backend}.{adjoint}"}}
__all__ = ["odeint", "odeint_adjoint"]
for _name in ("odeint_event", "odeint_dense"):  # only where gqtorch has them (being added)
    if hasattr(_gq, _name):
        globals()[_name] = getattr(_gq, _name)
        BOUND[_name] = "{backend}." + _name
        __all__.append(_name)
'''


class UsageError(Exception):
    """A bad command line: one line on stderr, exit status 2."""


# --------------------------------------------------------------------------------------------------- shim


def write_shim(folder: Path, mode: str, backend: str = "gqtorch") -> Path:
    """Write the ``torchdiffeq`` shim package into ``folder``; return the folder to put first on ``sys.path``.

    ``backend``: the module whose functions the shim re-exports (gqtorch; the harness's own test passes a stub, as
    importing gqtorch costs seconds).
    """
    if mode not in ADJOINT_MODES:
        raise UsageError(f"--adjoint must be one of {sorted(ADJOINT_MODES)}, got {mode!r}")
    package = Path(folder) / "torchdiffeq"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(SHIM_SOURCE.format(mode=mode, adjoint=ADJOINT_MODES[mode], backend=backend),
                                         encoding="utf-8")
    return Path(folder)


# --------------------------------------------------------------------------------------------------- results


def first_line(exc_info) -> str:
    """``Type: first line of the message`` of an exception triple."""
    exc_type, value, _ = exc_info
    text = str(value).strip().splitlines()
    return f"{exc_type.__name__}: {text[0]}" if text else exc_type.__name__


def _jsonable(value: Any) -> Any:
    # subtest parameters include torch dtypes and devices: keep JSON scalars, spell the rest as str
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class SubtestResult(unittest.TestResult):
    """A TestResult recording one entry per subtest (or per test without subtests) with its parameters.

    Each entry: ``test`` (the unittest id, e.g. ``odeint_tests.TestSolverError.test_odeint``), ``params`` (the
    subtest's keyword parameters, or None for the test itself), ``outcome`` (pass, fail, error, skip), ``message``
    (the exception's type and first line), ``seconds`` (since the previous entry of the test) and ``index`` (the
    entry's position in its test; subtests may repeat their parameters). ``on_entry``/``on_test_done`` are hooks for
    progress output and incremental saving.
    """

    def __init__(self, on_entry: Callable[[dict], None] | None = None,
                 on_test_done: Callable[[str, list[dict]], None] | None = None) -> None:
        super().__init__()
        self.entries: list[dict] = []
        self._current: list[dict] = []
        self._own: dict | None = None  # the test's own outcome (outside its subtests)
        self._mark = time.perf_counter()
        self._on_entry = on_entry
        self._on_test_done = on_test_done

    def _entry(self, test: unittest.TestCase, params: dict | None, outcome: str, message: str | None) -> dict:
        now = time.perf_counter()
        entry = {"test": test.id(), "params": params, "outcome": outcome, "message": message,
                 "seconds": round(now - self._mark, 3), "index": len(self._current)}
        self._mark = now
        return entry

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._current, self._own, self._mark = [], None, time.perf_counter()

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err) -> None:
        params = {str(k): _jsonable(v) for k, v in getattr(subtest, "params", {}).items()}
        if err is None:
            entry = self._entry(test, params, "pass", None)
        else:
            failed = issubclass(err[0], test.failureException)
            entry = self._entry(test, params, "fail" if failed else "error", first_line(err))
            entry["traceback"] = "".join(traceback.format_exception(*err))[-4000:]
        self._current.append(entry)
        if self._on_entry:
            self._on_entry(entry)

    def _set_own(self, test: unittest.TestCase, outcome: str, err=None, message: str | None = None) -> None:
        entry = self._entry(test, None, outcome, first_line(err) if err else message)
        if err is not None:
            entry["traceback"] = "".join(traceback.format_exception(*err))[-4000:]
        self._own = entry

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._set_own(test, "pass")

    def addFailure(self, test: unittest.TestCase, err) -> None:
        super().addFailure(test, err)
        self._set_own(test, "fail", err)

    def addError(self, test: unittest.TestCase, err) -> None:
        super().addError(test, err)
        self._set_own(test, "error", err)

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        if isinstance(test, unittest.TestCase) and hasattr(test, "params"):  # a skipped subtest
            params = {str(k): _jsonable(v) for k, v in test.params.items()}
            self._current.append(self._entry(test.test_case, params, "skip", reason))
        else:
            self._set_own(test, "skip", message=reason)

    def addExpectedFailure(self, test: unittest.TestCase, err) -> None:
        super().addExpectedFailure(test, err)
        self._set_own(test, "pass", message="expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._set_own(test, "fail", message="unexpected success")

    def stopTest(self, test: unittest.TestCase) -> None:
        super().stopTest(test)
        entries = list(self._current)
        own = self._own
        if own is None and not entries:  # e.g. a class-level setUp failure reported elsewhere
            own = self._entry(test, None, "error", "no outcome reported")
        # with subtests, the test's own success only repeats theirs; its own failure is one more result
        if own is not None and (not entries or own["outcome"] != "pass"):
            if entries:
                own["params"] = {"<outside subtests>": True}
            own["index"] = len(entries)
            entries.append(own)
            if self._on_entry:
                self._on_entry(own)
        self.entries.extend(entries)
        self._current, self._own = [], None
        if self._on_test_done:
            self._on_test_done(test.id(), entries)


# --------------------------------------------------------------------------------------------------- summary


def _is_excluded(test_id: str) -> str | None:
    return EXCLUDED.get(test_id)


def summarize(entries: Sequence[dict]) -> dict:
    """Counts per test and overall, with and without :data:`EXCLUDED` tests."""
    per_test: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = per_test.setdefault(e["test"], {"pass": 0, "fail": 0, "error": 0, "skip": 0, "total": 0,
                                              "seconds": 0.0, "excluded": _is_excluded(e["test"])})
        row[e["outcome"]] += 1
        row["total"] += 1
        row["seconds"] = round(row["seconds"] + e["seconds"], 3)

    def rate(rows: list[dict]) -> dict:
        passed = sum(r["pass"] for r in rows)
        counted = sum(r["total"] - r["skip"] for r in rows)  # skips are neither pass nor fail
        return {"passed": passed, "total": counted, "rate": passed / counted if counted else None}

    rows = list(per_test.values())
    return {"per_test": per_test, "all": rate(rows), "without_excluded": rate([r for r in rows if not r["excluded"]])}


# numbers, not digits inside names (heun2 and heun3 stay apart)
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def failure_groups(entries: Sequence[dict]) -> list[dict]:
    """Failed and errored results grouped by message with numbers masked (excluded tests left out), largest first."""
    groups: dict[str, dict] = {}
    for e in entries:
        if e["outcome"] not in ("fail", "error") or _is_excluded(e["test"]):
            continue
        message = e["message"] or ""
        key = _NUMBER.sub("#", message)[:200]
        group = groups.setdefault(key, {"key": key, "example": message, "count": 0, "tests": defaultdict(int)})
        group["count"] += 1
        group["tests"][e["test"]] += 1
    out = sorted(groups.values(), key=lambda g: -g["count"])
    for g in out:
        g["tests"] = dict(g["tests"])
    return out


def _percent(r: dict) -> str:
    return "n/a" if r["rate"] is None else f"{100 * r['rate']:.1f}%"


def format_summary(data: dict) -> str:
    """The human-readable report: per-test table, excluded tests, overall rates, failure groups."""
    meta, summary = data["meta"], data["summary"]
    lines = [f"torchdiffeq {meta['torchdiffeq_version']} tests from {meta['tests_dir']} against {meta['backend']} "
             f"(odeint_adjoint -> {meta['bound'].get('odeint_adjoint', '?')}; bound: "
             f"{', '.join(sorted(meta['bound']))})"]
    if not meta.get("complete", True):
        lines.append(f"INCOMPLETE: the test subprocess exited with status {meta.get('child_returncode')}")
    width = max([len(t) for t in summary["per_test"]] + [4])
    lines.append(f"{'test':<{width}}  {'passed/total':>12}  {'fail':>4}  {'error':>5}  {'skip':>4}  {'time':>8}")
    excluded_rows = []
    for test, row in summary["per_test"].items():
        if row["excluded"]:
            excluded_rows.append((test, row))
            continue
        counted = row["total"] - row["skip"]
        lines.append(f"{test:<{width}}  {str(row['pass']) + '/' + str(counted):>12}  {row['fail']:>4}  "
                     f"{row['error']:>5}  {row['skip']:>4}  {row['seconds']:>7.1f}s")
    outside = {e["test"] for e in data["results"] if e["params"] and "<outside subtests>" in e["params"]}
    for test, row in excluded_rows:
        # its code outside subtests (e.g. the user-passed adjoint norms) is real functionality: say how it went
        has_subtests = any(e["test"] == test and e["params"] is not None for e in data["results"])
        note = "; failed outside its subtests" if test in outside else "; the rest passed" if has_subtests else ""
        lines.append(f"excluded: {test} ({row['excluded']}): {row['pass']}/{row['total'] - row['skip']} "
                     f"passed{note}")
    a, w = summary["all"], summary["without_excluded"]
    lines.append(f"overall: {a['passed']}/{a['total']} passed ({_percent(a)}); "
                 f"without excluded: {w['passed']}/{w['total']} ({_percent(w)})")
    groups = data.get("failure_groups") or []
    if groups:
        lines.append("failures by message (excluded tests not listed):")
        for g in groups:
            where = ", ".join(f"{t} ({n})" for t, n in sorted(g["tests"].items(), key=lambda kv: -kv[1]))
            lines.append(f"  {g['count']:>4} x {g['example'][:240]}")
            lines.append(f"         in {where}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- driver


def resolve_tests_dir(tests: str | None) -> Path:
    """The tests folder from ``--tests`` or ``$TORCHDIFFEQ_TESTS``; :class:`UsageError` when missing or empty."""
    raw = tests if tests is not None else os.environ.get(ENV_TESTS)
    if not raw:
        raise UsageError(f"no tests directory given: {HOW_TO_GET_TESTS}")
    folder = Path(raw).expanduser()
    if not folder.is_dir():
        raise UsageError(f"tests directory {str(folder)!r} does not exist: {HOW_TO_GET_TESTS}")
    return folder.resolve()


def _git_revision() -> str | None:
    # best effort: which gqtorch was measured (a dirty tree is marked, since agents edit it while we run)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    return None


def run_suite(tests_dir: Path, mode: str = "gqtorch", *, pattern: str = DEFAULT_PATTERN,
              timeout_s: float = DEFAULT_TIMEOUT_S, select: Sequence[str] = (), verbose: bool = False,
              python: str = sys.executable, backend: str = "gqtorch") -> dict:
    """Run the suite in a subprocess against the shim; return ``{"meta", "summary", "failure_groups", "results"}``."""
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="gq-torchdiffeq-shim-") as tmp:
        shim = write_shim(Path(tmp) / "shim", mode, backend)
        out = Path(tmp) / "results.json"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(shim), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        # two shared cores: one thread per process unless the caller chose otherwise
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")
        cmd = [python, "-m", "validation.compat._child", "--shim", str(shim), "--tests", str(tests_dir),
               "--out", str(out), "--pattern", pattern, "--timeout", str(timeout_s)]
        cmd += [arg for s in select for arg in ("-k", s)]
        if verbose:
            cmd.append("--verbose")
        proc = subprocess.run(cmd, env=env, cwd=str(REPO_ROOT))
        child = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {"meta": {}, "results": []}
    results = child["results"]
    meta = {"torchdiffeq_version": "0.2.5", "tests_dir": str(tests_dir), "backend": backend, "adjoint_mode": mode,
            "bound": child["meta"].get("bound", {}), "gq_revision": _git_revision(), "pattern": pattern,
            "select": list(select), "timeout_s": timeout_s, "started_unix": round(started),
            "duration_s": round(time.time() - started, 1), "child_returncode": proc.returncode,
            "complete": proc.returncode == 0 and child["meta"].get("complete", False),
            "excluded": EXCLUDED, **{k: v for k, v in child["meta"].items() if k not in ("bound", "complete")}}
    return {"meta": meta, "summary": summarize(results), "failure_groups": failure_groups(results),
            "results": results}


def write_json(path: Path, data: dict) -> None:
    """Write atomically and durably (validation's one writer) so a reader never sees a part."""
    write_json_atomic(path, data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m validation.compat.torchdiffeq_suite",
                                     description="Run torchdiffeq 0.2.5's tests unchanged against gqtorch.")
    parser.add_argument("--tests", help=f"torchdiffeq 0.2.5's tests/ directory (default: ${ENV_TESTS})")
    parser.add_argument("--adjoint", choices=sorted(ADJOINT_MODES), default="gqtorch",
                        help="what torchdiffeq.odeint_adjoint becomes: gqtorch.odeint_adjoint (gqtorch) or "
                             "gqtorch.odeint_adjoint_gq at its defaults (gq)")
    parser.add_argument("--json", type=Path, help="write every result here (atomically)")
    parser.add_argument("--pattern", default=DEFAULT_PATTERN, help="test module file pattern (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds per subtest before it is recorded as an error (default %(default)s)")
    parser.add_argument("-k", dest="select", action="append", default=[],
                        help="run only tests whose id contains this string (repeatable)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every subtest as it ends")
    parser.add_argument("--backend", default="gqtorch", help=argparse.SUPPRESS)  # a stub, for the harness's test
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tests_dir = resolve_tests_dir(args.tests)
        if not any(tests_dir.glob(args.pattern)):
            raise UsageError(f"no {args.pattern} files in {str(tests_dir)!r}: {HOW_TO_GET_TESTS}")
        if args.timeout <= 0:
            raise UsageError(f"--timeout must be positive, got {args.timeout}")
        if args.json is not None and not args.json.parent.is_dir():  # fail now, not after an hour of tests
            raise UsageError(f"--json: folder {str(args.json.parent)!r} does not exist")
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    data = run_suite(tests_dir, args.adjoint, pattern=args.pattern, timeout_s=args.timeout, select=args.select,
                     verbose=args.verbose, backend=args.backend)
    print(format_summary(data))
    if args.json is not None:
        write_json(args.json, data)
    return 0 if data["meta"]["child_returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
