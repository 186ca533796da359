"""What ``inspect`` says about a checkpoint, as typed values: the model, its MoE part, its files, its
memory, the problems found and (``--stats``) the experts' code shares. ``to_dict`` of
:class:`InspectionReport` is the JSON documented in docs/inspect-json.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mote_convert.format import Problem
from mote_convert.memory import Comparison, MemoryTable

DENSE = "dense"
MOTE = "mote"
REPORT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """The model as config.json and the headers describe it."""

    model_type: str
    architecture: str
    text_model_type: str | None
    num_layers: int | None
    hidden_size: int | None
    intermediate_size: int | None
    vision_model_type: str | None
    vision_num_layers: int | None
    vision_hidden_size: int | None
    dtype: str | None  # the dtype holding most bytes of the dense (non-MoTE) tensors

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model_type": self.model_type,
            "architecture": self.architecture,
            "text_model_type": self.text_model_type,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "vision_tower": None
            if self.vision_model_type is None
            else {
                "model_type": self.vision_model_type,
                "num_layers": self.vision_num_layers,
                "hidden_size": self.vision_hidden_size,
            },
            "dtype": self.dtype,
        }


@dataclass(frozen=True)
class MoteInfo:
    """The MoE part: from config.json["mote"] (a MoTE checkpoint) or the upcycle plan (a dense one)."""

    num_experts: int
    top_k: int
    moe_layers: tuple[int, ...]
    expert_format: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "moe_layers": list(self.moe_layers),
            "expert_format": self.expert_format,
        }


@dataclass(frozen=True)
class FileInfo:
    """One safetensors file: its size on disk and the tensors it holds."""

    file: str
    bytes: int
    tensors: int
    tensor_bytes: int
    readable: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "file": self.file,
            "bytes": self.bytes,
            "tensors": self.tensors,
            "tensor_bytes": self.tensor_bytes,
            "readable": self.readable,
        }


@dataclass(frozen=True)
class ExpertStats:
    """Code shares and gamma of one routed-expert projection (``stats=True``)."""

    layer: int
    expert: int
    projection: str
    tensor: str
    minus: int  # codes -1
    zero: int  # codes 0
    plus: int  # codes +1
    invalid: int  # 0b11 fields (packed) - never written by a sound converter
    padding_nonzero: int  # padding fields that are not 0b00 (packed)
    gamma: float | None

    @property
    def codes(self) -> int:
        """All code fields of the real rows."""
        return self.minus + self.zero + self.plus + self.invalid

    def share(self, count: int) -> float:
        """A count as a share of all codes."""
        return count / self.codes if self.codes else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "layer": self.layer,
            "expert": self.expert,
            "projection": self.projection,
            "tensor": self.tensor,
            "counts": {"-1": self.minus, "0": self.zero, "+1": self.plus, "invalid": self.invalid},
            "shares": {
                "-1": round(self.share(self.minus), 6),
                "0": round(self.share(self.zero), 6),
                "+1": round(self.share(self.plus), 6),
            },
            "padding_nonzero": self.padding_nonzero,
            "gamma": self.gamma,
        }


@dataclass(frozen=True)
class InspectionReport:
    """Everything ``inspect`` says about a checkpoint; :meth:`to_dict` is the documented JSON."""

    path: Path
    kind: str  # DENSE or MOTE
    model: ModelInfo
    mote: MoteInfo | None  # a MoTE checkpoint's, or for a dense one the planned
    files: tuple[FileInfo, ...]
    memory: MemoryTable  # of the tensors in the files
    planned: MemoryTable | None  # dense only: of the tensors upcycle would write
    comparison: Comparison | None
    problems: tuple[Problem, ...]
    stats: tuple[ExpertStats, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # dense only: the upcycle options used

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the keys are documented in docs/inspect-json.md."""
        return {
            "report_version": REPORT_VERSION,
            "path": str(self.path),
            "kind": self.kind,
            "ok": self.ok,
            "model": self.model.to_dict(),
            "mote": None if self.mote is None else self.mote.to_dict(),
            "upcycle_options": dict(self.options) if self.kind == DENSE else None,
            "files": [f.to_dict() for f in self.files],
            "memory": self.memory.to_dict(),
            "planned_memory": None if self.planned is None else self.planned.to_dict(),
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
            "stats": None if self.stats is None else [s.to_dict() for s in self.stats],
        }
