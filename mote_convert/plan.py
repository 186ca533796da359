"""Conversion plans: one entry per output tensor, decided and validated before anything is written.

``upcycle`` and ``pack`` both build a :class:`ConversionPlan`; ``inspect`` on a dense checkpoint
builds the upcycle plan and reports it without executing it. Every plan is checked by
:func:`validate` (every source tensor accounted for, every shape derived again and compared)
before :mod:`mote_convert.execute` streams it to disk.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mote_convert.arch import Architecture, check_text_model, get_architecture
from mote_convert.errors import FormatError, InputNotFoundError, PlanError, UnsupportedArchitectureError
from mote_convert.io.dtypes import FLOAT_DTYPES
from mote_convert.io.index import CheckpointIndex
from mote_convert.io.writer import Shard, TensorSpec, plan_shards
from mote_convert.options import UpcycleOptions
from mote_convert.quant.layout import packed_rows

FORMAT_VERSION = 1
WEIGHT_QUANT = "absmean-tensor"
ACTIVATION_BITS = 8
EXPERT_FORMATS = ("packed-2bit", "latent")

# Plan operations; mote_convert.execute registers one transform for each.
COPY = "copy"  # the source tensor's bytes, unchanged
EXPERT_PACKED = "expert_packed"  # ternary codes of the source float weight, 2-bit packed
EXPERT_SCALE = "expert_scale"  # gamma of the source float weight, float32 [1]
ROUTER = "router"  # new float32 router, normal(0, router_std) from the layer's seed
OPS = (COPY, EXPERT_PACKED, EXPERT_SCALE, ROUTER)


@dataclass(frozen=True)
class PlanEntry:
    """What one output tensor is and where it comes from."""

    out: TensorSpec
    op: str
    source: str | None = None
    layer: int | None = None  # MoE layer the tensor belongs to, if any
    seed: int | None = None  # ROUTER only: the generator seed


@dataclass(frozen=True)
class MoeLayer:
    """One decoder layer that becomes a MoE layer."""

    layer: int
    prefix: str
    hidden: int
    intermediate: int


@dataclass(frozen=True)
class PlanSummary:
    """What a plan reads and writes, in numbers."""

    tensors_in: int
    bytes_in: int
    tensors_out: int
    bytes_out: int
    shards: int
    moe_layers: int
    num_experts: int
    expert_format: str
    expert_weight_params: int  # routed experts' weight elements, all layers and experts
    expert_weight_bytes: int  # their codes (or latent weights) plus scales
    router_bytes: int

    @property
    def expert_bits_per_weight(self) -> float:
        """Routed-expert storage per weight, scales included (2.0 plus a little for packed-2bit)."""
        return 8 * self.expert_weight_bytes / self.expert_weight_params if self.expert_weight_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "tensors_in": self.tensors_in,
            "bytes_in": self.bytes_in,
            "tensors_out": self.tensors_out,
            "bytes_out": self.bytes_out,
            "shards": self.shards,
            "moe_layers": self.moe_layers,
            "num_experts": self.num_experts,
            "expert_format": self.expert_format,
            "expert_weight_params": self.expert_weight_params,
            "expert_weight_bytes": self.expert_weight_bytes,
            "expert_bits_per_weight": self.expert_bits_per_weight,
            "router_bytes": self.router_bytes,
        }


@dataclass(frozen=True)
class ConversionPlan:
    """Every output tensor of a conversion, in write order, plus the config it writes."""

    source: CheckpointIndex
    config: Mapping[str, Any]  # the source config.json
    mote: Mapping[str, Any]  # config.json["mote"] of the output
    entries: tuple[PlanEntry, ...]
    moe_layers: tuple[MoeLayer, ...]
    max_shard_size: int
    router_std: float = 0.02
    shards: tuple[Shard, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.shards:
            object.__setattr__(self, "shards", plan_shards([e.out for e in self.entries], self.max_shard_size))

    @property
    def bytes_out(self) -> int:
        """Bytes of tensor data the plan writes."""
        return sum(e.out.nbytes for e in self.entries)

    def summary(self) -> PlanSummary:
        """Counts and bytes of the plan, including routed-expert bits per weight."""
        expert_params = 0
        expert_bytes = 0
        router_bytes = 0
        for e in self.entries:
            if e.op == EXPERT_PACKED:
                expert_params += math.prod(self.source[e.source].shape)  # type: ignore[index]
                expert_bytes += e.out.nbytes
            elif e.op == EXPERT_SCALE:
                expert_bytes += e.out.nbytes
            elif e.op == ROUTER:
                router_bytes += e.out.nbytes
            elif e.op == COPY and _is_latent_expert_weight(e.out.name):
                expert_params += math.prod(e.out.shape)
                expert_bytes += e.out.nbytes
        return PlanSummary(
            tensors_in=len(self.source),
            bytes_in=self.source.total_bytes,
            tensors_out=len(self.entries),
            bytes_out=self.bytes_out,
            shards=len(self.shards),
            moe_layers=len(self.moe_layers),
            num_experts=int(self.mote.get("num_experts", 0)),
            expert_format=str(self.mote.get("expert_format", "")),
            expert_weight_params=expert_params,
            expert_weight_bytes=expert_bytes,
            router_bytes=router_bytes,
        )


def _is_latent_expert_weight(name: str) -> bool:
    return ".experts." in name and name.endswith(".weight")


def read_config(root: str | Path) -> dict[str, Any]:
    """Read a checkpoint directory's config.json."""
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise InputNotFoundError(f"{root}: not a directory (give a Hugging Face checkpoint directory)")
    path = root / "config.json"
    if not path.is_file():
        raise InputNotFoundError(f"{root}: no config.json (not a Hugging Face checkpoint directory)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputNotFoundError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise InputNotFoundError(f"{path}: must hold a JSON object")
    return config


def read_mote_section(config: dict[str, Any], root: Path | str) -> dict[str, Any]:
    """config.json["mote"], or a FormatError for a dense checkpoint."""
    mote = config.get("mote")
    if not isinstance(mote, dict):
        raise FormatError(f"{root} is not a MoTE checkpoint (config.json has no 'mote' section); run upcycle first")
    if mote.get("expert_format") not in EXPERT_FORMATS:
        raise FormatError(f"{root}: unknown expert_format {mote.get('expert_format')!r}; known: {', '.join(EXPERT_FORMATS)}")
    return mote


def router_seed(seed: int, layer: int) -> int:
    """The generator seed of layer ``layer``'s router: each layer's router is independent of the
    layer selection, so ``--layers 3`` and ``--layers all`` give layer 3 the same router."""
    return seed * 100_003 + layer


def _config_int(text_config: Mapping[str, Any], key: str, arch: Architecture) -> int:
    value = text_config.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        where = f"{arch.text_config}.{key}" if arch.text_config else key
        raise UnsupportedArchitectureError(f"config.json has no integer {where} (needed for {arch.name})")
    return value


def dense_architecture(config: Mapping[str, Any], root: str | Path) -> Architecture:
    """The architecture of a dense source's config.json; a MoTE or unsupported one is an error.

    Checked from config.json alone, before any weight file is opened.
    """
    if "mote" in config:
        raise FormatError(f"{root} is already a MoTE checkpoint (config.json has a 'mote' section)")
    arch = get_architecture(config.get("model_type"))
    check_text_model(arch, config)
    return arch


def build_upcycle_plan(index: CheckpointIndex, config: Mapping[str, Any], options: UpcycleOptions) -> ConversionPlan:
    """Decide every output tensor of ``upcycle`` for a dense source (SPEC sections 1 and 2)."""
    arch = dense_architecture(config, index.root)
    text_config = arch.text_config_of(config)
    num_layers = _config_int(text_config, arch.num_layers_key, arch)
    hidden = _config_int(text_config, arch.hidden_size_key, arch)
    layers = options.layers.resolve(num_layers)
    if not layers:
        raise PlanError(f"--layers {options.layers.spec!r} selects no layer of {num_layers}")
    config_intermediate = text_config.get(arch.intermediate_size_key)
    router_std = float(text_config.get("initializer_range", config.get("initializer_range", 0.02)))
    kind = arch.ffn_kind
    n = options.num_experts

    style = _key_style(index, arch, layers)
    moe_layers: list[MoeLayer] = []
    extra: list[PlanEntry] = []
    for layer in layers:
        prefix = arch.prefixes_for(layer)[style]
        first = f"{prefix}.{kind.projections[0]}.weight"
        if first not in index:
            raise UnsupportedArchitectureError(
                f"{index.root}: key {first} not found (layer {layer} of {arch.name}, "
                f"which has {num_layers} layers in config.json)"
            )
        intermediate = index[first].shape[0] if kind.shapes[kind.projections[0]][0] == "intermediate" else None
        if isinstance(config_intermediate, int) and not isinstance(config_intermediate, bool):
            intermediate = config_intermediate
        if intermediate is None:  # pragma: no cover - every registered kind leads with an [intermediate, hidden] weight
            raise PlanError(f"cannot tell the intermediate size of {prefix}")
        moe_layers.append(MoeLayer(layer, prefix, hidden, intermediate))
        extra.append(
            PlanEntry(TensorSpec(f"{prefix}.router.weight", "F32", (n, hidden)), ROUTER, None, layer, router_seed(options.seed, layer))
        )
        for proj in kind.projections:
            weight_name = f"{prefix}.{proj}.weight"
            info = index.tensors.get(weight_name)
            if info is None:
                raise UnsupportedArchitectureError(f"{index.root}: key {weight_name} not found ({arch.name} layer {layer})")
            expected = kind.expected_shape(proj, hidden, intermediate)
            if info.shape != expected:
                raise PlanError(
                    f"{weight_name} has shape {list(info.shape)}, expected {list(expected)} "
                    f"(hidden {hidden}, intermediate {intermediate})"
                )
            if info.dtype not in FLOAT_DTYPES:
                raise PlanError(f"{weight_name} is {info.dtype}; routed experts need a float source weight")
            bias_name = f"{prefix}.{proj}.bias"
            bias = index.tensors.get(bias_name)
            if bias is not None and bias.shape != (expected[0],):
                raise PlanError(f"{bias_name} has shape {list(bias.shape)}, expected {[expected[0]]}")
            for i in range(n):
                base = f"{prefix}.experts.{i}.{proj}"
                if options.latent:
                    extra.append(PlanEntry(TensorSpec(f"{base}.weight", info.dtype, info.shape), COPY, weight_name, layer))
                else:
                    packed = (packed_rows(info.shape[0]), info.shape[1])
                    extra.append(PlanEntry(TensorSpec(f"{base}.weight_packed", "U8", packed), EXPERT_PACKED, weight_name, layer))
                    extra.append(PlanEntry(TensorSpec(f"{base}.weight_scale", "F32", (1,)), EXPERT_SCALE, weight_name, layer))
                if bias is not None:
                    extra.append(PlanEntry(TensorSpec(f"{base}.bias", bias.dtype, bias.shape), COPY, bias_name, layer))

    copies = [PlanEntry(TensorSpec(t.name, t.dtype, t.shape), COPY, t.name) for t in index]
    entries = tuple(sorted(copies + extra, key=lambda e: e.out.name))
    mote = mote_section(options, arch, moe_layers)
    plan = ConversionPlan(index, dict(config), mote, entries, tuple(moe_layers), options.max_shard_size, router_std)
    validate(plan)
    return plan


def _key_style(index: CheckpointIndex, arch: Architecture, layers: tuple[int, ...]) -> int:
    """Which of the architecture's key styles the checkpoint uses (judged on the first MoE layer)."""
    proj = arch.ffn_kind.projections[0]
    candidates = [f"{p}.{proj}.weight" for p in arch.prefixes_for(layers[0])]
    for style, key in enumerate(candidates):
        if key in index:
            return style
    raise UnsupportedArchitectureError(
        f"{index.root}: key {candidates[0]} not found, nor any other {arch.name} key style "
        f"({', '.join(candidates[1:]) or 'none'}); the checkpoint does not match the {arch.name} definition"
    )


def mote_section(options: UpcycleOptions, arch: Architecture, moe_layers: list[MoeLayer]) -> dict[str, Any]:
    """config.json["mote"] for an upcycle (SPEC section 2)."""
    return {
        "format_version": FORMAT_VERSION,
        "num_experts": options.num_experts,
        "top_k": options.top_k,
        "moe_layers": [m.layer for m in moe_layers],
        "layer_prefixes": {str(m.layer): m.prefix for m in moe_layers},
        "projections": list(arch.ffn_kind.projections),
        "ffn_kind": arch.ffn_kind.name,
        "architecture": arch.name,
        "expert_format": options.expert_format,
        "weight_quant": WEIGHT_QUANT,
        "activation_bits": ACTIVATION_BITS,
        "router_aux_loss_coef": options.router_aux_loss_coef,
        "norm_topk_prob": options.norm_topk_prob,
        "seed": options.seed,
    }


def validate(plan: ConversionPlan) -> None:
    """Check a plan against its source before anything is written.

    Every source tensor must feed at least one output; output names must be unique; each output's
    dtype and shape is derived again from its source by the op's rule and compared.
    """
    index = plan.source
    seen: set[str] = set()
    used: set[str] = set()
    for e in plan.entries:
        name = e.out.name
        if name in seen:
            raise PlanError(f"plan writes {name} twice")
        seen.add(name)
        if e.op not in OPS:
            raise PlanError(f"plan entry {name} has unknown op {e.op!r}; known: {', '.join(OPS)}")
        if e.op == ROUTER:
            if e.source is not None or e.seed is None or len(e.out.shape) != 2 or e.out.dtype != "F32":
                raise PlanError(f"router {name} must be a new float32 [N, hidden] tensor with a seed")
            continue
        src = index.tensors.get(e.source) if e.source else None
        if src is None:
            raise PlanError(f"plan entry {name} reads {e.source!r}, which the source does not hold")
        used.add(src.name)
        if e.op == COPY:
            expected = (src.dtype, src.shape)
        elif e.op == EXPERT_PACKED:
            if len(src.shape) != 2 or src.dtype not in FLOAT_DTYPES:
                raise PlanError(f"{name}: source {src.name} must be a 2-D float weight, is {src.dtype} {list(src.shape)}")
            expected = ("U8", (packed_rows(src.shape[0]), src.shape[1]))
        else:  # EXPERT_SCALE
            expected = ("F32", (1,))
        if (e.out.dtype, e.out.shape) != expected:
            raise PlanError(
                f"{name} is planned as {e.out.dtype} {list(e.out.shape)}, but {e.op} of {src.name} gives "
                f"{expected[0]} {list(expected[1])}"
            )
    missing = [t.name for t in index if t.name not in used]
    if missing:
        raise PlanError(f"source tensor {missing[0]} is not accounted for by the plan")
