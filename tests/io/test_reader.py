"""TensorReader's plain reads into a reused buffer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mote_convert.errors import CorruptCheckpointError, InternalError
from mote_convert.io.index import load_index
from mote_convert.io.reader import TensorReader


def test_read_into_equals_read_and_reuses_the_buffer(tiny_llava: Path) -> None:
    index = load_index(tiny_llava)
    buffer = torch.empty(max(t.nbytes for t in index), dtype=torch.uint8)
    with TensorReader(index) as reader:
        for info in index:
            got = reader.read_into(info.name, buffer)
            assert got.dtype == reader.read(info.name).dtype and torch.equal(got, reader.read(info.name)), info.name
            assert got.data_ptr() == buffer.data_ptr() or got.numel() == 0
        big = max(index, key=lambda t: t.nbytes)
        with pytest.raises(InternalError, match="cannot hold"):  # a caller's bug, not a user error
            reader.read_into(big.name, buffer[: big.nbytes - 1])


def test_read_into_a_file_cut_short(tiny_llava: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_llava, root)
    index = load_index(root)
    last = max(index, key=lambda t: (t.file, t.offset))
    path = root / last.file
    path.write_bytes(path.read_bytes()[:-3])  # after the index was read
    with TensorReader(index) as reader, pytest.raises(CorruptCheckpointError, match="ends early"):
        reader.read_into(last.name, torch.empty(last.nbytes, dtype=torch.uint8))
