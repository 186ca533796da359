"""Conversion plans: one entry per output tensor, decided and validated before anything is written.

``upcycle`` and ``pack`` both build a :class:`ConversionPlan`; ``inspect`` on a dense checkpoint
builds the upcycle plan and reports it without executing it. Every plan is checked by
:func:`validate` (every source tensor accounted for, every shape derived again and compared)
before :mod:`mote_convert.execute` streams it to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mote_convert.arch import Architecture, check_text_model, get_architecture
from mote_convert.arch.values import config_int
from mote_convert.errors import FormatError, InputNotFoundError, PlanError, UnsupportedArchitectureError
from mote_convert.format import (
    EXPERT_NAME,
    MAX_LAYERS,
    ExpertFormat,
    MoteConfig,
    codec_of_suffix,
    expert_base,
    get_codec,
    is_number,
    router_name,
)
from mote_convert.io.dtypes import FLOAT_DTYPES
from mote_convert.io.index import CheckpointIndex
from mote_convert.io.jsonfile import JsonFileError, load_json
from mote_convert.io.shards import Shard, TensorSpec, plan_shards
from mote_convert.options import UpcycleOptions

# Plan operations; mote_convert.execute registers one transform for each.
COPY = "copy"  # the source tensor's bytes, unchanged
ENCODE = "encode"  # one part (suffix) of an expert codec's encoding of the source float weight
ROUTER = "router"  # new float32 router, normal(0, router_std) from the layer's seed
UPCAST = "upcast"  # a router stored in bf16 / fp16 (by an engine's bf16 training), widened exactly to float32
OPS = (COPY, ENCODE, ROUTER, UPCAST)


@dataclass(frozen=True)
class PlanEntry:
    """What one output tensor is and where it comes from."""

    out: TensorSpec
    op: str
    source: str | None = None
    layer: int | None = None  # MoE layer the tensor belongs to, if any
    seed: int | None = None  # ROUTER only: the generator seed
    codec: ExpertFormat | None = None  # ENCODE only: the expert format ...
    part: str | None = None  # ... and which of its tensors (suffix) this entry is


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
    mote: MoteConfig  # config.json["mote"] of the output
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
        """Counts and bytes of the plan, including routed-expert bits per weight.

        Tensors are classified by name through the output's MoTE config and the codec registry, so
        the figures are the same whichever command made the plan.
        """
        moe_prefixes = set(self.mote.layer_prefixes.values())
        routers = {router_name(p) for p in moe_prefixes}
        out_shapes = {e.out.name: e.out.shape for e in self.entries}
        expert_params = expert_bytes = router_bytes = 0
        for e in self.entries:
            name = e.out.name
            if name in routers:
                router_bytes += e.out.nbytes
                continue
            m = EXPERT_NAME.match(name)
            if m is None or m["prefix"] not in moe_prefixes:
                continue
            codec = codec_of_suffix(m["suffix"])
            if codec is None:  # an expert bias: not weight storage
                continue
            expert_bytes += e.out.nbytes
            shared = out_shapes.get(f"{m['prefix']}.{m['proj']}.weight")
            expert_params += codec.weight_params(m["suffix"], e.out.shape, shared[0] if shared else None)
        return PlanSummary(
            tensors_in=len(self.source),
            bytes_in=self.source.total_bytes,
            tensors_out=len(self.entries),
            bytes_out=self.bytes_out,
            shards=len(self.shards),
            moe_layers=len(self.mote.layer_prefixes),
            num_experts=self.mote.num_experts,
            expert_format=self.mote.expert_format.value,
            expert_weight_params=expert_params,
            expert_weight_bytes=expert_bytes,
            router_bytes=router_bytes,
        )


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
        config = load_json(path, MAX_CONFIG_BYTES)
    except JsonFileError as exc:
        raise InputNotFoundError(f"{path}: {exc}; not a model config") from None
    return config


MAX_CONFIG_BYTES = 16 << 20


def model_type_of(config: Mapping[str, Any], root: Path | str) -> str:
    """config.json's ``model_type``, which must be a string."""
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise UnsupportedArchitectureError(f"{root}: config.json's model_type is {model_type!r}, expected a string")
    return model_type


def read_mote_config(root: Path | str) -> tuple[dict[str, Any], Architecture, MoteConfig]:
    """A MoTE checkpoint's config.json, architecture and validated ``mote`` section (FormatError if
    it has none or it is invalid: the same validation ``inspect`` reports problem by problem)."""
    config = read_config(root)
    arch = get_architecture(model_type_of(config, root))
    text = arch.text_config_of(config)
    num_layers = text.get(arch.num_layers_key)
    mote = MoteConfig.parse(
        config.get("mote"), root, arch=arch, num_layers=num_layers if isinstance(num_layers, int) else None
    )
    return config, arch, mote


def router_seed(seed: int, layer: int) -> int:
    """The generator seed of layer ``layer``'s router: each layer's router is independent of the
    layer selection, so ``--layers 3`` and ``--layers all`` give layer 3 the same router."""
    return seed * 100_003 + layer


def _config_int(text_config: Mapping[str, Any], key: str, arch: Architecture, high: int = 2**31) -> int:
    return config_int(text_config, key, arch.text_key(key), high=high, purpose=arch.name)


def router_std_of(config: Mapping[str, Any], text_config: Mapping[str, Any]) -> float:
    """sigma of the router initialisation: the text config's initializer_range (0.02 where absent)."""
    for where, mapping in (("text config's ", text_config), ("", config)):
        if "initializer_range" in mapping:
            value = mapping["initializer_range"]
            if not is_number(value) or not 0 < value <= 1:
                raise PlanError(f"config.json's {where}initializer_range is {value!r}; expected a number in (0, 1]")
            return float(value)
    return 0.02


def dense_architecture(config: Mapping[str, Any], root: str | Path) -> Architecture:
    """The architecture of a dense source's config.json; a MoTE or unsupported one is an error.

    Checked from config.json alone, before any weight file is opened.
    """
    if "mote" in config:
        raise FormatError(f"{root} is already a MoTE checkpoint (config.json has a 'mote' section)")
    arch = get_architecture(model_type_of(config, root))
    check_text_model(arch, config)
    return arch


def build_upcycle_plan(index: CheckpointIndex, config: Mapping[str, Any], options: UpcycleOptions) -> ConversionPlan:
    """Decide every output tensor of ``upcycle`` for a dense source (docs/method.md, docs/format.md)."""
    arch = dense_architecture(config, index.root)
    text_config = arch.text_config_of(config)
    num_layers = _config_int(text_config, arch.num_layers_key, arch, MAX_LAYERS)
    hidden = _config_int(text_config, arch.hidden_size_key, arch)
    layers = options.layers.resolve(num_layers)
    if not layers:
        raise PlanError(f"--layers {options.layers.spec!r} selects no layer of {num_layers}")
    config_intermediate = text_config.get(arch.intermediate_size_key)
    router_std = router_std_of(config, text_config)
    kind = arch.ffn_kind
    n = options.num_experts
    codec = get_codec(options.expert_format)

    style = _key_style(index, arch, layers)
    _check_layer_count(index, arch, style, num_layers)
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
                base = expert_base(prefix, i, proj)
                extra += encode_entries(base, info, codec.format, layer)
                if bias is not None:
                    extra.append(PlanEntry(TensorSpec(f"{base}.bias", bias.dtype, bias.shape), COPY, bias_name, layer))

    copies = [PlanEntry(TensorSpec(t.name, t.dtype, t.shape), COPY, t.name) for t in index]
    # Written in name order, except that a MoE layer's new tensors (experts, router) follow every
    # other tensor of their decoder layer: the executor encodes a layer's experts in a worker
    # thread while the writer copies that layer's unchanged tensors, so they must come first.
    moe_prefix = {m.layer: m.prefix for m in moe_layers}
    after_layer = {e.out.name: _layer_end(moe_prefix[e.layer]) for e in extra}  # type: ignore[index]
    entries = tuple(sorted(copies + extra, key=lambda e: (after_layer.get(e.out.name, e.out.name), e.out.name)))
    mote = mote_section(options, arch, moe_layers)
    plan = ConversionPlan(index, dict(config), mote, entries, tuple(moe_layers), options.max_shard_size, router_std)
    validate(plan)
    return plan


def _layer_end(ffn_prefix: str) -> str:
    """A sort key just after every name of the decoder layer that holds the FFN at ``ffn_prefix``
    (its parent): no name of the layer has a character above U+10FFFF after the parent's dot."""
    return ffn_prefix.rsplit(".", 1)[0] + ".\U0010ffff"


def encode_entries(base: str, source: TensorSpec | Any, fmt: ExpertFormat, layer: int | None = None) -> list[PlanEntry]:
    """The plan entries that store the float weight ``source`` as expert projection ``base`` in ``fmt``."""
    codec = get_codec(fmt)
    if codec.copies_source:
        (part,) = codec.parts(source.dtype, source.shape)
        return [PlanEntry(TensorSpec(f"{base}.{part.suffix}", part.dtype, part.shape), COPY, source.name, layer)]
    return [
        PlanEntry(TensorSpec(f"{base}.{p.suffix}", p.dtype, p.shape), ENCODE, source.name, layer, codec=fmt, part=p.suffix)
        for p in codec.parts(source.dtype, source.shape)
    ]


def _check_layer_count(index: CheckpointIndex, arch: Architecture, style: int, num_layers: int) -> None:
    """The checkpoint must hold an FFN for each of config.json's layers, and none beyond them."""
    proj = arch.ffn_kind.projections[0]
    key = arch.ffn_prefixes[style] + f".{proj}.weight"
    for layer in range(num_layers):
        name = key.replace("{layer}", str(layer))
        if name not in index:
            raise UnsupportedArchitectureError(
                f"{index.root}: key {name} not found (layer {layer} of {arch.name}, which has {num_layers} layers in config.json)"
            )
    beyond = key.replace("{layer}", str(num_layers))
    if beyond in index:
        raise PlanError(f"config.json says the text model has {num_layers} decoder layers, but the checkpoint holds {beyond}")

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


def mote_section(options: UpcycleOptions, arch: Architecture, moe_layers: list[MoeLayer]) -> MoteConfig:
    """config.json["mote"] for an upcycle (format version 1), with mote-convert's extensions."""
    return MoteConfig(
        num_experts=options.num_experts,
        top_k=options.top_k,
        layer_prefixes={m.layer: m.prefix for m in moe_layers},
        projections=arch.ffn_kind.projections,
        expert_format=ExpertFormat.parse(options.expert_format),
        router_aux_loss_coef=options.router_aux_loss_coef,
        norm_topk_prob=options.norm_topk_prob,
        extra={"ffn_kind": arch.ffn_kind.name, "architecture": arch.name, "seed": options.seed},
    )


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
        elif e.op == UPCAST:
            if src.dtype not in FLOAT_DTYPES:
                raise PlanError(f"{name}: source {src.name} must be a float tensor, is {src.dtype}")
            expected = ("F32", src.shape)
        else:  # ENCODE
            if len(src.shape) != 2 or src.dtype not in FLOAT_DTYPES:
                raise PlanError(f"{name}: source {src.name} must be a 2-D float weight, is {src.dtype} {list(src.shape)}")
            parts = {p.suffix: (p.dtype, p.shape) for p in get_codec(e.codec).parts(src.dtype, src.shape)}  # type: ignore[arg-type]
            if e.part not in parts:
                raise PlanError(f"{name}: {e.codec} has no part {e.part!r}; known: {', '.join(parts)}")
            expected = parts[e.part]
        if (e.out.dtype, e.out.shape) != expected:
            raise PlanError(
                f"{name} is planned as {e.out.dtype} {list(e.out.shape)}, but {e.op} of {src.name} gives "
                f"{expected[0]} {list(expected[1])}"
            )
    missing = [t.name for t in index if t.name not in used]
    if missing:
        raise PlanError(f"source tensor {missing[0]} is not accounted for by the plan")
