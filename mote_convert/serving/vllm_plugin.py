"""The ``mote`` quantization method for vLLM: MoTE's routed experts inside vLLM's own MoE layer.

Registered by the ``vllm.general_plugins`` entry point of this package (:func:`register`), so that
any vLLM process, workers included, knows ``quantization_config.quant_method = "mote"``. A model
exported by ``mote-convert export vllm`` is a model vLLM already has (Qwen2-MoE: an always-on shared
expert, softmax top-k routing); this method gives its ``FusedMoE`` layers the routed experts of
docs/method.md, computed by this package's kernels (the C++ operator on the CPU, Triton on CUDA):

    y_e(x) = down_e(act(gate_e(x)) * up_e(x)),   each projection  (x_q @ T^T) * gamma / s_x

with per-token INT8 activations ``x_q``, ternary codes ``T`` stored 2-bit packed and ``gamma``
float32. Every other layer (attention, the shared expert, embeddings) is vLLM's unquantized path.

Importing this module imports vLLM: only the entry point and the tests do.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from vllm.model_executor.layers.fused_moe import FusedMoEMethodBase
from vllm.model_executor.layers.linear import LinearBase, UnquantizedLinearMethod
from vllm.model_executor.layers.quantization import register_quantization_config
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig, QuantizeMethodBase

from mote_convert.kernels import ternary_linear
from mote_convert.serving.routing import routed_sum

QUANT_METHOD = "mote"
SHARDS = {"w1": 0, "w3": 1, "w2": 0}  # vLLM's shard -> its slot in w13_* (gate, up) or w2_* (down)


class MoteConfig(QuantizationConfig):
    """``quantization_config`` of an exported MoTE model: 2-bit packed ternary routed experts."""

    def __init__(self, bits: int = 2) -> None:
        super().__init__()
        self.bits = bits

    def __repr__(self) -> str:
        return f"MoteConfig(bits={self.bits})"

    def get_name(self) -> str:  # type: ignore[override]  # vLLM types it as a Literal of its own methods
        return QUANT_METHOD

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.float32, torch.bfloat16, torch.float16]

    @classmethod
    def get_min_capability(cls) -> int:
        return 70

    @staticmethod
    def get_config_filenames() -> list[str]:
        return []

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MoteConfig:
        return cls(int(config.get("bits", 2)))

    def get_quant_method(self, layer: nn.Module, prefix: str) -> QuantizeMethodBase | None:
        from vllm.model_executor.layers.fused_moe.routed_experts import RoutedExperts

        if isinstance(layer, RoutedExperts):
            return MoteMoEMethod(layer.moe_config)
        if isinstance(layer, LinearBase):
            return UnquantizedLinearMethod()
        return None


class MoteMoEMethod(FusedMoEMethodBase):
    """The routed experts of one MoE layer: packed codes and gammas per expert and projection."""

    def create_weights(
        self,
        layer: nn.Module,
        num_experts: int,
        hidden_size: int,
        intermediate_size_per_partition: int,
        params_dtype: torch.dtype,
        **extra_weight_attrs: Any,
    ) -> None:
        from vllm.distributed import get_tensor_model_parallel_world_size

        if get_tensor_model_parallel_world_size() > 1:
            # down_proj's per-token INT8 scale is the absmax over the whole intermediate vector, which
            # tensor parallelism splits across ranks: each would quantize with another scale
            raise ValueError(
                "MoTE experts do not shard with tensor parallelism (their activation scale spans the whole "
                "intermediate vector); serve replicas with --data-parallel-size instead"
            )
        inter = intermediate_size_per_partition
        shapes = {
            "w13_weight_packed": ((num_experts, 2, -(-inter // 4), hidden_size), torch.uint8),
            "w2_weight_packed": ((num_experts, 1, -(-hidden_size // 4), inter), torch.uint8),
            "w13_weight_scale": ((num_experts, 2), torch.float32),
            "w2_weight_scale": ((num_experts, 1), torch.float32),
        }
        for name, (shape, dtype) in shapes.items():
            param = nn.Parameter(torch.zeros(shape, dtype=dtype), requires_grad=False)
            param.weight_loader = _load_expert_tensor  # type: ignore[attr-defined]
            layer.register_parameter(name, param)
        layer.mote_sizes = (hidden_size, inter)

    def get_fused_moe_quant_config(self, layer: nn.Module) -> None:
        return None

    def apply(  # type: ignore[override]
        self,
        layer: nn.Module,
        x: torch.Tensor,
        topk_weights: torch.Tensor,
        topk_ids: torch.Tensor,
        shared_experts: Any,
        shared_experts_input: torch.Tensor | None,
    ) -> torch.Tensor:
        """The routed sum of MoTE's experts for every token (the shared expert is vLLM's); while vLLM
        captures a CUDA graph, without reading the routing on the host (every expert on every token)."""
        hidden, inter = layer.mote_sizes

        def expert_fn(expert: int, xs: torch.Tensor) -> torch.Tensor:
            w13, s13 = layer.w13_weight_packed[expert], layer.w13_weight_scale[expert]
            gate = ternary_linear(xs, w13[0], s13[0:1], inter)
            up = ternary_linear(xs, w13[1], s13[1:2], inter)
            h = torch.nn.functional.silu(gate) * up
            return ternary_linear(h, layer.w2_weight_packed[expert, 0], layer.w2_weight_scale[expert], hidden)

        capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
        num_experts = layer.w13_weight_packed.shape[0]
        return routed_sum(x, topk_weights, topk_ids, expert_fn, num_experts, sync_free=capturing).to(x.dtype)


def _load_expert_tensor(
    param: nn.Parameter,
    loaded_weight: torch.Tensor,
    weight_name: str,
    shard_id: str,
    expert_id: int,
    return_success: bool = False,
) -> bool | None:
    """vLLM's weight loader for one expert's packed codes or gamma of one projection."""
    target = param.data[expert_id, SHARDS[shard_id]]
    if target.shape != loaded_weight.reshape(target.shape).shape:
        raise ValueError(f"{weight_name}: expert {expert_id} {shard_id} is {tuple(loaded_weight.shape)}")
    target.copy_(loaded_weight.reshape(target.shape))
    return True if return_success else None


def register() -> None:
    """The ``vllm.general_plugins`` entry point: make ``quant_method = "mote"`` known to vLLM."""
    register_quantization_config(QUANT_METHOD)(MoteConfig)
