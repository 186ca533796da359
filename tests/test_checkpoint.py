"""Each command reads a checkpoint's config.json once (the input's; train also reads the final
checkpoint it packs): its steps (checks, plans, the loader) share
the read (``mote_convert.checkpoint.one_read_per_file``). transformers' own ``from_pretrained`` reads
the file once more for the model it builds (``load_model``, ``train``): that read is not ours."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import mote_convert
import mote_convert.checkpoint as checkpoint
from mote_convert.cli import app
from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_dataset, build_tiny_llava, build_tiny_processor
from tests.helpers import train_args

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reads")
    dense = build_tiny_llava(root / "dense", vocab_size=TINY_VOCAB_WITH_PROCESSOR)
    build_tiny_processor(dense)
    return {
        "root": root,
        "dense": dense,
        "mote": mote_convert.upcycle(dense, root / "mote").output,
        "latent": mote_convert.upcycle(dense, root / "latent", latent=True).output,
        "data": build_tiny_dataset(root / "data"),
    }


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every config.json mote-convert parses."""
    seen: list[str] = []
    real = checkpoint.load_json

    def counting(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "load_json", counting)
    return seen


def _commands(m: dict[str, Path], tmp: Path) -> dict[str, list[str]]:
    recipe = tmp / "r.yaml"
    recipe.write_text("max_steps: 2\nglobal_batch_size: 8\nper_device_batch_size: 4\nwarmup_ratio: 0\n")
    return {
        "upcycle": ["upcycle", str(m["dense"]), "-o", str(tmp / "up")],
        "upcycle --dry-run": ["upcycle", str(m["dense"]), "-o", str(tmp / "dry"), "--dry-run"],
        "pack": ["pack", str(m["latent"]), "-o", str(tmp / "packed")],
        "inspect": ["inspect", str(m["mote"]), "--stats"],
        "inspect --gguf": ["inspect", str(m["mote"]), "--gguf"],
        "inspect (dense)": ["inspect", str(m["dense"])],
        "export gguf --mmproj": [
            "export",
            "gguf",
            str(m["mote"]),
            "-o",
            str(tmp / "m.gguf"),
            "--mmproj",
            str(tmp / "v.gguf"),
        ],
        "train": train_args({**m, "recipe": recipe}, tmp / "trained"),
    }


@pytest.mark.parametrize(
    "command",
    [
        "upcycle",
        "upcycle --dry-run",
        "pack",
        "inspect",
        "inspect --gguf",
        "inspect (dense)",
        "export gguf --mmproj",
        "train",
    ],
)
def test_each_command_reads_config_json_once(
    models: dict[str, Path], tmp_path: Path, reads: list[str], command: str
) -> None:
    args = _commands(models, tmp_path)[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert reads and len(reads) == len(set(reads)), reads  # each config.json once (train also packs what it trained)
    assert sum(Path(r).parent.name in ("dense", "mote", "latent") for r in reads) == 1, reads  # the input's, once


def test_load_model_reads_config_json_once_and_a_second_call_reads_it_again(
    models: dict[str, Path], reads: list[str]
) -> None:
    mote_convert.load_model(models["mote"])
    assert len(reads) == 1
    mote_convert.load_model(models["mote"])  # another command: the file may have changed since
    assert len(reads) == 2
