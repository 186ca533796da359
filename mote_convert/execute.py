"""The single streaming loop that turns a validated plan into safetensors shards.

Each output tensor is produced by the transform registered for its plan op and written straight
into its shard. Expert weights are encoded one weight ahead in a worker thread while the writer
copies unchanged tensors; held at once are the tensor being written, the weight being encoded (one
reused read buffer) and the encodings that experts still need (a layer's small packed codes).
"""

from __future__ import annotations

import queue
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from mote_convert.errors import CheckFailedError, InternalError, PlanError
from mote_convert.format import SAFETENSORS_METADATA, ExpertCodec, ExpertFormat, get_codec
from mote_convert.io.reader import TensorReader
from mote_convert.io.shards import ProgressFn, ShardWriter, TensorSpec, write_shards
from mote_convert.kernels import one_thread
from mote_convert.plan import COPY, ENCODE, ROUTER, UPCAST, ConversionPlan, PlanEntry

EncodeKey = tuple[str, ExpertFormat]  # (source weight, expert format)


class EncodeAhead:
    """Encodes the plan's expert weights in a worker thread, one weight ahead of the writer.

    The writer's time goes mostly to in-kernel copies of unchanged tensors, which hold neither the
    GIL nor much of a core; quantizing the next weight meanwhile (the C++ kernel releases the GIL
    too) makes a conversion cost about the larger of the two, not their sum. Each weight is read
    by plain reads into one reused buffer (:meth:`TensorReader.read_into`). Results come in
    ``keys`` order; an error of the worker is raised in the taker's thread.
    """

    def __init__(self, plan: ConversionPlan, reader: TensorReader, keys: Sequence[EncodeKey], depth: int = 3) -> None:
        self._keys = list(keys)
        self._next = 0
        self._queue: queue.Queue[tuple[EncodeKey, dict[str, torch.Tensor]] | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(plan, reader), name="mote-encode-ahead", daemon=True)
        if self._keys:  # nothing to encode: no thread
            self._thread.start()

    def _run(self, plan: ConversionPlan, reader: TensorReader) -> None:
        try:
            infos = [plan.source[source] for source, _ in self._keys]
            buffer = torch.empty(max(i.nbytes for i in infos), dtype=torch.uint8)
            # the reference path's float32 scratch (untouched, so never resident, where a kernel packs)
            workspace = torch.empty(max(i.numel for i in infos), dtype=torch.float32)
            for source, fmt in self._keys:
                if self._stop.is_set():
                    return
                weight = reader.read_into(source, buffer)
                codec = get_codec(fmt)
                with one_thread():  # the writer's copies need the other core
                    parts = codec.encode(weight, workspace=workspace)
                _check_finite(source, codec, parts)
                # the buffer is read into again next: nothing handed out may be a view of it
                storage = buffer.untyped_storage().data_ptr()
                parts = {k: v.clone() if v.untyped_storage().data_ptr() == storage else v for k, v in parts.items()}
                self._put(((source, fmt), parts))
        except BaseException as exc:  # noqa: BLE001 - handed to the taker's thread
            self._put(exc)

    def _put(self, item: tuple[EncodeKey, dict[str, torch.Tensor]] | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def take(self, key: EncodeKey) -> dict[str, torch.Tensor]:
        """The encoding of ``key``, which must be the next of the keys given."""
        if self._next >= len(self._keys) or self._keys[self._next] != key:
            raise InternalError(f"{key[0]} was asked for out of the planned encoding order")
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._next = len(self._keys)
            raise item
        self._next += 1
        return item[1]

    def close(self) -> None:
        """Stop the worker (after its current weight) and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _check_finite(source: str, codec: ExpertCodec, parts: dict[str, torch.Tensor]) -> None:
    """Refuse a weight holding NaN or infinity, naming it: its absmean gamma (a float64 sum of |W|,
    which no finite weight overflows) is then not finite, so the check costs nothing."""
    if codec.scale is not None and not bool(torch.isfinite(parts[codec.scale]).all()):
        raise CheckFailedError(
            f"{source}: holds NaN or infinite values (its scale gamma would be "
            f"{float(parts[codec.scale].reshape(-1)[0])}); a sound weight is finite"
        )


class TransformContext:
    """What transforms share: the source reader and the encoded expert weights.

    ``order`` is the (source, format) of every ENCODE entry, in write order: the encodings are
    computed ahead by :class:`EncodeAhead`, and each is kept while entries still need it, since all
    experts of a layer share their source's encoding.
    """

    def __init__(self, plan: ConversionPlan, reader: TensorReader, order: Sequence[EncodeKey]) -> None:
        self.plan = plan
        self.reader = reader
        self._uses = Counter(order)
        self._encoded: dict[EncodeKey, dict[str, torch.Tensor]] = {}
        self._ahead = EncodeAhead(plan, reader, list(dict.fromkeys(order)))

    def encoded(self, source: str, fmt: ExpertFormat) -> dict[str, torch.Tensor]:
        """A source weight's tensors in expert format ``fmt``, computed once for all experts that share it."""
        key = (source, fmt)
        result = self._encoded.get(key)
        if result is None:
            result = self._encoded[key] = self._ahead.take(key)
        self._uses[key] -= 1
        if self._uses[key] <= 0:
            del self._encoded[key]  # no entry left needs it
        return result

    def close(self) -> None:
        """Stop the encoding worker."""
        self._ahead.close()


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


def execute(
    plan: ConversionPlan, out_dir: Path, progress: ProgressFn | None = None, mode: int = 0o666
) -> ExecutionResult:
    """Write every tensor of ``plan`` into size-capped shards under ``out_dir``, plus the index json
    (files created with permission bits ``mode``, narrowed by the umask)."""
    missing = sorted({e.op for e in plan.entries} - set(TRANSFORMS))
    if missing:
        raise PlanError(f"no transform registered for op {missing[0]!r}")
    entries = {e.out.name: e for e in plan.entries}
    order = [
        (e.source, e.codec)
        for shard in plan.shards
        for e in (entries[spec.name] for spec in shard.tensors)
        if e.op == ENCODE
    ]
    with TensorReader(plan.source) as reader:
        ctx = TransformContext(plan, reader, order)  # type: ignore[arg-type]

        def write_one(writer: ShardWriter, spec: TensorSpec) -> int:
            entry = entries[spec.name]
            return TRANSFORMS[entry.op](entry, ctx, writer)

        try:
            written = write_shards(out_dir, plan.shards, SAFETENSORS_METADATA, write_one, progress, mode)
        finally:
            ctx.close()
    return ExecutionResult(tuple(s.file for s in plan.shards), written)
