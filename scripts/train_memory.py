"""Memory a stage-3 MoTE training run needs per GPU, by engine: computed from parameter counts
(not measured), for a LLaVA-1.5-style model. Activations come on top (gradient checkpointing keeps
them to about one decoder layer's worth per sequence).

    python scripts/train_memory.py [--hidden 4096 --intermediate 11008 --layers 32 --vocab 32064
                                    --experts 4 --gpus 8]

Per parameter: frozen weights (dense model, shared experts) bf16 = 2 bytes; trainable (routers,
latent experts) under DeepSpeed bf16: 2 (bf16 copy) + 4 (float32 master) + 8 (Adam moments) + 2
(bf16 gradient); under plain float32 training (one process, DDP): 4 + 4 (gradient) + 8 (Adam).
ZeRO-2 shards the master, moments and gradients; ZeRO-3 and FSDP2 also shard the weights.
"""

from __future__ import annotations

import benchlib


def counts(hidden: int, inter: int, layers: int, vocab: int, experts: int) -> tuple[int, int]:
    """(frozen, trainable) parameter counts of the MoTE model (a CLIP-L/14-336 tower + MLP projector)."""
    ffn = 3 * hidden * inter
    attn = 4 * hidden * hidden
    language = layers * (ffn + attn + 2 * hidden) + 2 * vocab * hidden + hidden
    vision = 303_507_456  # CLIP ViT-L/14-336's vision tower
    projector = 1024 * hidden + hidden + hidden * hidden + hidden
    trainable = layers * (experts * ffn + experts * hidden)  # latent experts + routers
    return language + vision + projector, trainable


def main() -> None:
    p = benchlib.arguments(__doc__, workdir=False)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=11008)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32064)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--gpus", type=int, default=8)
    a = p.parse_args()
    if a.tiny:
        t = benchlib.TINY_LLAVA
        a.hidden, a.intermediate, a.layers, a.vocab = t.hidden, t.intermediate, t.layers, t.vocab
    frozen, trainable = counts(a.hidden, a.intermediate, a.layers, a.vocab, a.experts)
    n = a.gpus
    rows = {
        "one process or DDP (float32 experts, AdamW), per GPU": frozen * 2 + trainable * 16,
        f"ZeRO-2 bf16, per GPU ({n} GPUs)": frozen * 2 + trainable * 2 + trainable * 14 / n,
        f"ZeRO-3 bf16, per GPU ({n} GPUs)": (frozen * 2 + trainable * 16) / n,
        f"FSDP2 bf16 policy, per GPU ({n} GPUs)": (frozen * 2 + trainable * 16) / n,
    }
    print(
        f"frozen {frozen / 1e9:.2f} B parameters (bf16), trainable {trainable / 1e9:.2f} B (routers + "
        f"{a.experts} latent experts x {a.layers} layers)"
    )
    print("| run | weights + gradients + optimizer |")
    print("|---|---:|")
    for name, nbytes in rows.items():
        print(f"| {name} | {nbytes / benchlib.GiB:.1f} GiB |")


if __name__ == "__main__":
    main()
