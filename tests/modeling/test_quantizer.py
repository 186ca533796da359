"""MoTE through transformers' own loading and saving (issue 10 acceptance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlavaForConditionalGeneration, Trainer, TrainingArguments

import mote_convert
from mote_convert.modeling.bitlinear import TernaryLinear
from mote_convert.modeling.load import mote_blocks
from mote_convert.modeling.quantizer import MoteQuantizationConfig
from tests.helpers import file_metadata


@pytest.fixture(scope="module")
def packed(tiny_llava: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mote_convert.upcycle(tiny_llava, tmp_path_factory.mktemp("q") / "packed").output


@pytest.fixture(scope="module")
def latent(tiny_llava: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mote_convert.upcycle(tiny_llava, tmp_path_factory.mktemp("q") / "latent", latent=True).output


def _inputs(config, batch: int = 2, seq: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.image_token_id - 1, (batch, seq), generator=g)
    ids[:, 1 : 1 + config.image_seq_length] = config.image_token_id
    return {"input_ids": ids, "pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}


def _logits(model, inputs) -> torch.Tensor:  # noqa: ANN001
    with torch.no_grad():
        return model(**inputs).logits


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), name


@pytest.mark.parametrize("mode", ["packed", "train"])
def test_from_pretrained_with_the_config_is_load_model(packed: Path, mode: str) -> None:
    direct = LlavaForConditionalGeneration.from_pretrained(packed, quantization_config=MoteQuantizationConfig(mode))
    wrapped = mote_convert.load_model(packed, mode=mode)
    _same_state(direct, wrapped)
    inputs = _inputs(wrapped.config)
    torch.testing.assert_close(_logits(direct, inputs), _logits(wrapped, inputs), rtol=0, atol=0)
    assert (
        all(b.mode == mode for b in mote_blocks(direct))
        and direct.config.mote["expert_format"] == {"packed": "packed-2bit", "train": "latent"}[mode]
    )


@pytest.mark.parametrize("device_map", ["auto", {"": "cpu"}])
def test_device_map(packed: Path, device_map) -> None:  # noqa: ANN001
    plain = mote_convert.load_model(packed)
    mapped = mote_convert.load_model(packed, device_map=device_map)
    inputs = _inputs(plain.config)
    torch.testing.assert_close(_logits(mapped, inputs), _logits(plain, inputs), rtol=0, atol=0)


def test_latent_checkpoint_in_both_modes_matches_packed(packed: Path, latent: Path) -> None:
    inputs = _inputs(mote_convert.load_model(packed).config)
    reference = _logits(mote_convert.load_model(packed, mode="packed"), inputs)
    for mode in ("packed", "train"):
        torch.testing.assert_close(
            _logits(mote_convert.load_model(latent, mode=mode), inputs), reference, rtol=1e-5, atol=1e-5
        )


def test_router_and_scales_stay_float32(packed: Path, latent: Path) -> None:
    for mode in ("packed", "train"):
        model = mote_convert.load_model(packed if mode == "packed" else latent, mode=mode, dtype=torch.bfloat16)
        assert model.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
        for block in mote_blocks(model):
            assert block.router.weight.dtype == torch.float32
        router = mote_blocks(model)[0].router.weight
        model.to(torch.float16)
        for block in mote_blocks(model):
            assert block.router.weight.dtype == torch.float32 and block.router.weight is not None
            for linear in block.experts.modules():
                if isinstance(linear, TernaryLinear) and linear.mode == "packed":
                    assert linear.weight_scale.dtype == torch.float32
        assert mote_blocks(model)[0].router.weight is router  # the same Parameter: optimizers keep it
        inputs = _inputs(model.config)
        assert torch.isfinite(_logits(model, inputs)).all()


def test_expert_without_tokens_gets_a_zero_gradient(packed: Path) -> None:
    model = mote_convert.load_model(packed, mode="train")
    for block in mote_blocks(model):
        with torch.no_grad():
            block.router.weight.zero_()  # equal logits: one and the same expert is top-1 for every token
    inputs = _inputs(model.config)
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    for block in mote_blocks(model):
        used = []
        for e, expert in enumerate(block.experts):
            grads = [p.grad for p in expert.parameters()]
            assert all(g is not None for g in grads), e  # every expert took part in the step
            if any(torch.count_nonzero(g) for g in grads):
                used.append(e)
        assert len(used) == 1, used  # the others got no token, and a zero gradient


def _dataset(config, n: int = 8) -> list[dict[str, torch.Tensor]]:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, 64, (32,), generator=g)
        ids[1 : 1 + config.image_seq_length] = config.image_token_id
        rows.append(
            {
                "input_ids": ids,
                "labels": ids.masked_fill(ids == config.image_token_id, -100),
                "pixel_values": torch.randn(3, 16, 16, generator=g),
            }
        )
    return rows


def test_trainer_checkpoints_are_mote_checkpoints(packed: Path, tmp_path: Path) -> None:
    model = mote_convert.load_model(packed, mode="train")  # a packed checkpoint, trained from its fixed point
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        save_strategy="steps",
        save_steps=4,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
    )
    Trainer(model=model, args=args, train_dataset=_dataset(model.config)).train()
    checkpoint = tmp_path / "run" / "checkpoint-4"
    assert json.loads((checkpoint / "config.json").read_text())["mote"]["expert_format"] == "latent"
    assert "quantization_config" not in json.loads((checkpoint / "config.json").read_text())
    assert all(m.get("mote_format") == "1" for m in file_metadata(checkpoint))
    report = mote_convert.inspect_checkpoint(checkpoint)
    assert report.ok, report.problems
    model.eval()
    inputs = _inputs(model.config)
    trained = _logits(model, inputs)
    torch.testing.assert_close(
        _logits(mote_convert.load_model(checkpoint, mode="train"), inputs), trained, rtol=0, atol=0
    )
    repacked = mote_convert.pack(checkpoint, tmp_path / "packed").output
    assert mote_convert.inspect_checkpoint(repacked).ok
    torch.testing.assert_close(
        _logits(mote_convert.load_model(repacked, mode="packed"), inputs), trained, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        _logits(mote_convert.load_model(checkpoint, mode="packed"), inputs), trained, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("expert_format", ["packed-2bit", "latent"])
@pytest.mark.parametrize("mode", ["packed", "train"])
def test_save_model_in_either_format(packed: Path, tmp_path: Path, mode: str, expert_format: str) -> None:
    model = mote_convert.load_model(packed, mode=mode)
    out = mote_convert.save_model(model, tmp_path / "saved", expert_format=expert_format, max_shard_size="200KB")
    assert json.loads((out / "config.json").read_text())["mote"]["expert_format"] == expert_format
    assert model.config.mote["expert_format"] == {"packed": "packed-2bit", "train": "latent"}[mode]  # restored
    assert mote_convert.inspect_checkpoint(out).ok
    assert len(list(out.glob("*.safetensors"))) > 1
    inputs = _inputs(model.config)
    torch.testing.assert_close(
        _logits(mote_convert.load_model(out), inputs), _logits(model, inputs), rtol=1e-5, atol=1e-5
    )
    assert not any(p.name.startswith(".saved") for p in tmp_path.iterdir())


def test_stock_transformers_loads_saved_output_as_dense(packed: Path, tmp_path: Path, tiny_llava: Path) -> None:
    """No quantization_config is written: a plain from_pretrained (no MoTE config given) is dense."""
    model = mote_convert.load_model(packed, mode="train")
    model.save_pretrained(tmp_path / "saved")
    dense = LlavaForConditionalGeneration.from_pretrained(tmp_path / "saved")
    original = LlavaForConditionalGeneration.from_pretrained(tiny_llava)
    assert not mote_blocks(dense)
    inputs = _inputs(dense.config)
    torch.testing.assert_close(_logits(dense, inputs), _logits(original, inputs), rtol=0, atol=0)


def _router_and_expert_grads(model) -> dict[str, torch.Tensor]:  # noqa: ANN001
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("variant", ["outputs.loss", "accumulation / 4", "checkpointing", "reentrant checkpointing"])
def test_aux_loss_gradient_without_a_stash(packed: Path, variant: str) -> None:
    """The router's gradient from the load-balancing loss is the same however the step runs: the
    reference backpropagates lm_loss + coef * aux_loss(model) written out by hand."""
    import torch.nn.functional as F

    reference_model = mote_convert.load_model(packed, mode="train")
    inputs = _inputs(reference_model.config, batch=2, seq=24)
    out = reference_model(**inputs)  # no labels: the model adds nothing
    logits = out.logits[:, :-1].reshape(-1, out.logits.shape[-1]).float()
    lm = F.cross_entropy(logits, inputs["input_ids"][:, 1:].reshape(-1))
    (lm + 0.01 * mote_convert.aux_loss(reference_model)).backward()
    reference = _router_and_expert_grads(reference_model)
    assert any(".router." in n for n in reference)

    model = mote_convert.load_model(packed, mode="train")
    model.train()
    if "checkpointing" in variant:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": variant.startswith("reentrant")}
        )
        model.enable_input_require_grads()  # what reentrant checkpointing needs with frozen embeddings
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    scale = 0.25 if "accumulation" in variant else 1.0
    (loss * scale).backward()
    grads = _router_and_expert_grads(model)
    assert grads.keys() == reference.keys()
    for name, g in reference.items():
        torch.testing.assert_close(grads[name], g * scale, rtol=1e-4, atol=1e-7, msg=name)


def test_invalid_codes_are_refused_at_load(packed: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    root = tmp_path / "bad"
    shutil.copytree(packed, root)
    tensors = load_file(root / "model.safetensors")
    name = "language_model.model.layers.1.mlp.experts.3.down_proj.weight_packed"
    tensors[name][0, 0] |= 0b11
    save_file(tensors, root / "model.safetensors", metadata={"format": "pt", "mote_format": "1"})
    for mode in ("packed", "train"):
        with pytest.raises(mote_convert.MoteError, match=rf"^{name}: 1 invalid 2-bit codes \(0b11\)$"):
            mote_convert.load_model(root, mode=mode)


def test_load_and_save_print_nothing(packed: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """The library never prints: transformers' loading and saving progress bars stay off."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    capfd.readouterr()
    model = mote_convert.load_model(packed, mode="train")
    mote_convert.save_model(model, tmp_path / "saved", expert_format="latent")
    captured = capfd.readouterr()
    assert captured.out == "" and "Loading weights" not in captured.err and "%|" not in captured.err, captured.err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is left as it was


def test_an_index_pointing_outside_the_directory_is_one_error(packed: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from mote_convert.errors import CorruptCheckpointError

    root = tmp_path / "outside"
    shutil.copytree(packed, root)
    from safetensors import safe_open

    with safe_open(str(root / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    index = {"metadata": {}, "weight_map": {k: "../elsewhere/model.safetensors" for k in keys}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptCheckpointError, match="is not inside the checkpoint"):
        mote_convert.load_model(root)
