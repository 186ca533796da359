"""GGUF file sizes at real models' shapes, from headers alone: the deploy table of docs/deploy.md.

Builds a header-only checkpoint (a real safetensors header, its data a hole in a sparse file: no
weights exist and no disk is used) of each model's published configuration, with transformers' key
names from a model created on the meta device, then asks ``mote-convert inspect --gguf`` (4 experts
in every layer, as upcycle makes by default) for the language model's GGUF sizes.

    python scripts/gguf_sizes.py [--workdir /tmp/mote-gguf-sizes]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import benchlib

MODELS = {
    # llava-hf/llava-1.5-7b-hf: Vicuna-7B (Llama) + CLIP ViT-L/14-336
    "LLaVA-1.5-7B": {
        "text": dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            vocab_size=32064,
        ),
        "vision": dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
    },
    # MoTE's 3B setting: a Qwen2.5-3B language model (36 layers, hidden 2048, intermediate 11008)
    "LLaVA with Qwen2.5-3B": {
        "text": dict(
            model_type="qwen2",
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
        "vision": dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
            projection_dim=768,
        ),
    },
}


def header_only_llava(root: Path, text: dict, vision: dict) -> Path:
    """A LLaVA checkpoint directory whose one safetensors file has a real header and no data."""
    from transformers import AutoConfig, CLIPVisionConfig, LlavaConfig

    text = dict(text)
    text_config = AutoConfig.for_model(text.pop("model_type", "llama"), **text)
    config = LlavaConfig(
        text_config=text_config,
        vision_config=CLIPVisionConfig(**vision),
        dtype="bfloat16",
        image_token_id=text["vocab_size"] - 1,
        architectures=["LlavaForConditionalGeneration"],
    )
    return benchlib.header_only(root, config)


def main() -> None:
    parser = benchlib.arguments(__doc__, workdir=False)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mote-gguf-sizes"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    for name, shapes in MODELS.items():
        text, vision = shapes["text"], shapes["vision"]
        if args.tiny:
            t = benchlib.TINY_LLAVA
            text = text | dict(hidden_size=t.hidden, intermediate_size=t.intermediate, num_hidden_layers=t.layers)
            text |= dict(num_attention_heads=t.heads, num_key_value_heads=t.kv_heads, vocab_size=t.vocab)
            vision = vision | dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2)
        root = header_only_llava(args.workdir / name.replace(" ", "-"), text, vision)
        out = subprocess.run(
            [sys.executable, "-m", "mote_convert.cli", "inspect", str(root), "--gguf", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        sizes = json.loads(out.stdout)["gguf_sizes"]
        print(f"\n{name} (language model; 4 experts in every layer)\n")
        print("| setting | size | x dense bf16 |")
        print("|---|---:|---:|")
        for setting, nbytes in sizes.items():
            print(f"| {setting} | {nbytes / benchlib.GiB:.2f} GiB | {nbytes / sizes['dense bf16']:.2f} |")
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
