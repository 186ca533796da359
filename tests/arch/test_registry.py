"""Architecture definitions are data, looked up by model_type."""

from __future__ import annotations

import pytest

from mote_convert.arch import FFN_KINDS, check_text_model, get_architecture, get_ffn_kind, list_architectures
from mote_convert.errors import UnsupportedArchitectureError


def test_llava_definition() -> None:
    arch = get_architecture("llava")
    assert arch.ffn_kind.projections == ("gate_proj", "up_proj", "down_proj")
    assert arch.prefixes_for(7) == ("language_model.model.layers.7.mlp", "model.language_model.layers.7.mlp")
    assert arch.text_config == "text_config"
    assert arch in list_architectures()


def test_unknown_model_type_lists_supported() -> None:
    with pytest.raises(UnsupportedArchitectureError, match=r"unsupported model_type 'bert'; supported: .*llava"):
        get_architecture("bert")


def test_ffn_kinds() -> None:
    assert set(FFN_KINDS) == {"gated", "plain", "fused_gated"}
    assert get_ffn_kind("gated").expected_shape("down_proj", 8, 32) == (8, 32)
    assert get_ffn_kind("fused_gated").expected_shape("gate_up_proj", 8, 32) == (64, 8)
    with pytest.raises(UnsupportedArchitectureError, match="known: fused_gated, gated, plain"):
        get_ffn_kind("moe")


def test_every_family_of_the_issue_is_defined() -> None:
    wanted = {
        "llava": "gated",
        "llava_next": "gated",
        "llava_onevision": "gated",
        "vipllava": "gated",
        "paligemma": "gated",
        "idefics3": "gated",
        "smolvlm": "gated",
        "qwen2_vl": "gated",
        "qwen2_5_vl": "gated",
        "gemma3": "gated",
        "mistral3": "gated",
        "llama": "gated",
        "mistral": "gated",
        "qwen2": "gated",
        "gemma": "gated",
        "phi": "plain",
        "phi3": "fused_gated",
    }
    assert {t: get_architecture(t).ffn_kind.name for t in wanted} == wanted


def test_refused_model_types_say_why_and_list_supported() -> None:
    with pytest.raises(
        UnsupportedArchitectureError,
        match=r"'mixtral' cannot be up-cycled: its decoder FFNs are already mixture-of-experts layers .*; supported: .*llava",
    ):
        get_architecture("mixtral")
    llava = get_architecture("llava")
    with pytest.raises(
        UnsupportedArchitectureError,
        match=r"llava with a 'qwen2_moe' language model cannot be up-cycled: its decoder FFNs are already",
    ):
        check_text_model(llava, {"model_type": "llava", "text_config": {"model_type": "qwen2_moe"}})
    check_text_model(llava, {"model_type": "llava", "text_config": {"model_type": "qwen2"}})  # fine


def test_text_config_falls_back_to_the_top_level() -> None:
    qwen = get_architecture("qwen2_vl")
    old_style = {"model_type": "qwen2_vl", "num_hidden_layers": 28, "hidden_size": 3584}
    assert qwen.text_config_of(old_style) is old_style
    with pytest.raises(UnsupportedArchitectureError, match="has no 'text_config' object"):
        get_architecture("llava").text_config_of({"model_type": "llava"})
