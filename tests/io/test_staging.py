"""Staged output under signals and killed runs: nothing half-written survives (issue 9, point 4).

A real ``mote-convert upcycle`` process on a checkpoint large enough to take a few seconds is
stopped mid-write; the next run cleans up what a SIGKILL could not.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mote_convert.errors import OutputExistsError
from mote_convert.io.staging import StagedOutput
from tests.conftest import tree_digest
from tests.helpers import leftovers, save_llama


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain Llama LM checkpoint of about 400 MB (float32 FFNs): seconds to up-cycle."""
    root = save_llama(tmp_path_factory.mktemp("slow") / "llama", layers=4, hidden=1024, inter=8192)
    (root / "tokenizer_config.json").write_text("{}\n")
    return root


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-c", "from mote_convert.cli import main; main()", *map(str, args)]


def _start_and_wait_for_staging(model: Path, out: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        _cli("upcycle", model, "-o", out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shards = list(out.parent.glob(f".{out.name}.partial-*/*.safetensors"))
        if shards and shards[0].stat().st_size > 1 << 20:  # mid-write: staging exists and holds data
            return proc
        if proc.poll() is not None:
            pytest.fail(f"upcycle finished before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("upcycle never started writing")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_mid_run_leaves_nothing(slow_model: Path, tmp_path: Path, signum: int) -> None:
    before = tree_digest(slow_model)
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(slow_model, out)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: interrupted by {signal.Signals(signum).name}; nothing was left behind"], stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == [] and tree_digest(slow_model) == before


def test_stale_partial_of_a_killed_run_is_removed_by_the_next(slow_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start_and_wait_for_staging(slow_model, out)
    proc.kill()  # SIGKILL: no cleanup possible
    proc.communicate(timeout=60)
    assert any(".partial-" in p.name for p in tmp_path.iterdir())
    other = tmp_path / ".another.partial-12345678"  # not ours: a different output's name
    other.mkdir()
    result = subprocess.run(
        _cli("upcycle", slow_model, "-o", out, "--layers", "0"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert leftovers(tmp_path) == [".another.partial-12345678"]
    reference = tmp_path.parent / f"{tmp_path.name}-reference"  # an undisturbed run's output, file for file
    assert (
        subprocess.run(
            _cli("upcycle", slow_model, "-o", reference, "--layers", "0"), capture_output=True, timeout=300
        ).returncode
        == 0
    )
    assert tree_digest(out) == tree_digest(reference)


def test_killed_overwrite_gets_its_old_output_back(tmp_path: Path) -> None:
    """Killed between the two renames of --overwrite: the old output is beside, set aside. The next
    run (even without --overwrite) puts it back instead of deleting it, and refuses to clobber it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous output")
    os.replace(out, tmp_path / ".out.old-deadbeef")
    with pytest.raises(OutputExistsError, match="already exists"):
        with StagedOutput(out):
            pass
    assert (out / "keep.txt").read_text() == "previous output" and leftovers(tmp_path) == []


def test_lock_is_released_and_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with StagedOutput(out) as staging:
        assert (tmp_path / ".out.mote-lock").exists() and staging.is_dir()
        with pytest.raises(OutputExistsError, match="another mote-convert run"):
            StagedOutput(out).__enter__()
    assert out.is_dir() and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        with StagedOutput(tmp_path / "failed"):
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
