"""The executor: expert weights encoded ahead in a worker thread, with the serial path's results."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mote_convert import execute as ex
from mote_convert.errors import InternalError, MoteError
from mote_convert.format import get_codec
from mote_convert.io.reader import TensorReader
from mote_convert.options import UpcycleOptions
from mote_convert.plan import ENCODE
from mote_convert.upcycle import plan_upcycle


def _workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mote-encode-ahead"]


def test_encodings_ahead_equal_encoding_each_weight_when_asked(tiny_llava: Path, tmp_path: Path) -> None:
    plan = plan_upcycle(tiny_llava, UpcycleOptions(num_experts=3))
    ex.execute(plan, tmp_path)
    written: dict[str, torch.Tensor] = {}
    for shard in plan.shards:
        written.update(load_file(tmp_path / shard.file))
    with TensorReader(plan.source) as reader:
        for e in plan.entries:
            if e.op == ENCODE:
                expected = get_codec(e.codec).encode(reader.read(e.source))[e.part]  # type: ignore[arg-type,index]
                assert torch.equal(written[e.out.name], expected), e.out.name
    assert not _workers()


def test_a_worker_error_reaches_the_writer_and_the_worker_stops(
    tiny_llava: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = plan_upcycle(tiny_llava, UpcycleOptions(num_experts=2))
    codec = type(get_codec("packed-2bit"))
    calls = []

    def failing(self, weight, workspace=None):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise MoteError("the second weight cannot be encoded")
        return encode(self, weight, workspace)

    encode = codec.encode
    monkeypatch.setattr(codec, "encode", failing)
    with pytest.raises(MoteError, match="the second weight"):
        ex.execute(plan, tmp_path)
    assert not _workers()


def test_a_writer_that_stops_early_stops_the_worker(
    tiny_llava: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error of the writer (or a signal) ends the run at once: the worker, blocked one weight
    ahead, is stopped and joined, never left running or hanging."""
    plan = plan_upcycle(tiny_llava, UpcycleOptions(num_experts=2))
    first_encode = next(e.out.name for e in plan.entries if e.op == ENCODE)
    original = ex.TRANSFORMS[ENCODE]

    def stop_at_first(entry, ctx, writer):  # noqa: ANN001, ANN202
        if entry.out.name == first_encode:
            raise KeyboardInterrupt
        return original(entry, ctx, writer)

    monkeypatch.setitem(ex.TRANSFORMS, ENCODE, stop_at_first)
    with pytest.raises(KeyboardInterrupt):
        ex.execute(plan, tmp_path)
    assert not _workers()


def test_out_of_order_requests_are_refused(tiny_llava: Path) -> None:
    plan = plan_upcycle(tiny_llava, UpcycleOptions(num_experts=2))
    keys = list(dict.fromkeys((e.source, e.codec) for e in plan.entries if e.op == ENCODE))
    with TensorReader(plan.source) as reader:
        ahead = ex.EncodeAhead(plan, reader, keys)  # type: ignore[arg-type]
        try:
            with pytest.raises(InternalError, match="out of the planned encoding order"):
                ahead.take(keys[1])  # type: ignore[arg-type]
            assert set(ahead.take(keys[0])) == {"weight_packed", "weight_scale"}  # type: ignore[arg-type]
        finally:
            ahead.close()
    assert not _workers()
