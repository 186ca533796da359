"""Frozen, typed options for the commands, and recipe loading.

A recipe is a YAML file of the same option names (``configs/recipes/*.yaml`` ships some); command-line
flags override it. Option values are validated here; what depends on the model (layers out of range)
is validated by the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from mote_convert.errors import OptionsError
from mote_convert.resources import recipe_dir

DEFAULT_MAX_SHARD_SIZE = 5 * 10**9

_SIZE_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


def parse_size(value: int | str) -> int:
    """Parse a byte size as transformers writes it ("5GB", "500MB", "2GiB", 1000000) into bytes."""
    if isinstance(value, bool):
        raise OptionsError(f"invalid size {value!r}")
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", str(value), flags=re.IGNORECASE)
        if not m:
            raise OptionsError(f"invalid size {value!r}: use a number of bytes or e.g. 5GB, 500MB, 2GiB")
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").upper()])
    if size <= 0:
        raise OptionsError(f"size must be positive, got {value!r}")
    return size


@dataclass(frozen=True)
class LayerSelection:
    """Which decoder layers become MoE layers: "all", "even", "odd", or explicit indices."""

    spec: str = "all"

    def __post_init__(self) -> None:
        self.resolve(None)  # syntax check now; the range check needs the layer count

    def resolve(self, num_layers: int | None) -> tuple[int, ...]:
        """Return the sorted layer indices for a model of ``num_layers`` decoder layers."""
        spec = self.spec.strip().lower()
        if spec in ("all", "even", "odd"):
            if num_layers is None:
                return ()
            start, step = {"all": (0, 1), "even": (0, 2), "odd": (1, 2)}[spec]
            return tuple(range(start, num_layers, step))
        try:
            indices = sorted({int(part) for part in spec.split(",") if part.strip()})
        except ValueError:
            raise OptionsError(f"invalid --layers {self.spec!r}: use all, even, odd or indices like 0,3,5") from None
        if not indices:
            raise OptionsError(f"invalid --layers {self.spec!r}: no layer given")
        if num_layers is not None:
            bad = [i for i in indices if not 0 <= i < num_layers]
            if bad:
                raise OptionsError(
                    f"--layers {self.spec!r}: layer {bad[0]} is out of range (the model has {num_layers} "
                    f"decoder layers, 0..{num_layers - 1})"
                )
        return tuple(indices)


@dataclass(frozen=True)
class UpcycleOptions:
    """Everything that decides what ``upcycle`` writes (SPEC section 1 defaults)."""

    num_experts: int = 4
    top_k: int = 1
    layers: LayerSelection = LayerSelection("all")
    latent: bool = False
    seed: int = 0
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE
    router_aux_loss_coef: float = 0.01
    norm_topk_prob: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.layers, LayerSelection):
            object.__setattr__(self, "layers", LayerSelection(str(self.layers)))
        if isinstance(self.max_shard_size, str):
            object.__setattr__(self, "max_shard_size", parse_size(self.max_shard_size))
        if self.num_experts < 1:
            raise OptionsError(f"--num-experts must be at least 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise OptionsError(
                f"--top-k must be between 1 and --num-experts ({self.num_experts}), got {self.top_k}"
            )
        if self.seed < 0:
            raise OptionsError(f"--seed must be >= 0, got {self.seed}")
        if self.max_shard_size <= 0:
            raise OptionsError("--max-shard-size must be positive")
        if self.router_aux_loss_coef < 0:
            raise OptionsError("router_aux_loss_coef must be >= 0")

    @property
    def expert_format(self) -> str:
        """``"latent"`` or ``"packed-2bit"``, as config.json["mote"] names it."""
        return "latent" if self.latent else "packed-2bit"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> UpcycleOptions:
        """Build options from a recipe-like mapping; unknown keys are an error naming the known ones."""
        known = {f.name for f in fields(cls)}
        normalized = {str(k).replace("-", "_"): v for k, v in values.items()}
        unknown = sorted(set(normalized) - known)
        if unknown:
            raise OptionsError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if "layers" in normalized:
            layers = normalized["layers"]
            if isinstance(layers, (list, tuple)):
                layers = ",".join(str(i) for i in layers)
            normalized["layers"] = LayerSelection(str(layers))
        try:
            return cls(**normalized)
        except TypeError as exc:
            raise OptionsError(f"invalid options: {exc}") from None

    def with_overrides(self, **overrides: Any) -> UpcycleOptions:
        """Return a copy with the non-None overrides applied (how CLI flags beat a recipe)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "layers" in given and not isinstance(given["layers"], LayerSelection):
            given["layers"] = LayerSelection(str(given["layers"]))
        if "max_shard_size" in given:
            given["max_shard_size"] = parse_size(given["max_shard_size"])
        return replace(self, **given)


def load_recipe(name_or_path: str | Path) -> UpcycleOptions:
    """Load a recipe YAML by path, or by name from the shipped ``configs/recipes``."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = recipe_dir() / (path.name if path.suffix else f"{path.name}.yaml")
        if not shipped.is_file():
            known = sorted(p.stem for p in recipe_dir().glob("*.yaml"))
            raise OptionsError(f"recipe {str(name_or_path)!r} not found; shipped recipes: {', '.join(known)}")
        path = shipped
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise OptionsError(f"recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise OptionsError(f"recipe {path} must be a mapping of option names to values")
    data.pop("description", None)
    return UpcycleOptions.from_mapping(data)
