"""GGUF export: the planned file read back with gguf's own reader and dequantizers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.errors import OptionsError, OutputExistsError, UnsupportedArchitectureError
from mote_convert.export import export_gguf
from mote_convert.export.tensors import permute_rope
from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_llava, build_tiny_processor
from tests.helpers import assert_one_line_error, distinct_experts, read_all, spec_unpack

gguf = pytest.importorskip("gguf")
runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Rows of 256 (TQ blocks) for hidden 256 / intermediate 512; bf16 like real checkpoints."""
    root = tmp_path_factory.mktemp("gguf")
    dense = build_tiny_llava(
        root / "dense",
        hidden_size=256,
        intermediate_size=512,
        vocab_size=TINY_VOCAB_WITH_PROCESSOR,
        dtype=torch.bfloat16,
    )
    build_tiny_processor(dense)
    mote_convert.upcycle(dense, root / "mote")
    mote_convert.upcycle(dense, root / "latent", latent=True)
    mote_convert.upcycle(dense, root / "even", layers="even")
    # experts that differ: an expert written in another one's place changes the values
    distinct = distinct_experts(root / "latent", root / "distinct-latent")
    mote_convert.pack(distinct, root / "distinct-packed")
    return {
        "root": root,
        "dense": dense,
        "mote": root / "mote",
        "latent": root / "latent",
        "even": root / "even",
        "distinct-latent": distinct,
        "distinct-packed": root / "distinct-packed",
    }


def _tensors(path: Path) -> dict[str, object]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _values(t: object) -> np.ndarray:
    """A GGUF tensor as float32, in numpy (row-major) order, through gguf's own dequantizers."""
    data = gguf.quants.dequantize(t.data, t.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))


@pytest.mark.parametrize("expert_type", ["tq2_0", "tq1_0"])
@pytest.mark.parametrize("source", ["distinct-packed", "distinct-latent"])
def test_expert_blocks_decode_to_gamma_times_the_spec_codes(
    models: dict[str, Path], tmp_path: Path, expert_type: str, source: str
) -> None:
    """Expert e of each stacked tensor is expert e's own gamma * T (the experts differ)."""
    out = tmp_path / "m.gguf"
    export_gguf(models[source], out, expert_type=expert_type)
    tensors = _tensors(out)
    packed = read_all(
        models["distinct-packed"]
    )  # the SPEC codes and gamma of each expert (pack's, from the same latents)
    prefix = "language_model.model.layers"
    for layer in (0, 1):
        for proj, short in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            t = tensors[f"blk.{layer}.ffn_{short}_exps.weight"]
            assert t.tensor_type.name == expert_type.upper()
            got = _values(t)
            for e in range(4):
                base = f"{prefix}.{layer}.mlp.experts.{e}.{proj}"
                gamma = packed[f"{base}.weight_scale"].reshape(())
                codes = spec_unpack(packed[f"{base}.weight_packed"], got.shape[1]).numpy()
                scale = np.float32(np.float16(gamma.item()))  # TQ blocks hold gamma as fp16
                assert np.array_equal(got[e], codes.astype(np.float32) * scale), (layer, proj, e)


def test_everything_else_is_bit_exact(models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.gguf"
    export_gguf(models["mote"], out)
    tensors = _tensors(out)
    source = read_all(models["mote"])
    lm = "language_model.model."
    config = mote_convert.load_model(models["mote"]).config.text_config
    checks = {
        "token_embd.weight": source[f"{lm}embed_tokens.weight"],
        "output_norm.weight": source[f"{lm}norm.weight"],
        "output.weight": source["language_model.lm_head.weight"],
    }
    for layer in (0, 1):
        src = f"{lm}layers.{layer}."
        checks |= {
            f"blk.{layer}.attn_q.weight": permute_rope(
                source[src + "self_attn.q_proj.weight"], config.num_attention_heads
            ),
            f"blk.{layer}.attn_k.weight": permute_rope(
                source[src + "self_attn.k_proj.weight"], config.num_key_value_heads
            ),
            f"blk.{layer}.attn_v.weight": source[src + "self_attn.v_proj.weight"],
            f"blk.{layer}.ffn_down_shexp.weight": source[src + "mlp.down_proj.weight"],
            f"blk.{layer}.ffn_gate_inp.weight": source[src + "mlp.router.weight"],
            f"blk.{layer}.attn_norm.weight": source[src + "input_layernorm.weight"],
        }
    for name, expected in checks.items():
        t = tensors[name]
        want = expected.float().numpy()
        assert t.tensor_type.name == ("F32" if expected.dtype == torch.float32 or expected.dim() == 1 else "BF16"), name
        assert np.array_equal(_values(t), want), name


def test_permutation_is_the_rope_layout_change() -> None:
    """The interleaved RoPE of a permuted q equals Hugging Face's rotate-half RoPE of the original."""
    from transformers.models.llama.modeling_llama import rotate_half

    heads, dim, hidden = 2, 8, 16
    w = torch.randn(heads * dim, hidden)
    x = torch.randn(3, hidden)
    pos = torch.arange(3).float()
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))
    ang = pos[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()
    q = (x @ w.t()).view(3, heads, dim)
    hf = q * cos[:, None] + rotate_half(q) * sin[:, None]
    qp = (x @ permute_rope(w, heads).t()).view(3, heads, dim // 2, 2)
    c, s = ang.cos()[:, None], ang.sin()[:, None]
    inter = torch.stack([qp[..., 0] * c - qp[..., 1] * s, qp[..., 0] * s + qp[..., 1] * c], -1).view(3, heads, dim)
    # interleaved row 2j + h is rotate-half row h * dim/2 + j: the same rotation, rows reordered
    torch.testing.assert_close(
        inter.view(3, heads, dim // 2, 2).transpose(-1, -2).reshape(3, heads, dim), hf, rtol=1e-5, atol=1e-5
    )


def test_shared_type_and_mmproj_and_vocab(models: dict[str, Path], tmp_path: Path) -> None:
    out, vision = tmp_path / "m.gguf", tmp_path / "mmproj.gguf"
    result = export_gguf(models["mote"], out, shared_type="q8_0", expert_type="tq1_0", mmproj=vision)
    assert [f.arch for f in result.files] == ["deepseek", "clip"]
    tensors = _tensors(out)
    assert tensors["blk.0.ffn_up_shexp.weight"].tensor_type.name == "Q8_0"
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "BF16"  # only what was asked is quantized
    reader = gguf.GGUFReader(out)
    field = reader.fields["tokenizer.ggml.tokens"]
    assert len(field.data) == TINY_VOCAB_WITH_PROCESSOR
    assert "tokenizer.chat_template" in reader.fields
    assert reader.fields["deepseek.expert_count"].parts[-1][0] == 4
    vt = _tensors(vision)
    assert {"v.patch_embd.weight", "mm.0.weight", "mm.2.bias", "v.blk.0.ffn_up.weight"} <= set(vt)
    # vision_feature_layer -2 of 2 layers: the encoder is written up to its first layer
    assert not any(n.startswith("v.blk.1.") for n in vt)


def test_refusals(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(UnsupportedArchitectureError, match="dense layers only before the MoE ones"):
        export_gguf(models["even"], tmp_path / "x.gguf")
    with pytest.raises(OptionsError, match="unknown tensor type 'q2_k'; known: tq2_0, tq1_0"):
        export_gguf(models["mote"], tmp_path / "x.gguf", expert_type="q2_k")
    (tmp_path / "x.gguf").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        export_gguf(models["mote"], tmp_path / "x.gguf")
    assert (tmp_path / "x.gguf").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.gguf"]  # nothing staged is left


def test_cli(models: dict[str, Path], tmp_path: Path) -> None:
    from tests.conftest import tree_digest

    before = tree_digest(models["mote"])
    out = tmp_path / "m.gguf"
    result = runner.invoke(app, ["export", "gguf", str(models["mote"]), "-o", str(out), "--dry-run"])
    assert result.exit_code == 0 and "deepseek" in result.output and not out.exists()
    result = runner.invoke(
        app, ["export", "gguf", str(models["mote"]), "-o", str(out), "--mmproj", str(tmp_path / "v.gguf")]
    )
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "v.gguf").is_file()
    assert_one_line_error(
        runner.invoke(app, ["export", "gguf", str(models["mote"]), "-o", str(out)]), 7, "already exists"
    )
    assert_one_line_error(
        runner.invoke(
            app, ["export", "gguf", str(models["mote"]), "-o", str(tmp_path / "y.gguf"), "--shared-type", "q3"]
        ),
        2,
        "unknown tensor type 'q3'",
    )
    assert tree_digest(models["mote"]) == before  # exports, a refused one too, never touch the input


@pytest.mark.parametrize(
    ("name", "content", "code", "needle"),
    [
        ("tokenizer.json", "{not json", 4, "tokenizer.json: not valid JSON"),
        ("tokenizer_config.json", "[1, 2]", 4, "tokenizer_config.json: must hold a JSON object, not a list"),
        (
            "tokenizer.json",
            "{}",
            5,
            "GGUF export supports BPE tokenizers, byte-fallback (Llama 2, Mistral) or byte-level",
        ),
        (
            "tokenizer_config.json",
            '{"added_tokens_decoder": 3}',
            4,
            "transformers cannot load the tokenizer (AttributeError",
        ),
        (
            "processor_config.json",
            '{"image_mean": [1, "a", 2], "image_std": [1, 2, 3]}',
            4,
            "processor_config.json: image_mean and image_std must be lists of 3 finite numbers",
        ),
    ],
)
def test_broken_tokenizer_and_processor_files_are_one_line_errors(
    models: dict[str, Path], tmp_path: Path, name: str, content: str, code: int, needle: str
) -> None:
    import shutil

    broken = tmp_path / "mote"
    shutil.copytree(models["mote"], broken)
    (broken / name).write_text(content)
    out = tmp_path / "m.gguf"
    result = runner.invoke(app, ["export", "gguf", str(broken), "-o", str(out), "--mmproj", str(tmp_path / "v.gguf")])
    assert_one_line_error(result, code, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mote"]  # refused from the plan: nothing written


CONFIG_FAULTS = {
    "hidden_size a string": (
        lambda c: c["text_config"].update(hidden_size="x"),
        5,
        "no integer text_config.hidden_size",
    ),
    "hidden_size not the tensors'": (
        lambda c: c["text_config"].update(hidden_size=128),
        8,
        "embed_tokens.weight is [384, 256]; config.json's sizes say ['*', 128]",
    ),
    # transformers' own config validation names the field first (stock from_pretrained refuses it too)
    "head_dim a list": (lambda c: c["text_config"].update(head_dim=[1, 2]), 5, "field 'head_dim'"),
    "rope_parameters true": (
        lambda c: c["text_config"].update(rope_parameters=True),
        5,
        "field 'rope_parameters'",
    ),
    "rms_norm_eps a string": (
        lambda c: c["text_config"].update(rms_norm_eps="x"),
        5,
        "field 'rms_norm_eps'",
    ),
    "vision layers beyond the tower": (
        lambda c: c["vision_config"].update(num_hidden_layers=2**31),
        8,
        "no vision_tower.encoder.layers.2.",
    ),
    "vision_feature_layer true": (lambda c: c.update(vision_feature_layer=True), 5, "vision_feature_layer is True"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FAULTS))
def test_config_values_of_the_wrong_kind_are_one_line_errors(
    models: dict[str, Path], tmp_path: Path, case: str
) -> None:
    import json
    import shutil

    edit, code, needle = CONFIG_FAULTS[case]
    broken = tmp_path / "mote"
    shutil.copytree(models["mote"], broken)
    config = json.loads((broken / "config.json").read_text())
    edit(config)
    (broken / "config.json").write_text(json.dumps(config))
    result = runner.invoke(
        app, ["export", "gguf", str(broken), "-o", str(tmp_path / "m.gguf"), "--mmproj", str(tmp_path / "v.gguf")]
    )
    assert_one_line_error(result, code, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mote"]


def test_inspect_gguf_sizes_equal_what_export_writes(models: dict[str, Path], tmp_path: Path) -> None:
    """The size table (shapes only) against the exported files' tensor data, setting by setting."""
    from mote_convert.export.sizes import checkpoint_gguf_sizes

    sizes = checkpoint_gguf_sizes(mote_convert.inspect_checkpoint(models["dense"]), models["dense"])
    assert sizes == checkpoint_gguf_sizes(mote_convert.inspect_checkpoint(models["mote"]), models["mote"])
    written = {
        "dense bf16": export_gguf(models["dense"], tmp_path / "d.gguf"),
        "MoTE TQ2_0 + bf16 shared": export_gguf(models["mote"], tmp_path / "m2.gguf"),
        "MoTE TQ1_0 + Q4_0 shared": export_gguf(
            models["mote"], tmp_path / "m1.gguf", expert_type="tq1_0", shared_type="q4_0"
        ),
    }
    for setting, result in written.items():
        assert result.files[0].nbytes == sizes[setting], setting
    assert (
        sizes["dense Q4_0"]
        < sizes["MoTE TQ1_0 + Q4_0 shared"]
        < sizes["dense bf16"]
        < sizes["MoTE TQ2_0 + bf16 shared"]
    )
    result = runner.invoke(app, ["inspect", str(models["dense"]), "--gguf", "--json"])
    assert result.exit_code == 0 and '"gguf_sizes"' in result.output


def test_mmproj_refuses_other_vision_families_by_name(models: dict[str, Path], tmp_path: Path) -> None:
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(models["mote"], other)
    config = json.loads((other / "config.json").read_text())
    config["projector_hidden_act"] = "relu"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UnsupportedArchitectureError,
        match=r"--mmproj supports LLaVA-1.5-style models .*projector's activation is 'relu'",
    ):
        export_gguf(other, tmp_path / "x.gguf", mmproj=tmp_path / "v.gguf")
    assert not (tmp_path / "x.gguf").exists()  # refused from the plan, before anything was written


def test_a_tensor_the_export_does_not_place_is_refused_by_name(models: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from mote_convert.errors import FormatError

    extra = tmp_path / "extra"
    shutil.copytree(models["mote"], extra)
    shard = sorted(extra.glob("*.safetensors"))[0]
    tensors = load_file(shard)
    tensors["language_model.model.layers.0.mlp.mystery.weight"] = torch.zeros(2, 2)
    save_file(tensors, shard, metadata={"format": "pt"})
    if (extra / "model.safetensors.index.json").exists():
        import json

        index = json.loads((extra / "model.safetensors.index.json").read_text())
        index["weight_map"]["language_model.model.layers.0.mlp.mystery.weight"] = shard.name
        (extra / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        FormatError, match=r"does not know where language_model\.model\.layers\.0\.mlp\.mystery\.weight goes"
    ):
        export_gguf(extra, tmp_path / "x.gguf", dry_run=True)


def test_output_paths_are_refused_before_either_file_is_written(models: dict[str, Path], tmp_path: Path) -> None:
    out, vision = tmp_path / "m.gguf", tmp_path / "v.gguf"
    vision.write_bytes(b"keep")
    args = ["export", "gguf", str(models["mote"]), "-o", str(out)]
    assert_one_line_error(runner.invoke(app, [*args, "--mmproj", str(vision)]), 7, "already exists")
    assert not out.exists() and vision.read_bytes() == b"keep"  # the text GGUF was not written first
    (tmp_path / "sub").mkdir()
    through = tmp_path / "sub" / ".." / "m.gguf"  # the output's own path, spelled another way
    assert_one_line_error(runner.invoke(app, [*args, "--mmproj", str(through)]), 2, "names the same file as the output")
    directory = tmp_path / "a-directory"
    (directory / "inside").mkdir(parents=True)
    result = runner.invoke(app, ["export", "gguf", str(models["mote"]), "-o", str(directory), "--overwrite"])
    assert_one_line_error(result, 7, "is a directory; the output is a file")
    assert (directory / "inside").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-directory", "sub", "v.gguf"]


def test_an_export_prints_nothing_but_its_table(models: dict[str, Path], tmp_path: Path) -> None:
    """gguf logs a notice about the tokenizer's pair template with no handler of its own; it stays off stderr
    (which holds the progress bar and how to upload the file, nothing else)."""
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mote_convert.cli",
            "export",
            "gguf",
            str(models["mote"]),
            "-o",
            str(tmp_path / "m.gguf"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert not [
        line
        for line in result.stderr.splitlines()
        if line.strip() and "━" not in line and "exporting" not in line and not line.startswith("upload it: hf upload")
    ]


def test_an_odd_head_dimension_is_refused_by_name(models: dict[str, Path], tmp_path: Path) -> None:
    import json
    import shutil

    root = tmp_path / "mote"
    shutil.copytree(models["mote"], root)
    config = json.loads((root / "config.json").read_text())
    config["text_config"]["head_dim"] = 1
    config["text_config"]["num_attention_heads"] = 256
    config["text_config"]["num_key_value_heads"] = 256
    (root / "config.json").write_text(json.dumps(config))
    assert_one_line_error(
        runner.invoke(app, ["export", "gguf", str(root), "-o", str(tmp_path / "m.gguf")]), 5, "head dimension 1 is odd"
    )


def test_q8_0_shared_experts_and_the_vocabulary_are_values_not_only_types(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """Each shared projection is llama.cpp's Q8_0 of its own weight (gguf's quantizer as the oracle);
    the vocabulary is the HF tokenizer's, token by token."""
    from transformers import AutoTokenizer

    out = tmp_path / "m.gguf"
    export_gguf(models["mote"], out, shared_type="q8_0")
    tensors = _tensors(out)
    source = read_all(models["mote"])
    for layer in (0, 1):
        for proj, short in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            weight = source[f"language_model.model.layers.{layer}.mlp.{proj}.weight"].float().numpy()
            expected = gguf.quants.dequantize(
                gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
            )
            assert np.array_equal(_values(tensors[f"blk.{layer}.ffn_{short}_shexp.weight"]), expected), (layer, proj)
    field = gguf.GGUFReader(out).fields["tokenizer.ggml.tokens"]
    tokens = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
    tokenizer = AutoTokenizer.from_pretrained(models["mote"])
    assert tokens == tokenizer.convert_ids_to_tokens(list(range(len(tokens))))


def test_mmproj_tensors_are_the_vision_towers_values(models: dict[str, Path], tmp_path: Path) -> None:
    """The source's values under llama.cpp's names: 1-D tensors as f32 bit for bit, matrices as their nearest f16."""
    vision = tmp_path / "v.gguf"
    export_gguf(models["mote"], tmp_path / "m.gguf", mmproj=vision)
    tensors = _tensors(vision)
    source = read_all(models["mote"])
    v = "vision_tower."  # transformers 5 saves the CLIP tower without its vision_model level
    mapping = {
        "v.patch_embd.weight": f"{v}embeddings.patch_embedding.weight",
        "v.class_embd": f"{v}embeddings.class_embedding",
        "v.position_embd.weight": f"{v}embeddings.position_embedding.weight",
        "v.pre_ln.weight": f"{v}pre_layrnorm.weight",
        "v.blk.0.attn_q.weight": f"{v}encoder.layers.0.self_attn.q_proj.weight",
        "v.blk.0.attn_q.bias": f"{v}encoder.layers.0.self_attn.q_proj.bias",
        "v.blk.0.ffn_up.weight": f"{v}encoder.layers.0.mlp.fc1.weight",
        "v.blk.0.ffn_down.weight": f"{v}encoder.layers.0.mlp.fc2.weight",
        "mm.0.weight": "multi_modal_projector.linear_1.weight",
        "mm.0.bias": "multi_modal_projector.linear_1.bias",
        "mm.2.weight": "multi_modal_projector.linear_2.weight",
    }
    for name, src in mapping.items():
        t = tensors[name]
        stored = source[src].to(torch.float16) if t.tensor_type.name == "F16" else source[src]  # f16: the nearest f16
        want = stored.float().numpy()
        assert t.tensor_type.name == ("F32" if source[src].dim() == 1 else "F16"), name
        assert np.array_equal(_values(t).reshape(want.shape), want), name


def test_rows_that_are_not_whole_blocks_fall_back_to_exact_q4_0(tmp_path: Path) -> None:
    """Hidden 64 (no 256-weight TQ blocks): each expert is Q4_0 blocks that gguf's own dequantizer
    turns into fp16(gamma) * T exactly (the TQ types' value), at 4.5 bits per weight, not Q8_0's 8.5."""
    dense = build_tiny_llava(tmp_path / "dense", vocab_size=TINY_VOCAB_WITH_PROCESSOR)
    build_tiny_processor(dense)
    latent = distinct_experts(
        mote_convert.upcycle(dense, tmp_path / "latent", latent=True).output, tmp_path / "distinct"
    )
    packed = read_all(mote_convert.pack(latent, tmp_path / "packed").output)
    result = export_gguf(latent, tmp_path / "m.gguf")
    assert any("written as q4_0" in note for note in result.notes)
    tensors = _tensors(tmp_path / "m.gguf")
    for proj, short in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
        t = tensors[f"blk.1.ffn_{short}_exps.weight"]
        assert t.tensor_type.name == "Q4_0" and t.n_bytes * 8 == int(np.prod(t.shape)) * 4.5
        got = _values(t)
        for e in range(4):
            base = f"language_model.model.layers.1.mlp.experts.{e}.{proj}"
            codes = spec_unpack(packed[f"{base}.weight_packed"], got.shape[1]).float().numpy()
            gamma = np.float16(float(packed[f"{base}.weight_scale"])).astype(np.float32)
            assert np.array_equal(got[e], gamma * codes), (proj, e)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 5),
    blocks=st.integers(1, 4),
    gamma=st.floats(1e-4, 60000.0, allow_nan=False, allow_infinity=False),
    seed=st.integers(0, 2**31 - 1),
)
def test_ternary_q4_0_blocks_hold_exactly_fp16_gamma_times_t(rows: int, blocks: int, gamma: float, seed: int) -> None:
    """The fallback's blocks, decoded by gguf's own Q4_0 dequantizer: fp16(gamma) * T, every weight;
    gguf's Q4_0 quantizer (llama.cpp's) would not keep -gamma."""
    from mote_convert.export.tensors import ternary_q4_0

    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-1, 2, (rows, 32 * blocks), generator=g, dtype=torch.int8)
    data = ternary_q4_0(codes, torch.tensor(gamma))
    assert data.dtype == np.uint8 and data.shape == (rows, blocks * 18)
    decoded = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.Q4_0).reshape(rows, -1)
    want = np.float16(gamma).astype(np.float32) * codes.float().numpy()
    assert np.array_equal(decoded, want)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c["mote"].__setitem__("norm_topk_prob", True), "norm_topk_prob must be false"),
        (
            lambda c: c["text_config"].__setitem__("hidden_act", "gelu"),
            "needs SiLU-gated FFNs; this model's act is 'gelu'",
        ),
        (
            lambda c: c["text_config"]["rope_parameters"].update(rope_type="linear", factor=2.0),
            "does not carry RoPE scaling 'linear' (carried: default, llama3)",
        ),
        (lambda c: c["text_config"].update(model_type="mistral", sliding_window=4096), "sliding-window attention"),
    ],
)
def test_what_llama_cpp_would_compute_otherwise_is_refused(
    models: dict[str, Path], tmp_path: Path, edit, needle: str
) -> None:  # noqa: ANN001
    """Settings the deepseek GGUF cannot carry would give a file that runs and computes another model."""
    import json
    import shutil

    root = tmp_path / "mote"
    shutil.copytree(models["mote"], root)
    config = json.loads((root / "config.json").read_text())
    edit(config)
    (root / "config.json").write_text(json.dumps(config))
    out = tmp_path / "m.gguf"
    assert_one_line_error(runner.invoke(app, ["export", "gguf", str(root), "-o", str(out)]), 5, needle)
    assert not out.exists()


def _with_tokenizer(models: dict[str, Path], tmp_path: Path, edit: Any) -> Path:
    """A copy of the MoTE checkpoint with a byte-level (Qwen2-style) tokenizer.json, edited by ``edit``."""
    import json
    import shutil

    from mote_convert.tiny import tiny_byte_level_tokenizer

    model = tmp_path / "mote"
    shutil.copytree(models["mote"], model)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    tiny_byte_level_tokenizer("qwen2").save_pretrained(model)
    data = json.loads((model / "tokenizer.json").read_text())
    edit(data)
    (model / "tokenizer.json").write_text(json.dumps(data))
    return model


@pytest.mark.parametrize(
    ("edit", "code", "needle"),
    [
        (
            lambda d: d["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\p{L}+|\s+"),
            5,
            "pre-tokenizer is none that llama.cpp implements (split \\p{L}+|\\s+); known: llama-bpe (Llama 3",
        ),
        (
            lambda d: d.update(pre_tokenizer={"type": "Metaspace", "replacement": "_"}),
            5,
            "pre-tokenizer is none that llama.cpp implements (other Metaspace)",
        ),
        (
            lambda d: d.update(normalizer={"type": "Lowercase"}),
            5,
            "llama.cpp's byte-level tokenizer does not normalize text as this one does (Lowercase)",
        ),
        (lambda d: d["model"].update(type="Unigram"), 5, "this tokenizer.json's model is 'Unigram' with decoder"),
        (lambda d: d["model"].update(merges=[]), 8, "this byte-level BPE tokenizer.json has no merges"),
    ],
)
def test_tokenizers_llamacpp_cannot_run_are_refused_by_name(
    models: dict[str, Path], tmp_path: Path, edit: Any, code: int, needle: str
) -> None:
    model = _with_tokenizer(models, tmp_path, edit)
    out = tmp_path / "m.gguf"
    result = runner.invoke(app, ["export", "gguf", str(model), "-o", str(out)])
    assert_one_line_error(result, code, needle)
    assert not out.exists()


def test_a_byte_level_vocabulary_is_the_tokenizer_json_token_by_token(models: dict[str, Path], tmp_path: Path) -> None:
    """Byte-level tokens as tokenizer.json spells them, their merges, llama.cpp's pre-tokenizer name,
    added tokens typed by their special flag, padding to the embedding's rows."""
    import json

    model = _with_tokenizer(models, tmp_path, lambda d: d["added_tokens"][-2].update(special=False))
    export_gguf(model, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")

    def strings(key: str) -> list[str]:
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    data = json.loads((model / "tokenizer.json").read_text())
    names = {i: t for t, i in data["model"]["vocab"].items()} | {a["id"]: a["content"] for a in data["added_tokens"]}
    assert strings("tokenizer.ggml.tokens") == [names[i] for i in range(len(names))]
    assert bytes(reader.fields["tokenizer.ggml.model"].parts[-1]).decode() == "gpt2"
    assert bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode() == "qwen2"
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    assert strings("tokenizer.ggml.merges") == merges
    types = reader.fields["tokenizer.ggml.token_type"]
    kinds = [int(types.parts[i][0]) for i in types.data]
    special = {a["id"]: a["special"] for a in data["added_tokens"]}
    expected = [
        (gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED)
        if i in special
        else gguf.TokenType.NORMAL
        for i in range(len(names))
    ]
    assert kinds == [int(k) for k in expected]
    assert gguf.TokenType.USER_DEFINED in expected
    assert "tokenizer.ggml.scores" not in reader.fields


def test_quantize_levels_and_its_dependency_are_checked_before_anything_is_written(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "m.gguf"
    result = runner.invoke(app, ["export", "gguf", str(models["mote"]), "-o", str(out), "--quantize", "q4_k"])
    assert_one_line_error(result, 2, "unknown quantization level 'q4_k'; known: q8_0, q6_k, q5_k_m")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # not installed
    result = runner.invoke(app, ["export", "gguf", str(models["mote"]), "-o", str(out), "--quantize", "Q4_0"])
    assert_one_line_error(result, 2, "--quantize runs llama.cpp's own quantizer, from llama-cpp-python: pip install")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("family", "needle"),
    [
        ("qwen2_vl", "'qwen2_vl_text' language model: multimodal RoPE (M-RoPE), which llama.cpp computes only"),
        ("qwen2_5_vl", "'qwen2_5_vl_text' language model: multimodal RoPE (M-RoPE)"),
        ("gemma3", "'gemma3_text' language model: Gemma's (1 + w) norms, scaled embeddings and GeGLU"),
        ("phi3", "'phi3' language model: no llama.cpp MoE architecture with a shared expert computes its decoder"),
    ],
)
def test_families_without_a_llamacpp_mapping_are_refused_naming_why(tmp_path: Path, family: str, needle: str) -> None:
    from tests.families import FAMILIES

    dense = FAMILIES[family].build(tmp_path / "dense")
    mote = mote_convert.upcycle(dense, tmp_path / "mote").output
    out = tmp_path / "m.gguf"
    result = runner.invoke(app, ["export", "gguf", str(mote), "-o", str(out)])
    assert_one_line_error(result, 5, needle)
    assert "exported: llama, mistral, qwen2, qwen3" in result.stderr and not out.exists()


@pytest.mark.parametrize(
    ("family", "needle"),
    [
        ("llava_next", "--mmproj is not written for llava_next: llama.cpp's mtmd slices LLaVA-NeXT images without"),
        ("llava_onevision", "--mmproj is not written for llava_onevision: llama.cpp's mtmd has no LLaVA-OneVision"),
        ("vipllava", "--mmproj is not written for vipllava: VipLLaVA projects features of several vision layers"),
    ],
)
def test_vision_families_without_an_mmproj_are_refused_naming_why(tmp_path: Path, family: str, needle: str) -> None:
    from tests.families import FAMILIES

    dense = FAMILIES[family].build(tmp_path / "dense")
    mote = mote_convert.upcycle(dense, tmp_path / "mote").output
    out, mmproj = tmp_path / "m.gguf", tmp_path / "v.gguf"
    result = runner.invoke(app, ["export", "gguf", str(mote), "-o", str(out), "--mmproj", str(mmproj), "--dry-run"])
    assert_one_line_error(result, 5, needle)
    assert not out.exists() and not mmproj.exists()
