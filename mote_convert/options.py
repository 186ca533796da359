"""Frozen, typed options for the commands, and recipe loading.

A recipe is a YAML file of the same option names (``configs/recipes/*.yaml`` ships some); command-line
flags override it. Option values are validated here; what depends on the model (layers out of range)
is validated by the plan.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from mote_convert.errors import OptionsError
from mote_convert.format.config import MAX_EXPERTS, MAX_LAYERS
from mote_convert.io.yamlfile import YamlFileError, load_yaml
from mote_convert.resources import recipe_dir

DEFAULT_MAX_SHARD_SIZE = 5 * 10**9
# Router seeds are seed * 100003 + layer in a 64-bit generator: 32 bits of user seed always fit.
MAX_SEED = 2**32 - 1
MAX_SHARD_SIZE = 2**50

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(value: int | str) -> int:
    """Parse a byte size as transformers writes it ("5GB", "500MB", "2GiB", 1000000) into bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise OptionsError(f"invalid size {value!r}: use a number of bytes or e.g. 5GB, 500MB, 2GiB")
    if isinstance(value, int):
        size = value
    else:
        m = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,20})?)\s*([KMGT]I?B|B)?\s*", value, flags=re.IGNORECASE)
        if not m:
            raise OptionsError(f"invalid size {value!r}: use a number of bytes or e.g. 5GB, 500MB, 2GiB")
        size = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").upper()])
    if not 0 < size <= MAX_SHARD_SIZE:
        raise OptionsError(f"size must be positive and at most 1 PiB, got {value!r}")
    return size


@dataclass(frozen=True)
class LayerSelection:
    """Which decoder layers become MoE layers: "all", "even", "odd", or explicit indices."""

    spec: str = "all"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str):
            raise OptionsError(f"invalid --layers {self.spec!r}: use all, even, odd or indices like 0,3,5")
        self.resolve(None)  # syntax check now; the range check needs the layer count

    @property
    def explicit(self) -> bool:
        """True when the spec names layer indices (not ``all``, ``even`` or ``odd``)."""
        return self.spec.strip().lower() not in ("all", "even", "odd")

    def resolve(self, num_layers: int | None) -> tuple[int, ...]:
        """Return the sorted layer indices for a model of ``num_layers`` decoder layers."""
        spec = self.spec.strip().lower()
        if spec in ("all", "even", "odd"):
            if num_layers is None:
                return ()
            start, step = {"all": (0, 1), "even": (0, 2), "odd": (1, 2)}[spec]
            return tuple(range(start, num_layers, step))
        parts = [part.strip() for part in spec.split(",") if part.strip()]
        if not all(re.fullmatch(r"\d{1,6}", part) for part in parts):
            raise OptionsError(f"invalid --layers {self.spec!r}: use all, even, odd or indices like 0,3,5")
        indices = sorted({int(part) for part in parts})
        if indices and indices[-1] >= MAX_LAYERS:
            raise OptionsError(
                f"--layers {self.spec!r}: layer {indices[-1]} is beyond any model ({MAX_LAYERS} layers at most)"
            )
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
    """Everything that decides what ``upcycle`` writes (the method's defaults, docs/method.md)."""

    num_experts: int = 4
    top_k: int = 1
    layers: LayerSelection = LayerSelection("all")
    latent: bool = False
    seed: int = 0
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE
    router_aux_loss_coef: float = 0.01
    norm_topk_prob: bool = False

    def __post_init__(self) -> None:
        # Types first: a recipe's `latent: 'false'` is a string, not False, and `top_k: true` is no 1.
        if isinstance(self.layers, (list, tuple)):
            object.__setattr__(self, "layers", LayerSelection(",".join(str(_int("layers", i)) for i in self.layers)))
        elif not isinstance(self.layers, LayerSelection):
            object.__setattr__(self, "layers", LayerSelection(self.layers))
        object.__setattr__(self, "max_shard_size", parse_size(self.max_shard_size))
        for name in ("latent", "norm_topk_prob"):
            if not isinstance(getattr(self, name), bool):
                raise OptionsError(f"{_flag(name)} must be true or false, got {getattr(self, name)!r}")
        _int("num_experts", self.num_experts, 1, MAX_EXPERTS)
        _int("top_k", self.top_k, 1, self.num_experts, " (--num-experts)")
        _int("seed", self.seed, 0, MAX_SEED)
        coef = self.router_aux_loss_coef
        if isinstance(coef, bool) or not isinstance(coef, (int, float)) or not math.isfinite(coef) or coef < 0:
            raise OptionsError(f"router_aux_loss_coef must be a finite number >= 0, got {coef!r}")
        object.__setattr__(self, "router_aux_loss_coef", float(coef))

    @property
    def expert_format(self) -> str:
        """``"latent"`` or ``"packed-2bit"``, as config.json["mote"] names it."""
        return "latent" if self.latent else "packed-2bit"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> UpcycleOptions:
        """Build options from a recipe-like mapping; unknown keys are an error naming the known ones."""
        normalized = known_keys(values, {f.name for f in fields(cls)}, "option")
        try:
            return cls(**normalized)
        except TypeError as exc:
            raise OptionsError(f"invalid options: {exc}") from None

    def with_overrides(self, **overrides: Any) -> UpcycleOptions:
        """Return a copy with the non-None overrides applied (how CLI flags beat a recipe)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(self, **given)


def known_keys(values: Mapping[str, Any], known: set[str], what: str) -> dict[str, Any]:
    """``values`` with ``-`` in keys read as ``_``; an unknown key is an error naming the known ones."""
    normalized = {str(k).replace("-", "_"): v for k, v in values.items()}
    unknown = sorted(set(normalized) - known)
    if unknown:
        raise OptionsError(f"unknown {what}(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return normalized


def read_recipe_file(
    name_or_path: str | Path, directory: Path, what: str, shipped_label: str
) -> tuple[Path, dict[str, Any]]:
    """A recipe YAML by path, or by name from the shipped ``directory``: its path and its mapping of
    option names to values (``description`` left out). ``what`` names it in errors."""
    path = Path(name_or_path)
    if not path.is_file():
        shipped = directory / (path.name if path.suffix else f"{path.name}.yaml")
        if not shipped.is_file():
            known = sorted(p.stem for p in directory.glob("*.yaml"))
            raise OptionsError(f"{what} {str(name_or_path)!r} not found; {shipped_label}: {', '.join(known)}")
        path = shipped
    try:
        data = load_yaml(path)
    except YamlFileError as exc:
        raise OptionsError(f"{what} {path}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise OptionsError(f"{what} {path} must be a mapping of option names to values")
    data.pop("description", None)
    return path, data


def load_recipe(name_or_path: str | Path) -> UpcycleOptions:
    """Load a recipe YAML by path, or by name from the shipped ``configs/recipes``."""
    path, data = read_recipe_file(name_or_path, recipe_dir(), "recipe", "shipped recipes")
    try:
        return UpcycleOptions.from_mapping(data)
    except OptionsError as exc:
        raise OptionsError(f"recipe {path}: {exc}") from None


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-") if name in _FLAGS else name


_FLAGS = {"num_experts", "top_k", "seed", "latent", "layers", "max_shard_size"}


def _int(name: str, value: Any, low: int = 0, high: int | None = None, high_note: str = "") -> int:
    """``value`` as an int option in [low, high]; a bool, a float or a string is an error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionsError(f"{_flag(name)} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = f" and {high}{high_note}" if high is not None else ""
        raise OptionsError(f"{_flag(name)} must be between {low}{upper}, got {value}")
    return value
