"""Lazy tensor reads: one tensor at a time, with its shard open only for that read."""

from __future__ import annotations

import errno
import os
import queue
import threading
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator

from safetensors import SafetensorError, safe_open

from mote_convert.errors import CorruptCheckpointError, InternalError, read_error
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

    def read_into(self, name: str, buffer: torch.Tensor) -> torch.Tensor:
        """Tensor ``name`` read by plain file reads into ``buffer`` (uint8, at least its byte size):
        a view of the buffer, valid until the buffer is reused.

        For a tensor that is read whole and at once (a weight to quantize), this is much cheaper than
        :meth:`read`: a mapping faults its pages in one by one on first touch, a read copies them from
        the page cache in one pass, into memory that is already faulted in when the buffer is reused
        (docs/kernels.md has the measured figures).
        """
        import torch

        from mote_convert.io.dtypes import torch_dtype

        info = self._info(name)
        path = self.index.root / info.file
        if buffer.dtype != torch.uint8 or not buffer.is_contiguous() or buffer.numel() < info.nbytes:
            raise InternalError(f"a read buffer of {buffer.numel()} bytes cannot hold {name} ({info.nbytes} bytes)")
        view = buffer[: info.nbytes]
        try:
            with open(path, "rb", buffering=0) as fh:
                got = _read_exactly(fh, memoryview(view.numpy()), info.offset)
        except OSError as exc:
            raise read_error(path, exc, f"read {name} of the") from None
        if got != info.nbytes:
            raise CorruptCheckpointError(f"{path}: {name} ends early (file truncated while reading?)")
        return view.view(torch_dtype(info.dtype)).reshape(info.shape)

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


def stream_tensors(index: CheckpointIndex, names: Iterable[str]) -> Iterator[tuple[TensorInfo, torch.Tensor]]:
    """Yield ``(info, tensor)`` for ``names``, in file order, read by plain file reads.

    A read-ahead thread fills one buffer while the caller works on the other, so a pass that reads
    and computes runs at the speed of the slower of the two, not their sum. Each yielded tensor
    (a view of a reused buffer, the tensor's dtype and shape) is valid until the next iteration:
    copy it to keep it. Read errors are raised in the caller's thread.
    """
    import torch

    from mote_convert.io.dtypes import torch_dtype

    infos = sorted((index[n] for n in names), key=lambda t: (t.file, t.offset))
    if not infos:
        return
    size = max(t.nbytes for t in infos)
    free: queue.Queue[bytearray] = queue.Queue()
    for _ in range(2):
        free.put(bytearray(size))
    ready: queue.Queue[tuple[TensorInfo, bytearray, int] | BaseException | None] = queue.Queue()
    stop = threading.Event()

    def reader() -> None:
        try:
            handle: BinaryIO | None = None
            current = None
            for info in infos:
                if info.file != current:
                    if handle is not None:
                        handle.close()
                    current = info.file
                    handle = open(index.root / info.file, "rb", buffering=0)  # noqa: SIM115 - closed below
                buf = free.get()
                if stop.is_set():
                    break
                got = _read_exactly(handle, memoryview(buf)[: info.nbytes], info.offset)  # type: ignore[arg-type]
                ready.put((info, buf, got))
            if handle is not None:
                handle.close()
            ready.put(None)
        except BaseException as exc:  # handed to the caller's thread
            ready.put(exc)

    thread = threading.Thread(target=reader, name="mote-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                if isinstance(item, OSError):
                    raise read_error(index.root, item) from None
                raise item
            info, buf, got = item
            path = index.root / info.file
            if got != info.nbytes:
                raise CorruptCheckpointError(f"{path}: {info.name} ends early (file truncated while reading?)")
            data = (
                torch.frombuffer(buf, dtype=torch.uint8, count=info.nbytes)
                if info.nbytes
                else torch.empty(0, dtype=torch.uint8)
            )
            yield info, data.view(torch_dtype(info.dtype)).reshape(info.shape)
            free.put(buf)
    finally:
        stop.set()
        free.put(bytearray(0))  # wake the reader if it waits for a buffer
        thread.join()


def _read_exactly(fh: BinaryIO, target: memoryview, offset: int) -> int:
    """Fill ``target`` from ``fh`` at ``offset`` (a short read is retried); returns the bytes read."""
    fh.seek(offset)
    done = 0
    while done < len(target):
        n = fh.readinto(target[done:])  # type: ignore[attr-defined]
        if not n:
            break
        done += n
    return done


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
