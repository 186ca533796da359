"""The tiny text MoTE checkpoint the serving tests export: a Llama-style causal LM (hidden 256, heads
of 32 dimensions, as vLLM's CPU attention needs) with a tokenizer, up-cycled, then given experts
that differ from one another and a router that picks among them decisively, so that a server which
dropped or confused the experts would give other log-probabilities."""

from __future__ import annotations

from pathlib import Path

import torch

import mote_convert
from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, tiny_tokenizer


def build_dense(root: Path, model_type: str = "llama") -> Path:
    """A random tiny causal LM of ``model_type`` (llama, mistral, qwen2) with its tokenizer."""
    import transformers

    classes = {
        "llama": ("LlamaConfig", "LlamaForCausalLM"),
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    }
    config_class, model_class = (getattr(transformers, n) for n in classes[model_type])
    extra = {"sliding_window": None} if model_type == "mistral" else {}
    config = config_class(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=TINY_VOCAB_WITH_PROCESSOR,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **extra,
    )
    torch.manual_seed(0)
    model = model_class(config).to(torch.bfloat16)
    model.save_pretrained(root)
    tiny_tokenizer().save_pretrained(root)
    return root


def distinct_experts(mote: Path, seed: int = 0) -> Path:
    """Give every routed expert its own random ternary codes and make the router decisive, in place."""
    from safetensors.torch import load_file, save_file

    from mote_convert.quant.packing import pack_ternary

    g = torch.Generator().manual_seed(seed)
    for shard in sorted(mote.glob("*.safetensors")):
        tensors = load_file(shard)
        for name, tensor in tensors.items():
            if name.endswith(".weight_packed"):
                rows, columns = tensor.shape
                codes = torch.randint(-1, 2, (rows * 4, columns), generator=g, dtype=torch.int8)
                tensors[name] = pack_ternary(codes)
            elif name.endswith(".router.weight"):
                tensors[name] = torch.randn(tensor.shape, generator=g) * 0.5
        save_file(tensors, shard, metadata={"format": "pt"})
    return mote


def build_mote(root: Path, model_type: str = "llama", num_experts: int = 4, top_k: int = 1) -> Path:
    """The dense model under ``root / "dense"`` and its MoTE checkpoint with distinct experts, ``root / "mote"``."""
    dense = build_dense(root / "dense", model_type)
    out = mote_convert.upcycle(dense, root / "mote", num_experts=num_experts, top_k=top_k).output
    return distinct_experts(out)
