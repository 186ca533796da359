"""`mote-convert export vllm` without vLLM: the written tensors against the MoTE checkpoint's, tensor
by tensor (the Qwen2-MoE identities: a zero shared-expert gate and a doubled shared down_proj, zero
q/k/v biases), the config vLLM reads, and the refusals. tests/serving/ serves the output in vLLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from tests.helpers import assert_one_line_error, read_all
from tests.serving.tiny import build_mote

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-export")
    mote = build_mote(root, "llama")
    out = root / "served"
    result = runner.invoke(app, ["export", "vllm", str(mote), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return {"mote": mote, "served": out}


def test_every_tensor_is_the_checkpoints_under_qwen2_moe_names(tiny: dict[str, Path]) -> None:
    src, out = read_all(tiny["mote"]), read_all(tiny["served"])
    seen = set()
    for layer in range(2):
        p = f"model.layers.{layer}"
        for proj in ("gate_proj", "up_proj"):
            assert torch.equal(out[f"{p}.mlp.shared_expert.{proj}.weight"], src[f"{p}.mlp.{proj}.weight"])
        down = src[f"{p}.mlp.down_proj.weight"]
        assert torch.equal(out[f"{p}.mlp.shared_expert.down_proj.weight"], down * 2)
        assert torch.equal(out[f"{p}.mlp.shared_expert.down_proj.weight"] / 2, down)  # doubling is exact
        gate = out[f"{p}.mlp.shared_expert_gate.weight"]
        assert gate.shape == (1, 256) and not gate.any()  # sigmoid(0) = 1/2 of the doubled shared expert
        assert torch.equal(out[f"{p}.mlp.gate.weight"], src[f"{p}.mlp.router.weight"])
        assert out[f"{p}.mlp.gate.weight"].dtype == torch.float32
        for proj, width in (("q", 256), ("k", 128), ("v", 128)):
            bias = out[f"{p}.self_attn.{proj}_proj.bias"]
            assert bias.shape == (width,) and not bias.any()
        seen |= {f"{p}.mlp.{k}.weight" for k in ("gate_proj", "up_proj", "down_proj", "router")}
    for name, tensor in src.items():
        if name not in seen:  # experts (packed codes and gamma), attention, norms, embeddings: as stored
            assert torch.equal(out[name], tensor), name
    new = {n for n in out if n not in src}
    assert all(".shared_expert" in n or ".gate.weight" in n or n.endswith("_proj.bias") for n in new), new


def test_config_is_qwen2_moe_with_motes_routing_and_the_mote_quantization(tiny: dict[str, Path]) -> None:
    config = json.loads((tiny["served"] / "config.json").read_text())
    mote = json.loads((tiny["mote"] / "config.json").read_text())
    assert config["model_type"] == "qwen2_moe" and config["architectures"] == ["Qwen2MoeForCausalLM"]
    assert config["quantization_config"] == {"quant_method": "mote", "bits": 2, "expert_format": "packed-2bit"}
    assert (config["num_experts"], config["num_experts_per_tok"]) == (4, 1)
    assert config["norm_topk_prob"] is False and config["mlp_only_layers"] == []
    assert config["moe_intermediate_size"] == config["shared_expert_intermediate_size"] == 512
    for key in ("hidden_size", "num_attention_heads", "num_key_value_heads", "rms_norm_eps", "vocab_size"):
        assert config[key] == mote[key], key
    assert "mote" not in config
    assert (tiny["served"] / "tokenizer.json").is_file()  # the tokenizer goes along


def test_layers_left_dense_are_qwen2_moes_mlp_only_layers(tmp_path: Path) -> None:
    from tests.serving.tiny import build_dense

    dense = build_dense(tmp_path / "dense", "qwen2")
    mote = mote_convert.upcycle(dense, tmp_path / "mote", layers="1").output
    out = mote_convert.export.vllm.export_vllm(mote, tmp_path / "served").output
    config = json.loads((out / "config.json").read_text())
    assert config["mlp_only_layers"] == [0]
    tensors = {}
    for shard in out.glob("*.safetensors"):
        tensors.update(load_file(shard))
    assert "model.layers.0.mlp.gate_proj.weight" in tensors  # the dense layer keeps its FFN's names
    assert "model.layers.1.mlp.shared_expert.gate_proj.weight" in tensors
    src = read_all(mote)
    assert torch.equal(tensors["model.layers.0.self_attn.q_proj.bias"], src["model.layers.0.self_attn.q_proj.bias"])


@pytest.mark.parametrize(
    ("family", "needle"),
    [
        ("qwen3", "vLLM export of a 'qwen3' model: vLLM's Qwen3-MoE has no shared expert"),
        ("gemma3", "vLLM export of a 'gemma3' model: Gemma's (1 + w) norms, scaled embeddings and GeGLU"),
        ("qwen2_vl", "vLLM export of a 'qwen2_vl' model: multimodal RoPE (M-RoPE), which vLLM's Qwen2-MoE does not"),
        ("phi3", "vLLM export of a 'phi3' model: no vLLM MoE model computes its decoder"),
    ],
)
def test_families_vllm_cannot_serve_are_refused_naming_why(tmp_path: Path, family: str, needle: str) -> None:
    from mote_convert.tiny import build_tiny_llava
    from tests.families import FAMILIES

    if family == "qwen3":  # a LLaVA whose language model is Qwen3
        dense = build_tiny_llava(tmp_path / "dense", text_model_type="qwen3")
    else:
        dense = FAMILIES[family].build(tmp_path / "dense")
    mote = mote_convert.upcycle(dense, tmp_path / "mote").output
    out = tmp_path / "served"
    assert_one_line_error(runner.invoke(app, ["export", "vllm", str(mote), "-o", str(out)]), 5, needle)
    assert not out.exists()


def test_a_dense_checkpoint_is_refused(tiny: dict[str, Path], tmp_path: Path) -> None:
    dense = tiny["mote"].parent / "dense"
    result = runner.invoke(app, ["export", "vllm", str(dense), "-o", str(tmp_path / "x")])
    assert_one_line_error(result, 8, "not a MoTE checkpoint")
