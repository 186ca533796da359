"""Architecture definitions loaded from ``configs/architectures/*.yaml``, looked up by model_type.

Adding a family is a YAML file: which config holds the language model, the FFN kind, the key
patterns of its decoder FFNs in checkpoints, and the module path in the loaded transformers model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from mote_convert.arch.ffn import FfnKind, get_ffn_kind
from mote_convert.errors import UnsupportedArchitectureError
from mote_convert.format.config import MAX_LAYERS
from mote_convert.io.yamlfile import YamlFileError, load_yaml
from mote_convert.numbers import is_int
from mote_convert.resources import architecture_dir, unsupported_file

LAYER_FIELD = "{layer}"


@dataclass(frozen=True)
class Architecture:
    """Where a model family keeps its decoder FFNs."""

    name: str
    model_types: tuple[str, ...]
    description: str
    text_config: str | None  # key of the language model's sub-config in config.json; None: top level
    ffn_kind: FfnKind
    ffn_prefixes: tuple[str, ...]  # checkpoint key prefixes of layer {layer}'s FFN, one per key style
    module_path: str  # attribute path of layer {layer}'s FFN in the loaded transformers model
    num_layers_key: str = "num_hidden_layers"
    hidden_size_key: str = "hidden_size"
    intermediate_size_key: str = "intermediate_size"
    # Checkpoint key prefixes of the vision tower and the projector (every key style), for reports:
    # their tensors are copied unchanged, whatever they are called.
    vision_prefixes: tuple[str, ...] = ()
    projector_prefixes: tuple[str, ...] = ()
    vision_config: str | None = None  # key of the vision tower's sub-config in config.json
    # The decoder layers that have a dense FFN, where not every layer has one (hybrid decoders)
    ffn_layers: tuple[int, ...] | None = None
    # The FFN's intermediate width where config.json's intermediate_size is not it (a family that
    # derives the width from it, as LFM2 does)
    intermediate_size: int | None = None
    discovered: bool = False  # found from the model itself (arch/discover.py), not a YAML definition

    def text_config_of(self, config: Mapping[str, Any]) -> Mapping[str, Any]:
        """The language model's config inside a full config.json mapping.

        Falls back to the top level where the sub-config is absent but the top level holds the
        layer count (older Qwen2-VL config.json files keep the text sizes there).
        """
        if self.text_config is None:
            return config
        sub = config.get(self.text_config)
        if isinstance(sub, Mapping):
            return sub
        if self.num_layers_key in config:
            return config
        raise UnsupportedArchitectureError(
            f"config.json of model_type {config.get('model_type')!r} has no {self.text_config!r} object"
        )

    def num_layers_of(self, config: Mapping[str, Any]) -> int | None:
        """The language model's layer count in a full config.json mapping, where it is an integer in
        (0, MAX_LAYERS] (loops over it must finish); None otherwise (the caller says what is wrong)."""
        n = self.text_config_of(config).get(self.num_layers_key)
        return n if is_int(n) and 0 < n <= MAX_LAYERS else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``mote-convert architectures --json``)."""
        return {
            "name": self.name,
            "model_types": list(self.model_types),
            "ffn_kind": self.ffn_kind.name,
            "projections": list(self.ffn_kind.projections),
            "ffn_prefixes": list(self.ffn_prefixes),
            "module_path": self.module_path,
            "ffn_layers": None if self.ffn_layers is None else list(self.ffn_layers),
            "source": "discovered" if self.discovered else "definition",
            "description": self.description,
        }

    @property
    def non_text_prefixes(self) -> tuple[str, ...]:
        """Key prefixes of everything that is not the language model (vision tower, projector)."""
        return tuple(self.vision_prefixes) + tuple(self.projector_prefixes)

    def text_key(self, key: str) -> str:
        """Where a language-model config key sits in config.json, for messages (``text_config.hidden_size``)."""
        return f"{self.text_config}.{key}" if self.text_config else key

    def module_path_for(self, layer: int) -> str:
        """The attribute path of one decoder layer's FFN in the loaded transformers model."""
        return self.module_path.replace(LAYER_FIELD, str(layer))

    def prefixes_for(self, layer: int) -> tuple[str, ...]:
        """Every key style's FFN prefix for one decoder layer."""
        return tuple(p.replace(LAYER_FIELD, str(layer)) for p in self.ffn_prefixes)


def _load_definition(path: Path) -> Architecture:
    try:
        data = load_yaml(path)
        prefixes = tuple(data["ffn_prefixes"])
        if not prefixes or not all(LAYER_FIELD in p for p in prefixes):
            raise ValueError(f"every ffn_prefixes entry needs {LAYER_FIELD}")
        return Architecture(
            name=str(data["name"]),
            model_types=tuple(data["model_types"]),
            description=str(data.get("description", "")),
            text_config=data.get("text_config"),
            ffn_kind=get_ffn_kind(str(data["ffn_kind"])),
            ffn_prefixes=prefixes,
            module_path=str(data["module_path"]),
            num_layers_key=str(data.get("num_layers_key", "num_hidden_layers")),
            hidden_size_key=str(data.get("hidden_size_key", "hidden_size")),
            intermediate_size_key=str(data.get("intermediate_size_key", "intermediate_size")),
            vision_prefixes=tuple(data.get("vision_prefixes") or ()),
            projector_prefixes=tuple(data.get("projector_prefixes") or ()),
            vision_config=data.get("vision_config"),
        )
    except (KeyError, TypeError, ValueError, YamlFileError) as exc:
        raise UnsupportedArchitectureError(f"architecture definition {path} is invalid: {exc}") from None


@lru_cache(maxsize=1)
def _registry() -> dict[str, Architecture]:
    registry: dict[str, Architecture] = {}
    for path in sorted(architecture_dir().glob("*.yaml")):
        arch = _load_definition(path)
        for model_type in arch.model_types:
            if model_type in registry:
                raise UnsupportedArchitectureError(f"model_type {model_type!r} is defined twice ({path})")
            registry[model_type] = arch
    return registry


def definitions() -> dict[str, Architecture]:
    """model_type -> its definition file's architecture (``configs/architectures/``)."""
    return dict(_registry())


@lru_cache(maxsize=1)
def unsupported_model_types() -> dict[str, str]:
    """model_type -> the reason mote-convert refuses it (``configs/unsupported.yaml``)."""
    path = unsupported_file()
    try:
        data = load_yaml(path) or {}
        return {t: str(group["reason"]) for group in data.values() for t in group["model_types"]}
    except (KeyError, TypeError, AttributeError, YamlFileError) as exc:
        raise UnsupportedArchitectureError(f"{path} is invalid: {exc}") from None
