"""Streaming shard writer: files safetensors reads back, size caps, staging and rename."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mote_convert.errors import InternalError, OutputExistsError
from mote_convert.io.shards import ShardWriter, TensorSpec, plan_shards, write_index
from mote_convert.io.staging import StagedOutput


def _spec(name: str, t: torch.Tensor) -> TensorSpec:
    from mote_convert.io.dtypes import safetensors_dtype

    return TensorSpec(name, safetensors_dtype(t.dtype), tuple(t.shape))


def test_streamed_file_reads_back_with_safetensors(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 7, dtype=torch.bfloat16),
        "b": torch.randint(0, 255, (5, 3), dtype=torch.uint8),
        "c": torch.randn(1),
        "d": torch.randn(2, 3).t(),  # non-contiguous input
    }
    (shard,) = plan_shards([_spec(n, t) for n, t in tensors.items()], 10**9)
    writer = ShardWriter(tmp_path / shard.file, shard, {"format": "pt", "mote_format": "1"})
    for name, t in tensors.items():
        writer.write(name, t)
    writer.close()
    with safe_open(str(tmp_path / shard.file), "pt") as f:
        assert f.metadata() == {"format": "pt", "mote_format": "1"}
        for name, t in tensors.items():
            assert torch.equal(f.get_tensor(name), t)


def test_writer_refuses_out_of_plan_tensors(tmp_path: Path) -> None:
    (shard,) = plan_shards([TensorSpec("a", "F32", (2,)), TensorSpec("b", "F32", (2,))], 10**9)
    writer = ShardWriter(tmp_path / "x.safetensors", shard, {})
    with pytest.raises(InternalError, match="expected a, got b"):
        writer.write("b", torch.zeros(2))
    with pytest.raises(InternalError, match="header says"):
        writer.write("a", torch.zeros(3))
    writer.write("a", torch.zeros(2))
    with pytest.raises(InternalError, match="closed before b"):
        writer.close()


def test_plan_shards_caps_sizes() -> None:
    specs = [TensorSpec(f"t{i}", "F32", (25,)) for i in range(10)]  # 100 bytes each
    shards = plan_shards(specs, 250)
    assert [len(s.tensors) for s in shards] == [2, 2, 2, 2, 2]
    assert shards[0].file == "model-00001-of-00005.safetensors"
    assert all(s.nbytes <= 250 for s in shards)
    big = plan_shards([TensorSpec("big", "F32", (1000,)), TensorSpec("s", "F32", (1,))], 100)
    assert [s.tensors[0].name for s in big] == ["big", "s"]  # an oversized tensor gets its own shard
    assert plan_shards(specs, 10**9)[0].file == "model.safetensors"


def test_write_index(tmp_path: Path) -> None:
    import json

    shards = plan_shards([TensorSpec(f"t{i}", "F32", (25,)) for i in range(3)], 150)
    write_index(tmp_path, shards)
    data = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert data["metadata"]["total_size"] == 300
    assert data["weight_map"] == {"t0": shards[0].file, "t1": shards[1].file, "t2": shards[2].file}


def test_staged_output_renames_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with StagedOutput(final) as staging:
            (staging / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not final.exists() and list(tmp_path.iterdir()) == []
    with StagedOutput(final) as staging:
        (staging / "done.txt").write_text("x")
    assert (final / "done.txt").read_text() == "x"
    with pytest.raises(OutputExistsError, match="already exists"):
        StagedOutput(final)
    with StagedOutput(final, overwrite=True) as staging:
        (staging / "new.txt").write_text("y")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_may_not_overlap_input(tmp_path: Path) -> None:
    src = tmp_path / "model"
    src.mkdir()
    for bad in (src, src / "sub", tmp_path):
        with pytest.raises(OutputExistsError, match="overlaps the input"):
            StagedOutput(bad, overwrite=True, protect=(src,))
