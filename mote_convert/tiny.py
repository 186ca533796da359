"""Tiny models built on the spot from transformers configs (for ``demo`` and the tests).

Random weights, real module structure: what matters is that the checkpoint is written by
transformers' own ``save_pretrained``, with its real key names and file layout.
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_tiny_llava(
    path: str | Path,
    *,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_layers: int = 2,
    vocab_size: int = 256,
    max_shard_size: str | int = "100KB",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Path:
    """Save a tiny random LLaVA (Llama text model, CLIP vision tower) to ``path`` and return it.

    The default shard cap splits it into several safetensors shards, as a real 7B checkpoint is.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar is noise for a model this size

    text = LlamaConfig(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=256,
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=16,
        patch_size=4,
        projection_dim=32,
    )
    config = LlavaConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=vocab_size - 1,
        image_seq_length=16,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(dtype)
    model.eval()
    path = Path(path)
    model.save_pretrained(path, max_shard_size=max_shard_size)
    return path
