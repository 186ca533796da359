"""upcycle end to end on tiny LLaVAs written by transformers (issue 2 acceptance)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import LlavaForConditionalGeneration
from transformers.integrations.bitnet import unpack_weights

import mote_convert
from mote_convert.errors import (
    CorruptCheckpointError,
    FormatError,
    InputNotFoundError,
    OptionsError,
    OutputExistsError,
    PlanError,
    UnsupportedArchitectureError,
)
from tests.conftest import tree_digest
from tests.helpers import file_metadata, raw_bytes, read_all, spec_codes

hf_unpack = getattr(unpack_weights, "_torchdynamo_orig_callable", unpack_weights)
PROJ = ("gate_proj", "up_proj", "down_proj")
SPEC_KEYS = {
    "format_version",
    "num_experts",
    "top_k",
    "moe_layers",
    "layer_prefixes",
    "projections",
    "expert_format",
    "weight_quant",
    "activation_bits",
    "router_aux_loss_coef",
    "norm_topk_prob",
}


@pytest.fixture(scope="module")
def upcycled(tiny_llava: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = tree_digest(tiny_llava)
    out = tmp_path_factory.mktemp("mote") / "tiny-llava-mote"
    mote_convert.upcycle(tiny_llava, out, max_shard_size="60KB")
    assert tree_digest(tiny_llava) == before, "upcycle modified its input"
    return out


def _prefix(layer: int) -> str:
    return f"language_model.model.layers.{layer}.mlp"


def test_copies_are_byte_identical(tiny_llava: Path, upcycled: Path) -> None:
    src, out = read_all(tiny_llava), read_all(upcycled)
    for name, t in src.items():  # every source tensor, the shared experts' included, keeps its name and bytes
        assert out[name].dtype == t.dtype and out[name].shape == t.shape
        assert raw_bytes(out[name]) == raw_bytes(t), name
    new = set(out) - set(src)
    assert all(".mlp.router." in n or ".mlp.experts." in n for n in new)
    assert not any(n.startswith(("vision_tower", "multi_modal_projector")) for n in new)


def test_experts_decode_to_spec_codes_with_transformers(tiny_llava: Path, upcycled: Path) -> None:
    src, out = read_all(tiny_llava), read_all(upcycled)
    for layer in (0, 1):
        for proj in PROJ:
            dense = src[f"{_prefix(layer)}.{proj}.weight"]
            codes, gamma = spec_codes(dense)
            for i in range(4):
                base = f"{_prefix(layer)}.experts.{i}.{proj}"
                packed = out[f"{base}.weight_packed"]
                assert packed.dtype == torch.uint8 and packed.shape == (math.ceil(dense.shape[0] / 4), dense.shape[1])
                decoded = hf_unpack(packed, dtype=torch.float32)[: dense.shape[0]]
                assert torch.equal(decoded, codes)
                scale = out[f"{base}.weight_scale"]
                assert scale.dtype == torch.float32 and scale.shape == (1,)
                assert torch.equal(scale[0], gamma)


def test_routers_and_config(tiny_llava: Path, upcycled: Path) -> None:
    out = read_all(upcycled)
    cfg = json.loads((upcycled / "config.json").read_text())
    src_cfg = json.loads((tiny_llava / "config.json").read_text())
    mote = cfg.pop("mote")
    assert cfg == src_cfg
    assert SPEC_KEYS <= set(mote)
    assert mote["format_version"] == 1 and mote["num_experts"] == 4 and mote["top_k"] == 1
    assert mote["moe_layers"] == [0, 1]
    assert mote["layer_prefixes"] == {"0": _prefix(0), "1": _prefix(1)}
    assert mote["projections"] == list(PROJ)
    assert mote["expert_format"] == "packed-2bit" and mote["weight_quant"] == "absmean-tensor"
    assert mote["activation_bits"] == 8 and mote["router_aux_loss_coef"] == 0.01 and mote["norm_topk_prob"] is False
    for layer in (0, 1):
        router = out[f"{_prefix(layer)}.router.weight"]
        assert router.dtype == torch.float32 and router.shape == (4, 64)
        assert 0.005 < router.std().item() < 0.05  # normal(0, initializer_range = 0.02)
    assert not torch.equal(out[f"{_prefix(0)}.router.weight"], out[f"{_prefix(1)}.router.weight"])
    assert all(m == {"format": "pt", "mote_format": "1"} for m in file_metadata(upcycled))


def test_other_files_copied(tiny_llava: Path, upcycled: Path) -> None:
    for rel in ("tokenizer_config.json", "chat_template.jinja", "extra/notes.txt", "generation_config.json"):
        assert (upcycled / rel).read_bytes() == (tiny_llava / rel).read_bytes()
    assert not any(p.name.startswith(".") for p in upcycled.parent.iterdir())  # no staging left behind


def test_stock_from_pretrained_gives_dense_logits(tiny_llava: Path, upcycled: Path) -> None:
    dense = LlavaForConditionalGeneration.from_pretrained(tiny_llava).eval()
    converted = LlavaForConditionalGeneration.from_pretrained(upcycled).eval()
    cfg = dense.config
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.image_token_id, (1, 24))
    ids[0, 2 : 2 + cfg.image_seq_length] = cfg.image_token_id
    pixels = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        a = dense(input_ids=ids, pixel_values=pixels).logits
        b = converted(input_ids=ids, pixel_values=pixels).logits
    assert torch.equal(a, b)


def test_bits_per_weight_counted_from_files(tiny_llava: Path, upcycled: Path) -> None:
    src, out = read_all(tiny_llava), read_all(upcycled)
    weights = sum(src[f"{_prefix(layer)}.{p}.weight"].numel() for layer in (0, 1) for p in PROJ) * 4
    stored = sum(
        t.numel() * t.element_size() for n, t in out.items() if n.endswith((".weight_packed", ".weight_scale"))
    )
    assert 8 * stored / weights <= 2.01


def test_shards_and_index(upcycled: Path) -> None:
    index = json.loads((upcycled / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) >= 3 and files == sorted(p.name for p in upcycled.glob("*.safetensors"))
    tensors = read_all(upcycled)
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    from safetensors import safe_open

    for name, f in index["weight_map"].items():
        with safe_open(str(upcycled / f), "pt") as handle:
            assert name in handle.keys()
    for f in files:
        assert (upcycled / f).stat().st_size < 60_000 + 20_000  # cap + header


def test_same_input_same_bytes(tiny_llava: Path, upcycled: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    mote_convert.upcycle(tiny_llava, again, max_shard_size="60KB")
    assert tree_digest(again) == tree_digest(upcycled)


def test_dry_run_writes_nothing(tiny_llava: Path, tmp_path: Path) -> None:
    result = mote_convert.upcycle(tiny_llava, tmp_path / "out", dry_run=True)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []
    assert result.dry_run and result.summary.moe_layers == 2 and result.summary.expert_bits_per_weight <= 2.01


def test_latent_layers_and_seed(tiny_llava_odd: Path, tmp_path: Path) -> None:
    src = read_all(tiny_llava_odd)
    latent = tmp_path / "latent"
    mote_convert.upcycle(tiny_llava_odd, latent, latent=True, layers="even", num_experts=2, top_k=2)
    out = read_all(latent)
    mote = json.loads((latent / "config.json").read_text())["mote"]
    assert mote["moe_layers"] == [0, 2] and mote["expert_format"] == "latent" and mote["top_k"] == 2
    assert not any(n.startswith(f"{_prefix(1)}.experts") or n.startswith(f"{_prefix(1)}.router") for n in out)
    for layer in (0, 2):
        for proj in PROJ:
            for i in range(2):
                expert = out[f"{_prefix(layer)}.experts.{i}.{proj}.weight"]
                assert expert.dtype == torch.bfloat16
                assert raw_bytes(expert) == raw_bytes(src[f"{_prefix(layer)}.{proj}.weight"])
    # a layer's router depends on the seed and the layer, not on which other layers are chosen
    only2 = tmp_path / "only2"
    mote_convert.upcycle(tiny_llava_odd, only2, layers="2", num_experts=2)
    assert torch.equal(read_all(only2)[f"{_prefix(2)}.router.weight"], out[f"{_prefix(2)}.router.weight"])
    reseeded = tmp_path / "reseeded"
    mote_convert.upcycle(tiny_llava_odd, reseeded, layers="2", num_experts=2, seed=1)
    assert not torch.equal(read_all(reseeded)[f"{_prefix(2)}.router.weight"], out[f"{_prefix(2)}.router.weight"])


def test_rows_not_multiple_of_four(tiny_llava_odd: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "odd"
    mote_convert.upcycle(tiny_llava_odd, out_dir)
    src, out = read_all(tiny_llava_odd), read_all(out_dir)
    dense = src[f"{_prefix(1)}.gate_proj.weight"]  # [90, 48] in bf16
    packed = out[f"{_prefix(1)}.experts.3.gate_proj.weight_packed"]
    assert packed.shape == (23, 48)
    assert torch.equal(hf_unpack(packed, dtype=torch.float32)[:90], spec_codes(dense)[0])


def test_recipe_with_flag_override(tiny_llava: Path, tmp_path: Path) -> None:
    result = mote_convert.upcycle(tiny_llava, tmp_path / "r", recipe="mote-half-layers", num_experts=3, dry_run=True)
    assert result.plan.mote.num_experts == 3 and result.plan.mote.moe_layers == (0,)


# -- bad input: one clear error each, nothing written, input untouched ---------------------------


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_bad_inputs(tiny_llava: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cases: list[tuple[type, str, dict]] = [
        (InputNotFoundError, "no such file", {"model_path": tmp_path / "missing"}),
        (OptionsError, "top-k", {"top_k": 5}),
        (OptionsError, "out of range", {"layers": "0,2"}),
    ]
    for exc, match, kwargs in cases:
        args = {"model_path": tiny_llava, "out_path": out, **kwargs}
        with pytest.raises(exc, match=match):
            mote_convert.upcycle(**args)
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    with pytest.raises(InputNotFoundError, match="no config.json"):
        mote_convert.upcycle(no_config, out)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_llava / "config.json").read_text())
    with pytest.raises(InputNotFoundError, match="no safetensors weights"):
        mote_convert.upcycle(no_weights, out)
    assert not out.exists()


def test_truncated_shard(tiny_llava: Path, tmp_path: Path) -> None:
    broken = _copy_checkpoint(tiny_llava, tmp_path / "broken")
    shard = sorted(broken.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-7])
    before = tree_digest(broken)
    with pytest.raises(CorruptCheckpointError, match=shard.name):
        mote_convert.upcycle(broken, tmp_path / "out")
    assert tree_digest(broken) == before and not (tmp_path / "out").exists()


def test_unsupported_model_type(tiny_llava: Path, tmp_path: Path) -> None:
    other = _copy_checkpoint(tiny_llava, tmp_path / "other")
    cfg = json.loads((other / "config.json").read_text())
    cfg["model_type"] = "whisper"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match="'whisper' cannot be up-cycled: .*no decoder layer count"):
        mote_convert.upcycle(other, tmp_path / "out")


def test_keys_that_do_not_match_and_bad_shapes(tiny_llava: Path, tmp_path: Path) -> None:
    cfg_path_model = _copy_checkpoint(tiny_llava, tmp_path / "m")
    cfg = json.loads((cfg_path_model / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 3  # layer 2 does not exist in the weights
    (cfg_path_model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitectureError, match=r"layers\.2\.mlp\.gate_proj\.weight not found"):
        mote_convert.upcycle(cfg_path_model, tmp_path / "out")
    cfg["text_config"]["num_hidden_layers"] = 2
    cfg["text_config"]["intermediate_size"] = 100
    (cfg_path_model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PlanError, match=r"gate_proj\.weight has shape \[128, 64\], expected \[100, 64\]"):
        mote_convert.upcycle(cfg_path_model, tmp_path / "out")


def test_existing_output_and_overwrite(tiny_llava: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        mote_convert.upcycle(tiny_llava, out)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputExistsError, match="overlaps the input"):
        mote_convert.upcycle(tiny_llava, tiny_llava, overwrite=True)
    mote_convert.upcycle(tiny_llava, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()


def test_already_mote_is_refused(upcycled: Path, tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="already a MoTE checkpoint"):
        mote_convert.upcycle(upcycled, tmp_path / "again")
