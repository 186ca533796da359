"""``mote-convert export vllm``: a MoTE checkpoint as a model vLLM already serves (docs/serve.md).

vLLM's Qwen2-MoE decoder layer computes attention with q/k/v biases, then

    y = sigmoid(g . x) * shared(x) + sum_{e in top-k(softmax(router x))} p_e * expert_e(x)

(the top-k probabilities renormalised only with ``norm_topk_prob``). That is MoTE's layer exactly
with ``g = 0`` (sigmoid(0) = 1/2) and the shared expert's ``down_proj`` doubled (exact in any binary
float format). So the language model of a Llama, Mistral or Qwen2 MoTE checkpoint is written as
Qwen2-MoE: zero q/k/v biases where the family has none, the router as the gate, the routed experts
as stored (packed codes and gamma per projection), computed by the ``mote`` quantization method that
this package registers in vLLM (:mod:`mote_convert.serving.vllm_plugin`). A LLaVA checkpoint keeps
its vision tower and projector, with that language model inside vLLM's own LLaVA.

Plan (every output tensor from headers), validate, then stream one tensor at a time into a
directory beside the output, renamed into place when complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mote_convert.arch.values import config_int, config_mapping
from mote_convert.check import check_expert_values, require_sound
from mote_convert.checkpoint import mote_config_of, one_read_per_file, read_config
from mote_convert.config_patch import copy_auxiliary_files, file_mode
from mote_convert.errors import FormatError, UnsupportedArchitectureError
from mote_convert.format import EXPERT_NAME, ExpertFormat, get_codec, router_name
from mote_convert.io.dtypes import TensorSpec
from mote_convert.io.index import CheckpointIndex, load_index
from mote_convert.io.shards import ProgressFn, Shard, ShardWriter, plan_shards
from mote_convert.io.staging import StagedOutput, check_output_path
from mote_convert.options import DEFAULT_MAX_SHARD_SIZE, parse_size

QUANT_METHOD = "mote"
COPY, DOUBLE, ZEROS, CHECKED = "copy", "double", "zeros", "checked"  # how an output tensor is made
# language models vLLM's Qwen2-MoE computes exactly (SwiGLU, RMSNorm, rotary attention)
TEXT_MODEL_TYPES = ("llama", "mistral", "qwen2")
# multimodal wrappers whose vLLM model takes a Qwen2-MoE language model from text_config
WRAPPERS = ("llava",)
NOT_SERVED = {
    "qwen3": "vLLM's Qwen3-MoE has no shared expert",
    "gemma3_text": "Gemma's (1 + w) norms, scaled embeddings and GeGLU are not Qwen2-MoE's",
    "qwen2_vl_text": "multimodal RoPE (M-RoPE), which vLLM's Qwen2-MoE does not compute",
    "qwen2_5_vl_text": "multimodal RoPE (M-RoPE), which vLLM's Qwen2-MoE does not compute",
}
# config keys of the language model carried into the Qwen2-MoE config as they are
CARRIED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
)


@dataclass(frozen=True)
class VllmEntry:
    """One output tensor: its spec, how it is made and from which source tensor."""

    out: TensorSpec
    op: str
    source: str | None = None


@dataclass(frozen=True)
class VllmPlan:
    """Every output tensor of the export and the config.json it writes."""

    root: Path
    index: CheckpointIndex
    config: dict[str, Any]
    entries: tuple[VllmEntry, ...]
    shards: tuple[Shard, ...]
    text_model_type: str

    @property
    def nbytes(self) -> int:
        return sum(e.out.nbytes for e in self.entries)


@dataclass(frozen=True)
class VllmExport:
    """What ``export vllm`` wrote (or, for a dry run, would write)."""

    output: Path
    architecture: str
    text_model_type: str
    tensors: int
    nbytes: int
    files: tuple[str, ...]
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "architecture": self.architecture,
            "text_model_type": self.text_model_type,
            "tensors": self.tensors,
            "bytes": self.nbytes,
            "files": list(self.files),
            "dry_run": self.dry_run,
        }


def _qwen2_moe_config(text: dict[str, Any], mote: Any, kind: str, n_layers: int, inter: int) -> dict[str, Any]:
    hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
    if int(text.get("head_dim") or hidden // heads) != hidden // heads:
        raise UnsupportedArchitectureError(
            f"vLLM export of a {kind!r} language model: vLLM's Qwen2-MoE heads are hidden_size / "
            f"num_attention_heads wide; this model's head_dim is {text.get('head_dim')}"
        )
    config = {k: text[k] for k in CARRIED if text.get(k) is not None}
    config.update(
        model_type="qwen2_moe",
        architectures=["Qwen2MoeForCausalLM"],
        hidden_act="silu",
        intermediate_size=inter,
        moe_intermediate_size=inter,
        shared_expert_intermediate_size=inter,
        num_experts=mote.num_experts,
        num_experts_per_tok=mote.top_k,
        norm_topk_prob=mote.norm_topk_prob,
        decoder_sparse_step=1,
        mlp_only_layers=[i for i in range(n_layers) if i not in mote.layer_prefixes],
        use_sliding_window=False,
        qkv_bias=True,
    )
    if text.get("dtype") or text.get("torch_dtype"):
        config["dtype"] = text.get("dtype") or text.get("torch_dtype")
    return config


@one_read_per_file()
def plan_vllm(model: str | Path, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE) -> VllmPlan:
    """Every output tensor and the config of the export, from headers, checked."""
    root = Path(model)
    config = read_config(root)
    if config.get("mote") is None:
        raise FormatError(f'{root}: not a MoTE checkpoint (no "mote" in config.json); upcycle it first')
    arch, mote = mote_config_of(config, root)
    wrapper = config.get("model_type") if config.get("model_type") in WRAPPERS else None
    text = dict(arch.text_config_of(config))
    kind = text.get("model_type", config.get("model_type"))
    if kind not in TEXT_MODEL_TYPES or (wrapper is None and arch.text_config is not None):
        why = NOT_SERVED.get(kind, "no vLLM MoE model computes its decoder with an always-on shared expert")
        family = config.get("model_type") if wrapper is None and arch.text_config is not None else kind
        raise UnsupportedArchitectureError(
            f"vLLM export of a {family!r} model: {why}; served: {', '.join(TEXT_MODEL_TYPES)} language models, "
            f"alone or inside {', '.join(WRAPPERS)}"
        )
    if text.get("hidden_act", "silu") != "silu" or text.get("mlp_bias") or text.get("attention_bias"):
        raise UnsupportedArchitectureError(
            f"vLLM export of a {kind!r} language model: Qwen2-MoE has SiLU-gated FFNs without biases and no "
            "attention output bias"
        )
    if (kind == "mistral" and text.get("sliding_window")) or text.get("use_sliding_window"):
        raise UnsupportedArchitectureError(f"vLLM export does not carry {kind}'s sliding-window attention")
    if mote.expert_format is not ExpertFormat.PACKED_2BIT:
        raise FormatError(f"{root}: experts are {mote.expert_format.value}; run mote-convert pack first")
    index = load_index(root)
    require_sound(root, index, config, arch, mote)  # NaN scales, missing tensors: refused before a write
    n_layers = config_int(text, "num_hidden_layers", arch.text_key("num_hidden_layers"), purpose="vLLM export")
    heads = config_int(text, "num_attention_heads", arch.text_key("num_attention_heads"), purpose="vLLM export")
    kv_heads = config_int(text, "num_key_value_heads", arch.text_key("num_key_value_heads"), default=heads)
    inter = config_int(text, "intermediate_size", arch.text_key("intermediate_size"), purpose="vLLM export")
    config_mapping(text, "rope_parameters", arch.text_key("rope_parameters"))  # a mapping, if there
    qwen = _qwen2_moe_config(text, mote, kind, n_layers, inter)
    head_dim = qwen["hidden_size"] // heads

    moe_prefixes = {prefix: layer for layer, prefix in mote.layer_prefixes.items()}
    routers = {router_name(p): p for p in moe_prefixes}
    codec = get_codec(ExpertFormat.PACKED_2BIT)
    attentions = {}  # "...self_attn." -> the dtype of its weights
    entries: list[VllmEntry] = []
    for info in index:
        name, op = info.name, COPY
        expert = EXPERT_NAME.match(name)
        base, proj, _ = (name.rsplit(".", 2) + ["", ""])[:3]
        if name in routers:
            name = f"{routers[name]}.gate.weight"
        elif expert is not None and expert["prefix"] in moe_prefixes:
            if expert["suffix"] == codec.primary:
                op = CHECKED  # the codes are read and checked for the never-written 0b11
        elif base in moe_prefixes:  # the shared expert: the dense FFN's own tensors
            name = name.replace(f"{base}.", f"{base}.shared_expert.", 1)
            op = DOUBLE if proj == "down_proj" else COPY
        entries.append(VllmEntry(TensorSpec(name, info.dtype, info.shape), op, info.name))
        if name.endswith(".self_attn.q_proj.weight"):
            attentions[name.removesuffix("q_proj.weight")] = info.dtype
    for attn, dtype in attentions.items():
        for proj, width in (("q", heads * head_dim), ("k", kv_heads * head_dim), ("v", kv_heads * head_dim)):
            bias = f"{attn}{proj}_proj.bias"
            if bias not in index.tensors:
                entries.append(VllmEntry(TensorSpec(bias, dtype, (width,)), ZEROS))
    for prefix in moe_prefixes:
        shared = index.tensors.get(f"{prefix}.down_proj.weight")
        if shared is None:
            raise FormatError(f"{root}: no {prefix}.down_proj.weight (the shared expert)")
        entries.append(
            VllmEntry(TensorSpec(f"{prefix}.shared_expert_gate.weight", shared.dtype, (1, shared.shape[0])), ZEROS)
        )
    entries.sort(key=lambda e: e.out.name)
    names = [e.out.name for e in entries]
    if len(set(names)) != len(names):
        raise FormatError(f"{root}: the export would write a tensor twice")
    out_config = _output_config(config, qwen, wrapper, arch.text_config)
    shards = plan_shards([e.out for e in entries], parse_size(max_shard_size))
    return VllmPlan(root, index, out_config, tuple(entries), shards, kind)


def _output_config(
    config: dict[str, Any], qwen: dict[str, Any], wrapper: str | None, text_key: str | None
) -> dict[str, Any]:
    quant = {"quant_method": QUANT_METHOD, "bits": 2, "expert_format": ExpertFormat.PACKED_2BIT.value}
    if wrapper is None:
        return {**qwen, "quantization_config": quant}
    out = {k: v for k, v in config.items() if k != "mote"}
    out[text_key] = qwen  # type: ignore[index]
    out["quantization_config"] = quant
    return out


def write_vllm(
    plan: VllmPlan,
    out: str | Path,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> VllmExport:
    """Stream the plan into ``out`` (written beside it, renamed when complete), or only describe it."""
    out = Path(out)
    files = tuple(s.file for s in plan.shards)
    arch = plan.config.get("architectures", ["?"])[0]
    result = VllmExport(out, arch, plan.text_model_type, len(plan.entries), plan.nbytes, files, dry_run)
    if dry_run:
        check_output_path(out, overwrite=overwrite, protect=(plan.root,))
        return result
    import torch

    from mote_convert.io.reader import TensorReader
    from mote_convert.io.shards import write_shards, write_text

    codec = get_codec(ExpertFormat.PACKED_2BIT)
    entries = {e.out.name: e for e in plan.entries}
    with StagedOutput(out, overwrite=overwrite, protect=(plan.root,)) as staging, TensorReader(plan.index) as reader:

        def write_one(writer: ShardWriter, spec: TensorSpec) -> int:
            entry = entries[spec.name]
            if entry.op == COPY:
                return writer.copy(spec.name, reader, entry.source)  # type: ignore[arg-type]
            if entry.op == ZEROS:
                from mote_convert.io.dtypes import torch_dtype

                return writer.write(spec.name, torch.zeros(spec.shape, dtype=torch_dtype(spec.dtype)))
            tensor = reader.read(entry.source)  # type: ignore[arg-type]
            if entry.op == CHECKED:
                check_expert_values(entry.source, codec, tensor)  # type: ignore[arg-type]
            else:  # DOUBLE: exact, unless a value overflows, which no trained FFN holds
                tensor = tensor * 2
                if not bool(torch.isfinite(tensor).all()):
                    raise FormatError(f"{entry.source}: doubling it overflows {spec.dtype}")
            return writer.write(spec.name, tensor)

        write_shards(staging, plan.shards, {"format": "pt"}, write_one, progress)
        copy_auxiliary_files(plan.root, staging)  # tokenizer, processor, chat template (config.json below)
        mode = file_mode(plan.root / "config.json")
        (staging / "config.json").unlink(missing_ok=True)
        write_text(staging / "config.json", json.dumps(plan.config, indent=2, sort_keys=True) + "\n", mode)
    return result


def export_vllm(
    model: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> VllmExport:
    """Export a packed MoTE checkpoint for vLLM (plan, validate, write): see the module docstring."""
    return write_vllm(plan_vllm(model, max_shard_size), out, overwrite=overwrite, dry_run=dry_run, progress=progress)
