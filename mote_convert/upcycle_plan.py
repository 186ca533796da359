"""Planning ``upcycle``: from a dense checkpoint's headers and config, the entry of every output
tensor (shared experts and everything else copied, routed experts encoded from the dense FFN,
routers drawn from seeded generators) and the ``mote`` section, checked against the layer count and
the checkpoint's key style. Nothing is read but headers and ``config.json``.
"""

from __future__ import annotations

from typing import Any, Mapping

from mote_convert.arch import Architecture
from mote_convert.arch.values import config_int
from mote_convert.checkpoint import dense_architecture
from mote_convert.errors import PlanError, UnsupportedArchitectureError
from mote_convert.format import MAX_LAYERS, ExpertFormat, MoteConfig, expert_base, get_codec, is_number
from mote_convert.io.dtypes import FLOAT_DTYPES
from mote_convert.io.index import CheckpointIndex
from mote_convert.io.shards import TensorSpec
from mote_convert.options import UpcycleOptions
from mote_convert.plan import COPY, ROUTER, ConversionPlan, MoeLayer, PlanEntry, encode_entries, validate


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


def build_upcycle_plan(index: CheckpointIndex, config: Mapping[str, Any], options: UpcycleOptions) -> ConversionPlan:
    """Decide every output tensor of ``upcycle`` for a dense source (docs/method.md, docs/format.md)."""
    arch = dense_architecture(config, index.root)
    text_config = arch.text_config_of(config)
    num_layers = _config_int(text_config, arch.num_layers_key, arch, MAX_LAYERS)
    hidden = _config_int(text_config, arch.hidden_size_key, arch)
    layers = _select_layers(options, arch, num_layers)
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
        if arch.intermediate_size is not None:  # the family derives its FFN width from the config's
            intermediate = arch.intermediate_size
        if intermediate is None:  # pragma: no cover - every registered kind leads with an [intermediate, hidden] weight
            raise PlanError(f"cannot tell the intermediate size of {prefix}")
        moe_layers.append(MoeLayer(layer, prefix, hidden, intermediate))
        extra.append(
            PlanEntry(
                TensorSpec(f"{prefix}.router.weight", "F32", (n, hidden)),
                ROUTER,
                None,
                layer,
                router_seed(options.seed, layer),
            )
        )
        for proj in kind.projections:
            weight_name = f"{prefix}.{proj}.weight"
            info = index.tensors.get(weight_name)
            if info is None:
                raise UnsupportedArchitectureError(
                    f"{index.root}: key {weight_name} not found ({arch.name} layer {layer})"
                )
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


def _select_layers(options: UpcycleOptions, arch: Architecture, num_layers: int) -> tuple[int, ...]:
    """The MoE layers: what ``--layers`` selects, among the layers that have a dense FFN (all of them
    but in a hybrid decoder)."""
    layers = options.layers.resolve(num_layers)
    if arch.ffn_layers is not None:
        with_ffn = set(arch.ffn_layers)
        if options.layers.explicit:
            without = [i for i in layers if i not in with_ffn]
            if without:
                raise PlanError(
                    f"--layers {options.layers.spec!r}: layer {without[0]} of {arch.name} has no dense FFN "
                    f"(the layers that have one: {', '.join(map(str, arch.ffn_layers))})"
                )
        layers = tuple(i for i in layers if i in with_ffn)
    if not layers:
        raise PlanError(f"--layers {options.layers.spec!r} selects no layer of {num_layers} that has a dense FFN")
    return layers


def _layer_end(ffn_prefix: str) -> str:
    """A sort key just after every name of the decoder layer that holds the FFN at ``ffn_prefix``
    (its parent): no name of the layer has a character above U+10FFFF after the parent's dot."""
    return ffn_prefix.rsplit(".", 1)[0] + ".\U0010ffff"


def _check_layer_count(index: CheckpointIndex, arch: Architecture, style: int, num_layers: int) -> None:
    """The checkpoint must hold an FFN for each of config.json's layers, and none beyond them."""
    proj = arch.ffn_kind.projections[0]
    for layer in arch.ffn_layers if arch.ffn_layers is not None else range(num_layers):
        name = f"{arch.prefixes_for(layer)[style]}.{proj}.weight"
        if name not in index:
            raise UnsupportedArchitectureError(
                f"{index.root}: key {name} not found (layer {layer} of {arch.name}, which has {num_layers} layers in config.json)"
            )
    beyond = f"{arch.prefixes_for(num_layers)[style]}.{proj}.weight"
    if beyond in index:
        raise PlanError(
            f"config.json says the text model has {num_layers} decoder layers, but the checkpoint holds {beyond}"
        )


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
