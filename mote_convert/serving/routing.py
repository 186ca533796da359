"""The routed sum of a MoE layer for engines that hand over their routing already made (vLLM): top-k
expert ids and weights per token, and a function computing one expert on some tokens. Pure tensor
math, shared by the serving integrations, testable without them."""

from __future__ import annotations

from typing import Callable

import torch

ExpertFn = Callable[[int, torch.Tensor], torch.Tensor]  # (expert, x [n, hidden]) -> [n, hidden]


def routed_sum(
    x: torch.Tensor,
    topk_weights: torch.Tensor,
    topk_ids: torch.Tensor,
    expert_fn: ExpertFn,
    num_experts: int,
    *,
    sync_free: bool = False,
) -> torch.Tensor:
    """float32 [tokens, hidden]: sum over each token's chosen experts of weight * expert(x), the
    experts added in ascending order (as :class:`mote_convert.modeling.block.MoTEBlock` adds them).

    By default each expert runs on its tokens only, which reads the per-expert token counts on the
    host. ``sync_free`` runs every expert on every token and weighs the tokens that did not choose
    it by zero, so nothing waits for the device (what a CUDA graph being captured needs); adding
    ``0 * y`` changes no bit, so both give the same result."""
    hidden = x.shape[-1]
    routed = torch.zeros(x.shape[0], hidden, dtype=torch.float32, device=x.device)
    if sync_free:
        for expert in range(num_experts):
            weight = (topk_weights.to(torch.float32) * (topk_ids == expert)).sum(dim=-1, keepdim=True)
            routed += expert_fn(expert, x).to(torch.float32) * weight
        return routed
    flat = topk_ids.reshape(-1).to(torch.int64)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_experts).tolist()
    top_k = topk_ids.shape[-1]
    token_of, slot_of = order // top_k, order % top_k
    start = 0
    for expert, n in enumerate(counts):
        tokens, slot = token_of[start : start + n], slot_of[start : start + n]
        start += n
        if n:
            y = expert_fn(expert, x[tokens]).to(torch.float32)
            routed.index_add_(0, tokens, y * topk_weights[tokens, slot, None].to(torch.float32))
    return routed
