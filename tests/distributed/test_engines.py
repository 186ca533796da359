"""Data parallelism on the engines people train with, 2 CPU processes (torchrun, gloo).

Routing is left to diverge across ranks (each rank has its own short batches, so some expert gets
no token on some rank, checked below): after 3 SGD steps every trainable parameter must equal a
single-process run on the union of the batches, agree across ranks, and only routers and experts
may have changed. FSDP2 is applied with ``fully_shard`` itself: accelerate (and so the Trainer)
silently uses DDP when asked for FSDP on the CPU, so its FSDP2 preparation (``fsdp2_prepare_model``,
what the Trainer's ``fsdp`` option runs on GPUs) is also called directly ("accelerate-fsdp2").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mote_convert
from mote_convert.tiny import build_tiny_llava

pytestmark = pytest.mark.distributed
WORKER = Path(__file__).with_name("worker.py")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1"}


def _run(engine: str, model: Path, out: Path, *extra: str) -> list[dict]:
    out.mkdir()
    if engine == "single":
        cmd = [sys.executable, str(WORKER), engine, str(model), str(out)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(WORKER),
            engine,
            str(model),
            str(out),
            *extra,
        ]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(f, weights_only=False) for f in sorted(out.glob("rank*.pt"))]


@pytest.fixture(scope="module")
def moe_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("distributed")
    mote_convert.upcycle(build_tiny_llava(root / "dense"), root / "mote")
    return root / "mote"


@pytest.fixture(scope="module")
def single(moe_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    (result,) = _run("single", moe_model, tmp_path_factory.mktemp("single") / "out")
    return result


@pytest.mark.parametrize("engine", ["ddp", "fsdp2", "accelerate-fsdp2", "zero2", "zero3"])
def test_sharded_training_equals_one_process(engine: str, moe_model: Path, single: dict, tmp_path: Path) -> None:
    if engine.startswith("zero"):
        pytest.importorskip("deepspeed")
    ranks = _run(engine, moe_model, tmp_path / "out")
    assert len(ranks) == 2
    # the case that used to go wrong: an expert with no token on one rank, in the same step and layer
    assert any(0 in counts for counts in ranks[0]["routing"] + ranks[1]["routing"])
    starved = [
        i
        for i, (a, b) in enumerate(zip(ranks[0]["routing"], ranks[1]["routing"], strict=True))
        if [x == 0 for x in a] != [x == 0 for x in b]
    ]
    assert starved, "routing did not diverge across ranks"
    names = set(single["params"])
    assert names and all(".router." in n or ".experts." in n for n in names)
    for rank in ranks:
        assert set(rank["params"]) == names
        assert rank["frozen_unchanged"] and single["frozen_unchanged"]
        for name, value in single["params"].items():
            torch.testing.assert_close(rank["params"][name], value, rtol=1e-5, atol=1e-5, msg=f"{engine}: {name}")
    for name in names:
        assert torch.equal(ranks[0]["params"][name], ranks[1]["params"][name]), name
    # training moved every router far beyond the tolerance (3 SGD steps of lr 1), so a gradient off by
    # a constant factor (a sum across ranks for a mean) cannot pass
    initial = mote_convert.load_model(moe_model, mode="train", dtype=torch.float32)
    before = dict(initial.named_parameters())
    moved = [float((before[n].detach() - single["params"][n]).abs().max()) for n in names if ".router." in n]
    assert moved and min(moved) > 1e-3, moved


@pytest.mark.parametrize("engine", ["fsdp2", "accelerate-fsdp2"])
def test_fsdp2_bf16_mixed_precision_keeps_routers_float32(engine: str, moe_model: Path, tmp_path: Path) -> None:
    """A bf16 MixedPrecisionPolicy for the model (ours, and accelerate's own FSDP2 preparation after
    shard_routers); each router's weight and logits stay float32 in every forward."""
    ranks = _run(engine, moe_model, tmp_path / "out", "--bf16")
    for rank in ranks:
        assert rank["router_dtypes"] and set(rank["router_dtypes"]) == {"torch.float32/torch.float32"}
