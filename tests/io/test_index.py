"""Header-only index of single-file and sharded checkpoints, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mote_convert.errors import CorruptCheckpointError, InputNotFoundError
from mote_convert.io.index import load_index
from mote_convert.io.reader import TensorReader


def test_sharded_index_matches_the_weight_map(tiny_llava: Path) -> None:
    index = load_index(tiny_llava)
    weight_map = json.loads((tiny_llava / "model.safetensors.index.json").read_text())["weight_map"]
    assert index.sharded and len(index.files) >= 2
    assert {t.name: t.file for t in index} == weight_map
    assert list(index.tensors) == sorted(weight_map)


def test_single_file_and_reads(tmp_path: Path) -> None:
    tensors = {"a": torch.randn(3, 5, dtype=torch.bfloat16), "b": torch.arange(4, dtype=torch.int64)}
    save_file(tensors, tmp_path / "model.safetensors")
    index = load_index(tmp_path)
    assert not index.sharded and index.files == ("model.safetensors",)
    assert index["a"].dtype == "BF16" and index["a"].shape == (3, 5) and index["a"].nbytes == 30
    assert index.total_bytes == 30 + 32
    with TensorReader(index) as reader:
        for name, t in tensors.items():
            assert torch.equal(reader.read(name), t)
        with pytest.raises(CorruptCheckpointError, match="no tensor nope"):
            reader.read("nope")


def test_missing_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="no such file"):
        load_index(tmp_path / "missing")
    with pytest.raises(InputNotFoundError, match="no safetensors weights"):
        load_index(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputNotFoundError, match="not a directory"):
        load_index(tmp_path / "f")


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    save_file({"a": torch.randn(64, 64)}, tmp_path / "model.safetensors")
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(CorruptCheckpointError, match="model.safetensors"):
        load_index(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CorruptCheckpointError, match="not a readable safetensors"):
        load_index(tmp_path)


def test_index_json_that_disagrees_with_the_files(tmp_path: Path) -> None:
    save_file({"a": torch.zeros(2)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.zeros(2), "c": torch.zeros(1)}, tmp_path / "model-00002-of-00002.safetensors")
    idx = tmp_path / "model.safetensors.index.json"
    idx.write_text(
        json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(CorruptCheckpointError, match="does not list tensor c"):
        load_index(tmp_path)
    idx.write_text(
        json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(CorruptCheckpointError, match="lists a in"):
        load_index(tmp_path)
    idx.write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match="missing"):
        load_index(tmp_path)
    idx.write_text("{not json")
    with pytest.raises(CorruptCheckpointError, match="not a valid safetensors index"):
        load_index(tmp_path)
