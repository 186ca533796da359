"""The MoTE block: the frozen dense FFN as shared expert, a float32 router, N ternary routed experts.

    p = softmax(W_router x)            float32, over N experts
    S = top-k indices of p
    y = shared(x) + sum_{e in S} p[e] * expert_e(x)

The block re-registers the dense FFN's own children (``gate_proj``, ``up_proj``, ``down_proj``,
``act_fn``, ...) under their names, so its ``state_dict`` keeps the dense FFN's keys beside
``router.weight`` and ``experts.{i}.{proj}.*`` (docs/training.md), and runs the dense FFN class's own
``forward`` for the shared expert and, with ternary projections, for every routed expert.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mote_convert.kernels import ternary_linear_indexed
from mote_convert.modeling.aux_loss import AuxGradCell, carry_aux_grad
from mote_convert.modeling.bitlinear import PACKED, Float32Linear, TernaryLinear

_MODULE_INTERNALS = {"training"}


def _ffn_attributes(ffn: nn.Module) -> dict[str, object]:
    """Plain attributes of an FFN module that its forward may read (config, sizes, ...)."""
    return {k: v for k, v in vars(ffn).items() if not k.startswith("_") and k not in _MODULE_INTERNALS}


class TernaryExpert(nn.Module):
    """One routed expert: the dense FFN's structure with every projection a :class:`TernaryLinear`."""

    def __init__(self, ffn: nn.Module, projections: tuple[str, ...], mode: str, dtype: torch.dtype) -> None:
        super().__init__()
        for key, value in _ffn_attributes(ffn).items():
            object.__setattr__(self, key, value)
        for name, child in ffn.named_children():
            if name in projections:
                linear = child
                self.add_module(
                    name,
                    TernaryLinear(
                        linear.in_features,
                        linear.out_features,
                        bias=linear.bias is not None,
                        mode=mode,
                        dtype=dtype,
                        device="meta" if linear.weight.is_meta else linear.weight.device,
                    ),
                )
            elif not any(True for _ in child.parameters()):
                self.add_module(name, child)  # activations: shared, parameter-free
            else:
                # a learned activation (xIELU) or other non-projection module with parameters: the
                # expert uses the shared expert's own, frozen, without storing a copy of it
                object.__setattr__(self, name, child)
        self._ffn_forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = type(ffn).forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._ffn_forward(self, x)


class MoTEBlock(nn.Module):
    """A MoE layer of MoTE, replacing one decoder FFN module in place."""

    def __init__(
        self,
        ffn: nn.Module,
        *,
        projections: tuple[str, ...],
        hidden_size: int,
        num_experts: int,
        top_k: int,
        norm_topk_prob: bool,
        mode: str,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        for key, value in _ffn_attributes(ffn).items():
            object.__setattr__(self, key, value)
        for name, child in ffn.named_children():
            self.add_module(name, child)  # the shared expert, under the dense FFN's own names
        self._ffn_forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = type(ffn).forward
        self.num_experts = num_experts
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.mode = mode
        device = next(ffn.parameters()).device
        self.router = Float32Linear(hidden_size, num_experts, bias=False, dtype=torch.float32, device=device)
        self.experts = nn.ModuleList(TernaryExpert(ffn, projections, mode, dtype) for _ in range(num_experts))
        self._aux: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None  # see last_aux_loss
        self.aux_cell: AuxGradCell | None = None  # set by attach_aux_loss: how its gradient is carried

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}, mode={self.mode}"

    @property
    def last_aux_loss(self) -> torch.Tensor | None:
        """The last forward's load-balancing loss (unscaled). Without autograd (inference) it is
        computed only when asked for, from the routing the forward kept."""
        if isinstance(self._aux, tuple):
            self._aux = load_balancing_loss(*self._aux, self.num_experts)
        return self._aux

    def set_mode(self, mode: str, dtype: torch.dtype | None = None) -> None:
        """Convert every routed expert in place to ``mode`` (see :meth:`TernaryLinear.convert`)."""
        for module in self.experts.modules():
            if isinstance(module, TernaryLinear):
                module.convert(mode, dtype)
        self.mode = mode

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shared = self._ffn_forward(self, hidden_states)
        shape = hidden_states.shape
        x = hidden_states.reshape(-1, shape[-1])
        # through the router module (not its weight): engines that shard parameters gather them in
        # its forward hooks; Float32Linear computes the logits in float32 under any autocast
        probs = F.softmax(self.router(x), dim=-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        if x.shape[0] == 1 and not torch.is_grad_enabled():
            if x.device.type != "cpu" and self.mode == PACKED:  # a GPU: no host read, graph-capturable
                routed = self._route_one_token_on_device(x, weights, chosen)
            else:
                routed = self._route_one_token(x, weights, chosen)
        else:
            routed = self._route_tokens(x, weights, chosen)
        out = shared + routed.to(shared.dtype).reshape(shared.shape)
        if not torch.is_grad_enabled():
            self._aux = (probs, chosen[:, 0])  # decoding does not pay for a loss nobody reads
            return out
        aux = load_balancing_loss(probs, chosen[:, 0], self.num_experts)
        self._aux = aux
        return carry_aux_grad(out, aux, self.aux_cell)

    def _route_tokens(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """The routed experts' weighted sum (float32 [tokens, hidden]) for any number of tokens."""
        routed = torch.zeros(x.shape[0], x.shape[-1], dtype=torch.float32, device=x.device)
        # Tokens grouped by expert with one stable sort and one host read of the per-expert counts
        # (the only sync besides top-k); within an expert, tokens stay in ascending order.
        flat = chosen.reshape(-1)
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.num_experts).tolist()
        token_of, slot_of = order // self.top_k, order % self.top_k
        # While autograd records, every expert runs, on no tokens if none chose it: its parameters
        # then get a zero gradient instead of none, which sharded data parallelism (FSDP2, ZeRO)
        # needs to reduce the same set of gradients on every rank.
        every_expert = torch.is_grad_enabled()
        start = 0
        for expert, n in zip(self.experts, counts, strict=True):
            tokens, slot = token_of[start : start + n], slot_of[start : start + n]
            start += n
            if n == 0 and not every_expert:
                continue
            y = expert(x[tokens]).to(torch.float32) * weights[tokens, slot, None]
            routed.index_add_(0, tokens, y)
        return routed

    def _route_one_token(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """Decoding's routed sum for one token: no sort, count or scatter, and the same float32
        arithmetic as :meth:`_route_tokens` (the chosen experts in ascending order, each added once
        to zeros), so the result is the same bits."""
        routed = torch.zeros(1, x.shape[-1], dtype=torch.float32, device=x.device)
        picks = chosen[0].tolist()  # the one host read, as the general path's counts
        for slot in sorted(range(len(picks)), key=picks.__getitem__):
            routed += self.experts[picks[slot]](x).to(torch.float32) * weights[:, slot, None]
        return routed

    def _route_one_token_on_device(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """:meth:`_route_one_token` (the same bits) without reading the router's choice on the host:
        the chosen experts are put in ascending order on the device, and each runs through
        :class:`ChosenExpert`, whose projections take their expert from a device tensor. Nothing
        waits for the device, so a decoding step can be captured in a CUDA graph (packed mode)."""
        routed = torch.zeros(1, x.shape[-1], dtype=torch.float32, device=x.device)
        order = torch.argsort(chosen[0])
        picks, slot_weights = chosen[0].index_select(0, order), weights[0].index_select(0, order)
        expert = ChosenExpert(self.experts)
        for slot in range(self.top_k):
            expert.index = picks[slot : slot + 1]
            routed += expert(x).to(torch.float32) * slot_weights[slot : slot + 1].reshape(1, 1)
        return routed


class ChosenExpert:
    """The routed expert that a device tensor ``index`` picks among packed experts of one structure:
    the experts' FFN forward, each projection computed by :func:`ternary_linear_indexed` on the
    chosen expert's packed weights."""

    def __init__(self, experts: nn.ModuleList) -> None:
        first = experts[0]
        self.__dict__.update(_ffn_attributes(first))
        for name, child in first.named_children():
            if isinstance(child, TernaryLinear):
                setattr(self, name, _ChosenProjection(self, [getattr(e, name) for e in experts]))
            else:
                setattr(self, name, child)
        self._ffn_forward = first._ffn_forward
        self.index: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._ffn_forward(self, x)  # type: ignore[arg-type]  # the FFN class's forward, duck-typed


class _ChosenProjection:
    """One projection of :class:`ChosenExpert`: the linears of every expert, computed for the one picked."""

    def __init__(self, owner: ChosenExpert, linears: list[TernaryLinear]) -> None:
        self.owner, self.linears = owner, linears

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        first = self.linears[0]
        biases = [lin.bias for lin in self.linears] if first.bias is not None else None
        assert self.owner.index is not None, "ChosenExpert.index is set before the expert runs"
        return ternary_linear_indexed(
            x,
            [lin.weight_packed for lin in self.linears],
            [lin.weight_scale for lin in self.linears],
            self.owner.index,
            first.out_features,
            biases,
        )


def load_balancing_loss(probs: torch.Tensor, top1: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch Transformer loss N * sum_i f_i * P_i over the tokens of one forward (float32)."""
    if probs.shape[0] == 0:
        return probs.sum() * 0.0
    f = torch.bincount(top1, minlength=num_experts).to(torch.float32) / top1.numel()
    p = probs.mean(dim=0)
    return num_experts * torch.sum(f * p)
