"""Routing against the SPEC written out by hand, on experts that differ and routers that decide.

Upcycled experts are byte-identical, so a forward test on them cannot tell which expert a token went
to. Here every expert has its own weights (``tests.helpers.distinct_experts``) and the reference
decodes each expert's codes from the checkpoint's bytes with the SPEC's layout: a token sent to the
wrong expert, a dropped or unnormalised top-k weight, or a load-balancing loss off by a factor fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mote_convert
from mote_convert.modeling.load import mote_blocks
from tests.helpers import distinct_experts, read_all, spec_bitlinear, spec_unpack

PROJ = ("gate_proj", "up_proj", "down_proj")


def _variant(
    tiny_llava: Path, root: Path, name: str, *, num_experts: int = 4, top_k: int = 1, norm: bool = False
) -> dict[str, Path]:
    latent = mote_convert.upcycle(
        tiny_llava, root / f"{name}-upcycled", latent=True, num_experts=num_experts, top_k=top_k
    ).output
    distinct = distinct_experts(latent, root / f"{name}-latent")
    if norm:
        config = json.loads((distinct / "config.json").read_text())
        config["mote"]["norm_topk_prob"] = True
        (distinct / "config.json").write_text(json.dumps(config))
    packed = mote_convert.pack(distinct, root / f"{name}-packed").output
    return {"latent": distinct, "packed": packed}


@pytest.fixture(scope="module")
def variants(tiny_llava: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    root = tmp_path_factory.mktemp("routing")
    return {
        "top1": _variant(tiny_llava, root, "top1"),
        "top2": _variant(tiny_llava, root, "top2", num_experts=3, top_k=2),
        "top2-norm": _variant(tiny_llava, root, "top2-norm", num_experts=3, top_k=2, norm=True),
    }


def _inputs(config, batch: int = 2, seq: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.image_token_id - 1, (batch, seq), generator=g)
    ids[:, 1 : 1 + config.image_seq_length] = config.image_token_id
    return {"input_ids": ids, "pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}


def _block_io(model, inputs) -> list[tuple[torch.Tensor, torch.Tensor]]:  # noqa: ANN001
    captured = []
    hooks = [
        b.register_forward_hook(lambda m, a, o: captured.append((a[0].detach(), o.detach())))
        for b in mote_blocks(model)
    ]
    with torch.no_grad():
        model(**inputs)
    for h in hooks:
        h.remove()
    return captured


class Reference:
    """One MoE layer of a packed checkpoint, computed as SPEC section 1 states it."""

    def __init__(self, tensors: dict[str, torch.Tensor], mote: dict, layer: int) -> None:
        p = mote["layer_prefixes"][str(layer)]
        self.shared = {proj: tensors[f"{p}.{proj}.weight"].float() for proj in PROJ}
        self.router = tensors[f"{p}.router.weight"]
        self.k, self.norm = mote["top_k"], mote["norm_topk_prob"]
        self.experts = [
            {
                proj: (
                    spec_unpack(tensors[f"{p}.experts.{e}.{proj}.weight_packed"], self.shared[proj].shape[0]),
                    tensors[f"{p}.experts.{e}.{proj}.weight_scale"],
                )
                for proj in PROJ
            }
            for e in range(mote["num_experts"])
        ]

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        w = self.experts[e]
        return spec_bitlinear(
            F.silu(spec_bitlinear(x, *w["gate_proj"])) * spec_bitlinear(x, *w["up_proj"]), *w["down_proj"]
        )

    def choices(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = torch.softmax(x.float() @ self.router.t(), dim=-1)
        top_p, top_i = p.topk(self.k, dim=-1)
        if self.norm:
            top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        return p, top_p, top_i

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shared
        out = F.linear(F.silu(F.linear(x, s["gate_proj"])) * F.linear(x, s["up_proj"]), s["down_proj"])
        _, top_p, top_i = self.choices(x)
        for token in range(x.shape[0]):
            for slot in range(self.k):
                out[token] += top_p[token, slot] * self.expert(int(top_i[token, slot]), x[token : token + 1])[0]
        return out

    def aux(self, x: torch.Tensor) -> torch.Tensor:
        """N * sum_i f_i * P_i, with f_i counted token by token."""
        p, _, top_i = self.choices(x)
        n = len(self.experts)
        f = [sum(int(top_i[t, 0]) == i for t in range(x.shape[0])) / x.shape[0] for i in range(n)]
        return n * sum(f[i] * p[:, i].mean() for i in range(n))


def _references(packed: Path) -> list[Reference]:
    mote = json.loads((packed / "config.json").read_text())["mote"]
    tensors = read_all(packed)
    return [Reference(tensors, mote, layer) for layer in mote["moe_layers"]]


@pytest.mark.parametrize("variant", ["top1", "top2", "top2-norm"])
@pytest.mark.parametrize("mode", ["packed", "train"])
def test_each_token_goes_to_the_experts_its_router_picks(variants: dict, variant: str, mode: str) -> None:
    """Packed from the packed checkpoint, train mode from the latent one it was packed from: the same function."""
    paths = variants[variant]
    model = mote_convert.load_model(paths[mode if mode == "packed" else "latent"], mode=mode)
    references = _references(paths["packed"])
    captured = _block_io(model, _inputs(model.config))
    assert len(captured) == len(references) == 2
    for (x, y), ref in zip(captured, references, strict=True):
        flat = x.reshape(-1, x.shape[-1])
        chosen = ref.choices(flat)[2][:, 0]
        assert len(set(chosen.tolist())) >= 2  # the routers spread the tokens: expert order matters
        torch.testing.assert_close(y.reshape(-1, y.shape[-1]), ref(flat), rtol=1e-5, atol=1e-5)


def test_one_token_decoding_takes_the_same_experts(variants: dict) -> None:
    model = mote_convert.load_model(variants["top2-norm"]["packed"])
    references = _references(variants["top2-norm"]["packed"])
    captured = _block_io(model, _inputs(model.config))
    block = mote_blocks(model)[0]
    x = captured[0][0].reshape(-1, captured[0][0].shape[-1])
    chosen = references[0].choices(x)[2]
    tokens = [int((chosen[:, 0] == e).nonzero()[0]) for e in chosen[:, 0].unique().tolist()]  # one token per top expert
    assert len(tokens) >= 2
    with torch.no_grad():
        for t in tokens:
            torch.testing.assert_close(block(x[t : t + 1]), references[0](x[t : t + 1]), rtol=1e-5, atol=1e-5)


def test_load_balancing_loss_and_the_loss_the_trainer_sees(variants: dict) -> None:
    """L_aux = N * sum f_i P_i by hand, per layer; outputs.loss = the language-model loss + coef * sum of them."""
    paths = variants["top1"]
    model = mote_convert.load_model(paths["latent"], mode="train")
    model.eval()
    references = _references(paths["packed"])
    inputs = _inputs(model.config)
    captured = _block_io(model, inputs)
    by_hand = [ref.aux(x.reshape(-1, x.shape[-1])) for (x, _), ref in zip(captured, references, strict=True)]
    for block, value in zip(mote_blocks(model), by_hand, strict=True):
        torch.testing.assert_close(block.last_aux_loss.float(), value.float(), rtol=1e-6, atol=1e-7)
    assert min(float(v) for v in by_hand) > 1.0 + 1e-3  # decisive, unbalanced routers: the loss is not its minimum
    coef = json.loads((paths["latent"] / "config.json").read_text())["mote"]["router_aux_loss_coef"]
    labels = inputs["input_ids"].clone()
    with torch.no_grad():
        logits = model(**inputs).logits
        loss = model(**inputs, labels=labels).loss
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
    torch.testing.assert_close(loss.float(), lm + coef * sum(by_hand), rtol=1e-5, atol=1e-6)
