"""Routers stay float32 under bf16 mixed precision; the engines' dtype casts reach them only when released."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mote_convert
from mote_convert.modeling.distributed import release_float32
from mote_convert.modeling.load import mote_blocks


@pytest.fixture(scope="module")
def latent(tiny_llava: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("precision") / "mote"
    mote_convert.upcycle(tiny_llava, out, latent=True)
    return out


def _probe(model: torch.nn.Module) -> list[tuple[torch.dtype, torch.dtype]]:
    seen: list[tuple[torch.dtype, torch.dtype]] = []
    for block in mote_blocks(model):
        block.router.register_forward_hook(lambda m, a, out: seen.append((m.weight.dtype, out.dtype)))
    return seen


def test_autocast_bf16_keeps_router_weights_logits_and_grads_float32(latent: Path) -> None:
    """What the Trainer's bf16 does without DeepSpeed: torch.autocast around the forward."""
    model = mote_convert.load_model(latent, mode="train")
    seen = _probe(model)
    ids = torch.randint(0, 200, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert seen and set(seen) == {(torch.float32, torch.float32)}
    for block in mote_blocks(model):
        assert block.router.weight.grad is not None and block.router.weight.grad.dtype == torch.float32
    # the expert's integer products are not rounded by autocast: train mode equals the packed model
    packed = mote_convert.load_model(latent, mode="packed")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = mote_blocks(model)[0].experts[0](torch.randn(3, 64, generator=torch.Generator().manual_seed(0)))
        b = mote_blocks(packed)[0].experts[0](torch.randn(3, 64, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(a.float(), b.float(), rtol=1e-5, atol=1e-6)


def test_casts_leave_routers_float32_unless_released(latent: Path) -> None:
    model = mote_convert.load_model(latent, mode="train").to(torch.bfloat16)
    assert all(b.router.weight.dtype == torch.float32 for b in mote_blocks(model))
    release_float32(model)  # DeepSpeed bf16: the engine keeps float32 masters; logits stay float32
    model.to(torch.bfloat16)
    assert all(b.router.weight.dtype == torch.bfloat16 for b in mote_blocks(model))
    seen = _probe(model)
    model(input_ids=torch.randint(0, 200, (1, 6)))
    assert set(seen) == {(torch.bfloat16, torch.float32)}
