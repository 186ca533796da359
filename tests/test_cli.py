"""The CLI through typer's runner: output, one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from mote_convert.cli import app
from mote_convert.errors import InputNotFoundError, OptionsError, OutputExistsError, UnsupportedArchitectureError

runner = CliRunner()


def test_upcycle_and_json(tiny_llava: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(out), "--num-experts", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["num_experts"] == 2 and data["moe_layers"] == 2 and not data["dry_run"]
    assert json.loads((out / "config.json").read_text())["mote"]["num_experts"] == 2


def test_dry_run_table(tiny_llava: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(tmp_path / "o"), "--dry-run", "--layers", "odd"])
    assert result.exit_code == 0, result.output
    assert "dry run" in result.stdout and "bits per weight" in result.stdout
    assert not (tmp_path / "o").exists()


def _one_line_error(result, code: int, needle: str) -> None:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_errors_are_one_line(tiny_llava: Path, tmp_path: Path) -> None:
    _one_line_error(runner.invoke(app, ["upcycle", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]), InputNotFoundError.exit_code, "no such file")
    _one_line_error(runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(tmp_path / "o"), "--top-k", "9"]), OptionsError.exit_code, "--top-k")
    _one_line_error(runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(tmp_path / "o"), "--layers", "5"]), OptionsError.exit_code, "out of range")
    _one_line_error(runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(tmp_path)]), OutputExistsError.exit_code, "already exists")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "t5"}))
    _one_line_error(runner.invoke(app, ["upcycle", str(bad), "-o", str(tmp_path / "o")]), UnsupportedArchitectureError.exit_code, "supported: ")


def test_demo_runs() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "routed expert bits per weight" in result.stdout and "language_model.model.layers.0.mlp" in result.stdout
