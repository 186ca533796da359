"""Benchmark: one MoE layer against the dense FFN, CPU, batch 1 x 64 tokens, LLaVA-1.5-7B FFN shapes.

Prints, measured side by side in one run: the dense LlamaMLP (hidden 4096, intermediate 11008), the MoTE
layer (that FFN as shared expert + 4 ternary experts, top-1) in packed mode and in train mode, each as
median forward time, its ratio to dense, and the module's resident bytes (parameters and buffers). Train
mode is also timed forward + backward.

    python scripts/bench_moe_layer.py [--dtype float32|bfloat16] [--tokens 64] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from mote_convert.modeling.bitlinear import PACKED, TRAIN, TernaryLinear
from mote_convert.modeling.block import MoTEBlock
from mote_convert.quant.packing import quantize_pack

MiB = 2**20


def resident_bytes(module: nn.Module) -> int:
    """Bytes of every distinct parameter and buffer of a module."""
    seen: dict[int, int] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def build(mode: str, dense: LlamaMLP, num_experts: int, dtype: torch.dtype) -> MoTEBlock:
    block = MoTEBlock(dense, projections=("gate_proj", "up_proj", "down_proj"), hidden_size=4096,
                      num_experts=num_experts, top_k=1, norm_topk_prob=False, mode=mode, dtype=dtype)
    nn.init.normal_(block.router.weight, std=0.02)
    packed = {p: quantize_pack(getattr(dense, p).weight.detach()) for p in ("gate_proj", "up_proj", "down_proj")}
    for expert in block.experts:
        for proj, (codes, gamma) in packed.items():
            linear: TernaryLinear = getattr(expert, proj)
            if mode == PACKED:
                linear.load_packed(codes.clone(), gamma.clone())  # own storage per expert, as when loaded
            else:
                linear.load_latent(getattr(dense, proj).weight.detach().clone())
    return block


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=4096, intermediate_size=11008)
    dense = LlamaMLP(config).to(dtype)
    for p in dense.parameters():
        nn.init.normal_(p, std=0.02)
        p.requires_grad_(False)
    x = torch.randn(1, args.tokens, 4096, dtype=dtype)
    packed = build(PACKED, dense, args.experts, dtype)
    train = build(TRAIN, dense, args.experts, dtype)

    with torch.no_grad():
        t_dense = timed(lambda: dense(x), args.repeats)
        t_packed = timed(lambda: packed(x), args.repeats)
        t_train = timed(lambda: train(x), args.repeats)

    def fwd_bwd() -> None:
        train.zero_grad(set_to_none=True)
        train(x).float().sum().backward()

    t_train_bwd = timed(fwd_bwd, max(3, args.repeats // 2))
    dense_bytes = resident_bytes(dense)
    rows = [
        ("dense FFN", t_dense, dense_bytes),
        ("MoTE packed (fwd)", t_packed, resident_bytes(packed)),
        ("MoTE train (fwd)", t_train, resident_bytes(train)),
        ("MoTE train (fwd+bwd)", t_train_bwd, resident_bytes(train)),
    ]
    print(f"CPU, {torch.get_num_threads()} threads, {args.dtype}, batch 1 x {args.tokens} tokens, "
          f"hidden 4096, intermediate 11008, {args.experts} experts, top-1")
    print(f"{'module':<22} {'ms':>9} {'x dense':>8} {'resident MiB':>13} {'x dense':>8}")
    for name, t, b in rows:
        print(f"{name:<22} {t * 1e3:>9.2f} {t / t_dense:>8.2f} {b / MiB:>13.1f} {b / dense_bytes:>8.2f}")
    expert_bytes = resident_bytes(packed) - dense_bytes - packed.router.weight.numel() * 4
    expert_weights = args.experts * 3 * 4096 * 11008
    print(f"packed routed experts: {expert_bytes} bytes for {expert_weights} weights = "
          f"{8 * expert_bytes / expert_weights:.6f} bits per weight")


if __name__ == "__main__":
    main()
