"""Lazy tensor reads: one tensor at a time, at most one shard open at a time."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from mote_convert.errors import CorruptCheckpointError
from mote_convert.io.index import CheckpointIndex


class TensorReader:
    """Read tensors of a :class:`CheckpointIndex` by name.

    safetensors maps the file and returns tensors backed by that mapping, so a read costs only the
    pages the caller touches, and dropping the tensor gives the memory back. Only the shard of the
    latest read stays open; use as a context manager to close it.
    """

    def __init__(self, index: CheckpointIndex) -> None:
        self.index = index
        self._file: str | None = None
        self._handle: Any = None

    def read(self, name: str) -> torch.Tensor:
        """Return tensor ``name`` (a view of the mapped file: do not write into it)."""
        info = self.index.tensors.get(name)
        if info is None:
            raise CorruptCheckpointError(f"{self.index.root}: no tensor {name}")
        handle = self._open(info.file)
        try:
            tensor = handle.get_tensor(name)
        except SafetensorError as exc:
            raise CorruptCheckpointError(f"{self.index.root / info.file}: cannot read {name} ({exc})") from None
        if tuple(tensor.shape) != info.shape:
            raise CorruptCheckpointError(f"{self.index.root / info.file}: {name} changed shape while reading")
        return tensor

    def _open(self, file_name: str) -> Any:
        if self._file != file_name:
            self.close()
            path = self.index.root / file_name
            try:
                self._handle = safe_open(str(path), framework="pt").__enter__()
            except (SafetensorError, OSError) as exc:
                raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
            self._file = file_name
        return self._handle

    def close(self) -> None:
        """Close the open shard, if any."""
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
        self._handle = None
        self._file = None

    def __enter__(self) -> "TensorReader":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
