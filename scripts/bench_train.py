"""Benchmark: one MoE layer's training step (forward + backward) against the dense FFN's, on the CPU.

LLaVA-1.5-7B FFN shapes (hidden 4096, intermediate 11008), 512 tokens, 4 experts, top-1:

* dense: the LlamaMLP with every weight trainable, forward + backward (input and weight gradients);
* MoTE: the same FFN as the frozen shared expert + 4 latent ternary experts in train mode (STE) and
  the float32 router, forward + backward (input, router and expert gradients; the shared expert's
  weights get none), routing spread over the experts as a trained router spreads it.

Both in the same dtype (float32 by default: CPU training), measured side by side in one run,
interleaved, best of ``--repeats``. Target (issue 12): MoTE / dense <= 3x (stretch 2x).

    python scripts/bench_train.py [--tokens 512] [--dtype float32|bfloat16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from bench_moe_layer import best_of, build, dense_ffn  # noqa: E402

from mote_convert.modeling.bitlinear import TRAIN  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    dense = dense_ffn(dtype, trainable=True)
    frozen = dense_ffn(dtype)  # the same weights, as the shared expert
    mote = build(TRAIN, frozen, args.experts, dtype)
    for p in mote.experts.parameters():
        p.requires_grad_(True)
    mote.router.weight.requires_grad_(True)
    # a router that spreads the tokens evenly: each expert gets tokens/experts of them
    x = torch.randn(1, args.tokens, 4096, dtype=dtype)
    with torch.no_grad():
        mote.router.weight.zero_()
        for e in range(args.experts):
            mote.router.weight[e, e] = 1.0
        lanes = torch.arange(args.tokens) % args.experts
        x[0, torch.arange(args.tokens), lanes] = 50.0
    grad = torch.randn(1, args.tokens, 4096, dtype=dtype)

    def step(module: nn.Module) -> None:
        module.zero_grad(set_to_none=True)
        xi = x.detach().requires_grad_()
        module(xi).backward(grad)

    counts = torch.bincount(mote.router(x.reshape(-1, 4096)).argmax(-1), minlength=args.experts).tolist()
    best = best_of({"dense": lambda: step(dense), "mote": lambda: step(mote)}, args.repeats)
    with torch.no_grad():
        fwd = best_of({"dense": lambda: dense(x), "mote": lambda: mote(x)}, args.repeats)
    print(
        f"CPU, {torch.get_num_threads()} threads, {args.dtype}, hidden 4096, intermediate 11008, {args.tokens} tokens, "
        f"{args.experts} experts (tokens per expert {counts}), top-1"
    )
    print(f"{'':<28} {'dense ms':>9} {'MoTE ms':>9} {'ratio':>6}")
    print(
        f"{'forward (no grad)':<28} {fwd['dense'] * 1e3:>9.1f} {fwd['mote'] * 1e3:>9.1f} {fwd['mote'] / fwd['dense']:>6.2f}"
    )
    ratio = best["mote"] / best["dense"]
    print(f"{'forward + backward':<28} {best['dense'] * 1e3:>9.1f} {best['mote'] * 1e3:>9.1f} {ratio:>6.2f}")
    print(f"MoTE train step / dense train step: {ratio:.2f}x (issue 12 target <= 3x, stretch 2x)")


if __name__ == "__main__":
    main()
