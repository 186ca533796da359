"""The CLI through typer's runner: output, one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mote_convert.cli import app
from mote_convert.errors import InputNotFoundError, OptionsError, OutputExistsError, UnsupportedArchitectureError
from tests.helpers import assert_one_line_error

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


def test_summaries_show_every_applied_option(tiny_llava: Path, tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("num_experts: 3\nnorm_topk_prob: true\nrouter_aux_loss_coef: 0.02\n")
    args = ["upcycle", str(tiny_llava), "-o", str(tmp_path / "o"), "--recipe", str(tmp_path / "r.yaml")]
    result = runner.invoke(app, [*args, "--top-k", "2", "--layers", "1", "--seed", "7", "--json", "--dry-run"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["num_experts"], data["top_k"], data["layers"], data["seed"]) == (3, 2, [1], 7)
    assert data["norm_topk_prob"] is True and data["router_aux_loss_coef"] == 0.02
    result = runner.invoke(app, [*args, "--top-k", "2", "--layers", "1", "--seed", "7"])
    assert result.exit_code == 0, result.output
    for shown in ("│ routing │ top-2, renormalised │", "│ aux-loss coefficient │ 0.02 │", "│ MoE layers │ 1: 1 │"):
        assert shown in " ".join(result.stdout.split()), result.stdout
    assert "│ router seed │ 7 │" in " ".join(result.stdout.split())
    assert f"hf upload YOUR-NAME/o {tmp_path / 'o'}" in " ".join(result.stderr.split()), result.stderr


def test_tables_never_cut_a_name(tiny_llava: Path, tmp_path: Path) -> None:
    """At the 80 columns of a pipe, a long file name is printed whole (the table grows instead)."""
    long = tmp_path / ("a-rather-long-output-name-that-a-table-at-eighty-columns-would-cut" + "-x" * 10)
    from mote_convert.tiny import build_tiny_vlm

    out = runner.invoke(app, ["upcycle", str(build_tiny_vlm(tmp_path / "vlm")), "-o", str(tmp_path / "m")])
    assert out.exit_code == 0, out.output
    gguf = long.with_suffix(".gguf")
    result = runner.invoke(
        app, ["export", "gguf", str(tmp_path / "m"), "-o", str(gguf), "--dry-run"], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert str(gguf) in result.stdout and "…" not in result.stdout


_one_line_error = assert_one_line_error


def test_errors_are_one_line(tiny_llava: Path, tmp_path: Path) -> None:
    _one_line_error(
        runner.invoke(app, ["upcycle", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]),
        InputNotFoundError.exit_code,
        "no such file",
    )
    _one_line_error(
        runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(tmp_path / "o"), "--top-k", "9"]),
        OptionsError.exit_code,
        "--top-k",
    )
    _one_line_error(
        runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(tmp_path / "o"), "--layers", "5"]),
        OptionsError.exit_code,
        "out of range",
    )
    _one_line_error(
        runner.invoke(app, ["upcycle", str(tiny_llava), "-o", str(tmp_path)]),
        OutputExistsError.exit_code,
        "already exists",
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "t5"}))
    _one_line_error(
        runner.invoke(app, ["upcycle", str(bad), "-o", str(tmp_path / "o")]),
        UnsupportedArchitectureError.exit_code,
        "not an image-text-to-text or causal LM family",
    )


def test_demo_runs() -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "routed expert bits per weight" in result.stdout and "language_model.model.layers.0.mlp" in result.stdout


def test_list_architectures() -> None:
    for args in (["upcycle", "--list-architectures"], ["architectures"]):
        result = runner.invoke(app, args, env={"COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        for family, kind in (
            ("llava_onevision", "gated"),
            ("qwen2_vl", "gated"),
            ("qwen3_vl", "gated"),
            ("lfm2_vl", "gated_w"),
            ("glm4v", "fused_gated"),
            ("phi3", "fused_gated"),
            ("phi", "plain"),
        ):
            assert any(
                line.split("│")[1].strip() == family and kind in line
                for line in result.stdout.splitlines()
                if "│" in line
            ), family
    assert "refused" in result.stdout and "mixtral" in result.stdout
    data = json.loads(runner.invoke(app, ["architectures", "--json"]).stdout)
    assert {"model_type": "smolvlm", "status": "supported", "ffn_kind": "gated"}.items() <= next(
        d for d in data if d["model_type"] == "smolvlm"
    ).items()
    mixtral = next(d for d in data if d["model_type"] == "mixtral")
    assert mixtral["status"] == "refused" and "already mixture-of-experts" in mixtral["reason"]


def test_docs_table_is_the_listing() -> None:
    """docs/architectures.md holds what `architectures --markdown` prints for the transformers it names."""
    import transformers

    doc = (Path(__file__).parents[1] / "docs" / "architectures.md").read_text()
    start = doc.index("<!-- families: begin -->") + len("<!-- families: begin -->\n")
    table = doc[start : doc.index("<!-- families: end -->")]
    if f"transformers {transformers.__version__} " not in table:
        pytest.skip(f"the table is for another transformers than {transformers.__version__}: regenerate it")
    result = runner.invoke(app, ["architectures", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout == table


def test_architecture_errors(tmp_path: Path) -> None:
    """A refused model_type says why, an unknown one that transformers does not know it; keys that
    do not match the architecture name the first key that did not match."""
    from mote_convert.errors import UnsupportedArchitectureError
    from tests.families import FAMILIES

    bad = tmp_path / "moe"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "mixtral"}))
    _one_line_error(
        runner.invoke(app, ["upcycle", str(bad), "-o", str(tmp_path / "o")]),
        UnsupportedArchitectureError.exit_code,
        "already mixture-of-experts layers",
    )
    (bad / "config.json").write_text(json.dumps({"model_type": "nonesuch"}))
    _one_line_error(
        runner.invoke(app, ["upcycle", str(bad), "-o", str(tmp_path / "o")]),
        UnsupportedArchitectureError.exit_code,
        "unsupported model_type 'nonesuch': transformers 5",
    )
    # a Qwen2 LM whose config claims to be LLaVA: the first key of LLaVA's key styles is named
    lm = FAMILIES["qwen2"].build(tmp_path / "qwen2")
    llava = FAMILIES["llava-qwen2"].config().to_dict()
    llava["architectures"] = ["LlavaForConditionalGeneration"]
    (lm / "config.json").write_text(json.dumps(llava))
    _one_line_error(
        runner.invoke(app, ["upcycle", str(lm), "-o", str(tmp_path / "o")]),
        UnsupportedArchitectureError.exit_code,
        "key language_model.model.layers.0.mlp.gate_proj.weight not found",
    )


def test_deepspeed_import_warning_stays_out_of_command_output(tmp_path: Path) -> None:
    """Building a transformers model imports DeepSpeed where it is installed, which prints an
    accelerator warning on stdout; the commands that do not train drop that line."""
    import os
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}  # the warning comes with auto-detection
    plain = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mote_convert.tiny import build_tiny_llava; build_tiny_llava({str(tmp_path / 'm')!r})",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    if "Setting accelerator to CPU" not in plain.stdout:
        pytest.skip("DeepSpeed found an accelerator here: it prints no warning to drop")
    demo = subprocess.run(
        [sys.executable, "-m", "mote_convert.cli", "demo"], env=env, capture_output=True, text=True, check=True
    )
    assert "demo: tiny-llava -> tiny-llava-mote" in demo.stdout
    assert "Setting accelerator" not in demo.stdout + demo.stderr


def test_a_broken_invariant_is_reported_as_a_bug(tiny_llava: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a one-line user mistake: the traceback, a request to report it, exit code 70."""
    import mote_convert.inspection
    from mote_convert.errors import InternalError

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise InternalError("a shard expected one tensor and got another")

    monkeypatch.setattr(mote_convert.inspection, "inspect_checkpoint", broken)
    result = runner.invoke(app, ["inspect", str(tiny_llava)])
    assert result.exit_code == 70, result.output
    assert "Traceback" in result.stderr and "please report it" in result.stderr
    assert not any(line.startswith("error:") for line in result.stderr.splitlines())
