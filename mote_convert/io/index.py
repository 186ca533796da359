"""The tensor index of a checkpoint directory, from safetensors headers only (no tensor data read).

A checkpoint is ``model.safetensors``, or shards listed by ``model.safetensors.index.json``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping

from safetensors import SafetensorError, safe_open

from mote_convert.errors import CorruptCheckpointError, InputNotFoundError, InputReadError, MoteError, read_error
from mote_convert.io.dtypes import TensorSpec
from mote_convert.io.jsonfile import JsonFileError, load_json

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
MAX_INDEX_BYTES = 64 << 20  # a 1T-parameter model's index is a few MB


@dataclass(frozen=True)
class TensorInfo(TensorSpec):
    """One tensor of a checkpoint: its header entry and where its bytes are."""

    file: str  # file name inside the checkpoint directory
    offset: int = 0  # absolute byte offset of the data in the file (for byte-range copies)


@dataclass(frozen=True)
class CheckpointIndex:
    """Every tensor of a checkpoint directory, plus each file's header metadata."""

    root: Path
    tensors: Mapping[str, TensorInfo]
    files: tuple[str, ...]
    metadata: Mapping[str, Mapping[str, str]]  # file -> __metadata__
    sharded: bool
    # Only from load_index(..., problems=[...]): files that could not be read, and the tensors the
    # shard index places in them (their shapes are unknown).
    unreadable: Mapping[str, str] = field(default_factory=dict)  # tensor name -> file
    bad_files: tuple[str, ...] = ()

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> TensorInfo:
        return self.tensors[name]

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors.values())

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def total_bytes(self) -> int:
        """Bytes of tensor data across all files."""
        return sum(t.nbytes for t in self.tensors.values())

    def weight_files(self) -> tuple[Path, ...]:
        """Absolute paths of the safetensors files."""
        return tuple(self.root / f for f in self.files)


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Read one safetensors file's header: its tensors and ``__metadata__``.

    safetensors itself checks the header against the file size, so a truncated or corrupt file
    fails here, before any conversion starts.
    """
    try:
        # framework "numpy": only the header is read, and torch need not be imported for that
        with safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {}
            for name in handle.keys():
                view = handle.get_slice(name)
                tensors[name] = TensorInfo(name, view.get_dtype(), tuple(view.get_shape()), path.name)
        offsets = _data_offsets(path)
    except SafetensorError as exc:
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    except OSError as exc:
        raise read_error(path, exc) from None
    except (
        ValueError,
        KeyError,
        TypeError,
        RecursionError,
        OverflowError,
    ) as exc:  # pragma: no cover - safe_open checked it
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    for name, info in tensors.items():
        begin, end = offsets[name]
        if end - begin != info.nbytes:
            raise CorruptCheckpointError(f"{path}: {name} spans {end - begin} bytes, its shape needs {info.nbytes}")
        tensors[name] = replace(info, offset=begin)
    return tensors, metadata


def _data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Absolute [begin, end) byte range of each tensor's data.

    safe_open has already checked the header against the file (sizes, coverage, overlaps); it just
    does not expose the offsets, which byte-range copies of unchanged tensors need.
    """
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_len))
    start = 8 + header_len
    return {
        name: (start + entry["data_offsets"][0], start + entry["data_offsets"][1])
        for name, entry in header.items()
        if name != "__metadata__"
    }


def load_index(root: str | Path, problems: list[MoteError] | None = None) -> CheckpointIndex:
    """Index a checkpoint directory's safetensors weights from their headers.

    A file that cannot be read raises :class:`CorruptCheckpointError` (or :class:`InputReadError`
    where the system refuses the read), unless ``problems`` is given:
    then each such error is appended to it, the file is left out, and the index records the tensors
    the shard index places in it as ``unreadable`` (``inspect`` reports every damaged file at once).
    """
    root = Path(root)
    if not root.exists():
        raise InputNotFoundError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise InputNotFoundError(f"{root}: not a directory (give a Hugging Face checkpoint directory)")

    def report(exc: MoteError) -> None:
        if problems is None:
            raise exc
        problems.append(exc)

    index_path = root / INDEX_FILE
    if index_path.is_file():
        weight_map = _read_weight_map(index_path)
        files = tuple(sorted(set(weight_map.values())))
        sharded = True
    elif (root / SINGLE_FILE).is_file():
        weight_map = None
        files = (SINGLE_FILE,)
        sharded = False
    else:
        raise InputNotFoundError(f"{root}: no safetensors weights ({SINGLE_FILE} or {INDEX_FILE})")

    tensors: dict[str, TensorInfo] = {}
    metadata: dict[str, dict[str, str]] = {}
    bad_files: set[str] = set()
    for file_name in files:
        path = root / file_name
        try:
            if not path.is_file():
                raise CorruptCheckpointError(f"{index_path}: lists {file_name}, which is missing")
            file_tensors, metadata[file_name] = read_header(path)
        except (CorruptCheckpointError, InputReadError) as exc:
            report(exc)
            bad_files.add(file_name)
            continue
        for name, info in file_tensors.items():
            if name in tensors:
                report(CorruptCheckpointError(f"{root}: tensor {name} is stored in two files"))
                continue
            tensors[name] = info
    unreadable: dict[str, str] = {}
    if weight_map is not None:
        unreadable = {n: f for n, f in weight_map.items() if f in bad_files}
        readable_map = {n: f for n, f in weight_map.items() if f not in bad_files}
        try:
            _check_weight_map(index_path, readable_map, tensors)
        except CorruptCheckpointError as exc:
            report(exc)
    ordered = {name: tensors[name] for name in sorted(tensors)}
    readable = tuple(f for f in files if f not in bad_files)
    return CheckpointIndex(root, ordered, readable, metadata, sharded, unreadable, tuple(sorted(bad_files)))


def _read_weight_map(index_path: Path) -> dict[str, str]:
    try:
        weight_map = load_json(index_path, MAX_INDEX_BYTES).get("weight_map")
    except JsonFileError as exc:
        raise CorruptCheckpointError(f"{index_path}: not a valid safetensors index ({exc})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CorruptCheckpointError(f"{index_path}: weight_map must map tensor names to file names")
    for file_name in weight_map.values():
        if Path(file_name).name != file_name or file_name in ("", ".", ".."):
            raise CorruptCheckpointError(f"{index_path}: file {file_name[:80]!r} is not inside the checkpoint")
        if len(os.fsencode(file_name)) > 255:
            raise CorruptCheckpointError(
                f"{index_path}: file name {file_name[:40]!r}... is longer than a file name can be"
            )
    return weight_map


def _check_weight_map(index_path: Path, weight_map: dict[str, str], tensors: dict[str, TensorInfo]) -> None:
    for name, file_name in weight_map.items():
        info = tensors.get(name)
        if info is None:
            raise CorruptCheckpointError(f"{index_path}: lists {name} in {file_name}, which does not hold it")
        if info.file != file_name:
            raise CorruptCheckpointError(f"{index_path}: lists {name} in {file_name}, but it is in {info.file}")
    extra = sorted(set(tensors) - set(weight_map))
    if extra:
        raise CorruptCheckpointError(f"{index_path}: does not list tensor {extra[0]} ({tensors[extra[0]].file})")
