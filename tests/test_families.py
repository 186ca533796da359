"""Every supported family: upcycle, load_model (packed), MoE layers against a plain reference, stock
from_pretrained gives the dense logits, the vision tower and projector are never converted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

import mote_convert
from mote_convert.arch import architecture_of
from mote_convert.modeling.load import mote_blocks
from tests.families import FAMILIES
from tests.helpers import read_all, spec_gamma

N, K = 3, 2


def _bitlinear(v: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """SPEC section 1 written out plainly: absmean ternary weight, per-token INT8 activation."""
    gamma = spec_gamma(w)
    t = torch.clamp(torch.round(w / gamma), -1, 1)
    s = 127.0 / torch.clamp(v.abs().amax(dim=-1, keepdim=True), min=1e-5)
    v_q = torch.clamp(torch.round(v * s), -128, 127)
    y = (v_q @ t.t()) * gamma / s
    return y if b is None else y + b


def _linear(v: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return v @ w.t() if b is None else v @ w.t() + b


def _ffn(kind: str, act: Callable, lin: Callable, x: torch.Tensor, p: dict) -> torch.Tensor:
    """The three FFN kinds, written out from their definitions."""
    if kind == "gated":
        return lin(act(lin(x, *p["gate_proj"])) * lin(x, *p["up_proj"]), *p["down_proj"])
    if kind == "fused_gated":
        gate, up = lin(x, *p["gate_up_proj"]).chunk(2, dim=-1)
        return lin(act(gate) * up, *p["down_proj"])
    assert kind == "plain"
    return lin(act(lin(x, *p["fc1"])), *p["fc2"])


def reference_moe(x: torch.Tensor, kind: str, act: Callable, p: dict, router: torch.Tensor) -> torch.Tensor:
    """shared(x) + sum over the top-k experts of softmax(router x)[e] * ternary expert(x)."""
    out = _ffn(kind, act, _linear, x, p)
    top_p, _ = torch.softmax(x @ router.t(), dim=-1).topk(K, dim=-1)
    expert = _ffn(kind, act, _bitlinear, x, p)  # every expert starts as the same ternary FFN
    return out + top_p.sum(dim=-1, keepdim=True) * expert


def _activation(ffn: nn.Module) -> Callable:
    return getattr(ffn, "act_fn", None) or ffn.activation_fn


def _input_ids() -> torch.Tensor:
    return torch.randint(0, 90, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    name = request.param
    root = tmp_path_factory.mktemp(name)
    dense = FAMILIES[name].build(root / "dense")
    out = root / "mote"
    mote_convert.upcycle(dense, out, num_experts=N, top_k=K)
    return name, dense, out


def test_only_language_model_ffns_are_converted(family: tuple[str, Path, Path]) -> None:
    name, dense, out = family
    config = json.loads((out / "config.json").read_text())
    arch = architecture_of(config)
    src, dst = read_all(dense), read_all(out)
    assert set(src) <= set(dst) and all(torch.equal(src[k], dst[k]) for k in src)  # nothing dense changed
    prefixes = tuple(config["mote"]["layer_prefixes"].values())
    assert len(prefixes) == 2 and all(p.startswith(arch.ffn_prefixes[0].split("{layer}")[0]) for p in prefixes)
    added = set(dst) - set(src)
    assert added and all(
        k.startswith(tuple(f"{p}.router." for p in prefixes) + tuple(f"{p}.experts." for p in prefixes)) for k in added
    )
    vision_and_projector = arch.vision_prefixes + arch.projector_prefixes
    assert not any(k.startswith(vision_and_projector) for k in added)  # never a vision or projector MLP
    if vision_and_projector:
        assert any(
            k.startswith(vision_and_projector) and (".mlp." in k or ".feed_forward." in k or "linear" in k) for k in src
        )
    report = mote_convert.inspect_checkpoint(out)
    assert report.ok, report.problems
    assert report.memory["routed_experts"].tensors == len([k for k in added if ".experts." in k])
    assert report.memory["other"].tensors == 0  # every tensor lands in a named component


def test_packed_moe_layers_equal_the_reference(family: tuple[str, Path, Path]) -> None:
    name, dense, out = family
    model = mote_convert.load_model(out, mode="packed")
    config = model.config.mote
    blocks = mote_blocks(model)
    assert len(blocks) == 2
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [b.register_forward_hook(lambda m, a, o: captured.append((a[0].detach(), o.detach()))) for b in blocks]
    with torch.no_grad():
        logits = model(input_ids=_input_ids()).logits
    for h in hooks:
        h.remove()
    assert torch.isfinite(logits).all()
    src, dst = read_all(dense), read_all(out)
    kind = architecture_of(json.loads((out / "config.json").read_text())).ffn_kind.name
    for (x, y), (layer, prefix), block in zip(captured, sorted(config["layer_prefixes"].items()), blocks, strict=True):
        params = {
            proj: (src[f"{prefix}.{proj}.weight"], src.get(f"{prefix}.{proj}.bias")) for proj in config["projections"]
        }
        flat = x.reshape(-1, x.shape[-1])
        ref = reference_moe(flat, kind, _activation(block), params, dst[f"{prefix}.router.weight"])
        torch.testing.assert_close(y.reshape(-1, y.shape[-1]), ref, rtol=1e-5, atol=1e-5, msg=f"{name} layer {layer}")


def test_stock_from_pretrained_gives_dense_logits(family: tuple[str, Path, Path]) -> None:
    import transformers

    name, dense, out = family
    cls = getattr(transformers, FAMILIES[name].model_class)
    ids = _input_ids()
    with torch.no_grad():
        want = cls.from_pretrained(dense).eval()(input_ids=ids).logits
        got = cls.from_pretrained(out).eval()(input_ids=ids).logits
    assert torch.equal(got, want)
