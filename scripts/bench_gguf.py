"""Benchmark: real models' shapes in llama.cpp, MoTE exports against the dense model's.

The checkpoints are ``benchlib.causal_lm_checkpoints`` (random bf16 weights, tied embeddings, and
their up-cycled MoTE outputs with 4 packed experts on every layer), given a small Llama-style
tokenizer (llama.cpp pads the vocabulary). Three shape sets (``--shapes``):

* ``qwen2-0.5b`` (hidden 896, intermediate 4864, 24 layers, vocab 151936): rows of 896 weights are not whole
  256-weight blocks, so the experts' gate and up projections are the exact Q4_0 fallback and only
  down_proj is TQ. Files: dense bf16 (``mote-convert export gguf``), dense Q4_0 (that file through
  llama.cpp's own quantizer, ``llama_model_quantize``), MoTE TQ2_0 (+ shared experts as stored, bf16)
  and MoTE TQ1_0 + Q4_0 shared experts; beside them, this project's own decoding in transformers.
* ``qwen2.5-1.5b`` (hidden 1536, intermediate 8960, 28 layers, vocab 151936) and ``llama3.2-1b``
  (a Llama: hidden 2048, intermediate 8192, 16 layers, vocab 128256; without Llama 3.1's RoPE
  scaling, which the MoTE export refuses and a decode step does not notice):
  whole blocks, every expert TQ. Files:
  dense bf16, dense Q4_0 (llama.cpp's quantizer), and MoTE TQ2_0 / TQ1_0 experts with everything else
  quantized by llama.cpp at Q4_0 (``export gguf --quantize q4_0``): a decode step reads the dense Q4_0
  model's bytes plus one ternary expert per layer. The size check: the MoTE file less its experts'
  bytes (routers included) against the dense Q4_0 file.

Decode speed: greedy decoding of ``--new-tokens`` tokens after a 16-token prompt, llama.cpp with 2
threads (``--threads``), the files interleaved, best of ``--repeats``.

    python scripts/bench_gguf.py --workdir /tmp/mote-bench
    python scripts/bench_gguf.py --workdir /tmp/mote-bench --shapes qwen2.5-1.5b
    python scripts/bench_gguf.py --workdir /tmp/mote-bench --shapes llama3.2-1b --threads 1
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


def expert_bytes(path) -> int:  # noqa: ANN001
    """Bytes of a GGUF file's routed experts and their routers (``ffn_gate_inp``, float32)."""
    import gguf

    return sum(int(t.n_bytes) for t in gguf.GGUFReader(path).tensors if "_exps." in t.name or "_gate_inp." in t.name)


def main() -> None:
    parser = benchlib.arguments(__doc__, repeats=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--shapes", choices=sorted(benchlib.CAUSAL_LM_SHAPES), default="qwen2-0.5b")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp's threads")
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
    whole_blocks = args.shapes != "qwen2-0.5b"
    dense, mote = benchlib.causal_lm_checkpoints(args.workdir, args.tiny, args.shapes)
    for root in (dense, mote):
        if not (root / "tokenizer.json").exists():
            tiny_tokenizer().save_pretrained(root)
    stem = args.workdir / dense.name
    files = {
        "dense bf16": stem.with_name(f"{stem.name}-bf16.gguf"),
        "dense Q4_0": stem.with_name(f"{stem.name}-q4_0.gguf"),
    }
    if whole_blocks:
        files["MoTE TQ2_0 + Q4_0 rest"] = stem.with_name(f"{stem.name}-mote-tq2_0-q4_0.gguf")
        files["MoTE TQ1_0 + Q4_0 rest"] = stem.with_name(f"{stem.name}-mote-tq1_0-q4_0.gguf")
    else:
        files["MoTE TQ2_0 + bf16 shared"] = stem.with_name(f"{stem.name}-mote-tq2_0.gguf")
        files["MoTE TQ1_0 + Q4_0 shared"] = stem.with_name(f"{stem.name}-mote-tq1_0-q4_0.gguf")
    t0 = time.perf_counter()
    export_gguf(dense, files["dense bf16"], overwrite=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(files["dense bf16"]).encode(), str(files["dense Q4_0"]).encode(), params)
    assert rc == 0, rc
    notes: tuple[str, ...] = ()
    if whole_blocks:
        for kind in ("tq2_0", "tq1_0"):
            name = f"MoTE {kind.upper()} + Q4_0 rest"
            export_gguf(mote, files[name], expert_type=kind, quantize="q4_0", overwrite=True)
    else:
        export_gguf(mote, files["MoTE TQ2_0 + bf16 shared"], overwrite=True)
        notes = export_gguf(
            mote, files["MoTE TQ1_0 + Q4_0 shared"], expert_type="tq1_0", shared_type="q4_0", overwrite=True
        ).notes
    print(f"exports and quantization: {time.perf_counter() - t0:.1f}s")
    for note in notes[:1]:
        print(f"note: {note} (and the same for every layer's gate/up)")
    computed = {} if whole_blocks else checkpoint_gguf_sizes(mote_convert.inspect_checkpoint(mote), mote)

    models = {
        name: llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=args.threads, verbose=False)
        for name, path in files.items()
    }
    prompt = list(range(100, 116))
    speeds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):  # interleaved: every file sees the same machine state
        for name, llm in models.items():
            speeds[name].append(llama_decode(llm, prompt, args.new_tokens))
    del models
    hf = {}
    if not whole_blocks:
        hf["transformers dense bf16"] = max(hf_decode(benchlib.dense_model(dense), args.new_tokens) for _ in range(2))
        hf["load_model packed (MoTE)"] = max(
            hf_decode(mote_convert.load_model(mote, mode="packed"), args.new_tokens) for _ in range(2)
        )

    base_name = "dense Q4_0" if whole_blocks else "dense bf16"
    base = max(speeds[base_name])
    print(
        f"\nllama.cpp {llama_cpp.__version__}, {args.shapes if not args.tiny else 'tiny'} shapes, {args.threads} thread(s), "
        f"greedy decode of {args.new_tokens} tokens, best of {args.repeats}"
    )
    ratio = f"x {base_name}"
    print(f"{'file':<28} {'size':>10} {'inspect says':>13} {'tokens/s':>9} {ratio:>13}")
    for name, path in files.items():
        size = os.path.getsize(path)
        said = f"{computed[name] / MiB:>12.1f}M" if name in computed else ""
        best = max(speeds[name])
        print(f"{name:<28} {size / MiB:>9.1f}M {said:>13} {best:>9.1f} {best / base:>13.2f}")
    for name, tps in hf.items():
        print(f"{name:<28} {'':>10} {'':>13} {tps:>9.1f} {tps / base:>13.2f}")
    if whole_blocks:
        dense_q4 = os.path.getsize(files["dense Q4_0"])
        for name, path in files.items():
            if name.startswith("MoTE"):
                experts = expert_bytes(path)
                rest = os.path.getsize(path) - experts
                print(
                    f"{name}: file less its experts and routers ({experts / MiB:.1f} MiB) = {rest / MiB:.3f} MiB; "
                    f"dense Q4_0 file = {dense_q4 / MiB:.3f} MiB; difference {(rest - dense_q4) / 1024:+.1f} KiB "
                    "(the extra tensors' header entries and keys)"
                )


if __name__ == "__main__":
    main()
