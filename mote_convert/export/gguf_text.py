"""The language model of a checkpoint as a llama.cpp GGUF.

A MoTE checkpoint maps onto llama.cpp's ``deepseek`` architecture (DeepSeek-MoE), which computes
MoTE's layer as docs/method.md states it: a softmax router over N experts, top-k, the chosen
probabilities used as they are (no renormalisation), plus shared experts that are always on and
ungated. Routed experts are stacked per projection (``ffn_{gate,up,down}_exps``) as ternary TQ2_0 /
TQ1_0 blocks, the shared expert is ``ffn_*_shexp``, the router ``ffn_gate_inp`` (float32). Its
attention is Llama's, with llama.cpp's "normal" RoPE: q / k rows are reordered as llama.cpp's own
Llama conversion does (exact). ``deepseek`` allows dense layers only before the MoE ones
(``leading_dense_block_count``): MoE layers must be the last ones (``--layers all`` is).

Qwen3 (q / k norms, rotate-half RoPE) maps onto ``dots1`` instead (:data:`TEXT_ARCHS`), which has its
attention and DeepSeek-MoE's layer, the routing set by keys. A dense checkpoint maps onto ``llama``
(``qwen3`` for Qwen3), the baseline of docs/deploy.md's size table; Llama 3.1's RoPE scaling goes in
as ``rope_freqs``, which only the dense architectures read. The tokenizer is :mod:`.vocab`'s.

What remains different from the method in llama.cpp: TQ blocks keep gamma as fp16 (relative error up
to 2^-11 on every expert's output), and llama.cpp quantizes activations to 8 bits per 256-weight
block of each row (Q8_K) rather than once per token; docs/deploy.md gives their measured effect.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote_convert.arch import architecture_of
from mote_convert.arch.registry import Architecture
from mote_convert.arch.values import config_float, config_int, config_mapping
from mote_convert.check import check_expert_values, require_sound
from mote_convert.checkpoint import mote_config_of
from mote_convert.errors import FormatError, UnsupportedArchitectureError
from mote_convert.export.gguf_file import GgufPlan, GgufTensor
from mote_convert.export.tensors import (
    TERNARY_FALLBACK,
    TYPES,
    Encoded,
    TensorType,
    encode,
    encode_ternary,
    gguf_name,
    permute_rope,
    stored_type,
)
from mote_convert.export.vocab import plan_vocab
from mote_convert.format import ExpertFormat, expert_base, get_codec, router_name
from mote_convert.io.index import CheckpointIndex
from mote_convert.io.reader import TensorReader
from mote_convert.io.source import model_name


@dataclass(frozen=True)
class TextArch:
    """How one family's decoder maps onto llama.cpp: the architecture for a MoTE checkpoint and for a
    dense one, and what their attention needs."""

    moe: str  # llama.cpp's architecture for a MoTE checkpoint (shared expert, softmax top-k routing)
    dense: str  # ... and for a dense checkpoint
    permute_qk: bool  # llama.cpp's "normal" RoPE: q / k rows reordered (HF rotates halves)
    qk_norm: bool = False  # RMS norms of q and k per head before RoPE (Qwen3)
    mha_only: bool = False  # K and V as wide as Q: grouped K / V heads are written repeated (exact, larger)


# the language models' model_type -> its mapping; see docs/deploy.md for why each architecture
TEXT_ARCHS = {
    "llama": TextArch("deepseek", "llama", permute_qk=True),
    "mistral": TextArch("deepseek", "llama", permute_qk=True),
    "qwen2": TextArch("deepseek", "llama", permute_qk=True),
    # dots1: Qwen3's attention (q/k norms, rotate-half RoPE) with DeepSeek-MoE's layer; its routing is
    # set by keys (softmax, no renormalisation), its score-correction bias written as zeros
    "qwen3": TextArch("dots1", "qwen3", permute_qk=False, qk_norm=True, mha_only=True),
}
TEXT_MODEL_TYPES = tuple(TEXT_ARCHS)
# what the others lack in llama.cpp, for the refusal (model_type -> why)
NO_MAPPING = {
    "qwen2_vl_text": "multimodal RoPE (M-RoPE), which llama.cpp computes only in its dense qwen2vl architecture",
    "qwen2_5_vl_text": "multimodal RoPE (M-RoPE), which llama.cpp computes only in its dense qwen2vl architecture",
    "qwen3_vl_text": "multimodal RoPE (M-RoPE), which llama.cpp computes only in its dense qwen3vl architecture",
    "gemma": "Gemma's (1 + w) norms, scaled embeddings and GeGLU, which no llama.cpp MoE architecture computes",
    "gemma2": "Gemma's (1 + w) norms, scaled embeddings and GeGLU, which no llama.cpp MoE architecture computes",
    "gemma3_text": "Gemma's (1 + w) norms, scaled embeddings and GeGLU, which no llama.cpp MoE architecture computes",
}

# gguf logs what it notices in a tokenizer (an unknown separator token of a pair template) with no
# handler of its own, so Python printed it on stderr beside every export: the library never prints.
# An application that configures logging (the CLI's --debug does) still sees it.
logging.getLogger("gguf").addHandler(logging.NullHandler())
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# llama.cpp's tensor kinds (gguf's MODEL_TENSOR) of each FFN projection: dense, shared expert, routed experts
FFN_TENSORS = {
    "gate_proj": ("FFN_GATE", "FFN_GATE_SHEXP", "FFN_GATE_EXP"),
    "up_proj": ("FFN_UP", "FFN_UP_SHEXP", "FFN_UP_EXP"),
    "down_proj": ("FFN_DOWN", "FFN_DOWN_SHEXP", "FFN_DOWN_EXP"),
}
DENSE, SHARED, ROUTED = 0, 1, 2


IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def _text_config(config: dict[str, Any], arch: Architecture) -> tuple[dict[str, Any], str]:
    """The language model's config and its RoPE type, or the refusal of what llama.cpp cannot run."""
    text = dict(arch.text_config_of(config))
    kind = text.get("model_type", config.get("model_type"))
    if kind not in TEXT_MODEL_TYPES:
        why = NO_MAPPING.get(kind, "no llama.cpp MoE architecture with a shared expert computes its decoder")
        raise UnsupportedArchitectureError(
            f"GGUF export of a {kind!r} language model: {why}; exported: {', '.join(TEXT_MODEL_TYPES)}"
        )
    if text.get("hidden_act", "silu") != "silu":
        raise UnsupportedArchitectureError(
            f"GGUF export needs SiLU-gated FFNs; this model's act is {text.get('hidden_act')!r}"
        )
    scaling = config_mapping(text, "rope_scaling", arch.text_key("rope_scaling"))
    rope = config_mapping(text, "rope_parameters", arch.text_key("rope_parameters"))
    kind_of_rope = scaling.get("rope_type", scaling.get("type")) or rope.get("rope_type", "default")
    # Llama 3.1's frequency scaling is llama.cpp's rope_freqs tensor, which its llama architecture reads
    carried = ("default", None, "llama3") if TEXT_ARCHS[kind].permute_qk else ("default", None)
    if kind_of_rope not in carried:
        raise UnsupportedArchitectureError(
            f"GGUF export of a {kind!r} language model does not carry RoPE scaling {kind_of_rope!r} "
            f"(carried: {', '.join(str(k) for k in carried if k)})"
        )
    if (kind == "mistral" and text.get("sliding_window")) or text.get("use_sliding_window"):
        raise UnsupportedArchitectureError(f"GGUF export does not carry {kind}'s sliding-window attention")
    return text, kind_of_rope or "default"


def _check_shapes(index: CheckpointIndex, lm_root: str, *, hidden: int, q: int, kv: int, inter: int) -> None:
    """config.json's sizes against the tensors' (llama.cpp reads the sizes from the GGUF's keys and
    refuses a file whose tensors disagree, so refuse it here, before writing; a layer count that
    disagrees shows as a missing or an unaccounted-for tensor)."""
    expect = {
        "embed_tokens.weight": (None, hidden),
        "layers.0.self_attn.q_proj.weight": (q, hidden),
        "layers.0.self_attn.k_proj.weight": (kv, hidden),
        "layers.0.mlp.gate_proj.weight": (inter, hidden),
    }
    for key, shape in expect.items():
        info = index.tensors.get(lm_root + key)
        if info is not None and any(
            want is not None and want != got for want, got in zip(shape, info.shape, strict=False)
        ):
            raise FormatError(
                f"{index.root}: {lm_root + key} is {list(info.shape)}; config.json's sizes say {[d if d is not None else '*' for d in shape]}"
            )


def lm_head_name(index: CheckpointIndex, arch: Architecture) -> str | None:
    """The language model's lm_head key, or None where it is tied to the embedding."""
    heads = [n for n in index.tensors if n.endswith("lm_head.weight") and not n.startswith(arch.non_text_prefixes)]
    if len(heads) > 1:
        raise FormatError(f"{index.root}: several lm_head weights ({', '.join(heads)})")
    return heads[0] if heads else None


def _find_lm(index: CheckpointIndex, arch: Architecture) -> str:
    """The language model's key root, e.g. ``language_model.model.``."""
    for style in arch.ffn_prefixes:
        first = style.format(layer=0)
        if any(name.startswith(first + ".") for name in index.tensors):
            root = first.split("layers.0.")[0]
            break
    else:
        raise FormatError(
            f"{index.root}: no decoder layer 0 FFN under {', '.join(s.format(layer=0) for s in arch.ffn_prefixes)}"
        )
    return root


def _copy(
    name: str, ttype: TensorType, permute_heads: int | None = None, repeat_heads: tuple[int, int] = (1, 1)
) -> Any:
    """``repeat_heads`` (heads, times): the tensor's rows, as ``heads`` blocks (one per K / V head), each
    repeated ``times`` times in place, as grouped-query attention shares a K / V head among Q heads."""

    def produce(reader: TensorReader) -> Encoded:
        tensor = reader.read(name)
        if permute_heads is not None:
            tensor = permute_rope(tensor, permute_heads)
        heads, times = repeat_heads
        if times > 1:
            tensor = tensor.reshape(heads, -1, *tensor.shape[1:]).repeat_interleave(times, dim=0)
            tensor = tensor.reshape(-1, *tensor.shape[2:])
        return encode(tensor, ttype)

    return produce


def _zeros(n: int) -> Any:
    import numpy as np

    return _array(np.zeros(n, dtype=np.float32))


def _array(values: Any) -> Any:
    """A float32 tensor of the plan's own making (not read from the checkpoint)."""

    def produce(reader: TensorReader) -> Encoded:
        return Encoded(values, TYPES["f32"])

    return produce


def _llama3_rope_factors(text: dict[str, Any]) -> Any:
    """llama.cpp's ``rope_freqs`` for Llama 3.1's RoPE scaling: per rotated pair, what the default
    frequency is divided by, from transformers' own llama3 frequencies against its defaults."""
    import numpy as np
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = transformers.CONFIG_MAPPING[text["model_type"]].from_dict(text)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config)
    default, _ = LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return (default.double() / scaled.double()).numpy().astype(np.float32)


def _experts(experts: list[tuple[str, int]], fmt: ExpertFormat, ttype: TensorType) -> Any:
    """Stack the experts' ``gamma * T`` (codes and gamma from each expert's packed or latent tensors;
    ``experts`` holds (key base, out_features)) and quantize them one expert at a time."""
    import numpy as np

    def produce(reader: TensorReader) -> Encoded:
        from mote_convert.kernels import quantize_pack
        from mote_convert.quant.packing import unpack_ternary

        codec = get_codec(fmt)
        parts = []
        for base, out_features in experts:
            stored = reader.read(f"{base}.{codec.primary}")
            check_expert_values(f"{base}.{codec.primary}", codec, stored)
            if fmt is ExpertFormat.PACKED_2BIT:
                packed, gamma = stored, reader.read(f"{base}.weight_scale")
            else:
                packed, gamma = quantize_pack(stored)
            parts.append(encode_ternary(unpack_ternary(packed, out_features), gamma, ttype).data)
        return Encoded(np.stack(parts), ttype)

    return produce


def plan_text(
    root: Path,
    index: CheckpointIndex,
    config: dict[str, Any],
    *,
    expert_type: TensorType,
    shared_type: TensorType | None,
) -> GgufPlan:
    """Every key and tensor of the language model's GGUF, from headers; nothing is read yet."""
    arch = architecture_of(config)
    text, rope_type = _text_config(config, arch)
    mote = mote_config_of(config, root)[1] if config.get("mote") is not None else None
    lm_root, lm_head = _find_lm(index, arch), lm_head_name(index, arch)

    def number(key: str, **kw: Any) -> int:
        return config_int(text, key, arch.text_key(key), purpose="GGUF export", **kw)

    n_layers = number("num_hidden_layers")
    hidden = number("hidden_size")
    n_head = number("num_attention_heads")
    n_kv = number("num_key_value_heads", default=n_head)
    head_dim = number("head_dim", default=hidden // n_head)
    if head_dim % 2:
        raise UnsupportedArchitectureError(
            f"{root}: head dimension {head_dim} is odd; llama.cpp's rotary embedding rotates pairs of dimensions"
        )
    inter = number("intermediate_size")
    context = number("max_position_embeddings", default=4096)
    rope = config_mapping(text, "rope_parameters", arch.text_key("rope_parameters"))
    theta = config_float(
        rope,
        "rope_theta",
        arch.text_key("rope_parameters.rope_theta"),
        default=config_float(text, "rope_theta", arch.text_key("rope_theta"), default=10000.0),
    )
    eps = config_float(text, "rms_norm_eps", arch.text_key("rms_norm_eps"), default=1e-6)
    embed = f"{lm_root}embed_tokens.weight"
    if embed not in index.tensors:
        raise FormatError(f"{root}: no {embed}")
    n_vocab = index.tensors[embed].shape[0]
    _check_shapes(index, lm_root, hidden=hidden, q=n_head * head_dim, kv=n_kv * head_dim, inter=inter)
    if mote is not None:
        require_sound(root, index, config, arch, mote)  # what inspect reports is refused before any write

    moe_layers: dict[int, str] = dict(mote.layer_prefixes) if mote is not None else {}
    mapping = TEXT_ARCHS[text.get("model_type", config.get("model_type"))]
    arch_name = mapping.moe if mote is not None else mapping.dense
    plan = GgufPlan(arch_name)
    lead = 0
    if mote is not None:
        if mote.top_k < 1 or mote.norm_topk_prob:
            raise UnsupportedArchitectureError(
                f"llama.cpp's {arch_name} architecture is given the top-k probabilities as they are: "
                "norm_topk_prob must be false"
            )
        lead = min(moe_layers)
        if sorted(moe_layers) != list(range(lead, n_layers)):
            raise UnsupportedArchitectureError(
                f"llama.cpp's {arch_name} architecture has dense layers only before the MoE ones; this checkpoint's MoE "
                f"layers are {sorted(moe_layers)} of 0..{n_layers - 1} (upcycle with --layers all, or a trailing range)"
            )
    plan.add("add_name", model_name(root))
    plan.add("add_context_length", context)
    plan.add("add_embedding_length", hidden)
    plan.add("add_block_count", n_layers)
    plan.add("add_feed_forward_length", inter)
    plan.add("add_head_count", n_head)
    repeat = n_head // n_kv if mapping.mha_only and mote is not None else 1
    plan.add("add_head_count_kv", n_kv * repeat)
    plan.add("add_rope_dimension_count", head_dim)
    plan.add("add_key_length", head_dim)  # Qwen3's heads are not hidden / heads wide
    plan.add("add_value_length", head_dim)
    plan.add("add_rope_freq_base", theta)
    plan.add("add_layer_norm_rms_eps", eps)
    plan.add("add_vocab_size", n_vocab)
    if rope_type == "llama3":
        if mote is not None:
            raise UnsupportedArchitectureError(
                f"{root}: Llama 3.1's RoPE scaling is llama.cpp's rope_freqs tensor, which its {arch_name} "
                "architecture does not read (the dense model exports, as llama)"
            )
        factors = _llama3_rope_factors(text)
        plan.tensor(GgufTensor(gguf_name("ROPE_FREQS"), factors.shape, TYPES["f32"], _array(factors), ()))
    if mote is not None:
        plan.add("add_expert_count", mote.num_experts)
        plan.add("add_expert_used_count", mote.top_k)
        plan.add("add_expert_feed_forward_length", inter)
        plan.add("add_expert_shared_count", 1)
        plan.add("add_leading_dense_block_count", lead)
        plan.add("add_expert_weights_scale", 1.0)
        if arch_name == "dots1":  # its routing is set by keys: softmax, the top-k weights as they are
            import gguf

            plan.add("add_expert_weights_norm", False)
            plan.add("add_expert_gating_func", gguf.ExpertGatingFuncType.SOFTMAX)
    plan_vocab(root, n_vocab, plan)

    def copy(
        gguf_name: str,
        source: str,
        ttype: TensorType | None = None,
        heads: int | None = None,
        repeat: tuple[int, int] = (1, 1),
    ) -> None:
        if source not in index.tensors:
            raise FormatError(f"{root}: no {source}")
        info = index.tensors[source]
        # norms and other vectors as float32 (exact), the rest as stored, unless a type is asked for
        chosen = ttype or (TYPES["f32"] if len(info.shape) == 1 else stored_type(info.dtype))
        shape = (info.shape[0] * repeat[1], *info.shape[1:])
        plan.tensor(GgufTensor(gguf_name, shape, chosen, _copy(source, chosen, heads, repeat), (source,)))

    copy(gguf_name("TOKEN_EMBD"), embed)
    for layer in range(n_layers):
        src = f"{lm_root}layers.{layer}."
        copy(gguf_name("ATTN_NORM", layer), src + "input_layernorm.weight")
        copy(gguf_name("FFN_NORM", layer), src + "post_attention_layernorm.weight")
        q_heads, k_heads = (n_head, n_kv) if mapping.permute_qk else (None, None)
        copy(gguf_name("ATTN_Q", layer), src + "self_attn.q_proj.weight", heads=q_heads)
        copy(gguf_name("ATTN_K", layer), src + "self_attn.k_proj.weight", heads=k_heads, repeat=(n_kv, repeat))
        if mapping.qk_norm:
            copy(gguf_name("ATTN_Q_NORM", layer), src + "self_attn.q_norm.weight")
            copy(gguf_name("ATTN_K_NORM", layer), src + "self_attn.k_norm.weight")
        copy(gguf_name("ATTN_V", layer), src + "self_attn.v_proj.weight", repeat=(n_kv, repeat))
        copy(gguf_name("ATTN_OUT", layer), src + "self_attn.o_proj.weight")
        for proj, kind, bias_heads in (
            ("q_proj", "ATTN_Q", n_head),
            ("k_proj", "ATTN_K", n_kv),
            ("v_proj", "ATTN_V", None),
        ):
            bias = f"{src}self_attn.{proj}.bias"
            if bias in index.tensors:
                if not mapping.permute_qk:
                    raise UnsupportedArchitectureError(
                        f"{root}: llama.cpp's {arch_name} architecture has no attention biases ({bias})"
                    )
                copy(gguf_name(kind, layer, "bias"), bias, TYPES["f32"], heads=bias_heads)
        ffn = moe_layers.get(layer, f"{src}mlp")
        role = SHARED if layer in moe_layers else DENSE
        for proj in PROJECTIONS:
            name = f"{ffn}.{proj}.weight"
            if shared_type is not None and name in index.tensors and not shared_type.fits(index.tensors[name].shape):
                raise FormatError(
                    f"{name}: --shared-type {shared_type.name} needs rows that are a multiple of {shared_type.block}"
                )
            copy(gguf_name(FFN_TENSORS[proj][role], layer), name, shared_type)
        if layer in moe_layers:
            _plan_moe_layer(plan, index, mote, layer, ffn, expert_type)
            if arch_name == "dots1":  # added to the router's scores for the choice only: zeros change nothing
                n = mote.num_experts
                plan.tensor(GgufTensor(gguf_name("FFN_EXP_PROBS_B", layer, "bias"), (n,), TYPES["f32"], _zeros(n), ()))
    copy(gguf_name("OUTPUT_NORM"), f"{lm_root}norm.weight")
    if lm_head is not None:
        copy(gguf_name("OUTPUT"), lm_head)

    used = {source for t in plan.tensors for source in t.sources}
    left = sorted(
        n
        for n in index.tensors
        if n not in used and not n.startswith(arch.non_text_prefixes) and not n.endswith(IGNORED_SUFFIXES)
    )
    if left:
        raise FormatError(
            f"{root}: GGUF export does not know where {left[0]} goes ({len(left)} tensor(s) unaccounted for)"
        )
    return plan


def _plan_moe_layer(
    plan: GgufPlan, index: CheckpointIndex, mote: Any, layer: int, prefix: str, expert_type: TensorType
) -> None:
    router = router_name(prefix)
    info = index.tensors[router]
    plan.tensor(
        GgufTensor(gguf_name("FFN_GATE_INP", layer), info.shape, TYPES["f32"], _copy(router, TYPES["f32"]), (router,))
    )
    fmt = mote.expert_format
    codec = get_codec(fmt)
    for proj in PROJECTIONS:
        shared = index.tensors[f"{prefix}.{proj}.weight"]  # the experts' shape is the shared FFN's
        rows, cols = shared.shape
        experts = [(expert_base(prefix, i, proj), rows) for i in range(mote.num_experts)]
        parts = tuple(
            f"{base}.{part.suffix}" for base, _ in experts for part in codec.parts(shared.dtype, shared.shape)
        )
        ttype = expert_type if expert_type.fits((rows, cols)) else TYPES[TERNARY_FALLBACK]
        name = gguf_name(FFN_TENSORS[proj][ROUTED], layer)
        if ttype is not expert_type:
            plan.notes.append(
                f"{name.removesuffix('.weight')}: rows of {cols} weights are not whole "
                f"{expert_type.block}-weight blocks; written as {ttype.name} (exact ternary too)"
            )
        shape = (mote.num_experts, rows, cols)
        plan.tensor(GgufTensor(name, shape, ttype, _experts(experts, fmt, ttype), parts))
