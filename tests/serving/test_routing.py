"""The routed sum the serving integrations compute from an engine's routing: a token-by-token oracle,
and the same bits with and without reading the routing on the host."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mote_convert.serving.routing import routed_sum


@settings(max_examples=40, deadline=None)
@given(
    tokens=st.integers(0, 9),
    experts=st.integers(1, 5),
    top_k=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
)
def test_routed_sum_is_each_tokens_weighted_experts_in_order(
    tokens: int, experts: int, top_k: int, seed: int, dtype: torch.dtype
) -> None:
    top_k = min(top_k, experts)
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(6, 6, generator=g).to(dtype) for _ in range(experts)]
    x = torch.randn(tokens, 6, generator=g).to(dtype)
    probs = torch.softmax(torch.randn(tokens, experts, generator=g), dim=-1)
    weights, ids = probs.topk(top_k, dim=-1)
    calls: list[int] = []

    def expert_fn(e: int, xs: torch.Tensor) -> torch.Tensor:
        calls.append(xs.shape[0])
        return torch.tanh(xs @ maps[e])

    want = torch.zeros(tokens, 6)
    for t in range(tokens):  # the oracle: the chosen experts in ascending order, each added once
        for slot in sorted(range(top_k), key=lambda s: int(ids[t, s])):
            want[t] += torch.tanh(x[t : t + 1] @ maps[int(ids[t, slot])])[0].float() * weights[t, slot]
    got = routed_sum(x, weights, ids, expert_fn, experts)
    assert torch.equal(got, want)
    assert sum(calls) == tokens * top_k  # each expert on its own tokens only
    calls.clear()
    assert torch.equal(routed_sum(x, weights, ids, expert_fn, experts, sync_free=True), want)
    assert calls == [tokens] * experts


def test_the_sync_free_sum_reads_nothing_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.modeling.test_moe import _NoHostReads

    x = torch.randn(4, 6)
    weights, ids = torch.softmax(torch.randn(4, 3), dim=-1).topk(2, dim=-1)
    with _NoHostReads(monkeypatch):
        routed_sum(x, weights, ids, lambda e, xs: xs * (e + 1), 3, sync_free=True)
