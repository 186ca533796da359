"""Architectures: found from the model itself, refused with a reason, or (overrides) from a file."""

from __future__ import annotations

import pytest

from mote_convert.arch import FFN_KINDS, architecture_of, get_ffn_kind
from mote_convert.arch.discover import Refusal
from mote_convert.arch.survey import shrunk_config
from mote_convert.errors import UnsupportedArchitectureError
from tests.families import FAMILIES

# What the hand-written definition files said before discovery replaced them: discovery must find
# the same FFN, key styles (the first is what save_pretrained writes), module path and side prefixes.
BEFORE = {
    "llava": ("gated", ("language_model.model.layers.{layer}.mlp", "model.language_model.layers.{layer}.mlp")),
    "qwen2_vl": ("gated", ("model.layers.{layer}.mlp", "model.language_model.layers.{layer}.mlp")),
    "idefics3": ("gated", ("model.text_model.layers.{layer}.mlp",)),
    "phi": ("plain", ("model.layers.{layer}.mlp",)),
    "phi3": ("fused_gated", ("model.layers.{layer}.mlp",)),
}


def _config(family: str) -> dict:
    config = FAMILIES[family].config()
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return config | {"architectures": [FAMILIES[family].model_class]}


@pytest.mark.parametrize("family", ["llava-llama", "qwen2_vl", "idefics3", "phi", "phi3"])
def test_discovery_finds_what_the_definition_files_said(family: str) -> None:
    config = _config(family)
    arch = architecture_of(config)
    kind, styles = BEFORE[config["model_type"]]
    assert (arch.ffn_kind.name, arch.ffn_prefixes) == (kind, styles)
    assert arch.discovered and arch.ffn_layers is None


def test_llava_side_prefixes_and_module_path() -> None:
    arch = architecture_of(_config("llava-llama"))
    assert arch.module_path_for(7) == "model.language_model.layers.7.mlp"
    assert arch.prefixes_for(7) == ("language_model.model.layers.7.mlp", "model.language_model.layers.7.mlp")
    assert arch.text_config == "text_config"
    assert arch.vision_prefixes == ("vision_tower.", "model.vision_tower.")
    assert arch.projector_prefixes == ("multi_modal_projector.", "model.multi_modal_projector.")
    next_arch = architecture_of(_config("llava_next"))  # a loose parameter of the model: the projector's
    assert next_arch.projector_prefixes[-2:] == ("image_newline", "model.image_newline")


def test_unknown_model_types_say_what_is_wrong() -> None:
    with pytest.raises(
        UnsupportedArchitectureError, match=r"unsupported model_type 'nonesuch': transformers .* does not know it"
    ):
        architecture_of({"model_type": "nonesuch"})
    with pytest.raises(
        Refusal, match=r"'bert' cannot be up-cycled: its decoder layers have no dense FFN of a known kind"
    ):
        architecture_of(shrunk_config("bert"))


def test_ffn_kinds() -> None:
    assert {"gated", "gated_w", "plain", "plain_up_down", "fused_gated"} <= set(FFN_KINDS)
    assert get_ffn_kind("gated").expected_shape("down_proj", 8, 32) == (8, 32)
    assert get_ffn_kind("fused_gated").expected_shape("gate_up_proj", 8, 32) == (64, 8)
    assert get_ffn_kind("gated_w").projections == ("w1", "w3", "w2")
    with pytest.raises(UnsupportedArchitectureError, match="known: fused_gated, gated, gated_w, plain"):
        get_ffn_kind("moe")


def test_refused_model_types_say_why() -> None:
    with pytest.raises(
        Refusal, match=r"'mixtral' cannot be up-cycled: its decoder FFNs are already mixture-of-experts"
    ):
        architecture_of({"model_type": "mixtral"})
    llava = _config("llava-llama")
    with pytest.raises(Refusal, match=r"llava with a 'qwen2_moe' language model cannot be up-cycled: its decoder FFNs"):
        architecture_of(llava | {"text_config": {"model_type": "qwen2_moe"}})


def test_moe_decoders_are_refused_from_the_model_itself() -> None:
    """A MoE family that configs/unsupported.yaml does not list is found to be one."""
    with pytest.raises(Refusal, match="already mixture-of-experts") as caught:
        architecture_of(shrunk_config("granitemoe_swa"))
    assert "granitemoe_swa" in str(caught.value)


def test_a_hybrid_decoder_upcycles_every_layer_with_a_dense_ffn() -> None:
    """LFM2 has convolution layers beside attention layers, each with a dense FFN; Qwen3.5 has
    linear-attention layers beside attention layers."""
    config = shrunk_config("lfm2") | {"layer_types": ["conv", "full_attention"]}
    arch = architecture_of(config)
    assert arch.ffn_kind.name == "gated_w" and arch.module_path == "model.layers.{layer}.feed_forward"
    assert arch.ffn_layers is None
    qwen = shrunk_config("qwen3_5")
    assert len(set(qwen["text_config"]["layer_types"])) == 2
    assert architecture_of(qwen).ffn_layers is None


def test_text_config_falls_back_to_the_top_level() -> None:
    qwen = architecture_of(_config("qwen2_vl"))
    old_style = {"model_type": "qwen2_vl", "num_hidden_layers": 28, "hidden_size": 3584}
    assert qwen.text_config_of(old_style) is old_style
    with pytest.raises(UnsupportedArchitectureError, match="has no 'text_config' object"):
        architecture_of(_config("llava-llama")).text_config_of({"model_type": "llava"})
