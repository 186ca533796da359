"""Run one vLLM engine in its own process (``python engine.py MODEL DTYPE``, prompts as JSON on stdin)
and print, as JSON, each prompt's greedy continuation and the log-probability of each prompt token
(or, given one prompt with an image, its greedy answer).
A process per engine: vLLM's state (its distributed group, its compiled graphs) is per process."""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    model, dtype = sys.argv[1], sys.argv[2]
    prompts = json.load(sys.stdin)
    # on the CPU this is the share of memory reserved, and the KV cache is VLLM_CPU_KVCACHE_SPACE GiB
    llm = LLM(model=model, dtype=dtype, enforce_eager=True, max_model_len=256, seed=0, gpu_memory_utilization=0.3)
    if isinstance(prompts, dict):  # {"prompt": chat text with the image token, "image": a file}: greedy answer
        from PIL import Image

        request = {"prompt": prompts["prompt"], "multi_modal_data": {"image": Image.open(prompts["image"])}}
        params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        output = llm.generate([request], params, use_tqdm=False)[0]
        print("RESULT " + json.dumps({"tokens": list(output.outputs[0].token_ids)}))
        return
    params = SamplingParams(max_tokens=8, temperature=0.0, prompt_logprobs=0, logprobs=0)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    result = [
        {
            "tokens": list(o.outputs[0].token_ids),
            "prompt_logprobs": [
                None if d is None else d[token].logprob for d, token in zip(o.prompt_logprobs, prompt, strict=True)
            ],
        }
        for o, prompt in zip(outputs, prompts, strict=True)
    ]
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
