"""Every image-text-to-text and causal-LM family of the installed transformers, as a tiny random
model built by shrinking the family's default config: discovery supports it or refuses it with a
reason, and a supported one goes through upcycle, stock loading, packed loading, pack and one
training step with the values a user relies on, against independent oracles (transformers' own FFN modules
and forward, SPEC section 1 written out plainly).

The whole run takes minutes (the ``families`` group); the hand-built families of
``tests/families.py`` run the same checks in the quick suite.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import mote_convert
from mote_convert.arch import architecture_of, model_class
from mote_convert.arch.skeleton import pretrained_config
from mote_convert.arch.survey import REFUSED, SUPPORTED, UNCHECKED, family_types, shrunk_config, survey_family
from mote_convert.modeling.load import mote_blocks
from tests.helpers import read_all, spec_gamma

N, K = 3, 2
NAMED_IN_THE_ISSUE = (
    "qwen3_vl qwen3_5 internvl llava_next_video aya_vision cohere2_vision glm4v lfm2_vl qwen3 gemma2 olmo2 granite"
).split()
SUPPORTED_BEFORE = (
    "llava llava_next llava_onevision vipllava paligemma idefics3 smolvlm qwen2_vl qwen2_5_vl gemma3 mistral3 "
    "llama mistral qwen2 gemma phi phi3"
).split()
REASONS = (
    "already mixture-of-experts",
    "no dense FFN",
    "no list of",
    "no decoder layer count",
    "converts its FFN weights",
    "which hidden_size",
    "takes more than the hidden states",
)


def test_the_families_named_in_the_issue_and_every_family_supported_before_are_supported() -> None:
    rows = {t: survey_family(t) for t in NAMED_IN_THE_ISSUE + SUPPORTED_BEFORE}
    assert {t: r.status for t, r in rows.items()} == dict.fromkeys(rows, SUPPORTED), [
        (t, r.reason) for t, r in rows.items() if r.status != SUPPORTED
    ]


@pytest.mark.families
def test_every_family_is_supported_or_says_why() -> None:
    rows = [survey_family(t) for t in family_types()]
    for row in rows:
        assert row.status in (SUPPORTED, REFUSED, UNCHECKED)
        if row.status == REFUSED:
            assert row.reason and (any(r in row.reason for r in REASONS) or "(MoTE up-cycles" in row.reason), row
        if row.status == UNCHECKED:
            assert row.reason, row  # a family that cannot be built tiny is listed with why
    assert sum(r.status == SUPPORTED for r in rows) >= 100


def _special_ids(config: Any) -> set[int]:
    found: set[int] = set()
    if isinstance(config, dict):
        for key, value in config.items():
            if "token" in key and isinstance(value, int):
                found.add(value)
            elif "token" in key and isinstance(value, list):
                found.update(v for v in value if isinstance(v, int))
            else:
                found |= _special_ids(value)
    return found


def _input_ids(config: dict[str, Any]) -> torch.Tensor:
    vocab = min(v for v in _vocab_sizes(config) if v > 0)
    allowed = torch.tensor([i for i in range(min(vocab, 200)) if i not in _special_ids(config)])
    pick = torch.randint(0, len(allowed), (2, 10), generator=torch.Generator().manual_seed(0))
    return allowed[pick]


def _vocab_sizes(config: Any) -> list[int]:
    if not isinstance(config, dict):
        return []
    sizes = [config["vocab_size"]] if isinstance(config.get("vocab_size"), int) else []
    return sizes + [v for sub in config.values() for v in _vocab_sizes(sub)]


class _SpecBitLinear(nn.Module):
    """SPEC section 1, plainly: absmean ternary weight (gamma in float64), per-token INT8 input. The
    final scaling is one float32 factor gamma / s_x, as the kernels apply it: the method fixes the
    value, not the rounding order of that last multiply, and a one-ulp difference there can move a
    later projection's INT8 rounding by a step (docs/kernels.md)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        self.gamma = spec_gamma(w)
        self.t = torch.clamp(torch.round(w / self.gamma), -1, 1)
        self.b = None if linear.bias is None else linear.bias.detach().float()

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        s = 127.0 / torch.clamp(v.abs().amax(dim=-1, keepdim=True), min=1e-5)
        y = (torch.clamp(torch.round(v * s), -128, 127) @ self.t.t()) * (self.gamma / s)
        return y if self.b is None else y + self.b


def _spec_expert(ffn: nn.Module, projections: tuple[str, ...]) -> nn.Module:
    """The dense FFN module of transformers with each projection a SPEC BitLinear of its weight."""
    expert = copy.deepcopy(ffn)
    for proj in projections:
        setattr(expert, proj, _SpecBitLinear(getattr(ffn, proj)))
    return expert


# Where the tiny default is not the interesting case: hybrid layers, both kinds
TWEAKS: dict[str, dict[str, Any]] = {"lfm2": {"layer_types": ["conv", "full_attention"]}}
MAX_PARAMETERS = 20_000_000  # a family whose shrunk default is still big is not built (CI has 24 GiB)


def _build(model_type: str, root: Path) -> tuple[dict[str, Any], Path, type]:
    config = shrunk_config(model_type) | TWEAKS.get(model_type, {})
    cls = model_class(config)
    with torch.device("meta"):
        size = sum(p.numel() for p in cls._from_config(pretrained_config(config)).parameters())
    if size > MAX_PARAMETERS:
        pytest.skip(f"its default config shrinks to {size} parameters only")
    torch.manual_seed(0)
    model = cls._from_config(pretrained_config(config)).float().eval()
    for p in model.parameters():  # random weights everywhere (some families initialise to zeros)
        if p.dim() >= 1:
            nn.init.normal_(p, std=0.05)
    model.save_pretrained(root)
    return json.loads((root / "config.json").read_text()), root, cls


@pytest.mark.families
@pytest.mark.parametrize("model_type", family_types())
def test_family_end_to_end(model_type: str, tmp_path: Path) -> None:
    row = survey_family(model_type)
    if row.status != SUPPORTED:
        pytest.skip(f"{row.status}: {row.reason}")
    config, dense, cls = _build(model_type, tmp_path / "dense")
    arch = architecture_of(config)
    out = tmp_path / "mote"
    mote_convert.upcycle(dense, out, num_experts=N, top_k=K)
    written = json.loads((out / "config.json").read_text())["mote"]
    want_layers = list(arch.ffn_layers) if arch.ffn_layers is not None else list(range(len(written["moe_layers"])))
    assert written["moe_layers"] == want_layers
    ids = _input_ids(config)

    # stock transformers, without this package's quantizer: the dense model, bit for bit
    with torch.no_grad():
        stock_dense = cls.from_pretrained(dense).eval()
        try:
            want = stock_dense(input_ids=ids).logits
        except Exception as exc:  # noqa: BLE001  (the family's own model, before any of ours)
            pytest.skip(f"the dense model itself does not run on text alone: {type(exc).__name__}: {exc}")
        again = cls.from_pretrained(dense).eval()(input_ids=ids).logits
        if not torch.equal(again, want):
            pytest.skip("the dense model itself loads differently each time (a weight it does not save)")
        got = cls.from_pretrained(out).eval()(input_ids=ids).logits
    assert torch.equal(got, want)

    # packed: every up-cycled layer has a router, and equals shared + routed SPEC experts
    model = mote_convert.load_model(out, mode="packed")
    blocks = mote_blocks(model)
    assert len(blocks) == len(want_layers) and all(b.router.weight.dtype == torch.float32 for b in blocks)
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    hooks = [
        b.register_forward_hook(lambda m, a, o: captured.append((a[0].detach().clone(), o.detach().clone())))
        for b in blocks
    ]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    for h in hooks:
        h.remove()
    assert torch.isfinite(logits).all()
    dst = read_all(out)
    projections = tuple(written["projections"])
    for (x, y), layer in zip(captured, want_layers, strict=True):
        ffn = stock_dense.get_submodule(arch.module_path_for(layer))
        router = dst[f"{written['layer_prefixes'][str(layer)]}.router.weight"]
        with torch.no_grad():
            top_p, _ = torch.softmax(x.float() @ router.t(), dim=-1).topk(K, dim=-1)
            ref = ffn(x) + top_p.sum(dim=-1, keepdim=True) * _spec_expert(ffn, projections)(x)
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5, msg=f"{model_type} layer {layer}")

    # pack of the latent output (what training publishes) is the packed output, tensor for tensor
    latent = mote_convert.upcycle(dense, tmp_path / "latent", num_experts=N, top_k=K, latent=True).output
    packed = read_all(mote_convert.pack(latent, tmp_path / "packed").output)
    assert packed.keys() == dst.keys() and all(torch.equal(packed[k], dst[k]) for k in dst)

    # one training step changes the routers and the experts, and nothing else
    train = mote_convert.load_model(out, mode="train").train()
    before = {k: v.detach().clone() for k, v in train.state_dict().items()}
    trainable = [p for p in train.parameters() if p.requires_grad]
    torch.optim.SGD(trainable, lr=0.1).zero_grad()
    train(input_ids=ids, labels=ids).loss.backward()
    torch.optim.SGD(trainable, lr=0.1).step()
    changed = {k for k, v in train.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(".router." in k or ".experts." in k for k in changed), sorted(changed)[:5]
    assert any(".router." in k for k in changed) and any(".experts." in k for k in changed)
