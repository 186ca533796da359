"""One checker for every command: a damaged MoTE checkpoint is refused by `inspect --stats`, `pack`,
`export gguf`, `export vllm` and `load_model` alike, each in one line naming the tensor, before anything is written."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.errors import CheckFailedError
from mote_convert.export import export_gguf
from mote_convert.export.vllm import export_vllm
from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_llava, build_tiny_processor
from tests.conftest import tree_digest
from tests.helpers import assert_one_line_error, leftovers

runner = CliRunner()
P = "language_model.model.layers.1.mlp"
ROUTER = f"{P}.router.weight"
PACKED = f"{P}.experts.2.up_proj.weight_packed"
SCALE = f"{P}.experts.2.up_proj.weight_scale"
LATENT = f"{P}.experts.2.up_proj.weight"

Edit = Callable[[dict[str, torch.Tensor]], None]


def _set(name: str, value: float) -> Edit:
    def edit(t: dict[str, torch.Tensor]) -> None:
        t[name] = t[name].clone()
        t[name].view(-1)[0] = value

    return edit


def _replace(name: str, make: Callable[[torch.Tensor], torch.Tensor]) -> Edit:
    return lambda t: t.__setitem__(name, make(t[name]))


def _invalid_code(t: dict[str, torch.Tensor]) -> None:
    t[PACKED] = t[PACKED].clone()
    t[PACKED][0, 0] |= 0b11


# case -> (base checkpoint, edit, the tensor every refusal names)
CASES: dict[str, tuple[str, Edit, str]] = {
    "NaN scale": ("packed", _set(SCALE, math.nan), SCALE),
    "inf scale": ("packed", _set(SCALE, math.inf), SCALE),
    "negative scale": ("packed", _set(SCALE, -0.5), SCALE),
    "NaN router (packed)": ("packed", _set(ROUTER, math.nan), ROUTER),
    "missing router (packed)": ("packed", lambda t: t.pop(ROUTER), ROUTER),
    "packed one row short": ("packed", _replace(PACKED, lambda x: x[:-1].clone()), PACKED),
    "packed of the wrong dtype": ("packed", _replace(PACKED, lambda x: x.to(torch.int8)), PACKED),
    "invalid codes": ("packed", _invalid_code, PACKED),
    "NaN latent": ("latent", _set(LATENT, math.nan), LATENT),
    "inf latent": ("latent", _set(LATENT, -math.inf), LATENT),
    "NaN router (latent)": ("latent", _set(ROUTER, math.nan), ROUTER),
    "missing router (latent)": ("latent", lambda t: t.pop(ROUTER), ROUTER),
    "latent one row short": ("latent", _replace(LATENT, lambda x: x[:-1].clone()), LATENT),
    "latent of the wrong dtype": ("latent", _replace(LATENT, lambda x: x.to(torch.int8)), LATENT),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("check")
    dense = build_tiny_llava(root / "dense", vocab_size=TINY_VOCAB_WITH_PROCESSOR)
    build_tiny_processor(dense)  # export gguf writes the tokenizer
    return {
        "packed": mote_convert.upcycle(dense, root / "packed").output,
        "latent": mote_convert.upcycle(dense, root / "latent", latent=True).output,
    }


def _damaged(bases: dict[str, Path], tmp_path: Path, case: str) -> tuple[Path, str, str]:
    base, edit, name = CASES[case]
    root = tmp_path / "damaged"
    shutil.copytree(bases[base], root)
    tensors = load_file(root / "model.safetensors")
    edit(tensors)
    save_file(tensors, root / "model.safetensors", metadata={"format": "pt", "mote_format": "1"})
    return root, base, name


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_refuses_every_damage_naming_the_tensor(
    bases: dict[str, Path], tmp_path: Path, case: str
) -> None:
    root, base, name = _damaged(bases, tmp_path, case)
    before = tree_digest(root)

    result = runner.invoke(app, ["inspect", str(root), "--stats"])
    assert result.exit_code == 10, result.output
    assert any(line.startswith("problem:") and name in line for line in result.stderr.splitlines()), result.stderr

    gguf = tmp_path / "out.gguf"
    assert_one_line_error(runner.invoke(app, ["export", "gguf", str(root), "-o", str(gguf)]), 10, name)
    assert not gguf.exists()

    served = tmp_path / "served"
    if base == "latent":
        assert_one_line_error(runner.invoke(app, ["pack", str(root), "-o", str(tmp_path / "packed")]), 10, name)
        assert not (tmp_path / "packed").exists()
        # export vllm takes packed checkpoints only, and says so before looking further
        assert_one_line_error(runner.invoke(app, ["export", "vllm", str(root), "-o", str(served)]), 8, "pack first")
    else:  # vLLM never sees it: the export refuses it, and writes nothing
        assert_one_line_error(runner.invoke(app, ["export", "vllm", str(root), "-o", str(served)]), 10, name)
    assert not served.exists()

    for mode in ("packed", "train"):
        with pytest.raises(CheckFailedError, match=name.replace(".", r"\.")):
            mote_convert.load_model(root, mode=mode)

    assert tree_digest(root) == before and not leftovers(tmp_path)


def test_the_sound_bases_pass_every_command(bases: dict[str, Path], tmp_path: Path) -> None:
    """The oracle's other side: what the catalogue damages is accepted undamaged."""
    for base in ("packed", "latent"):
        assert mote_convert.inspect_checkpoint(bases[base], stats=True).ok
        export_gguf(bases[base], tmp_path / f"{base}.gguf")
        mote_convert.load_model(bases[base], mode="train")
    mote_convert.pack(bases["latent"], tmp_path / "packed")
    export_vllm(bases["packed"], tmp_path / "served")
