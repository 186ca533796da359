"""Tiny models built on the spot from transformers configs (for ``demo`` and the tests).

Random weights, real module structure: what matters is that the checkpoint is written by
transformers' own ``save_pretrained``, with its real key names and file layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    text_model_type: str = "llama",
    text_options: dict[str, Any] | None = None,
) -> Path:
    """Save a tiny random LLaVA (a Llama text model, or another ``text_model_type`` such as
    ``"qwen2"`` or ``"mistral"``, with ``text_options`` added to its config; CLIP vision tower) to
    ``path`` and return it.

    The default shard cap splits it into several safetensors shards, as a real 7B checkpoint is.
    """
    from transformers import AutoConfig, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # save_pretrained's shard bar is noise for a model this size

    text = AutoConfig.for_model(
        text_model_type,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=256,
        # Mistral's default window is 4096; LLaVA-NeXT's Mistral-7B-v0.2 attends to everything
        **({"sliding_window": None} if text_model_type == "mistral" else {}),
        **(text_options or {}),
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


# LLaVA-1.5's conversation format (Vicuna style), as llava-hf's processors render it
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %} "
    "{% else %}ASSISTANT: {% for part in message['content'] %}{% if part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


TINY_VOCAB_WITH_PROCESSOR = 384  # build_tiny_llava(vocab_size=...) for a model that gets build_tiny_processor


def tiny_tokenizer(vocab_size: int = TINY_VOCAB_WITH_PROCESSOR) -> Any:
    """A Llama-style tokenizer of exactly ``vocab_size`` tokens: byte-fallback BPE over single
    characters (``<unk> <s> </s>``, the 256 byte tokens, ``\u2581`` and printable ASCII), then
    ``<pad>``, fillers, and ``<image>`` last. llama.cpp reads it as it reads Llama's."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    vocab["\u2581"] = len(vocab)
    for c in range(33, 127):
        vocab[chr(c)] = len(vocab)
    extra = vocab_size - len(vocab) - 2  # <pad> and <image> come last, as added tokens
    if extra < 0:
        raise ValueError(f"vocab_size must be at least {len(vocab) + 2}")
    tokenizer = LlamaTokenizer(vocab=vocab, merges=[], add_bos_token=True, model_max_length=512)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(extra)], special_tokens=True)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    assert len(tokenizer) == vocab_size and tokenizer.convert_tokens_to_ids("<image>") == vocab_size - 1
    return tokenizer


BYTE_LEVEL_STYLES = ("llama-bpe", "qwen2", "gpt-2", "smollm")  # llama.cpp's names of their pre-tokenizers
TOKENIZER_STYLES = ("llama", *BYTE_LEVEL_STYLES)

# what a byte-level tokenizer learns its merges from: several scripts, digits, code, runs of spaces
TINY_CORPUS = (
    "What color is this? The picture is red, green, blue or yellow. It's red; they're blue; we'll see.\n"
    "Der Himmel ist blau und das Gras ist grün. Où est la bibliothèque? Ça va très bien, merci.\n"
    "这是什么颜色？图片是红色的。天空是蓝色的。こんにちは、世界。色は赤です。\n"
    "Привет, мир! Небо синее. مرحبا بالعالم. नमस्ते दुनिया। 안녕하세요 세계.\n"
    "Numbers: 1, 12, 123, 1234, 3.14159, 2026-12-05; def f(x):\n    return x ** 2  # square\n"
    "Emoji 🎨🟥🟩🟦 and tabs\tand   spaces,   new\n\nlines."
)


def tiny_byte_level_tokenizer(style: str = "qwen2", vocab_size: int = TINY_VOCAB_WITH_PROCESSOR) -> Any:
    """A byte-level BPE tokenizer (GPT-2's kind: Llama 3, Qwen2, SmolLM) of exactly ``vocab_size``
    tokens, its merges learned from :data:`TINY_CORPUS` with the pre-tokenizer of ``style`` (one of
    :data:`BYTE_LEVEL_STYLES`); ``<s>`` (a BOS that only ``llama-bpe`` adds), ``</s>``, ``<pad>``,
    fillers and ``<image>`` (the last id) are special added tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from mote_convert.pretokenizers import LLAMA3_REGEX, QWEN2_REGEX

    splits = {
        "llama-bpe": [pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated")],
        "qwen2": [pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated")],
        "gpt-2": [],
        "smollm": [pre_tokenizers.Digits(individual_digits=True)],
    }
    if style not in splits:
        raise ValueError(f"unknown byte-level style {style!r}; known: {', '.join(splits)}")
    specials = ["<s>", "</s>", "<pad>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits[style], pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=style in ("gpt-2", "smollm"))]
    )
    tokenizer.decoder = decoders.ByteLevel()
    learned = vocab_size - len(specials) - 1 - 8  # <image> and 8 fillers after the learned ones
    trainer = trainers.BpeTrainer(
        vocab_size=learned + len(specials),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([TINY_CORPUS] * 4, trainer=trainer)
    if style == "llama-bpe":
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=512,
        add_bos_token=style == "llama-bpe",
    )
    fast.add_tokens([f"<extra_{i}>" for i in range(vocab_size - len(fast) - 1)], special_tokens=True)
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    assert len(fast) == vocab_size and fast.convert_tokens_to_ids("<image>") == vocab_size - 1
    return fast


def build_tiny_processor(
    path: str | Path,
    *,
    vocab_size: int = TINY_VOCAB_WITH_PROCESSOR,
    image_size: int = 16,
    patch_size: int = 4,
    tokenizer: str = "llama",
) -> Path:
    """Save a LLaVA processor for :func:`build_tiny_llava`'s model (built with the same ``vocab_size``)
    into ``path``: a tokenizer (``<image>``, the last id, is the model's image token; ``tokenizer`` is
    ``"llama"`` for :func:`tiny_tokenizer` or one of :data:`BYTE_LEVEL_STYLES` for
    :func:`tiny_byte_level_tokenizer`), a CLIP image processor at the model's image size, and a
    LLaVA-1.5-style chat template."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    if tokenizer not in TOKENIZER_STYLES:
        raise ValueError(f"unknown tokenizer style {tokenizer!r}; known: {', '.join(TOKENIZER_STYLES)}")
    tokenizer = tiny_tokenizer(vocab_size) if tokenizer == "llama" else tiny_byte_level_tokenizer(tokenizer, vocab_size)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=TINY_CHAT_TEMPLATE,
        image_token="<image>",
    )
    path = Path(path)
    processor.save_pretrained(path)
    return path


def build_tiny_vlm(path: str | Path, *, seed: int = 0) -> Path:
    """A tiny LLaVA that every command works on: :func:`build_tiny_llava`'s model with
    :func:`build_tiny_processor`'s tokenizer, image processor and chat template saved beside it."""
    return build_tiny_processor(build_tiny_llava(path, vocab_size=TINY_VOCAB_WITH_PROCESSOR, seed=seed))


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30)}


def build_tiny_dataset(root: str | Path, *, records: int = 32, image_size: int = 16, seed: int = 0) -> Path:
    """Write a LLaVA-format dataset to ``root``: ``images/*.png`` (each one flat color, with noise)
    and ``data.json`` asking for the color (answer: its name), plus a few text-only records.
    Returns the path of ``data.json``; the images are relative to ``root``."""
    import json

    import numpy as np
    from PIL import Image

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLORS)
    items = []
    for i in range(records):
        if i % 8 == 7:  # text-only, as mix665k has
            items.append(
                {
                    "id": f"text-{i}",
                    "conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "hello"}],
                }
            )
            continue
        color = names[i % len(names)]
        pixels = np.clip(np.array(COLORS[color]) + rng.integers(-20, 20, (image_size, image_size, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / f"{i}.png")
        items.append(
            {
                "id": str(i),
                "image": f"images/{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat color is this?"},
                    {"from": "gpt", "value": color},
                    {"from": "human", "value": "Again?"},
                    {"from": "gpt", "value": color},
                ],
            }
        )
    (root / "data.json").write_text(json.dumps(items, indent=1))
    return root / "data.json"
