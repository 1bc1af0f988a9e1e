"""The subprocess of :mod:`validation.compat.torchdiffeq_suite`: run the tests against the shim, save every result.

Not a user command (the runner passes the shim and an output file). A subprocess so that the shim can shadow an
installed torchdiffeq from the first import on, and a crash or hang of one test leaves the runner alive with the
results saved so far (the output file is rewritten atomically after every test).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import unittest
from collections.abc import Iterator, Sequence
from pathlib import Path

from validation.compat.torchdiffeq_suite import SubtestResult, write_json


class SubtestTimeout(Exception):
    """Raised (by SIGALRM) in a subtest, or a stretch of a test between subtests, that ran past ``--timeout``."""


def _arm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, seconds)


def install_timeouts(seconds: float) -> None:
    """Give every subtest ``seconds``: the clock restarts at each ``subTest`` entry and exit (and at each test)."""

    def on_alarm(signum, frame) -> None:
        raise SubtestTimeout(f"no result within {seconds:g}s (--timeout)")

    signal.signal(signal.SIGALRM, on_alarm)
    original = unittest.TestCase.subTest

    @contextlib.contextmanager
    def timed_subtest(self: unittest.TestCase, *args, **params) -> Iterator[None]:
        with original(self, *args, **params):
            _arm(seconds)
            try:
                yield
            finally:
                _arm(seconds)  # the code after this subtest gets its own allowance

    unittest.TestCase.subTest = timed_subtest  # type: ignore[method-assign]


class TimedResult(SubtestResult):
    def __init__(self, seconds: float, **hooks) -> None:
        super().__init__(**hooks)
        self._seconds = seconds

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        _arm(self._seconds)

    def stopTest(self, test: unittest.TestCase) -> None:
        _arm(0)  # disarm before saving results
        super().stopTest(test)


def flatten(suite: unittest.TestSuite | unittest.TestCase) -> Iterator[unittest.TestCase]:
    if isinstance(suite, unittest.TestSuite):
        for item in suite:
            yield from flatten(item)
    else:
        yield suite


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.compat._child")
    parser.add_argument("--shim", type=Path, required=True)
    parser.add_argument("--tests", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pattern", default="*_tests.py")
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("-k", dest="select", action="append", default=[])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(args.shim))
    import torchdiffeq  # the shim: imported before discovery puts the tests folder first on sys.path

    shim_init = (args.shim / "torchdiffeq" / "__init__.py").resolve()
    if Path(torchdiffeq.__file__).resolve() != shim_init:
        print(f"error: `import torchdiffeq` found {torchdiffeq.__file__}, not the shim {shim_init}", file=sys.stderr)
        return 3
    meta = {"bound": dict(torchdiffeq.BOUND), "python_version": sys.version.split()[0], "complete": False}

    tests = list(flatten(unittest.defaultTestLoader.discover(str(args.tests), pattern=args.pattern,
                                                             top_level_dir=str(args.tests))))
    if args.select:  # loader errors (a module that fails to import) stay, so they are reported
        tests = [t for t in tests if any(s in t.id() for s in args.select) or "_FailedTest" in type(t).__name__]
    start = time.perf_counter()
    done = [0]

    def save(result: SubtestResult) -> None:
        torch = sys.modules.get("torch")  # imported by the backend and the tests; not by the harness's stub
        if torch is not None:
            meta.update(torch_version=torch.__version__, cuda=torch.cuda.is_available())
        write_json(args.out, {"meta": meta, "results": result.entries})

    def on_entry(entry: dict) -> None:
        if args.verbose:
            print(f"    {entry['outcome']:<5} {entry['test']} {entry['params']} ({entry['seconds']:.1f}s)"
                  + (f": {entry['message']}" if entry["message"] else ""), file=sys.stderr, flush=True)

    def on_test_done(test_id: str, entries: list[dict]) -> None:
        done[0] += 1
        passed = sum(e["outcome"] == "pass" for e in entries)
        print(f"[{done[0]}/{len(tests)}] {test_id}: {passed}/{len(entries)} passed "
              f"({sum(e['seconds'] for e in entries):.1f}s, {time.perf_counter() - start:.0f}s total)",
              file=sys.stderr, flush=True)
        save(result)

    install_timeouts(args.timeout)
    result = TimedResult(args.timeout, on_entry=on_entry, on_test_done=on_test_done)
    unittest.TestSuite(tests).run(result)
    meta["complete"] = True
    save(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
