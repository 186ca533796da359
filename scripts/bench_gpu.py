"""Benchmark: the GPU paths at real shapes, one table (what ``scripts/gpu_check.sh`` runs on a GPU).

On the device (CUDA when there is one), side by side in one run, best of ``--repeats`` after a
warm-up, each timing closed by a device synchronize:

1. the ternary matmul (``ternary_linear``, the kernel the device selects: Triton on CUDA) against
   the dense bf16 product (cuBLAS on CUDA) at LLaVA-1.5-7B FFN shapes (4096 -> 11008 and
   11008 -> 4096) for 1, 16, 64 and 512 tokens: time, and effective bandwidth on the packed bytes;
2. the MoTE layer (packed, 4 experts, top-1) against the dense bf16 FFN at the same token counts;
3. greedy decoding (bf16, static cache) of a Qwen2-0.5B-shaped and a Llama-2-7B-shaped model, dense
   and MoTE (every FFN a packed MoTE layer built in memory, 4 experts, top-1), tokens/s;
4. one training step (forward + backward, bf16 autocast, 512 tokens) of the MoTE layer in train
   mode against the dense FFN's.

Targets (issue 25): the 1-token ternary GEMV at >= 50% of the device's memory bandwidth on its
packed bytes; the MoTE layer at 1 and 512 tokens <= 1.5x the dense bf16 FFN; the training step
<= 2.5x the dense FFN's.

    python scripts/bench_gpu.py [--device cuda|cpu] [--repeats 20] [--out table.md]
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import benchlib
import torch
from bench_moe_layer import build, dense_ffn
from torch import nn

from mote_convert.kernels import select_kernel, ternary_linear
from mote_convert.modeling.bitlinear import PACKED, TRAIN
from mote_convert.quant.packing import quantize_pack

TOKENS = (1, 16, 64, 512)
# HBM bandwidth of the devices this is meant for, bytes/s (datasheet figures)
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}


def timer(device: torch.device) -> Callable[[dict[str, Callable[[], object]], int], dict[str, float]]:
    """interleaved_best with every call closed by a device synchronize (CUDA kernels are asynchronous)."""

    def best(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
        def synced(fn: Callable[[], object]) -> Callable[[], None]:
            def run() -> None:
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            return run

        return benchlib.interleaved_best({k: synced(f) for k, f in fns.items()}, repeats)

    return best


def device_bandwidth(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((bw for key, bw in BANDWIDTH.items() if key in name), None)


def matmul_rows(shapes: benchlib.Shapes, device: torch.device, repeats: int, tokens: tuple[int, ...]) -> list[str]:
    best = timer(device)
    bandwidth = device_bandwidth(device)
    rows = []
    for n_in, n_out in ((shapes.hidden, shapes.intermediate), (shapes.intermediate, shapes.hidden)):
        weight = (torch.randn(n_out, n_in, device=device) * 0.02).to(torch.bfloat16)
        packed, gamma = quantize_pack(weight)
        packed_bytes = packed.numel()
        for t in tokens:
            x = torch.randn(t, n_in, device=device, dtype=torch.bfloat16)
            with torch.no_grad():
                got = best(
                    {
                        "dense": lambda x=x, w=weight: x @ w.t(),
                        "ternary": lambda x=x, p=packed, g=gamma, n=n_out: ternary_linear(x, p, g, n),
                    },
                    repeats,
                )
            gbs = packed_bytes / got["ternary"] / 1e9  # decimal GB/s, as bandwidths are quoted
            share = f"{100 * packed_bytes / got['ternary'] / bandwidth:.0f}%" if bandwidth else "-"
            rows.append(
                f"| ternary matmul {n_in}->{n_out} | {t} | {got['dense'] * 1e6:.1f} | {got['ternary'] * 1e6:.1f} "
                f"| {got['ternary'] / got['dense']:.2f} | {gbs:.3g} GB/s ({share}) |"
            )
    return rows


def layer_rows(shapes: benchlib.Shapes, device: torch.device, repeats: int, tokens: tuple[int, ...]) -> list[str]:
    best = timer(device)
    dense = dense_ffn(torch.bfloat16, shapes).to(device)
    mote = build(PACKED, dense, 4, torch.bfloat16).to(device)
    rows = []
    for t in tokens:
        x = torch.randn(1, t, shapes.hidden, device=device, dtype=torch.bfloat16)
        with torch.no_grad():
            got = best({"dense": lambda x=x: dense(x), "mote": lambda x=x: mote(x)}, repeats)
        rows.append(
            f"| MoTE layer (packed, 4 experts, top-1) | {t} | {got['dense'] * 1e6:.1f} | {got['mote'] * 1e6:.1f} "
            f"| {got['mote'] / got['dense']:.2f} | |"
        )
    return rows


def mote_layers(model: nn.Module, experts: int = 4) -> list[nn.Module]:
    """A packed MoTE layer for every FFN of ``model`` (the FFN as shared expert, ternary experts
    quantized from it, a random router), built in memory; the model keeps its dense FFNs."""
    from mote_convert.modeling.block import MoTEBlock

    blocks = []
    for layer in model.model.layers:
        ffn = layer.mlp
        block = MoTEBlock(
            ffn,
            projections=("gate_proj", "up_proj", "down_proj"),
            hidden_size=model.config.hidden_size,
            num_experts=experts,
            top_k=1,
            norm_topk_prob=False,
            mode=PACKED,
            dtype=torch.bfloat16,
        )
        nn.init.normal_(block.router.weight, std=0.02)
        for proj in ("gate_proj", "up_proj", "down_proj"):
            codes, gamma = quantize_pack(getattr(ffn, proj).weight.detach())
            for expert in block.experts:
                getattr(expert, proj).load_packed(codes.clone(), gamma.clone())
        blocks.append(block)
    return blocks


def decode_rows(device: torch.device, repeats: int, tiny: bool, new_tokens: int) -> list[str]:
    cases = (
        [("tiny Qwen2", benchlib.TINY_QWEN, False)]
        if tiny
        else [("Qwen2-0.5B-shaped", benchlib.QWEN2_05B, False), ("Llama-2-7B-shaped", benchlib.LLAMA2_7B, True)]
    )
    rows = []
    for name, shapes, llama in cases:
        model = benchlib.causal_lm(shapes, llama=llama, device=str(device), tied=False).eval()
        dense_ffns = [layer.mlp for layer in model.model.layers]
        blocks = mote_layers(model)
        prompt = torch.randint(0, shapes.vocab, (1, 16), device=device)

        def run(ffns: list[nn.Module], model: nn.Module = model, prompt: torch.Tensor = prompt) -> None:
            for layer, ffn in zip(model.model.layers, ffns, strict=True):
                layer.mlp = ffn
            model.generate(
                prompt,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                cache_implementation="static",
                pad_token_id=0,
            )

        with torch.no_grad():
            got = timer(device)(
                {"dense": lambda d=dense_ffns: run(d), "mote": lambda b=blocks: run(b)}, max(1, repeats // 5)
            )
        dense_tps, mote_tps = new_tokens / got["dense"], new_tokens / got["mote"]
        rows.append(
            f"| greedy decode {name}, bf16, static cache (tokens/s) | {new_tokens} | {dense_tps:.1f} | {mote_tps:.1f} "
            f"| {mote_tps / dense_tps:.2f} (x dense tokens/s) | |"
        )
        del model, dense_ffns, blocks
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def train_rows(shapes: benchlib.Shapes, device: torch.device, repeats: int, tokens: int) -> list[str]:
    dense = dense_ffn(torch.float32, shapes, trainable=True).to(device)
    mote = build(TRAIN, dense_ffn(torch.float32, shapes), 4, torch.float32).to(device)
    for p in mote.experts.parameters():
        p.requires_grad_(True)
    mote.router.weight.requires_grad_(True)
    x = torch.randn(1, tokens, shapes.hidden, device=device)

    def step(module: nn.Module) -> None:
        module.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            out = module(x)
        out.float().pow(2).mean().backward()

    got = timer(device)({"dense": lambda: step(dense), "mote": lambda: step(mote)}, max(1, repeats // 4))
    return [
        f"| training step (fwd+bwd, bf16 autocast) | {tokens} | {got['dense'] * 1e6:.1f} | {got['mote'] * 1e6:.1f} "
        f"| {got['mote'] / got['dense']:.2f} | |"
    ]


def main() -> None:
    parser = benchlib.arguments(__doc__, workdir=False, repeats=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    shapes = benchlib.TINY_LLAVA if args.tiny else benchlib.LLAVA_7B
    tokens = (1, 16) if args.tiny else TOKENS
    if args.tiny:
        args.repeats, args.new_tokens = 1, 4
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    started = time.perf_counter()
    lines = [
        f"device: {name}; kernel: {select_kernel(device).name}; torch {torch.__version__}; "
        f"FFN shapes hidden {shapes.hidden}, intermediate {shapes.intermediate}; best of {args.repeats}",
        "",
        "| what | tokens | dense (us) | MoTE (us) | MoTE / dense | ternary bandwidth on packed bytes |",
        "|---|---|---|---|---|---|",
    ]
    lines += matmul_rows(shapes, device, args.repeats, tokens)
    lines += layer_rows(shapes, device, args.repeats, tokens)
    lines += train_rows(shapes, device, args.repeats, 16 if args.tiny else 512)
    lines += decode_rows(device, args.repeats, args.tiny, args.new_tokens)
    lines += ["", f"measured in {time.perf_counter() - started:.0f} s"]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
