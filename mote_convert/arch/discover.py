"""Finding a model's decoder FFNs from the model itself.

The model's skeleton is built on the meta device from its config.json (no weights, no memory) with
the class transformers would load it as. In it: the language model (``get_decoder``), its list of
decoder layers, and in each layer a dense FFN of a known kind (:mod:`mote_convert.arch.ffn`). The
checkpoint's key names come from transformers' own weight conversion rules run backwards
(``revert_weight_conversion``: the names ``save_pretrained`` writes), beside the in-memory names that
other checkpoints use. The result is the same :class:`Architecture` a YAML definition gives.

A decoder whose layers already hold mixtures of experts, or none of whose layers has a dense FFN, is
refused with that reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping

from mote_convert.arch.ffn import FFN_KINDS, GATE_UP, FfnKind
from mote_convert.arch.registry import LAYER_FIELD, Architecture
from mote_convert.arch.skeleton import model_class, pretrained_config, skeleton
from mote_convert.errors import UnsupportedArchitectureError

if TYPE_CHECKING:
    from torch import nn

# Children of a decoder layer that hold an already-routed FFN (the class names of transformers'
# sparse MoE blocks contain these words).
_MOE_CLASS = re.compile(r"moe|mixture|sparse|experts", re.IGNORECASE)
# Towers that are not the language model, whatever get_decoder says (GIT's is the whole model)
_NOT_LANGUAGE = re.compile(r"vision|visual|image_encoder|audio|speech", re.IGNORECASE)
# Modules beside the language model that connect the vision tower to it (reports only).
_PROJECTOR_NAME = re.compile(r"project|merger|connector|adapter|^mlp1$|aligner|resampler", re.IGNORECASE)


class Refusal(UnsupportedArchitectureError):
    """A family that transformers builds but that has nothing MoTE can up-cycle; ``reason`` says why."""

    def __init__(self, model_type: str, reason: str, *, what: str | None = None) -> None:
        super().__init__(f"{what or f'model_type {model_type!r}'} cannot be up-cycled: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class _Ffn:
    name: str  # child name in the decoder layer
    kind: FfnKind


def _linear_children(module: nn.Module) -> dict[str, nn.Module]:
    from torch import nn

    return {n: c for n, c in module.named_children() if isinstance(c, nn.Linear)}


def _ffn_kind_of(module: nn.Module) -> FfnKind | None:
    """The FFN kind whose projections are exactly this module's Linear children."""
    linears = set(_linear_children(module))
    for kind in FFN_KINDS.values():
        if set(kind.projections) == linears:
            return kind
    return None


def _find_ffn(layer: nn.Module) -> _Ffn | None:
    for name, child in layer.named_children():
        kind = _ffn_kind_of(child)
        if kind is not None:
            return _Ffn(name, kind)
    return None


def _takes_hidden_states_only(ffn: nn.Module) -> bool:
    """Whether the FFN's forward takes the hidden states alone (what a routed expert is given)."""
    import inspect

    params = list(inspect.signature(type(ffn).forward).parameters.values())[1:]
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1


def _is_moe(layer: nn.Module) -> bool:
    from torch import nn

    for _, child in layer.named_children():
        if _MOE_CLASS.search(type(child).__name__) and not _ffn_kind_of(child):
            return True
        if any(name in ("experts", "router") for name, _ in child.named_children()):
            return True
        if isinstance(child, nn.ModuleList) and child and all(_ffn_kind_of(c) for c in child):
            return True
    return False


def _path_of(model: nn.Module, target: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if module is target:
            return name
    return None


def _decoder_layers(model: nn.Module, num_layers: int, model_type: str) -> tuple[str, nn.Module]:
    """The path and the ModuleList of the language model's decoder layers."""
    from torch import nn

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    root = _path_of(model, decoder) if decoder is not None else None
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == num_layers
        and (root is None or root == "" or name.startswith(root + "."))
        and not any(_NOT_LANGUAGE.search(part) for part in name.split("."))
    ]
    if not candidates:
        raise Refusal(model_type, f"no list of {num_layers} decoder layers found in its language model")
    # the decoder's own list (``layers``), before lists nested deeper inside it
    candidates.sort(key=lambda c: (not c[0].endswith("layers"), c[0].count("."), c[0]))
    return candidates[0]


def _template(a: str, b: str, la: int, lb: int) -> str | None:
    """The ``{layer}`` template of two names that differ only in their layer index."""
    sa, sb = a.split("."), b.split(".")
    if len(sa) != len(sb):
        return None
    diff = [i for i, (x, y) in enumerate(zip(sa, sb, strict=True)) if x != y]
    if la == lb:
        diff = [i for i, x in enumerate(sa) if x == str(la)]
    if len(diff) != 1 or sa[diff[0]] != str(la) or sb[diff[0]] != str(lb):
        return None
    sa[diff[0]] = LAYER_FIELD
    return ".".join(sa)


def _saved_names(model: nn.Module, names: list[str]) -> dict[str, str]:
    """In-memory parameter name -> the name ``save_pretrained`` writes (transformers' conversion
    rules, reverted). A name the rules merge or split maps to itself only if it is unchanged."""
    import torch
    from transformers.core_model_loading import revert_weight_conversion

    out: dict[str, str] = {}
    for name in names:
        saved = list(revert_weight_conversion(model, {name: torch.empty(0, device="meta")}))
        if len(saved) == 1:
            out[name] = saved[0]
    return out


def _key_styles(model: nn.Module, module_paths: list[tuple[int, str]], ffn: _Ffn, model_type: str) -> tuple[str, ...]:
    """The FFN prefix templates in each key style: as ``save_pretrained`` writes them, then as the
    modules are named in memory (checkpoints converted by other tools use it)."""
    (la, pa), (lb, pb) = module_paths[0], module_paths[-1]
    proj = ffn.kind.projections
    names = [f"{p}.{q}.weight" for p in (pa, pb) for q in proj]
    saved = _saved_names(model, names)
    for p in (pa, pb):
        got = {saved.get(f"{p}.{q}.weight", "").removesuffix(f".{q}.weight") for q in proj}
        if (
            len(got) != 1
            or "" in got
            or not all(saved.get(f"{p}.{q}.weight", "").endswith(f".{q}.weight") for q in proj)
        ):
            raise Refusal(
                model_type,
                "transformers converts its FFN weights between the checkpoint and the model (merged or "
                "split projections), which MoTE's plan does not follow",
            )
    saved_a = saved[f"{pa}.{proj[0]}.weight"].removesuffix(f".{proj[0]}.weight")
    saved_b = saved[f"{pb}.{proj[0]}.weight"].removesuffix(f".{proj[0]}.weight")
    styles = [_template(saved_a, saved_b, la, lb), _template(pa, pb, la, lb)]
    if None in styles:
        raise Refusal(model_type, "its FFN names do not differ by layer index alone")
    return tuple(dict.fromkeys(s for s in styles if s is not None))


def _side_prefixes(model: nn.Module, layers_path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Checkpoint key prefixes (both key styles) of the vision tower and of the projector: the
    language model's siblings, a projector told by its name (reports only)."""
    decoder_root = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    parent = decoder_root.rsplit(".", 1)[0] if "." in decoder_root else ""
    holder = model.get_submodule(parent) if parent else model
    vision: list[str] = []
    projector: list[str] = []
    for name, child in holder.named_children():
        path = f"{parent}.{name}" if parent else name
        if path == decoder_root or not any(True for _ in child.parameters()) or name == "lm_head":
            continue
        if _PROJECTOR_NAME.search(name):
            projector.append(path)
            continue
        vision.append(path)
        for sub, grandchild in child.named_children():
            if _PROJECTOR_NAME.search(sub) and any(True for _ in grandchild.parameters()):
                projector.append(f"{path}.{sub}")

    # parameters of the holder itself (LLaVA-NeXT's image_newline) belong to the projector
    loose = [f"{parent}.{name}" if parent else name for name, _ in holder.named_parameters(recurse=False)]

    def styles(paths: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for path in paths:
            first = next(n for n, _ in model.get_submodule(path).named_parameters())
            full = f"{path}.{first}"
            saved = _saved_names(model, [full]).get(full, full)
            tail = "." + first
            for p in (saved.removesuffix(tail) if saved.endswith(tail) else path, path):
                out.append(p + ".")
        return tuple(dict.fromkeys(out))

    loose_styles = [s for p in loose for s in (_saved_names(model, [p]).get(p, p), p)]
    return styles(vision), styles(projector) + tuple(dict.fromkeys(loose_styles))


def _sub_config_key(config: Any, text: Any) -> str | None:
    if text is config:
        return None
    for key in getattr(config, "sub_configs", None) or {}:
        if getattr(config, key, None) is text:
            return key
    for key, value in vars(config).items():
        if value is text:
            return key
    return None


def _config_key(text: Any, key: str) -> str:
    return dict(getattr(text, "attribute_map", {}) or {}).get(key, key)


def discover(config: Mapping[str, Any]) -> Architecture:
    """The :class:`Architecture` of a dense checkpoint's config.json, found from the model's skeleton
    (or remembered from an earlier discovery of the same config.json, :mod:`mote_convert.arch.cache`)."""
    return _remembered(json.dumps(config, sort_keys=True, default=str))


@lru_cache(maxsize=32)
def _remembered(config_json: str) -> Architecture:
    """This process's memo, then the disk cache, then discovery (stored for the next command)."""
    from mote_convert.arch import cache

    key = cache.cache_key(config_json)
    arch = cache.load(key)
    if arch is None:
        arch = _discover(config_json)
        cache.store(key, arch)
    return arch


def _discover(config_json: str) -> Architecture:
    """Discovery itself: the skeleton built and searched."""
    config = json.loads(config_json)
    model_type = str(config.get("model_type"))
    hf_config = pretrained_config(config)
    cls = model_class(config)
    text = hf_config.get_text_config(decoder=True)
    num_layers = getattr(text, "num_hidden_layers", None)
    if not isinstance(num_layers, int) or num_layers < 1:
        raise Refusal(model_type, "its language model's config has no decoder layer count")
    model = skeleton(hf_config, cls)
    layers_path, layers = _decoder_layers(model, num_layers, model_type)

    found: dict[int, _Ffn] = {}
    moe: list[int] = []
    for i, layer in enumerate(layers):
        ffn = _find_ffn(layer)
        if ffn is not None:
            found[i] = ffn
        elif _is_moe(layer):
            moe.append(i)
    if moe:
        raise Refusal(model_type, "its decoder FFNs are already mixture-of-experts layers (MoTE up-cycles dense FFNs)")
    if not found:
        raise Refusal(model_type, "its decoder layers have no dense FFN of a known kind (gated, plain or fused)")
    kinds = {(f.name, f.kind.name) for f in found.values()}
    if len(kinds) != 1:
        raise Refusal(model_type, f"its decoder layers have FFNs of different kinds or names: {sorted(kinds)}")
    ffn = next(iter(found.values()))
    if not _takes_hidden_states_only(getattr(layers[min(found)], ffn.name)):
        raise Refusal(
            model_type,
            "its FFN's forward takes more than the hidden states (the residual is added inside it), "
            "so it cannot be run as an expert",
        )

    hidden = getattr(text, "hidden_size", None)
    config_inter = getattr(text, "intermediate_size", None)
    module = getattr(layers[min(found)], ffn.name)
    lead = ffn.kind.projections[0]
    rows = module.get_submodule(lead).weight.shape[0]
    inter = rows // 2 if ffn.kind.shapes[lead][0] == GATE_UP else rows
    for proj in ffn.kind.projections:
        shape = tuple(module.get_submodule(proj).weight.shape)
        if not isinstance(hidden, int) or shape != ffn.kind.expected_shape(proj, hidden, inter):
            raise Refusal(
                model_type,
                f"its FFN's {proj} has shape {list(shape)}, which hidden_size {hidden} does not explain",
            )

    ordered = sorted(found)
    paths = [(i, f"{layers_path}.{i}.{ffn.name}") for i in (ordered[0], ordered[-1])]
    styles = _key_styles(model, paths, ffn, model_type)
    vision, projector = _side_prefixes(model, layers_path)
    text_key = _sub_config_key(hf_config, text)
    vision_cfg = getattr(hf_config, "vision_config", None)
    return Architecture(
        name=model_type,
        model_types=(model_type,),
        description=f"{cls.__name__} ({type(layers[min(found)]).__name__} layers, found from the model)",
        text_config=text_key,
        ffn_kind=ffn.kind,
        ffn_prefixes=styles,
        module_path=f"{layers_path}.{LAYER_FIELD}.{ffn.name}",
        num_layers_key=_config_key(text, "num_hidden_layers"),
        hidden_size_key=_config_key(text, "hidden_size"),
        intermediate_size_key=_config_key(text, "intermediate_size"),
        vision_prefixes=vision,
        projector_prefixes=projector,
        vision_config="vision_config" if vision_cfg is not None and hasattr(vision_cfg, "to_dict") else None,
        ffn_layers=None if len(ordered) == num_layers else tuple(ordered),
        intermediate_size=None if inter == config_inter else inter,
        discovered=True,
    )
