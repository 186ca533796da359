"""Conversion plans: one entry per output tensor, decided and validated before anything is written.

``upcycle`` (:mod:`mote_convert.upcycle_plan`) and ``pack`` both build a :class:`ConversionPlan`;
``inspect`` on a dense checkpoint builds the upcycle plan and reports it without executing it. Every plan is checked by
:func:`validate` (every source tensor accounted for, every shape derived again and compared)
before :mod:`mote_convert.execute` streams it to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from mote_convert.errors import PlanError
from mote_convert.format import (
    EXPERT_NAME,
    ExpertFormat,
    MoteConfig,
    codec_of_suffix,
    get_codec,
    router_name,
)
from mote_convert.io.dtypes import FLOAT_DTYPES
from mote_convert.io.index import CheckpointIndex
from mote_convert.io.shards import Shard, TensorSpec, plan_shards

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
    top_k: int = 1
    layers: tuple[int, ...] = ()  # the MoE layers' indices
    router_aux_loss_coef: float = 0.01
    norm_topk_prob: bool = False
    seed: int | None = None  # of the routers' initialisation (upcycle)

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
            "layers": list(self.layers),
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "norm_topk_prob": self.norm_topk_prob,
            "router_aux_loss_coef": self.router_aux_loss_coef,
            "seed": self.seed,
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
            top_k=self.mote.top_k,
            layers=self.mote.moe_layers,
            router_aux_loss_coef=self.mote.router_aux_loss_coef,
            norm_topk_prob=self.mote.norm_topk_prob,
            seed=self.mote.extra.get("seed") if isinstance(self.mote.extra.get("seed"), int) else None,
        )


def encode_entries(base: str, source: TensorSpec | Any, fmt: ExpertFormat, layer: int | None = None) -> list[PlanEntry]:
    """The plan entries that store the float weight ``source`` as expert projection ``base`` in ``fmt``."""
    codec = get_codec(fmt)
    if codec.copies_source:
        (part,) = codec.parts(source.dtype, source.shape)
        return [PlanEntry(TensorSpec(f"{base}.{part.suffix}", part.dtype, part.shape), COPY, source.name, layer)]
    return [
        PlanEntry(
            TensorSpec(f"{base}.{p.suffix}", p.dtype, p.shape), ENCODE, source.name, layer, codec=fmt, part=p.suffix
        )
        for p in codec.parts(source.dtype, source.shape)
    ]


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
                raise PlanError(
                    f"{name}: source {src.name} must be a 2-D float weight, is {src.dtype} {list(src.shape)}"
                )
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
