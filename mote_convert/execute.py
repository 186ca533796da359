"""The single streaming loop that turns a validated plan into safetensors shards.

Each output tensor is produced by the transform registered for its plan op and written straight
into its shard; only a tensor's worth of data (plus the small packed codes of the current layer,
reused by every expert) is held at once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from mote_convert.errors import PlanError
from mote_convert.format import SAFETENSORS_METADATA, ExpertFormat, get_codec
from mote_convert.io.reader import TensorReader
from mote_convert.io.writer import ProgressFn, ShardWriter, TensorSpec, write_shards
from mote_convert.plan import COPY, ENCODE, ROUTER, UPCAST, ConversionPlan, PlanEntry


class TransformContext:
    """What transforms share: the source reader and the latest layer's encoded weights."""

    def __init__(self, plan: ConversionPlan, reader: TensorReader, cache_size: int = 8) -> None:
        self.plan = plan
        self.reader = reader
        self._encoded: OrderedDict[tuple[str, ExpertFormat], dict[str, torch.Tensor]] = OrderedDict()
        self._cache_size = cache_size
        # one float32 buffer the size of the largest encoded weight, reused by every encoding
        sizes = [plan.source[e.source].numel for e in plan.entries if e.op == ENCODE and e.source]
        self._workspace = torch.empty(max(sizes, default=0), dtype=torch.float32)

    def encoded(self, source: str, fmt: ExpertFormat) -> dict[str, torch.Tensor]:
        """A source weight's tensors in expert format ``fmt``, computed once for all experts that share it."""
        key = (source, fmt)
        hit = self._encoded.get(key)
        if hit is not None:
            self._encoded.move_to_end(key)
            return hit
        result = get_codec(fmt).encode(self.reader.read(source), workspace=self._workspace)
        self._encoded[key] = result
        if len(self._encoded) > self._cache_size:
            self._encoded.popitem(last=False)
        return result


# A transform writes one plan entry's output tensor into the shard writer; returns the bytes written.
Transform = Callable[[PlanEntry, TransformContext, ShardWriter], int]
TRANSFORMS: dict[str, Transform] = {}


def transform(op: str) -> Callable[[Transform], Transform]:
    """Decorator: register the function that writes the output tensor of plan op ``op``."""

    def register(fn: Transform) -> Transform:
        TRANSFORMS[op] = fn
        return fn

    return register


@transform(COPY)
def _copy(entry: PlanEntry, ctx: TransformContext, writer: ShardWriter) -> int:
    # byte-range copy in the kernel: unchanged tensors never pass through this process's memory
    return writer.copy(entry.out.name, ctx.reader, entry.source)  # type: ignore[arg-type]


@transform(ENCODE)
def _encode(entry: PlanEntry, ctx: TransformContext, writer: ShardWriter) -> int:
    return writer.write(entry.out.name, ctx.encoded(entry.source, entry.codec)[entry.part])  # type: ignore[arg-type,index]


@transform(ROUTER)
def _router(entry: PlanEntry, ctx: TransformContext, writer: ShardWriter) -> int:
    generator = torch.Generator(device="cpu").manual_seed(entry.seed)  # type: ignore[arg-type]
    weight = torch.empty(entry.out.shape, dtype=torch.float32)
    return writer.write(entry.out.name, weight.normal_(mean=0.0, std=ctx.plan.router_std, generator=generator))


@transform(UPCAST)
def _upcast(entry: PlanEntry, ctx: TransformContext, writer: ShardWriter) -> int:
    return writer.write(entry.out.name, ctx.reader.read(entry.source).to(torch.float32))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ExecutionResult:
    """The files one execution wrote."""

    files: tuple[str, ...]
    bytes_written: int


def execute(plan: ConversionPlan, out_dir: Path, progress: ProgressFn | None = None, mode: int = 0o666) -> ExecutionResult:
    """Write every tensor of ``plan`` into size-capped shards under ``out_dir``, plus the index json
    (files created with permission bits ``mode``, narrowed by the umask)."""
    missing = sorted({e.op for e in plan.entries} - set(TRANSFORMS))
    if missing:
        raise PlanError(f"no transform registered for op {missing[0]!r}")
    entries = {e.out.name: e for e in plan.entries}
    with TensorReader(plan.source) as reader:
        ctx = TransformContext(plan, reader)

        def write_one(writer: ShardWriter, spec: TensorSpec) -> int:
            entry = entries[spec.name]
            return TRANSFORMS[entry.op](entry, ctx, writer)

        written = write_shards(out_dir, plan.shards, SAFETENSORS_METADATA, write_one, progress, mode)
    return ExecutionResult(tuple(s.file for s in plan.shards), written)
