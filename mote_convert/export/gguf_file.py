"""A planned GGUF file and its streaming write, with the ``gguf`` package's ``GGUFWriter``.

A :class:`GgufPlan` holds every key-value pair and every tensor's name, GGML type, shape and byte
count, decided from safetensors headers before anything is read; :func:`write_gguf` then writes the
header, and each tensor's bytes one at a time (produced from the source as they are written), into a
file beside the output that is renamed into place when complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mote_convert.errors import InternalError, PlanError
from mote_convert.export.tensors import Encoded, TensorType
from mote_convert.io.reader import TensorReader
from mote_convert.io.shards import ProgressFn
from mote_convert.io.staging import StagedOutput, check_interrupted

Producer = Callable[[TensorReader], Encoded]


@dataclass(frozen=True)
class GgufTensor:
    """One output tensor: its GGUF name, logical shape (row-major, as numpy), type, and producer."""

    name: str
    shape: tuple[int, ...]
    type: TensorType
    produce: Producer
    sources: tuple[str, ...]  # the checkpoint tensors it is made of (every one must be used)

    @property
    def nbytes(self) -> int:
        return self.type.nbytes(self.shape)


@dataclass
class GgufPlan:
    """Everything one GGUF file will hold."""

    arch: str
    kv: list[Callable[[Any], None]] = field(default_factory=list)  # each adds its keys to a GGUFWriter
    tensors: list[GgufTensor] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the user should know (fallbacks, ...)

    def add(self, method: str, *args: Any) -> None:
        """A key-value pair: ``GGUFWriter.<method>(*args)`` at write time."""
        self.kv.append(lambda writer: getattr(writer, method)(*args))

    def tensor(self, tensor: GgufTensor) -> None:
        self.tensors.append(tensor)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def validate(plan: GgufPlan) -> None:
    """Names unique, every quantized row whole blocks."""
    seen: set[str] = set()
    for t in plan.tensors:
        if t.name in seen:
            raise PlanError(f"GGUF plan writes {t.name} twice")
        seen.add(t.name)
        if not t.type.fits(t.shape):
            raise PlanError(
                f"{t.name}: {t.type.name} needs rows that are a multiple of {t.type.block}, not {t.shape[-1]}"
            )


def write_gguf(
    plan: GgufPlan,
    reader: TensorReader,
    out: Path,
    *,
    overwrite: bool,
    protect: Sequence[Path] = (),
    progress: ProgressFn | None = None,
    convert: Callable[[Path, Path], None] | None = None,
) -> int:
    """Write ``plan`` to ``out`` (staged beside it, renamed when complete); returns bytes of tensor data.
    With ``convert``, the planned file is written beside the staging file and ``convert(written,
    staging)`` makes the output from it (llama.cpp's quantizer); the planned file is removed after."""
    validate(plan)
    with StagedOutput(out, overwrite=overwrite, protect=protect, mode=0o666, directory=False) as staging:
        if convert is None:
            return _write(plan, reader, Path(staging), progress)
        planned = Path(staging).with_name(Path(staging).name + ".planned")
        try:
            written = _write(plan, reader, planned, progress)
            check_interrupted()
            convert(planned, Path(staging))
        finally:
            planned.unlink(missing_ok=True)
        return written


def _write(plan: GgufPlan, reader: TensorReader, path: Path, progress: ProgressFn | None) -> int:
    import gguf

    written = 0
    writer = gguf.GGUFWriter(path=None, arch=plan.arch)
    try:
        for add_keys in plan.kv:
            add_keys(writer)
        for t in plan.tensors:
            raw = None if t.type.name in ("f32", "f16") else t.type.ggml
            dtype = {"f32": np.float32, "f16": np.float16}.get(t.type.name, np.uint8)
            byte_shape = t.shape if raw is None else gguf.quant_shape_to_byte_shape(t.shape, t.type.ggml)
            writer.add_tensor_info(t.name, byte_shape, np.dtype(dtype), t.nbytes, raw_dtype=raw)
        writer.open_output_file(path)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in plan.tensors:
            check_interrupted()
            encoded = t.produce(reader)
            if encoded.nbytes != t.nbytes or encoded.type != t.type:
                raise InternalError(
                    f"{t.name} came out as {encoded.type.name} of {encoded.nbytes} bytes, "
                    f"planned {t.type.name} of {t.nbytes}"
                )
            writer.write_tensor_data(encoded.data)
            written += t.nbytes
            if progress is not None:
                progress(t.nbytes)
    finally:
        writer.close()
    return written
