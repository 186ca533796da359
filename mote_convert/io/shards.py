"""Size-capped safetensors shards written by streaming.

safetensors can only save tensors it holds in memory all at once. Since a conversion plan knows
every output tensor's name, dtype and shape before any data exists, each shard's header is written
from the plan first and the tensor bytes are streamed in after it, one tensor at a time: peak memory
is a few tensors, whatever the shard or model size. The files are ordinary safetensors files that
``safe_open`` and ``from_pretrained`` read.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

from mote_convert.errors import (
    InternalError,
    MoteError,
)
from mote_convert.io.dtypes import TensorSpec, safetensors_dtype
from mote_convert.io.index import INDEX_FILE, SINGLE_FILE
from mote_convert.io.reader import TensorReader, write_all
from mote_convert.io.staging import check_interrupted

if TYPE_CHECKING:
    import torch


class ProgressFn(Protocol):
    """Progress of long work: called with the bytes just done, and the total when it is known
    (the CLI's progress bars take both)."""

    def __call__(self, nbytes: int, total: int | None = None, /) -> None: ...


HEADER_ALIGNMENT = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes


@dataclass(frozen=True)
class Shard:
    """One output file and the tensors it holds, in write order."""

    file: str
    tensors: tuple[TensorSpec, ...]

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in this shard."""
        return sum(t.nbytes for t in self.tensors)


def plan_shards(tensors: Sequence[TensorSpec], max_shard_size: int) -> tuple[Shard, ...]:
    """Split tensors, in order, into shards of at most ``max_shard_size`` data bytes.

    As in transformers, a tensor larger than the cap gets a shard of its own. One shard is named
    ``model.safetensors``; several are ``model-0000i-of-0000N.safetensors``.
    """
    groups: list[list[TensorSpec]] = []
    size = 0
    for spec in tensors:
        if not groups or (size + spec.nbytes > max_shard_size and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(spec)
        size += spec.nbytes
    if not groups:
        groups = [[]]
    if len(groups) == 1:
        return (Shard(SINGLE_FILE, tuple(groups[0])),)
    n = len(groups)
    return tuple(Shard(f"model-{i + 1:05d}-of-{n:05d}.safetensors", tuple(g)) for i, g in enumerate(groups))


def encode_header(tensors: Iterable[TensorSpec], metadata: Mapping[str, str]) -> bytes:
    """The 8-byte length prefix plus the padded JSON header of a safetensors file."""
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for spec in tensors:
        header[spec.name] = {
            "dtype": spec.dtype,
            "shape": list(spec.shape),
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % HEADER_ALIGNMENT)
    return struct.pack("<Q", len(raw)) + raw


class ShardWriter:
    """Write one safetensors file whose header is known up front; tensors must come in order."""

    def __init__(self, path: Path, shard: Shard, metadata: Mapping[str, str], mode: int = 0o666) -> None:
        self.path = path
        self.shard = shard
        self._next = 0
        # Unbuffered: tensor data goes out in large writes anyway, and byte-range copies from a
        # source file advance this file's offset in the kernel, which a buffer would not see.
        # Created with ``mode`` (narrowed by the umask): never wider than the source's files.
        self._fh: BinaryIO = open(create_file(path, mode), "wb", buffering=0, closefd=True)
        write_all(self._fh, encode_header(shard.tensors, metadata))

    def _next_spec(self, name: str) -> TensorSpec:
        if self._next >= len(self.shard.tensors):
            raise InternalError(f"{self.path.name} got an extra tensor {name}")
        spec = self.shard.tensors[self._next]
        if spec.name != name:
            raise InternalError(f"{self.path.name} expected {spec.name}, got {name}")
        return spec

    def write(self, name: str, tensor: torch.Tensor) -> int:
        """Append tensor ``name``'s bytes; it must be the next one in the header, with its dtype and shape."""
        spec = self._next_spec(name)
        if safetensors_dtype(tensor.dtype) != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise InternalError(
                f"{name} is {safetensors_dtype(tensor.dtype)} {tuple(tensor.shape)}, "
                f"the header says {spec.dtype} {spec.shape}"
            )
        import torch  # here, not at module level: header-only users of this module never need it

        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        with self._named_errors():
            write_all(self._fh, memoryview(data.numpy()))
        self._next += 1
        return spec.nbytes

    @contextlib.contextmanager
    def _named_errors(self) -> Iterator[None]:
        """An OSError of this file's writes names the file (an in-kernel copy's would name none)."""
        try:
            yield
        except OSError as exc:
            if exc.filename is not None or isinstance(exc, MoteError):
                raise
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def copy(self, name: str, reader: TensorReader, source: str) -> int:
        """Append the stored bytes of ``reader``'s tensor ``source`` as tensor ``name``, unchanged."""
        spec = self._next_spec(name)
        info = reader.index[source]
        if (info.dtype, info.shape) != (spec.dtype, spec.shape):
            raise InternalError(f"{source} is {info.dtype} {info.shape}, the header says {spec.dtype} {spec.shape}")
        with self._named_errors():
            reader.copy_to(source, self._fh)
        self._next += 1
        return spec.nbytes

    def close(self) -> None:
        """Finish the file; every tensor of the header must have been written."""
        self._fh.close()
        if self._next != len(self.shard.tensors):
            missing = self.shard.tensors[self._next].name
            raise InternalError(f"{self.path.name} closed before {missing} was written")

    def abort(self) -> None:
        """Close without checks (the staging directory is about to be removed)."""
        self._fh.close()


def write_shards(
    directory: Path,
    shards: Sequence[Shard],
    metadata: Mapping[str, str],
    write_one: Callable[[ShardWriter, TensorSpec], int],
    progress: ProgressFn | None = None,
    mode: int = 0o666,
) -> int:
    """Write every shard, tensor by tensor through ``write_one``, then the index json; returns bytes
    written. Files are created with permission bits ``mode`` (narrowed by the umask)."""
    written = 0
    for shard in shards:
        writer = ShardWriter(directory / shard.file, shard, metadata, mode)
        try:
            for spec in shard.tensors:
                check_interrupted()
                n = write_one(writer, spec)
                written += n
                if progress is not None:
                    progress(n)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    write_index(directory, shards, mode)
    return written


def create_file(path: Path, mode: int) -> int:
    """Create a new file (never through an existing one or a symlink) and return its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), mode & 0o777)


def write_text(path: Path, text: str, mode: int = 0o666) -> None:
    """Write a new text file with permission bits ``mode`` (narrowed by the umask)."""
    with open(create_file(path, mode), "w", encoding="utf-8") as fh:
        fh.write(text)


def write_index(directory: Path, shards: Sequence[Shard], mode: int = 0o666) -> None:
    """Write ``model.safetensors.index.json`` for several shards (nothing for one file)."""
    if len(shards) < 2:
        return
    weight_map = {spec.name: shard.file for shard in shards for spec in shard.tensors}
    index = {
        "metadata": {"total_size": sum(s.nbytes for s in shards)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    write_text(directory / INDEX_FILE, json.dumps(index, indent=2) + "\n", mode)
