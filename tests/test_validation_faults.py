"""Faults: the atomic writer's guarantees, and training runs killed with SIGKILL at random moments then resumed.

The kill tests fork each run from the test process once torch and the harness are imported, so a run costs its
training time, not an interpreter start; every run is still its own process, killed with SIGKILL (nothing of it runs
afterwards, exactly as ``kill -9``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import stat
import time
from pathlib import Path

import pytest
import torch

from validation.harness import atomic
from validation.harness.training import hashed_settings, result_path

EPOCHS = 10
ARGV = ["g1d", "--quick", "--method", "adjoint", "--epochs", str(EPOCHS), "--threads", "1", "--no-progress"]
TIMING_KEYS = ("epoch_time_s", "peak_memory_mb")  # measured, so they differ between any two runs
VALIDATION = Path(__file__).parents[1] / "validation"


# --- the atomic writer ---------------------------------------------------------------------------------------------


def test_atomic_write_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.write_json_atomic(tmp_path / "new" / "r.json", {"a": 1})
    # the new folder into its parent, the data, the rename, then the rename into the folder
    assert events == [("fsync", "dir"), ("fsync", "file"), ("replace", "r.json"), ("fsync", "dir")]
    assert json.loads((tmp_path / "new" / "r.json").read_text()) == {"a": 1}


def test_atomic_write_gives_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic.write_text_atomic(tmp_path / "a.txt", "x")
        os.umask(0o077)
        atomic.write_bytes_atomic(tmp_path / "b.bin", b"x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "r.json"
    atomic.write_json_atomic(path, {"old": True})
    with pytest.raises(TypeError):
        atomic.write_json_atomic(path, {"new": object()})  # not JSON: fails half-way through the dump
    assert json.loads(path.read_text()) == {"old": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_stale_temporaries_of_one_file_are_removed_and_no_others(tmp_path):
    mine = [tmp_path / ".seed0.json.abc123.tmp", tmp_path / ".seed0.json.x_y.tmp"]
    others = [tmp_path / ".seed1.json.abc.tmp", tmp_path / ".seed0-1234.json.abc.tmp", tmp_path / "seed0.json",
              tmp_path / ".seed0.ckpt.abc.tmp"]
    for path in mine + others:
        path.write_text("partial")
    assert sorted(atomic.remove_stale_temporaries(tmp_path / "seed0.json")) == sorted(mine)
    assert sorted(tmp_path.iterdir()) == sorted(others)
    assert atomic.temporaries_of(tmp_path / "seed[0].json") == []  # glob characters in a name stay literal


# Writers not switched to validation.harness.atomic yet; remove an entry once it is.
NOT_YET_ATOMIC: set[str] = set()


def test_every_writer_in_validation_uses_the_one_atomic_helper():
    """No module but validation/harness/atomic.py renames files into place: every writer goes through it."""
    offenders = []
    for path in sorted(VALIDATION.rglob("*.py")):
        if path.name == "atomic.py" or str(path.relative_to(VALIDATION.parent)) in NOT_YET_ATOMIC:
            continue
        text = path.read_text()
        for needle in ("os.replace(", "os.rename(", ".rename(", "shutil.move("):
            if needle in text:
                offenders.append(f"{path.relative_to(VALIDATION.parent)}: {needle}")
    assert offenders == []


# --- kill -9 and resume --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server():
    """Runs are forked from this process once it has imported torch and every command (tests/fault_worker.py), as
    torch's DataLoader forks its workers: each run is a fresh process that costs its training, not its imports."""
    from tests import fault_worker  # noqa: F401 - here, not at collection: it imports every command

    return multiprocessing.get_context("fork")


def _start(server, out: Path, *extra: str, target: str = "cli", args: tuple = ()) -> multiprocessing.Process:
    from tests import fault_worker

    process = server.Process(target=getattr(fault_worker, target), args=([*ARGV, "--out", str(out), *extra], *args))
    process.start()
    return process


def _run(server, out: Path, *extra: str, timeout: float = 300) -> int:
    process = _start(server, out, *extra)
    process.join(timeout)
    if process.exitcode is None:
        os.kill(process.pid, signal.SIGKILL)
        process.join(60)
        pytest.fail(f"a run did not finish in {timeout} s")
    return process.exitcode


def _comparable(record: dict) -> dict:
    """A record less what is measured (times, memory, the machine) and how the run was invoked (--resume)."""
    history = {k: v for k, v in record["history"].items() if k not in TIMING_KEYS}
    kept = {k: v for k, v in record.items() if k not in ("history", "environment", "config")}
    return {**kept, "history": history, "settings": hashed_settings(record["config"])}


def _check_no_partial_files(out: Path) -> None:
    """Every visible file is complete: each JSON parses, each checkpoint loads (temporaries may lie beside them)."""
    for path in out.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".ckpt":
            torch.load(path, weights_only=False)


def _resume(server, out: Path, rng: random.Random, budget: float) -> str:
    """Start the run (with --resume once a checkpoint exists) and kill it after a random delay; 'killed' or
    'finished'."""
    checkpoint = result_path(out, "g1d", "default", 8, "adjoint", 0).with_suffix(".ckpt")
    extra = ("--resume",) if checkpoint.exists() else ()
    process = _start(server, out, *extra)
    process.join(rng.uniform(0.0, budget))
    if process.exitcode is None:
        os.kill(process.pid, signal.SIGKILL)
        process.join(60)
    if process.exitcode == -signal.SIGKILL:
        return "killed"
    assert process.exitcode == 0, f"run ended with status {process.exitcode}"
    return "finished"


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory) -> tuple[dict, float]:
    """The uninterrupted run's record, and how long the run took as a forked process."""
    out = tmp_path_factory.mktemp("reference")
    _run(server, out)  # the fork server's first child also pays for its start: not timed
    out = tmp_path_factory.mktemp("reference")
    began = time.perf_counter()
    assert _run(server, out) == 0
    elapsed = time.perf_counter() - began
    return json.loads(result_path(out, "g1d", "default", 8, "adjoint", 0).read_text()), elapsed


# each attempt is killed at a uniform moment within one uninterrupted run's time and resumes from its last
# checkpoint, so a chain finishes within a few attempts; this many means the runs are stuck, not unlucky
MAX_ATTEMPTS = 50


def _kill_and_resume(server, reference: tuple[dict, float], tmp_path: Path, kills: int, seed: int) -> None:
    """Runs killed at random moments until ``kills`` kills have happened, each chain resumed to its end; every
    finished chain must equal the uninterrupted run, with no temporary left."""
    reference, elapsed = reference
    rng = random.Random(seed)
    done = chains = 0
    while done < kills:
        chains += 1
        out = tmp_path / f"chain{chains}"
        for _ in range(MAX_ATTEMPTS):
            outcome = _resume(server, out, rng, budget=elapsed)
            if outcome == "finished":
                break
            done += 1
            _check_no_partial_files(out)
        else:
            pytest.fail(f"a chain of resumed runs did not finish in {MAX_ATTEMPTS} attempts (is a run stuck?)")
        path = result_path(out, "g1d", "default", 8, "adjoint", 0)
        assert _comparable(json.loads(path.read_text())) == _comparable(reference)
        assert [p.name for p in out.rglob(".*")] == []  # the resumed run removed the killed runs' temporaries


def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_result(server, reference, tmp_path):
    _kill_and_resume(server, reference, tmp_path, kills=3, seed=20240611)


@pytest.mark.slow
def test_twenty_random_kills_resume_to_the_uninterrupted_result(server, reference, tmp_path):
    _kill_and_resume(server, reference, tmp_path, kills=20, seed=7)


# the 1st file write is epoch 1's checkpoint, the 2nd its JSON, the 5th epoch 3's checkpoint, and so on
@pytest.mark.parametrize("call, n", [("fsync", 1), ("replace", 2), ("fsync", 6)])
def test_runs_killed_while_writing_resume_to_the_uninterrupted_result(server, reference, tmp_path, call, n):
    """SIGKILL inside the atomic writer: the file being written is untouched or complete, its temporary is left
    behind, and the resumed run both finishes right and removes it."""
    reference, _ = reference
    out = tmp_path / "run"
    process = _start(server, out, target="cli_killed_at_write", args=(call, n))
    process.join(300)
    assert process.exitcode == -signal.SIGKILL
    assert [p for p in out.rglob(".*") if p.is_file()], "the kill left no temporary: it missed the write"
    _check_no_partial_files(out)
    checkpoint = result_path(out, "g1d", "default", 8, "adjoint", 0).with_suffix(".ckpt")
    assert _run(server, out, *(("--resume",) if checkpoint.exists() else ())) == 0
    path = result_path(out, "g1d", "default", 8, "adjoint", 0)
    assert _comparable(json.loads(path.read_text())) == _comparable(reference)
    assert [p.name for p in out.rglob(".*")] == []
