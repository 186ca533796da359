"""Expert codecs: how one routed-expert projection weight is stored, one class per expert format.

A codec knows its tensors' names and header-only specs (from the dense weight's dtype and shape),
how to encode a float weight into them, how to decode them back to a latent weight, and how many
weights they stand for. Planning, packing, validation, memory accounting, inspection and loading
all ask the registry; a new storage format is one new codec. Encoding and decoding import torch on
use, so header-only callers never do.

Names: a MoE layer's FFN prefix P, expert i and projection proj give the base
``P.experts.{i}.{proj}``; a codec's tensors are ``base.<suffix>``; the expert's bias, where the FFN
has one, is ``base.bias`` in every format; the router is ``P.router.weight``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from mote_convert.errors import FormatError
from mote_convert.format.config import ExpertFormat
from mote_convert.io.dtypes import TensorSpec
from mote_convert.quant.layout import packed_rows

if TYPE_CHECKING:
    import torch

EXPERT_NAME = re.compile(r"^(?P<prefix>.+)\.experts\.(?P<expert>\d+)\.(?P<proj>[^.]+)\.(?P<suffix>[^.]+)$")
BIAS = "bias"


def expert_base(prefix: str, expert: int, proj: str) -> str:
    """``P.experts.{i}.{proj}``: the base name of one expert projection's tensors."""
    return f"{prefix}.experts.{expert}.{proj}"


def router_name(prefix: str) -> str:
    """The router weight of the MoE layer with FFN prefix ``prefix``."""
    return f"{prefix}.router.weight"


@dataclass(frozen=True)
class PartSpec(TensorSpec):
    """One stored tensor of an encoded projection, named by its suffix (``weight``, ``weight_scale``)."""

    @property
    def suffix(self) -> str:
        """The part's name after the projection's prefix."""
        return self.name


@dataclass(frozen=True)
class CodeStats:
    """Code counts of one stored projection (for ``inspect --stats``)."""

    minus: int
    zero: int
    plus: int
    invalid: int
    padding_nonzero: int
    gamma: float | None


class ExpertCodec:
    """Base of the codecs; subclasses set ``format`` and ``primary`` and implement the methods."""

    format: ClassVar[ExpertFormat]
    primary: ClassVar[str]  # the suffix holding the weight's values (the others are side data)
    scale: ClassVar[str | None] = None  # the suffix of a float32 [1] scale gamma, where there is one
    # True when the single part is the dense weight's bytes unchanged: plans copy it byte for byte.
    copies_source: ClassVar[bool] = False

    def parts(self, dtype: str, shape: tuple[int, ...]) -> tuple[PartSpec, ...]:
        """The tensors that store a weight of safetensors ``dtype`` and ``shape`` [out, in]."""
        raise NotImplementedError

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Every suffix this codec writes (from a nominal 4 x 4 float weight)."""
        return tuple(p.suffix for p in self.parts("F32", (4, 4)))

    def encode(self, weight: torch.Tensor, workspace: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """suffix -> tensor for a float weight [out, in]."""
        raise NotImplementedError

    def decode(self, parts: Mapping[str, torch.Tensor], out_features: int) -> torch.Tensor:
        """The latent float32 weight the parts stand for (packed: the quantizer's fixed point)."""
        raise NotImplementedError

    def weight_params(self, suffix: str, shape: tuple[int, ...], out_features: int | None) -> int:
        """Weights that the stored tensor ``suffix`` of ``shape`` stands for (side data counts 0)."""
        raise NotImplementedError

    def code_stats(self, parts: Mapping[str, torch.Tensor], out_features: int) -> CodeStats:
        """Counts of -1 / 0 / +1 codes (and damage) of the stored weight."""
        raise NotImplementedError


CODECS: dict[ExpertFormat, ExpertCodec] = {}


def register_codec(cls: type[ExpertCodec]) -> type[ExpertCodec]:
    """Class decorator: register a codec under its ``format``."""
    if cls.format in CODECS:
        raise ValueError(f"expert format {cls.format.value!r} registered twice")
    CODECS[cls.format] = cls()
    return cls


def get_codec(expert_format: ExpertFormat | str) -> ExpertCodec:
    """The codec of an expert format; an unknown name lists the known ones."""
    fmt = ExpertFormat.parse(expert_format)
    try:
        return CODECS[fmt]
    except KeyError:  # pragma: no cover - every ExpertFormat member has a codec (tested)
        raise FormatError(
            f"no codec for expert format {fmt.value!r}; known: {', '.join(f.value for f in CODECS)}"
        ) from None


def codec_of_suffix(suffix: str) -> ExpertCodec | None:
    """The codec that writes tensors ending in ``suffix`` (None for a bias or an unknown suffix)."""
    for codec in CODECS.values():
        if suffix in codec.suffixes:
            return codec
    return None


@register_codec
class Packed2BitCodec(ExpertCodec):
    """Ternary codes at 2 bits (``weight_packed``, uint8 [ceil(out/4), in]) and gamma (``weight_scale``)."""

    format = ExpertFormat.PACKED_2BIT
    primary = "weight_packed"
    scale = "weight_scale"

    def parts(self, dtype: str, shape: tuple[int, ...]) -> tuple[PartSpec, ...]:
        out_features, in_features = shape
        return (
            PartSpec(self.primary, "U8", (packed_rows(out_features), in_features)),
            PartSpec(self.scale, "F32", (1,)),
        )

    def encode(self, weight: torch.Tensor, workspace: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        from mote_convert.kernels import quantize_pack  # the fused kernel where one runs, else the reference

        packed, gamma = quantize_pack(weight, workspace=workspace)
        return {self.primary: packed, self.scale: gamma.reshape(1)}

    def decode(self, parts: Mapping[str, torch.Tensor], out_features: int) -> torch.Tensor:
        from mote_convert.quant.packing import unpack_ternary
        from mote_convert.quant.ternary import fixed_point_latent

        codes = unpack_ternary(parts[self.primary], out_features)
        return fixed_point_latent(codes, parts[self.scale].reshape(()))

    def weight_params(self, suffix: str, shape: tuple[int, ...], out_features: int | None) -> int:
        if suffix != self.primary or len(shape) != 2:
            return 0
        # the logical out x in: the packed rows alone round out up to a multiple of 4
        out = out_features if out_features is not None and packed_rows(out_features) == shape[0] else 4 * shape[0]
        return out * shape[1]

    def code_stats(self, parts: Mapping[str, Any], out_features: int) -> CodeStats:
        from mote_convert.quant.packing import code_counts

        (minus, zero, plus, invalid), padding = code_counts(parts[self.primary], out_features)
        scale = parts.get(self.scale)
        return CodeStats(minus, zero, plus, invalid, padding, None if scale is None else float(scale.reshape(-1)[0]))


@register_codec
class LatentCodec(ExpertCodec):
    """The latent float weight itself (``weight``, the dense dtype and shape), for training."""

    format = ExpertFormat.LATENT
    primary = "weight"
    copies_source = True

    def parts(self, dtype: str, shape: tuple[int, ...]) -> tuple[PartSpec, ...]:
        return (PartSpec(self.primary, dtype, tuple(shape)),)

    def encode(self, weight: torch.Tensor, workspace: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {self.primary: weight}

    def decode(self, parts: Mapping[str, torch.Tensor], out_features: int) -> torch.Tensor:
        import torch

        return parts[self.primary].to(torch.float32)

    def weight_params(self, suffix: str, shape: tuple[int, ...], out_features: int | None) -> int:
        return math.prod(shape) if suffix == self.primary else 0

    def code_stats(self, parts: Mapping[str, Any], out_features: int) -> CodeStats:
        import torch

        from mote_convert.quant.ternary import ternarize

        weight = parts[self.primary]
        finite = torch.isfinite(weight)
        codes, gamma = ternarize(torch.where(finite, weight, 0))
        # a non-finite value has no code: it counts as invalid (a sound latent weight has none)
        minus, zero, plus = (int(((codes == t) & finite).sum()) for t in (-1, 0, 1))
        invalid = int(weight.numel() - int(finite.sum()))
        return CodeStats(minus, zero, plus, invalid, 0, None if invalid else float(gamma))
