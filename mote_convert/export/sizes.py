"""GGUF file sizes of a language model, from tensor shapes alone (no weights read, no model built).

Four settings, for the deploy table of docs/deploy.md and ``mote-convert inspect --gguf``:

* dense bf16: every 2-D weight bf16, vectors float32;
* dense Q4_0: as llama.cpp's own quantizer makes it: the output matrix (lm_head, or the embedding
  when they are tied) Q6_K (Q8_0 where its rows are not whole 256-weight blocks), every other 2-D
  weight Q4_0;
* MoTE TQ2_0 + bf16 shared: routed experts TQ2_0, shared experts and the rest bf16, routers float32;
* MoTE TQ1_0 + Q4_0 shared: routed experts TQ1_0, shared experts Q4_0 (the paper's smallest setting:
  the shared expert post-training-quantized to 4 bits), the rest bf16.

Ternary experts whose rows are not whole 256-weight blocks count as Q4_0, as the export writes them.
The sizes are tensor data (the header adds a few hundred KB of tokenizer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from mote_convert.errors import UnsupportedArchitectureError
from mote_convert.export.tensors import TERNARY_FALLBACK, TYPES, TensorType

if TYPE_CHECKING:
    from mote_convert.arch.registry import Architecture
    from mote_convert.io.index import CheckpointIndex
    from mote_convert.report import InspectionReport

SETTINGS = ("dense bf16", "dense Q4_0", "MoTE TQ2_0 + bf16 shared", "MoTE TQ1_0 + Q4_0 shared")


@dataclass(frozen=True)
class LmShapes:
    """The language model's tensors by role: ``output`` (lm_head, or the embedding when tied),
    ``other`` (the rest of embeddings, attention, norms), ``ffn`` (every decoder FFN weight),
    ``moe_ffn`` (those of MoE layers) and the MoE layout."""

    output: tuple[int, ...]
    other: tuple[tuple[int, ...], ...]
    ffn: tuple[tuple[int, ...], ...]
    moe_ffn: tuple[tuple[int, ...], ...]
    num_experts: int
    hidden: int
    moe_layers: int


def _weight(shape: tuple[int, ...], ttype: TensorType) -> int:
    if len(shape) == 1:
        return TYPES["f32"].nbytes(shape)
    return (ttype if ttype.fits(shape) else TYPES["bf16"]).nbytes(shape)


def _experts(shapes: Iterable[tuple[int, ...]], ttype: TensorType, n: int) -> int:
    return sum(n * (ttype if ttype.fits(s) else TYPES[TERNARY_FALLBACK]).nbytes(s) for s in shapes)


def gguf_sizes(lm: LmShapes) -> dict[str, int]:
    """Bytes of tensor data of each of :data:`SETTINGS`."""
    bf16, q4, tq2, tq1 = TYPES["bf16"], TYPES["q4_0"], TYPES["tq2_0"], TYPES["tq1_0"]
    q6k = TYPES["q6_k"] if TYPES["q6_k"].fits(lm.output) else TYPES["q8_0"]
    other = sum(_weight(s, bf16) for s in lm.other) + _weight(lm.output, bf16)
    dense_ffn = list(lm.ffn)
    dense_only = list(dense_ffn)
    for s in lm.moe_ffn:
        dense_only.remove(s)
    routers = lm.moe_layers * lm.num_experts * lm.hidden * 4
    return {
        SETTINGS[0]: other + sum(_weight(s, bf16) for s in dense_ffn),
        SETTINGS[1]: _weight(lm.output, q6k)
        + sum(_weight(s, q4) for s in lm.other)
        + sum(_weight(s, q4) for s in dense_ffn),
        SETTINGS[2]: other
        + sum(_weight(s, bf16) for s in dense_ffn)
        + routers
        + _experts(lm.moe_ffn, tq2, lm.num_experts),
        SETTINGS[3]: other
        + sum(_weight(s, bf16) for s in dense_only)
        + sum(_weight(s, q4) for s in lm.moe_ffn)
        + routers
        + _experts(lm.moe_ffn, tq1, lm.num_experts),
    }


def lm_shapes(
    index: CheckpointIndex,
    arch: Architecture,
    moe_layers: Iterable[int],
    num_experts: int,
    num_layers: int,
    hidden: int,
) -> LmShapes:
    """The language model's tensor shapes by role, from a (dense or MoTE) checkpoint's headers."""
    import re

    from mote_convert.export.gguf_text import lm_head_name
    from mote_convert.format import EXPERT_NAME

    moe = set(moe_layers)
    vision = arch.non_text_prefixes
    ffn_names: dict[str, int] = {}
    for layer in range(num_layers):
        for prefix in arch.prefixes_for(layer):
            for proj in arch.ffn_kind.projections:
                name = f"{prefix}.{proj}.weight"
                if name in index.tensors:
                    ffn_names[name] = layer
    router = re.compile(r".*\.router\.weight$")
    output = lm_head_name(index, arch) or next(
        n for n in index.tensors if n.endswith("embed_tokens.weight") and not n.startswith(vision)
    )
    other, ffn, moe_ffn = [], [], []
    for name, info in index.tensors.items():
        if name.startswith(vision) or EXPERT_NAME.match(name) or router.match(name) or name == output:
            continue
        if name in ffn_names:
            ffn.append(info.shape)
            if ffn_names[name] in moe:
                moe_ffn.append(info.shape)
        else:
            other.append(info.shape)
    return LmShapes(
        index.tensors[output].shape, tuple(other), tuple(ffn), tuple(moe_ffn), num_experts, hidden, len(moe)
    )


def checkpoint_gguf_sizes(report: InspectionReport, path: str | Path) -> dict[str, int]:
    """:func:`gguf_sizes` of an inspected checkpoint (a dense one: with the MoE layout it was
    inspected with, as upcycle would make it)."""
    from mote_convert.arch import architecture_of
    from mote_convert.checkpoint import read_config
    from mote_convert.io.index import load_index

    root = Path(path)
    model, mote = report.model, report.mote
    if model.num_layers is None or model.hidden_size is None:  # inspect reported them as malformed
        raise UnsupportedArchitectureError(f"{root}: config.json's layer count or hidden size is not an integer")
    arch = architecture_of(read_config(root))
    shapes = lm_shapes(
        load_index(root),
        arch,
        mote.moe_layers if mote else (),
        mote.num_experts if mote else 0,
        model.num_layers,
        model.hidden_size,
    )
    return gguf_sizes(shapes)
