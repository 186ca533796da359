"""Benchmark: a Qwen2-0.5B-shaped model in llama.cpp, MoTE exports against the dense model's.

The checkpoints are ``benchlib.qwen_checkpoints`` (Qwen2-0.5B shapes: hidden 896, intermediate 4864,
24 layers, 14 heads, vocab 151936, bf16, random weights; and its up-cycled MoTE output, 4 packed
experts on every layer), given a small Llama-style tokenizer (llama.cpp pads the vocabulary). Files:

* dense bf16 (``mote-convert export gguf`` of the dense checkpoint) and dense Q4_0 (that file through
  llama.cpp's own quantizer, ``llama_model_quantize``);
* MoTE TQ2_0 (+ shared experts as stored, bf16) and MoTE TQ1_0 + Q4_0 shared experts.

Qwen2-0.5B's hidden size, 896, is not a multiple of 256: the experts' gate and up projections (rows
of 896 weights) cannot be TQ blocks and are written as Q8_0 (exactly ternary, 8.5 bits per weight);
only down_proj (rows of 4864) is TQ2_0 / TQ1_0. The sizes say what that costs.

Decode speed: greedy decoding of ``--new-tokens`` tokens after a 16-token prompt, llama.cpp with 2
threads, the four files interleaved, best of ``--repeats``; beside them, this project's own decoding
(``load_model(..., mode="packed")`` + ``generate``) and the dense model's in transformers.

    python scripts/bench_gguf.py --workdir /tmp/mote-bench
"""

from __future__ import annotations

import os
import time

import benchlib
from benchlib import MiB


def llama_decode(llm, prompt: list[int], n: int) -> float:  # noqa: ANN001
    """Tokens per second of greedy decoding (the prompt's evaluation not counted)."""
    llm.reset()
    produced = 0
    t0 = None
    for _ in llm.generate(prompt, temp=0.0, reset=True):
        if t0 is None:
            t0 = time.perf_counter()  # the first token came with the prompt's evaluation
            continue
        produced += 1
        if produced == n:
            break
    return n / (time.perf_counter() - t0)


def hf_decode(model, n: int) -> float:  # noqa: ANN001
    import torch

    prompt = torch.arange(100, 116)[None]
    kwargs = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False}
    with torch.no_grad():
        model.generate(prompt, max_new_tokens=2, min_new_tokens=2, do_sample=False)
        t0 = time.perf_counter()
        model.generate(prompt, **kwargs)
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = benchlib.arguments(__doc__, repeats=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.tiny:
        args.new_tokens, args.repeats = 4, 1
    import llama_cpp
    import torch

    import mote_convert
    from mote_convert.export import export_gguf
    from mote_convert.export.sizes import checkpoint_gguf_sizes
    from mote_convert.tiny import tiny_tokenizer

    torch.set_num_threads(2)
    dense, mote = benchlib.qwen_checkpoints(args.workdir, args.tiny)
    for root in (dense, mote):
        if not (root / "tokenizer.json").exists():
            tiny_tokenizer().save_pretrained(root)
    files = {
        "dense bf16": args.workdir / "qwen-dense-bf16.gguf",
        "dense Q4_0": args.workdir / "qwen-dense-q4_0.gguf",
        "MoTE TQ2_0 + bf16 shared": args.workdir / "qwen-mote-tq2_0.gguf",
        "MoTE TQ1_0 + Q4_0 shared": args.workdir / "qwen-mote-tq1_0-q4_0.gguf",
    }
    t0 = time.perf_counter()
    export_gguf(dense, files["dense bf16"], overwrite=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(files["dense bf16"]).encode(), str(files["dense Q4_0"]).encode(), params)
    assert rc == 0, rc
    export_gguf(mote, files["MoTE TQ2_0 + bf16 shared"], overwrite=True)
    result = export_gguf(
        mote, files["MoTE TQ1_0 + Q4_0 shared"], expert_type="tq1_0", shared_type="q4_0", overwrite=True
    )
    print(f"exports and quantization: {time.perf_counter() - t0:.1f}s")
    for note in result.notes[:1]:
        print(f"note: {note} (and the same for every layer's gate/up)")
    computed = checkpoint_gguf_sizes(mote_convert.inspect_checkpoint(mote), mote)

    models = {
        name: llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False)
        for name, path in files.items()
    }
    prompt = list(range(100, 116))
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):  # interleaved: every file sees the same machine state
        for name, llm in models.items():
            speeds[name].append(llama_decode(llm, prompt, args.new_tokens))
    del models
    hf = {}
    hf["transformers dense bf16"] = max(hf_decode(benchlib.dense_model(dense), args.new_tokens) for _ in range(2))
    hf["load_model packed (MoTE)"] = max(
        hf_decode(mote_convert.load_model(mote, mode="packed"), args.new_tokens) for _ in range(2)
    )

    base = max(speeds["dense bf16"])
    print(
        f"\nllama.cpp {llama_cpp.__version__}, 2 threads, greedy decode of {args.new_tokens} tokens, best of {args.repeats}"
    )
    print(f"{'file':<28} {'size':>10} {'inspect says':>13} {'tokens/s':>9} {'x dense bf16':>13}")
    for name, path in files.items():
        size = os.path.getsize(path)
        said = f"{computed[name] / MiB:>12.1f}M" if name in computed else ""
        best = max(speeds[name])
        print(f"{name:<28} {size / MiB:>9.1f}M {said:>13} {best:>9.1f} {best / base:>13.2f}")
    for name, tps in hf.items():
        print(f"{name:<28} {'':>10} {'':>13} {tps:>9.1f} {tps / base:>13.2f}")


if __name__ == "__main__":
    main()
