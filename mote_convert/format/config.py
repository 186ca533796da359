"""``config.json["mote"]`` as a typed, validated object, and the safetensors metadata of the format.

One validation serves every reader: :meth:`MoteConfig.check` returns named problems (``inspect``
lists them all), :meth:`MoteConfig.parse` raises one :class:`~mote_convert.errors.FormatError`
carrying them (``load_model``, ``pack``, ``save_model``). No other module reads the raw mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from mote_convert.errors import FormatError
from mote_convert.numbers import is_int, is_number

if TYPE_CHECKING:
    from mote_convert.arch import Architecture

FORMAT_VERSION = 1
WEIGHT_QUANT = "absmean-tensor"
ACTIVATION_BITS = 8
METADATA_KEY = "mote_format"
SAFETENSORS_METADATA: Mapping[str, str] = MappingProxyType({"format": "pt", METADATA_KEY: str(FORMAT_VERSION)})
# Sanity bounds: far above any published model, low enough that loops over them always finish.
MAX_EXPERTS = 1024
MAX_LAYERS = 10_000


class ExpertFormat(str, Enum):
    """How routed experts are stored (``config.json["mote"]["expert_format"]``)."""

    PACKED_2BIT = "packed-2bit"
    LATENT = "latent"

    @classmethod
    def parse(cls, value: Any) -> ExpertFormat:
        """The member named ``value``; an unknown name lists the known ones."""
        if isinstance(value, ExpertFormat):
            return value
        for member in cls:
            if member.value == value:
                return member
        raise FormatError(f"unknown expert_format {value!r}; known: {', '.join(m.value for m in cls)}")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a checkpoint: ``where`` names a tensor, a file or a config key."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form."""
        return {"where": self.where, "message": self.message}


REQUIRED_KEYS = (
    "format_version",
    "num_experts",
    "top_k",
    "moe_layers",
    "layer_prefixes",
    "projections",
    "expert_format",
    "weight_quant",
    "activation_bits",
    "router_aux_loss_coef",
    "norm_topk_prob",
)


def config_key(name: str) -> str:
    """How a problem names a key of the ``mote`` section."""
    return f"config.json:mote.{name}"


@dataclass(frozen=True)
class MoteConfig:
    """A valid ``config.json["mote"]`` (format version 1)."""

    num_experts: int
    top_k: int
    layer_prefixes: Mapping[int, str]  # MoE layer index -> FFN prefix P, in layer order
    projections: tuple[str, ...]
    expert_format: ExpertFormat
    router_aux_loss_coef: float = 0.01
    norm_topk_prob: bool = False
    # mote-convert's extensions, kept as written; unknown keys are carried through unchanged
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def moe_layers(self) -> tuple[int, ...]:
        """The MoE layers' indices, ascending."""
        return tuple(self.layer_prefixes)

    def with_format(self, expert_format: ExpertFormat | str) -> MoteConfig:
        """The same configuration with another expert format."""
        return replace(self, expert_format=ExpertFormat.parse(expert_format))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to config.json (the format's keys first, extensions after)."""
        return {
            "format_version": FORMAT_VERSION,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "moe_layers": list(self.layer_prefixes),
            "layer_prefixes": {str(k): v for k, v in self.layer_prefixes.items()},
            "projections": list(self.projections),
            "expert_format": self.expert_format.value,
            "weight_quant": WEIGHT_QUANT,
            "activation_bits": ACTIVATION_BITS,
            "router_aux_loss_coef": self.router_aux_loss_coef,
            "norm_topk_prob": self.norm_topk_prob,
            **dict(self.extra),
        }

    @classmethod
    def check(
        cls, raw: Any, *, arch: Architecture | None = None, num_layers: int | None = None
    ) -> tuple[MoteConfig | None, list[Problem]]:
        """Validate a raw ``mote`` section: the config (None when unusable) and every problem found.

        With ``arch`` the projections and prefixes are checked against the family's definition; with
        ``num_layers`` the MoE layers against the model's layer count.
        """
        if not isinstance(raw, Mapping):
            return None, [Problem("config.json:mote", "must be a JSON object")]
        problems: list[Problem] = []

        def bad(key: str, message: str) -> None:
            problems.append(Problem(config_key(key), message))

        for key in REQUIRED_KEYS:
            if key not in raw:
                bad(key, "missing (a MoTE checkpoint of format version 1 needs it)")
        fixed = {"format_version": FORMAT_VERSION, "weight_quant": WEIGHT_QUANT, "activation_bits": ACTIVATION_BITS}
        for key, want in fixed.items():
            if key in raw and (raw[key] != want or isinstance(raw[key], bool)):
                bad(key, f"is {raw[key]!r}; this tool reads {want!r}")
        fmt = None
        if "expert_format" in raw:
            try:
                fmt = ExpertFormat.parse(raw["expert_format"])
            except FormatError:
                bad("expert_format", f"is {raw['expert_format']!r}; known: {', '.join(m.value for m in ExpertFormat)}")
        n, k = raw.get("num_experts"), raw.get("top_k")
        if "num_experts" in raw and not (is_int(n) and 1 <= n <= MAX_EXPERTS):
            bad("num_experts", f"is {n!r}, expected an integer from 1 to {MAX_EXPERTS}")
        if "top_k" in raw and not (is_int(k) and 1 <= k and (not is_int(n) or k <= n)):
            bad("top_k", f"is {k!r}, expected an integer from 1 to num_experts ({n!r})")
        if "norm_topk_prob" in raw and not isinstance(raw["norm_topk_prob"], bool):
            bad("norm_topk_prob", f"is {raw['norm_topk_prob']!r}, expected true or false")
        coef = raw.get("router_aux_loss_coef")
        if "router_aux_loss_coef" in raw and not (is_number(coef) and coef >= 0):
            bad("router_aux_loss_coef", f"is {coef!r}, expected a finite number >= 0")
        projections = raw.get("projections")
        if "projections" in raw:
            if not isinstance(projections, list) or not projections or not all(isinstance(p, str) for p in projections):
                bad("projections", f"is {projections!r}, expected a list of projection names")
                projections = None
            elif arch is not None and tuple(projections) != arch.ffn_kind.projections:
                bad("projections", f"is {projections!r}; {arch.name} FFNs have {list(arch.ffn_kind.projections)}")
        prefixes = _check_layers(raw, arch, num_layers, bad)
        if problems or fmt is None or prefixes is None or projections is None:
            return None, problems
        extra = {key: value for key, value in raw.items() if key not in REQUIRED_KEYS}
        return cls(n, k, prefixes, tuple(projections), fmt, coef, raw["norm_topk_prob"], extra), problems

    @classmethod
    def parse(
        cls, raw: Any, where: object, *, arch: Architecture | None = None, num_layers: int | None = None
    ) -> MoteConfig:
        """A valid config or a :class:`FormatError` naming ``where`` and every problem."""
        if raw is None:
            raise FormatError(
                f"{where} is not a MoTE checkpoint (config.json has no 'mote' section); run upcycle first"
            )
        config, problems = cls.check(raw, arch=arch, num_layers=num_layers)
        if config is None:
            listed = "; ".join(str(p) for p in problems[:5]) + ("; ..." if len(problems) > 5 else "")
            raise FormatError(f"{where}: invalid MoTE config: {listed}")
        return config


def _check_layers(
    raw: Mapping[str, Any], arch: Architecture | None, num_layers: int | None, bad: Any
) -> dict[int, str] | None:
    layers, prefixes = raw.get("moe_layers"), raw.get("layer_prefixes")
    ok = True
    if (
        not isinstance(layers, list)
        or not layers
        or len(layers) > MAX_LAYERS
        or not all(is_int(x) and x >= 0 for x in layers)
    ):
        if "moe_layers" in raw:
            bad("moe_layers", f"is {_short(layers)}, expected a non-empty list of layer indices")
        ok = False
    elif len(set(layers)) != len(layers):
        bad("moe_layers", "lists a layer twice")
        ok = False
    if not isinstance(prefixes, Mapping) or not all(
        isinstance(v, str) and isinstance(key, str) for key, v in prefixes.items()
    ):
        if "layer_prefixes" in raw:
            bad("layer_prefixes", "expected an object of layer index -> FFN prefix")
        ok = False
    if not ok:
        return None
    if sorted(prefixes, key=lambda s: int(s) if s.isdigit() else -1) != [str(x) for x in sorted(layers)]:
        bad("layer_prefixes", f"has layers {_short(sorted(prefixes))}, but moe_layers is {_short(sorted(layers))}")
        return None
    result: dict[int, str] = {}
    for layer in sorted(layers):
        prefix = prefixes[str(layer)]
        if num_layers is not None and not layer < num_layers:
            bad("moe_layers", f"layer {layer} is outside the model's {num_layers} layers")
            return None
        if arch is not None and prefix not in arch.prefixes_for(layer):
            bad("layer_prefixes", f"layer {layer} is {prefix!r}; {arch.name} names it {arch.prefixes_for(layer)[0]!r}")
            return None
        result[layer] = prefix
    return result


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_file_metadata(file: str, metadata: Mapping[str, str] | None) -> Problem | None:
    """A safetensors file's ``mote_format`` metadata: absent is accepted (files written by other
    savers, such as ``save_pretrained``, carry only ``format``), another version is a problem."""
    value = (metadata or {}).get(METADATA_KEY)
    if value is None or value == str(FORMAT_VERSION):
        return None
    return Problem(file, f"safetensors metadata {METADATA_KEY!r} is {value!r}; this tool reads {str(FORMAT_VERSION)!r}")
