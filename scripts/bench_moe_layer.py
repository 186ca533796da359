"""Benchmark: one MoE layer against the dense FFN on the CPU, LLaVA-1.5-7B FFN shapes.

The dense LlamaMLP (hidden 4096, intermediate 11008) and the MoTE layer (that FFN as shared expert +
4 ternary experts, top-1) in packed mode, in the model dtype (bf16 by default) and beside an fp32
dense FFN, at 1 token (decoding) and at 64 tokens (prefill); the packed layer with the selected
kernel (``cpu``: the C++ one) and, for scale, the ``reference`` kernel. Measured side by side in one
run, interleaved, best of ``--repeats``. Train mode (fwd, fwd+bwd) is reported at 64 tokens.
Targets (issue 11): packed / dense bf16 at 1 token <= 1.3x (stretch 1.15x), at 64 tokens <= 2.0x.

    python scripts/bench_moe_layer.py [--dtype bfloat16|float32] [--repeats 7]
"""

from __future__ import annotations

import benchlib
import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaMLP

from mote_convert.modeling.bitlinear import PACKED, TRAIN, TernaryLinear
from mote_convert.modeling.block import MoTEBlock
from mote_convert.quant.packing import quantize_pack

MiB = benchlib.MiB


def resident_bytes(module: nn.Module) -> int:
    """Bytes of every distinct parameter and buffer of a module."""
    seen: dict[int, int] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def build(mode: str, dense: LlamaMLP, num_experts: int, dtype: torch.dtype) -> MoTEBlock:
    """The MoTE layer of ``dense`` (its shared expert) with ``num_experts`` experts initialised from it."""
    block = MoTEBlock(
        dense,
        projections=("gate_proj", "up_proj", "down_proj"),
        hidden_size=dense.hidden_size,
        num_experts=num_experts,
        top_k=1,
        norm_topk_prob=False,
        mode=mode,
        dtype=dtype,
    )
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


def dense_ffn(
    dtype: torch.dtype, shapes: benchlib.Shapes = benchlib.LLAVA_7B, *, trainable: bool = False, seed: int = 0
) -> LlamaMLP:
    """A Llama FFN of these shapes (LLaVA-1.5-7B's by default), normal(0, 0.02) weights from ``seed``."""
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=shapes.hidden, intermediate_size=shapes.intermediate)
    dense = LlamaMLP(config).to(dtype)
    for p in dense.parameters():
        nn.init.normal_(p, std=0.02)
    return dense.requires_grad_(trainable)


def main() -> None:
    import os

    from mote_convert.kernels import select_kernel

    parser = benchlib.arguments(__doc__, workdir=False, repeats=7)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--experts", type=int, default=4)
    args = parser.parse_args()
    shapes = benchlib.TINY_LLAVA if args.tiny else benchlib.LLAVA_7B
    if args.tiny:
        args.repeats = 1
    hidden = shapes.hidden
    dtype = getattr(torch, args.dtype)
    dense = dense_ffn(dtype, shapes)
    dense32 = LlamaMLP(dense.config)
    dense32.load_state_dict({k: v.float() for k, v in dense.state_dict().items()})
    packed = build(PACKED, dense, args.experts, dtype)
    kernel = select_kernel(torch.device("cpu")).name

    def with_kernel(name: str, fn):  # noqa: ANN001, ANN202
        def run() -> None:
            old = os.environ.get("MOTE_KERNEL")
            os.environ["MOTE_KERNEL"] = name
            try:
                fn()
            finally:
                if old is None:
                    del os.environ["MOTE_KERNEL"]
                else:
                    os.environ["MOTE_KERNEL"] = old

        return run

    print(
        f"CPU, {torch.get_num_threads()} threads, model {args.dtype}, hidden {hidden}, intermediate {shapes.intermediate}, "
        f"{args.experts} experts, top-1; packed kernel: {kernel}"
    )
    print(f"{'tokens':>6} {'module':<30} {'ms':>9} {'x dense':>8} {'x fp32 dense':>12}")
    ratios = {}
    for tokens in (1, 64):
        x = torch.randn(1, tokens, hidden, dtype=dtype)
        x32 = x.float()
        fns = {
            f"dense FFN ({args.dtype})": lambda x=x: dense(x),
            "dense FFN (float32)": lambda x32=x32: dense32(x32),
            f"MoTE packed ({kernel})": with_kernel(kernel, lambda x=x: packed(x)),
        }
        if tokens == 1:
            fns["MoTE packed (reference)"] = with_kernel("reference", lambda x=x: packed(x))
        with torch.no_grad():
            best = benchlib.interleaved_best(fns, args.repeats)
        base, base32 = best[f"dense FFN ({args.dtype})"], best["dense FFN (float32)"]
        for name, t in best.items():
            print(f"{tokens:>6} {name:<30} {t * 1e3:>9.2f} {t / base:>8.2f} {t / base32:>12.2f}")
        ratios[tokens] = best[f"MoTE packed ({kernel})"] / base

    train = build(TRAIN, dense, args.experts, dtype)
    x = torch.randn(1, 64, hidden, dtype=dtype)

    def fwd_bwd() -> None:
        train.zero_grad(set_to_none=True)
        train(x).float().sum().backward()

    with torch.no_grad():
        t_dense, t_train = benchlib.interleaved_best(
            {"dense": lambda: dense(x), "train": lambda: train(x)}, max(2, args.repeats // 2)
        ).values()
    t_bwd = benchlib.interleaved_best({"fwd+bwd": fwd_bwd}, 2)["fwd+bwd"]
    print(f"{64:>6} {'MoTE train (fwd)':<30} {t_train * 1e3:>9.2f} {t_train / t_dense:>8.2f}")
    print(f"{64:>6} {'MoTE train (fwd+bwd)':<30} {t_bwd * 1e3:>9.2f} {t_bwd / t_dense:>8.2f}")
    dense_bytes = resident_bytes(dense)
    expert_bytes = resident_bytes(packed) - dense_bytes - packed.router.weight.numel() * 4
    expert_weights = args.experts * 3 * hidden * shapes.intermediate
    print(
        f"packed routed experts: {expert_bytes} bytes for {expert_weights} weights = "
        f"{8 * expert_bytes / expert_weights:.6f} bits per weight; layer resident "
        f"{resident_bytes(packed) / MiB:.0f} MiB vs dense {dense_bytes / MiB:.0f} MiB"
    )
    print(
        f"MoTE packed / dense {args.dtype}: {ratios[1]:.2f}x at 1 token (target <= 1.3, stretch 1.15), "
        f"{ratios[64]:.2f}x at 64 tokens (target <= 2.0)"
    )


if __name__ == "__main__":
    main()
