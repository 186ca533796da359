"""Tiny models of every supported family, built from transformers' own config classes.

Shapes are tiny (hidden 32, intermediate 42 so that FFN rows are not a multiple of 4); key names,
module structure and file layout are transformers' own, from ``save_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

TEXT = dict(
    hidden_size=32,
    intermediate_size=42,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
)
IMAGE_TOKEN = 100  # ids >= 100 are special; text-only inputs stay below


def _text(name: str, **extra: Any) -> Any:
    import transformers

    return getattr(transformers, name)(**TEXT, head_dim=8, **extra)


def _clip() -> Any:
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
        projection_dim=32,
    )


def _siglip() -> Any:
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4
    )


def _idefics_vision() -> dict[str, Any]:
    return dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=16, patch_size=4
    )


def _qwen_text(name: str) -> dict[str, Any]:
    return dict(_text(name).to_dict(), rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]})


@dataclass(frozen=True)
class Family:
    """How to build one family's tiny model."""

    name: str
    model_class: str
    config: Callable[[], Any]

    def build(self, path: Path, seed: int = 0) -> Path:
        """Save a tiny random model of this family to ``path`` with ``save_pretrained``."""
        import transformers
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.manual_seed(seed)
        model = getattr(transformers, self.model_class)(self.config())
        model.eval()
        model.save_pretrained(path)
        return path


def _families() -> dict[str, Family]:
    import transformers as T

    fams = [
        Family(
            "llava-llama",
            "LlavaForConditionalGeneration",
            lambda: T.LlavaConfig(text_config=_text("LlamaConfig"), vision_config=_clip(), image_token_id=IMAGE_TOKEN),
        ),
        Family(
            "llava-mistral",
            "LlavaForConditionalGeneration",
            lambda: T.LlavaConfig(
                text_config=_text("MistralConfig"), vision_config=_clip(), image_token_id=IMAGE_TOKEN
            ),
        ),
        Family(
            "llava-qwen2",
            "LlavaForConditionalGeneration",
            lambda: T.LlavaConfig(text_config=_text("Qwen2Config"), vision_config=_clip(), image_token_id=IMAGE_TOKEN),
        ),
        Family(
            "llava_next",
            "LlavaNextForConditionalGeneration",
            lambda: T.LlavaNextConfig(
                text_config=_text("LlamaConfig").to_dict(),
                vision_config=_clip().to_dict(),
                image_token_id=IMAGE_TOKEN,
                image_grid_pinpoints=[[16, 16]],
            ),
        ),
        Family(
            "llava_onevision",
            "LlavaOnevisionForConditionalGeneration",
            lambda: T.LlavaOnevisionConfig(
                text_config=_text("Qwen2Config").to_dict(),
                vision_config=_siglip().to_dict(),
                image_token_id=IMAGE_TOKEN,
                video_token_id=IMAGE_TOKEN + 1,
                image_grid_pinpoints=[[16, 16]],
            ),
        ),
        Family(
            "vipllava",
            "VipLlavaForConditionalGeneration",
            lambda: T.VipLlavaConfig(
                text_config=_text("LlamaConfig").to_dict(),
                vision_config=_clip().to_dict(),
                image_token_id=IMAGE_TOKEN,
                vision_feature_layers=[-2, -1],
            ),
        ),
        Family(
            "paligemma",
            "PaliGemmaForConditionalGeneration",
            lambda: T.PaliGemmaConfig(
                text_config=_text("GemmaConfig").to_dict(),
                vision_config=_siglip().to_dict(),
                image_token_id=IMAGE_TOKEN,
                projection_dim=32,
            ),
        ),
        Family(
            "idefics3",
            "Idefics3ForConditionalGeneration",
            lambda: T.Idefics3Config(
                text_config=_text("LlamaConfig").to_dict(),
                vision_config=_idefics_vision(),
                image_token_id=IMAGE_TOKEN,
                scale_factor=2,
            ),
        ),
        Family(
            "smolvlm",
            "SmolVLMForConditionalGeneration",
            lambda: T.SmolVLMConfig(
                text_config=_text("LlamaConfig").to_dict(),
                vision_config=_idefics_vision(),
                image_token_id=IMAGE_TOKEN,
                scale_factor=2,
            ),
        ),
        Family(
            "qwen2_vl",
            "Qwen2VLForConditionalGeneration",
            lambda: T.Qwen2VLConfig(
                text_config=_qwen_text("Qwen2Config"),
                vision_config=dict(
                    depth=2,
                    embed_dim=32,
                    hidden_size=32,
                    num_heads=4,
                    mlp_ratio=2,
                    patch_size=2,
                    spatial_merge_size=2,
                    temporal_patch_size=2,
                ),
                image_token_id=IMAGE_TOKEN,
                video_token_id=IMAGE_TOKEN + 1,
            ),
        ),
        Family(
            "qwen2_5_vl",
            "Qwen2_5_VLForConditionalGeneration",
            lambda: T.Qwen2_5_VLConfig(
                text_config=_qwen_text("Qwen2Config"),
                vision_config=dict(
                    depth=2,
                    hidden_size=32,
                    intermediate_size=64,
                    num_heads=4,
                    out_hidden_size=32,
                    patch_size=2,
                    spatial_merge_size=2,
                    temporal_patch_size=2,
                    fullatt_block_indexes=[1],
                    window_size=8,
                ),
                image_token_id=IMAGE_TOKEN,
                video_token_id=IMAGE_TOKEN + 1,
            ),
        ),
        Family(
            "gemma3",
            "Gemma3ForConditionalGeneration",
            lambda: T.Gemma3Config(
                text_config=dict(TEXT, head_dim=8, sliding_window=8),
                vision_config=_siglip().to_dict(),
                mm_tokens_per_image=4,
                image_token_index=IMAGE_TOKEN,
            ),
        ),
        Family(
            "mistral3",
            "Mistral3ForConditionalGeneration",
            lambda: T.Mistral3Config(
                text_config=_text("MistralConfig").to_dict(),
                vision_config=dict(
                    model_type="pixtral",
                    hidden_size=32,
                    intermediate_size=64,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    image_size=16,
                    patch_size=4,
                    head_dim=8,
                ),
                image_token_index=IMAGE_TOKEN,
                spatial_merge_size=2,
            ),
        ),
        Family("llama", "LlamaForCausalLM", lambda: _text("LlamaConfig")),
        Family("mistral", "MistralForCausalLM", lambda: _text("MistralConfig")),
        Family("qwen2", "Qwen2ForCausalLM", lambda: _text("Qwen2Config")),
        Family("gemma", "GemmaForCausalLM", lambda: _text("GemmaConfig")),
        Family(
            "phi",
            "PhiForCausalLM",
            lambda: T.PhiConfig(
                hidden_size=32, intermediate_size=42, num_hidden_layers=2, num_attention_heads=4, vocab_size=128
            ),
        ),
        Family("phi3", "Phi3ForCausalLM", lambda: T.Phi3Config(**TEXT, pad_token_id=0)),
    ]
    return {f.name: f for f in fams}


FAMILIES = _families()
