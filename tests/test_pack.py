"""pack, save_model and QAT training end to end (issue 3 acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.errors import FormatError
from tests.conftest import tree_digest
from tests.helpers import raw_bytes, read_all


def test_latent_then_pack_equals_packed_upcycle(tiny_llava: Path, tmp_path: Path) -> None:
    mote_convert.upcycle(tiny_llava, tmp_path / "packed")
    mote_convert.upcycle(tiny_llava, tmp_path / "latent", latent=True)
    before = tree_digest(tmp_path / "latent")
    mote_convert.pack(tmp_path / "latent", tmp_path / "repacked")
    assert tree_digest(tmp_path / "latent") == before
    a, b = read_all(tmp_path / "packed"), read_all(tmp_path / "repacked")
    assert set(a) == set(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and raw_bytes(a[name]) == raw_bytes(b[name]), name
    mote = json.loads((tmp_path / "repacked" / "config.json").read_text())["mote"]
    assert mote == json.loads((tmp_path / "packed" / "config.json").read_text())["mote"]
    assert (tmp_path / "repacked" / "generation_config.json").exists()


def test_pack_errors(tiny_llava: Path, tmp_path: Path) -> None:
    mote_convert.upcycle(tiny_llava, tmp_path / "packed")
    with pytest.raises(FormatError, match="already packed"):
        mote_convert.pack(tmp_path / "packed", tmp_path / "x")
    with pytest.raises(FormatError, match="not a MoTE checkpoint"):
        mote_convert.pack(tiny_llava, tmp_path / "x")
    runner = CliRunner()
    result = runner.invoke(app, ["pack", str(tmp_path / "packed"), "-o", str(tmp_path / "x")])
    assert result.exit_code == FormatError.exit_code and result.stderr.startswith("error:")
    assert not (tmp_path / "x").exists()


def _batches(config, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, 64, (32,), generator=g)  # a small vocabulary: learnable in a few steps
        ids[1 : 1 + config.image_seq_length] = config.image_token_id
        labels = ids.clone()
        labels[ids == config.image_token_id] = -100
        rows.append({"input_ids": ids, "labels": labels, "pixel_values": torch.randn(3, 16, 16, generator=g)})
    return rows


def test_trainer_qat_then_pack_and_reload(tiny_llava: Path, tmp_path: Path) -> None:
    from transformers import Trainer, TrainingArguments

    mote_convert.upcycle(tiny_llava, tmp_path / "latent", latent=True)
    model = mote_convert.load_model(tmp_path / "latent", mode="train")
    data = _batches(model.config, 8)
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"),
        max_steps=30,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses
    assert mote_convert.aux_loss(model) is not None

    model.eval()
    probe = {k: torch.stack([r[k] for r in data[:2]]) for k in ("input_ids", "pixel_values")}
    with torch.no_grad():
        trained_logits = model(**probe).logits
    mote_convert.save_model(model, tmp_path / "trained-latent", expert_format="latent")
    mote_convert.save_model(model, tmp_path / "trained-packed", expert_format="packed-2bit")
    result = CliRunner().invoke(
        app, ["pack", str(tmp_path / "trained-latent"), "-o", str(tmp_path / "trained-repacked")]
    )
    assert result.exit_code == 0, result.output
    a, b = read_all(tmp_path / "trained-packed"), read_all(tmp_path / "trained-repacked")
    assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a)
    # the checkpoint keeps the source's key style and the SPEC metadata
    assert "language_model.model.layers.0.mlp.experts.0.gate_proj.weight_packed" in a
    reloaded = mote_convert.load_model(tmp_path / "trained-repacked", mode="packed")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**probe).logits, trained_logits, rtol=1e-5, atol=1e-5)
    # the trained experts differ from their initialisation, and from each other
    init = read_all(tmp_path / "latent")
    name = "language_model.model.layers.0.mlp.experts.0.up_proj.weight"
    assert not torch.equal(read_all(tmp_path / "trained-latent")[name], init[name])


def test_pack_widens_routers_an_engine_saved_in_bf16(tiny_llava: Path, tmp_path: Path) -> None:
    """DeepSpeed's bf16 saves its bf16 copy of the routers; pack writes them float32 (exactly widened)."""
    from safetensors.torch import load_file, save_file

    latent = tmp_path / "latent"
    mote_convert.upcycle(tiny_llava, latent, latent=True)
    narrowed = {}
    for shard in sorted(latent.glob("*.safetensors")):
        tensors = load_file(shard)
        for name in [n for n in tensors if n.endswith(".router.weight")]:
            tensors[name] = tensors[name].to(torch.bfloat16)
            narrowed[name] = tensors[name]
        save_file(tensors, shard, metadata={"format": "pt"})
    assert narrowed
    out = tmp_path / "packed"
    mote_convert.pack(latent, out)
    packed = read_all(out)
    for name, value in narrowed.items():
        assert packed[name].dtype == torch.float32 and torch.equal(packed[name], value.float())
    assert mote_convert.inspect_checkpoint(out).ok
