"""Architecture definitions are data, looked up by model_type."""

from __future__ import annotations

import pytest

from mote_convert.arch import FFN_KINDS, get_architecture, get_ffn_kind, list_architectures
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
    assert set(FFN_KINDS) >= {"gated", "plain"}
    assert get_ffn_kind("gated").expected_shape("down_proj", 8, 32) == (8, 32)
    with pytest.raises(UnsupportedArchitectureError, match="known: gated, plain"):
        get_ffn_kind("moe")
