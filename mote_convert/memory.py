"""What a checkpoint's tensors cost, by component, and the comparisons that motivate MoTE.

Pure bookkeeping over tensor descriptions (name, dtype, shape): no file is opened here. ``inspect``
feeds it a checkpoint's index, or, for a dense checkpoint, the output tensors of the upcycle plan,
so the numbers for "what upcycle would produce" come from the same plan that upcycle executes.

Components, in report order:

* ``vision_tower``, ``projector``: by the architecture's key prefixes;
* ``shared_experts``, ``routed_experts``, ``routers``: under a MoE layer's FFN prefix P;
* ``ffn``: the FFNs of decoder layers that are not MoE layers;
* ``embeddings``, ``attention``, ``norms``: the language model's other tensors, by name pattern;
* ``other``: anything else (reported, never hidden).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol

from mote_convert.format import EXPERT_NAME, ExpertFormat, codec_of_suffix, get_codec

VISION_TOWER = "vision_tower"
PROJECTOR = "projector"
EMBEDDINGS = "embeddings"
ATTENTION = "attention"
NORMS = "norms"
FFN = "ffn"
SHARED_EXPERTS = "shared_experts"
ROUTED_EXPERTS = "routed_experts"
ROUTERS = "routers"
OTHER = "other"
COMPONENTS = (
    VISION_TOWER,
    PROJECTOR,
    EMBEDDINGS,
    ATTENTION,
    NORMS,
    FFN,
    SHARED_EXPERTS,
    ROUTED_EXPERTS,
    ROUTERS,
    OTHER,
)

# The language model's non-FFN tensors, by name pattern; tried in order, first match wins.
TEXT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (EMBEDDINGS, re.compile(r"(^|\.)(embed_tokens|lm_head|wte|wpe|embed_positions|embeddings?)(\.|$)")),
    (ATTENTION, re.compile(r"(^|\.)(self_attn|attn|attention|self_attention)\.")),
    (NORMS, re.compile(r"(norm|(^|\.)ln_?\w*)(\.|$)")),
)


class TensorLike(Protocol):
    """Anything with a safetensors name, dtype, shape and byte count (TensorInfo, TensorSpec)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int: ...


@dataclass(frozen=True)
class Layout:
    """Where a checkpoint keeps each component, by key prefix.

    ``moe_prefixes`` and ``ffn_prefixes`` map a decoder layer's FFN prefix P to the layer index, for
    MoE layers and for the other decoder layers; ``projections`` are the FFN's projection names.
    """

    vision_prefixes: tuple[str, ...]
    projector_prefixes: tuple[str, ...]
    moe_prefixes: Mapping[str, int]
    ffn_prefixes: Mapping[str, int]
    projections: tuple[str, ...]

    def locate(self, name: str) -> tuple[str, int | None]:
        """The component a tensor belongs to, and its decoder layer where it is an FFN tensor."""
        for prefix, layer in self.moe_prefixes.items():
            if name.startswith(prefix + "."):
                rest = name[len(prefix) + 1 :]
                if rest.startswith("router."):
                    return ROUTERS, layer
                if rest.startswith("experts."):
                    return ROUTED_EXPERTS, layer
                return SHARED_EXPERTS, layer
        for prefix, layer in self.ffn_prefixes.items():
            if name.startswith(prefix + "."):
                return FFN, layer
        # projector first: some families keep it inside the vision module (Qwen2-VL's visual.merger)
        if name.startswith(self.projector_prefixes):
            return PROJECTOR, None
        if name.startswith(self.vision_prefixes):
            return VISION_TOWER, None
        for component, pattern in TEXT_PATTERNS:
            if pattern.search(name):
                return component, None
        return OTHER, None


@dataclass(frozen=True)
class ComponentMemory:
    """Tensors, parameters and bytes of one component.

    ``params`` counts weights as the model computes with them: a packed expert projection counts its
    out x in ternary weights (not its uint8 bytes), and its float32 scale counts no parameter.
    """

    name: str
    tensors: int
    params: int
    bytes: int

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per parameter (0 for an empty component)."""
        return 8 * self.bytes / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "tensors": self.tensors,
            "params": self.params,
            "bytes": self.bytes,
            "bits_per_weight": round(self.bits_per_weight, 6),
        }


@dataclass(frozen=True)
class LayerMemory:
    """One decoder layer's FFN bytes: the dense FFN or shared expert, routed experts, router."""

    layer: int
    moe: bool
    ffn_bytes: int
    routed_expert_bytes: int
    router_bytes: int

    @property
    def total_bytes(self) -> int:
        """All FFN-related bytes of the layer."""
        return self.ffn_bytes + self.routed_expert_bytes + self.router_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "layer": self.layer,
            "moe": self.moe,
            "ffn_bytes": self.ffn_bytes,
            "routed_expert_bytes": self.routed_expert_bytes,
            "router_bytes": self.router_bytes,
            "total_bytes": self.total_bytes,
        }


@dataclass(frozen=True)
class MemoryTable:
    """Every component's memory (in :data:`COMPONENTS` order), the total, and a per-layer view."""

    components: tuple[ComponentMemory, ...]
    layers: tuple[LayerMemory, ...]

    def __getitem__(self, name: str) -> ComponentMemory:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(f"unknown component {name!r}; known: {', '.join(COMPONENTS)}")

    @property
    def total(self) -> ComponentMemory:
        """The sum over components."""
        return ComponentMemory(
            "total",
            sum(c.tensors for c in self.components),
            sum(c.params for c in self.components),
            sum(c.bytes for c in self.components),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``components`` by name, ``total``, ``layers``."""
        return {
            "components": {c.name: c.to_dict() for c in self.components},
            "total": self.total.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def _expert_weight_params(t: TensorLike, shapes: Mapping[str, tuple[int, ...]]) -> int:
    """Parameters of a routed-expert tensor, as its codec counts them (a packed projection: its
    logical out x in; a scale: none); a bias or an unknown tensor counts its elements."""
    m = EXPERT_NAME.match(t.name)
    codec = codec_of_suffix(m["suffix"]) if m else None
    if m is None or codec is None:
        return math.prod(t.shape)
    shared = shapes.get(f"{m['prefix']}.{m['proj']}.weight")
    return codec.weight_params(m["suffix"], tuple(t.shape), shared[0] if shared else None)


def memory_table(tensors: Iterable[TensorLike], layout: Layout) -> MemoryTable:
    """Sum tensors, parameters and bytes by component and by decoder layer."""
    items = list(tensors)
    shapes = {t.name: tuple(t.shape) for t in items}
    sums = {c: [0, 0, 0] for c in COMPONENTS}
    per_layer: dict[int, list[int]] = {}
    for t in items:
        component, layer = layout.locate(t.name)
        n = t.nbytes
        params = _expert_weight_params(t, shapes) if component == ROUTED_EXPERTS else math.prod(t.shape)
        acc = sums[component]
        acc[0] += 1
        acc[1] += params
        acc[2] += n
        if layer is not None:
            row = per_layer.setdefault(layer, [0, 0, 0])
            row[{FFN: 0, SHARED_EXPERTS: 0, ROUTED_EXPERTS: 1, ROUTERS: 2}[component]] += n
    moe_layers = set(layout.moe_prefixes.values())
    for layer in list(layout.moe_prefixes.values()) + list(layout.ffn_prefixes.values()):
        per_layer.setdefault(layer, [0, 0, 0])
    return MemoryTable(
        tuple(ComponentMemory(c, *sums[c]) for c in COMPONENTS),
        tuple(LayerMemory(layer, layer in moe_layers, *per_layer[layer]) for layer in sorted(per_layer)),
    )


def packed_expert_bytes(tensors: Iterable[TensorLike], layout: Layout, num_experts: int) -> int:
    """Bytes of N routed experts per MoE layer in the packed-2bit format, derived from the shared
    experts' shapes through the codec (per projection ceil(out/4) x in codes and a float32 scale),
    plus the bias at its own dtype where the FFN has one."""
    codec = get_codec(ExpertFormat.PACKED_2BIT)
    per_expert = 0
    for t in tensors:
        component, _ = layout.locate(t.name)
        if component != SHARED_EXPERTS:
            continue
        proj, _, kind = t.name.rpartition(".")
        if proj.rsplit(".", 1)[-1] not in layout.projections:
            continue
        if kind == "weight" and len(t.shape) == 2:
            per_expert += sum(p.nbytes for p in codec.parts(t.dtype, tuple(t.shape)))
        elif kind == "bias":
            per_expert += t.nbytes
    return num_experts * per_expert


@dataclass(frozen=True)
class Variant:
    """One way of building the model: its expert memory (the MoE layers' FFN bytes) and total."""

    expert_bytes: int
    total_bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"expert_bytes": self.expert_bytes, "total_bytes": self.total_bytes}


@dataclass(frozen=True)
class Comparison:
    """Dense source vs. MoE-LLaVA-style up-cycling (N full-precision experts) vs. MoTE.

    * ``dense``: the MoE layers' FFNs as they are in the source;
    * ``moe_llava``: each of those FFNs replaced by N full-precision copies, plus the routers;
    * ``mote``: the FFN kept as shared expert plus N experts packed at 2 bits, plus the routers.
    """

    num_experts: int
    dense: Variant
    moe_llava: Variant
    mote: Variant

    @property
    def saving_vs_moe_llava(self) -> float:
        """MoE-LLaVA expert bytes over MoTE expert bytes."""
        return self.moe_llava.expert_bytes / self.mote.expert_bytes if self.mote.expert_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "num_experts": self.num_experts,
            "dense": self.dense.to_dict(),
            "moe_llava": self.moe_llava.to_dict(),
            "mote": self.mote.to_dict(),
            "moe_llava_over_mote_expert_bytes": round(self.saving_vs_moe_llava, 6),
        }


def compare(table: MemoryTable, tensors: Iterable[TensorLike], layout: Layout, num_experts: int) -> Comparison:
    """The three variants, from a MoTE checkpoint's tensors (or the upcycle plan's output tensors)
    and their memory table."""
    ffn = table[SHARED_EXPERTS].bytes  # the dense FFNs of the MoE layers, at the source dtype
    routers = table[ROUTERS].bytes
    dense_total = table.total.bytes - table[ROUTED_EXPERTS].bytes - routers
    packed = packed_expert_bytes(tensors, layout, num_experts)
    return Comparison(
        num_experts,
        dense=Variant(ffn, dense_total),
        moe_llava=Variant(num_experts * ffn, dense_total - ffn + num_experts * ffn + routers),
        mote=Variant(ffn + packed, dense_total + packed + routers),
    )
