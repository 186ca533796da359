"""A Hub repo id works wherever a model directory does: resolved through huggingface_hub from its
cache (laid out here exactly as a download lays it out: blobs, snapshots, refs), offline; a repo id
that is not there while offline is one line. No test reaches the network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.errors import InputNotFoundError
from mote_convert.io.source import is_repo_id, resolve_model
from tests.helpers import COMMIT, assert_one_line_error, hub_cache, read_all

runner = CliRunner()


def test_repo_ids_and_paths() -> None:
    assert is_repo_id("llava-hf/llava-1.5-7b-hf") and is_repo_id("Qwen/Qwen2.5-VL-7B-Instruct")
    assert not is_repo_id("model") and not is_repo_id("/abs/path") and not is_repo_id("./a/b")
    assert not is_repo_id("a/b/c")


def test_upcycle_inspect_and_pack_take_a_repo_id(tiny_llava: Path, offline_cache: Path, tmp_path: Path) -> None:
    snapshot = hub_cache(offline_cache, "org/tiny-llava", tiny_llava)
    assert resolve_model("org/tiny-llava") == snapshot
    assert resolve_model("org/tiny-llava", revision="main") == snapshot
    from_repo = mote_convert.upcycle("org/tiny-llava", tmp_path / "a", latent=True).output
    from_dir = mote_convert.upcycle(tiny_llava, tmp_path / "b", latent=True).output
    a, b = read_all(from_repo), read_all(from_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert mote_convert.inspect_checkpoint("org/tiny-llava").ok

    hub_cache(offline_cache, "org/tiny-latent", from_dir)
    packed = read_all(mote_convert.pack("org/tiny-latent", tmp_path / "packed").output)
    direct = read_all(mote_convert.pack(from_dir, tmp_path / "packed2").output)
    assert packed.keys() == direct.keys() and all(torch.equal(packed[k], direct[k]) for k in packed)
    model = mote_convert.load_model("org/tiny-latent", mode="train")
    assert sum(p.requires_grad for p in model.parameters()) > 0

    result = runner.invoke(app, ["upcycle", "org/tiny-llava", "--revision", COMMIT, "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    c = read_all(tmp_path / "c")
    assert c.keys() == read_all(mote_convert.upcycle(tiny_llava, tmp_path / "d").output).keys()
    result = runner.invoke(app, ["inspect", "org/tiny-llava", "--json"])
    assert result.exit_code == 0, result.output


def test_export_takes_a_repo_id(offline_cache: Path, tmp_path: Path) -> None:
    """The GGUF export of a repo id is the export of its directory (of the repo's name), byte for byte:
    the files are named after the repo, not the snapshot's commit."""
    from mote_convert.tiny import build_tiny_vlm

    mote = mote_convert.upcycle(build_tiny_vlm(tmp_path / "vlm"), tmp_path / "dir" / "tiny-mote").output
    hub_cache(offline_cache, "org/tiny-mote", mote)
    files = {}
    for name, model in (("hub", "org/tiny-mote"), ("dir", str(mote))):
        out = tmp_path / f"{name}.gguf"
        result = runner.invoke(
            app, ["export", "gguf", model, "-o", str(out), "--mmproj", str(tmp_path / f"{name}-mm.gguf")]
        )
        assert result.exit_code == 0, result.output
        assert f"hf upload YOUR-NAME/{name}-GGUF {out}" in " ".join(result.stderr.split())
        files[name] = (out.read_bytes(), (tmp_path / f"{name}-mm.gguf").read_bytes())
    assert files["hub"] == files["dir"]
    line = assert_one_line_error(
        runner.invoke(app, ["export", "gguf", "org/absent", "-o", str(tmp_path / "x.gguf")]),
        InputNotFoundError.exit_code,
        "org/absent",
    )
    assert "HF_HUB_OFFLINE" in line


def test_a_repo_id_missing_offline_is_one_line(offline_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="not in the Hugging Face cache while offline"):
        resolve_model("org/absent")
    for args in (
        ["upcycle", "org/absent", "-o", str(tmp_path / "o")],
        ["inspect", "org/absent"],
        ["pack", "org/absent", "-o", str(tmp_path / "p")],
        ["generate", "org/absent", "--prompt", "hi"],
        ["train", "org/absent", "--data", str(tmp_path / "d.json"), "-o", str(tmp_path / "t")],
    ):
        line = assert_one_line_error(runner.invoke(app, args), InputNotFoundError.exit_code, "org/absent")
        assert "HF_HUB_OFFLINE" in line
    assert_one_line_error(
        runner.invoke(app, ["upcycle", str(tmp_path), "--revision", "main", "-o", str(tmp_path / "o")]),
        InputNotFoundError.exit_code,
        "--revision applies to a Hub repo id",
    )


def test_only_the_files_a_command_reads_are_fetched(tiny_llava: Path, offline_cache: Path) -> None:
    """Offline, the snapshot is used as it is; what resolve_model asks huggingface_hub for is the
    list of patterns, which never matches pickled or other weight formats."""
    from fnmatch import fnmatch

    from mote_convert.io.source import NEEDED_FILES

    wanted = ["config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json"]
    wanted += ["tokenizer_config.json", "preprocessor_config.json", "processor_config.json", "chat_template.jinja"]
    unwanted = ["pytorch_model.bin", "model.pt", "model.gguf", "model.onnx", "flax_model.msgpack", "README.md"]
    assert all(any(fnmatch(f, p) for p in NEEDED_FILES) for f in wanted)
    assert not any(fnmatch(f, p) for f in unwanted for p in NEEDED_FILES)
    shutil.rmtree(offline_cache, ignore_errors=True)
