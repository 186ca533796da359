"""MoTE served by vLLM (the ``vllm`` group: vLLM's CPU build, installed by scripts/test_vllm.sh).

The oracle is ``load_model(mode="packed")``: vLLM serving the export of a tiny MoTE model whose
experts differ and whose router picks among them decisively gives its greedy tokens and its float32
log-probabilities within 1e-3 over every prompt position; vLLM serving the dense model, the experts
left out, must not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mote_convert
from mote_convert.export.vllm import export_vllm
from tests.serving.tiny import build_mote

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm
ENGINE = Path(__file__).with_name("engine.py")
PROMPTS = [list(range(10, 40)), list(range(100, 124)) + [7, 9], [1] + list(range(200, 230))]
LOGPROB_TOLERANCE = 1e-3


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "HF_HUB_OFFLINE": "1",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }


def serve_offline(model: Path, dtype: str = "float32") -> list[dict]:
    """vLLM's ``LLM`` on ``model`` in a process of its own: greedy tokens and prompt log-probabilities."""
    proc = subprocess.run(
        [sys.executable, str(ENGINE), str(model), dtype],
        input=json.dumps(PROMPTS),
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def reference(model_dir: Path) -> list[dict]:
    """The same from ``load_model(mode="packed")`` in float32 (the dense model: from_pretrained)."""
    config = json.loads((model_dir / "config.json").read_text())
    if "mote" in config:
        model = mote_convert.load_model(model_dir, mode="packed", dtype=torch.float32)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = []
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = torch.tensor([prompt])
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            generated = model.generate(ids, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(ids))
            out.append(
                {
                    "tokens": generated[0, len(prompt) :].tolist(),
                    "prompt_logprobs": [None] + [logprobs[i, t].item() for i, t in enumerate(prompt[1:])],
                }
            )
    return out


def _logprob_errors(got: list[dict], want: list[dict]) -> list[float]:
    return [
        abs(a - b)
        for g, w in zip(got, want, strict=True)
        for a, b in zip(g["prompt_logprobs"], w["prompt_logprobs"], strict=True)
        if a is not None
    ]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm")
    mote = build_mote(root)
    return {"dense": root / "dense", "mote": mote, "served": export_vllm(mote, root / "served").output}


def test_vllm_serves_the_packed_model(tiny: dict[str, Path]) -> None:
    want = reference(tiny["mote"])
    got = serve_offline(tiny["served"])
    errors = _logprob_errors(got, want)
    assert len(errors) >= 64
    assert max(errors) < LOGPROB_TOLERANCE, max(errors)
    assert [g["tokens"] for g in got] == [w["tokens"] for w in want]
    # the same check must fail for the dense model served the same way: the experts matter
    dense = serve_offline(tiny["dense"])
    assert max(_logprob_errors(dense, want)) > 100 * LOGPROB_TOLERANCE
