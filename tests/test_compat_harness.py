"""The torchdiffeq-suite harness itself (validation.compat.torchdiffeq_suite), on a tiny fake tests folder.

No torchdiffeq tests are needed: the fake modules check that ``import torchdiffeq`` gives the shim, and produce a
known mix of passing, failing, erroring, timed-out and excluded results whose counts we assert. The shim re-exports a
stub backend, not gqtorch, so the subprocess starts in well under a second (importing gqtorch takes seconds).
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pytest

from validation.compat import torchdiffeq_suite as suite

FAKE_TESTS = '''
import time
import unittest

import stub_backend
import torchdiffeq


class TestFake(unittest.TestCase):
    def test_subtests(self):
        for x in (1, 2):
            with self.subTest(x=x):
                self.assertEqual(x, 1)  # x=1 passes, x=2 fails

    def test_error(self):
        raise RuntimeError("boom\\nsecond line")

    def test_shim(self):  # passes only against the shim bound to the backend
        self.assertEqual(torchdiffeq.__version__, "0.2.5")
        self.assertIs(torchdiffeq.odeint, stub_backend.odeint)
        self.assertIs(torchdiffeq.odeint_adjoint, stub_backend.odeint_adjoint)
        self.assertIs(torchdiffeq.odeint_event, stub_backend.odeint_event)
        self.assertFalse(hasattr(torchdiffeq, "odeint_dense"))

    def test_timeout(self):
        with self.subTest(slow=True):
            time.sleep(30)
'''

FAKE_EXCLUDED = '''
import unittest


class TestNorms(unittest.TestCase):
    def test_adjoint_norm(self):  # the id in suite.EXCLUDED
        with self.subTest(shape=()):
            raise AttributeError("'ViewBackward0' object has no attribute 'adjoint_options'")
        raise ValueError("outside the subtests")
'''


STUB_BACKEND = '''
def odeint(func, y0, t, **kwargs): ...
def odeint_adjoint(func, y0, t, **kwargs): ...
def odeint_adjoint_gq(func, y0, t, **kwargs): ...
def odeint_event(func, y0, t0, **kwargs): ...
'''


@pytest.fixture
def stub_backend(tmp_path: Path, monkeypatch) -> str:
    folder = tmp_path / "backend"
    folder.mkdir()
    (folder / "stub_backend.py").write_text(STUB_BACKEND)
    monkeypatch.setenv("PYTHONPATH", str(folder))  # the runner keeps the caller's PYTHONPATH after the shim
    monkeypatch.syspath_prepend(str(folder))
    return "stub_backend"


@pytest.fixture
def fake_tests(tmp_path: Path) -> Path:
    folder = tmp_path / "tests"
    folder.mkdir()
    (folder / "fake_tests.py").write_text(textwrap.dedent(FAKE_TESTS))
    (folder / "norm_tests.py").write_text(textwrap.dedent(FAKE_EXCLUDED))
    return folder


def test_counts_subtests_failures_errors_and_exclusions(fake_tests: Path, stub_backend: str, tmp_path: Path,
                                                        capsys) -> None:
    out = tmp_path / "results.json"
    args = ["--tests", str(fake_tests), "--json", str(out), "--timeout", "0.5", "--backend", stub_backend]
    assert suite.main(args) == 0
    data = json.loads(out.read_text())
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write: no temporary left

    by_test: dict[str, list[dict]] = {}
    for e in data["results"]:
        by_test.setdefault(e["test"], []).append(e)
    subtests = by_test["fake_tests.TestFake.test_subtests"]
    assert [(e["params"], e["outcome"]) for e in subtests] == [({"x": 1}, "pass"), ({"x": 2}, "fail")]
    assert subtests[1]["message"].startswith("AssertionError: 2 != 1")
    [error] = by_test["fake_tests.TestFake.test_error"]
    assert (error["params"], error["outcome"], error["message"]) == (None, "error", "RuntimeError: boom")
    assert [e["outcome"] for e in by_test["fake_tests.TestFake.test_shim"]] == ["pass"]
    [timed_out] = by_test["fake_tests.TestFake.test_timeout"]
    assert timed_out["outcome"] == "error" and timed_out["message"].startswith("SubtestTimeout")
    excluded = by_test["norm_tests.TestNorms.test_adjoint_norm"]
    assert [e["outcome"] for e in excluded] == ["error", "error"]  # its subtest, then the error after it
    assert excluded[1]["params"] == {"<outside subtests>": True}

    summary = data["summary"]
    assert summary["per_test"]["fake_tests.TestFake.test_subtests"]["pass"] == 1
    assert summary["all"] == {"passed": 2, "total": 7, "rate": 2 / 7}
    assert summary["without_excluded"] == {"passed": 2, "total": 5, "rate": 2 / 5}
    assert data["meta"]["bound"]["odeint_adjoint"] == "stub_backend.odeint_adjoint"
    assert data["meta"]["complete"] is True
    messages = {g["example"] for g in data["failure_groups"]}
    assert "RuntimeError: boom" in messages
    assert not any("adjoint_options" in m for m in messages)  # excluded tests are not listed as failures

    printed = capsys.readouterr().out
    assert "excluded: norm_tests.TestNorms.test_adjoint_norm" in printed
    assert "overall: 2/7 passed (28.6%); without excluded: 2/5 (40.0%)" in printed


def test_gq_mode_shim_binds_odeint_adjoint_gq(tmp_path: Path, stub_backend: str) -> None:
    backend = importlib.import_module(stub_backend)
    shim = suite.write_shim(tmp_path, "gq", stub_backend)
    spec = importlib.util.spec_from_file_location("shim_torchdiffeq", shim / "torchdiffeq" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.odeint_adjoint is backend.odeint_adjoint_gq
    assert module.odeint is backend.odeint
    assert module.BOUND["odeint_adjoint"] == "stub_backend.odeint_adjoint_gq"
    assert "import gqtorch as _gq" in suite.SHIM_SOURCE.format(mode="gq", adjoint="odeint_adjoint_gq",
                                                               backend="gqtorch")


def test_missing_tests_dir_is_a_usage_error(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv(suite.ENV_TESTS, raising=False)
    assert suite.main([]) == 2
    assert "torchdiffeq 0.2.5 checkout" in capsys.readouterr().err
    assert suite.main(["--tests", str(tmp_path / "absent")]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.setenv(suite.ENV_TESTS, str(tmp_path))  # exists but holds no *_tests.py
    assert suite.main([]) == 2
    assert "no *_tests.py files" in capsys.readouterr().err
