"""Lazy tensor reads: one tensor at a time, with its shard open only for that read."""

from __future__ import annotations

import errno
import os
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from safetensors import SafetensorError, safe_open

from mote_convert.errors import CorruptCheckpointError, read_error
from mote_convert.io.index import CheckpointIndex, TensorInfo

if TYPE_CHECKING:
    import torch


class TensorReader:
    """Read tensors of a :class:`CheckpointIndex` by name.

    Each read opens the tensor's shard, takes the tensor and closes the shard again. safetensors
    maps a whole shard per open handle, and every page a read touches stays resident for as long as
    the handle lives; a tensor it returns keeps a mapping of its own bytes only. Closing after each
    read therefore bounds resident memory by the tensors the caller holds, not by the shard size
    (measured in ``scripts/bench_upcycle.py``). Re-opening costs one header parse per read.
    """

    def __init__(self, index: CheckpointIndex) -> None:
        self.index = index

    def _info(self, name: str) -> TensorInfo:
        info = self.index.tensors.get(name)
        if info is None:
            raise CorruptCheckpointError(f"{self.index.root}: no tensor {name}")
        return info

    def read(self, name: str) -> torch.Tensor:
        """Return tensor ``name``, backed by a private mapping of its bytes (do not write into it)."""
        info = self._info(name)
        path = self.index.root / info.file
        try:
            with safe_open(str(path), framework="pt") as handle:
                tensor = handle.get_tensor(name)
        except SafetensorError as exc:
            raise CorruptCheckpointError(f"{path}: cannot read {name} ({exc})") from None
        except OSError as exc:
            raise read_error(path, exc, f"read {name} of the") from None
        if tuple(tensor.shape) != info.shape:
            raise CorruptCheckpointError(f"{path}: {name} changed shape since the index was read")
        return tensor

    def copy_to(self, name: str, out: BinaryIO) -> int:
        """Append tensor ``name``'s stored bytes to ``out`` unchanged; returns the byte count.

        Copies file to file in the kernel (``os.copy_file_range``) where the platform has it, so the
        bytes never pass through this process's memory; otherwise in bounded chunks. An error of the
        output side (disk full, ...) propagates as the ``OSError`` it is, for the writer to report.
        """
        info = self._info(name)
        path = self.index.root / info.file
        try:
            with open(path, "rb") as src:
                copied = _copy_range(src, out, info.offset, info.nbytes)
        except OSError as exc:
            if isinstance(exc, _OutputSideError) or exc.errno in OUTPUT_ERRNOS:
                raise
            raise read_error(path, exc, f"read {name} of the") from None
        if copied != info.nbytes:
            raise CorruptCheckpointError(f"{path}: {name} ends early (file truncated while reading?)")
        return copied

    def close(self) -> None:
        """Nothing stays open between reads; kept so the reader works as a context manager."""

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


_CHUNK = 64 * 2**20
# errnos that a copy between two files can only owe to the destination
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EPIPE})


class _OutputSideError(OSError):
    """An OSError of the destination in the chunked copy."""


def _copy_range(src: BinaryIO, dst: BinaryIO, offset: int, count: int) -> int:
    """Copy ``count`` bytes of ``src`` from ``offset`` to ``dst`` at its current position.

    ``dst`` must be unbuffered (a raw ``FileIO``): the kernel copy advances its file offset directly.
    """
    done = 0
    if hasattr(os, "copy_file_range"):
        try:
            while done < count:
                n = os.copy_file_range(src.fileno(), dst.fileno(), min(count - done, 1 << 30), offset + done)
                if n == 0:
                    break
                done += n
            return done
        except OSError:
            if done:
                raise
            # e.g. EXDEV on older kernels or EINVAL on some filesystems: plain reads below
    src.seek(offset)
    while done < count:
        chunk = src.read(min(_CHUNK, count - done))
        if not chunk:
            break
        try:
            write_all(dst, chunk)
        except OSError as exc:
            raise _OutputSideError(exc.errno, exc.strerror) from None
        done += len(chunk)
    return done


def write_all(dst: BinaryIO, data: bytes | memoryview) -> None:
    """Write all of ``data`` to an unbuffered file (whose writes may be partial)."""
    view = memoryview(data).cast("B")
    while len(view):
        n = dst.write(view)
        if n is None or n <= 0:
            raise OSError("write made no progress")
        view = view[n:]
