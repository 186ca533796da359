"""``mote-convert generate``: the model's own greedy tokens, in its chat template, streamed.

The oracle is transformers itself: the chat template rendered to text by the processor, tokenized by
the processor, and ``generate`` of the model ``load_model`` returns (or of the dense model's class).
The MoTE checkpoint has experts that matter, so a dense fallback would answer differently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import mote_convert
from mote_convert.cli import app
from mote_convert.tiny import build_tiny_llava
from tests.helpers import assert_one_line_error, hub_cache, vlm_with_experts_that_matter

runner = CliRunner()
PROMPT = "What color is this?"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generate")
    image = root / "red.png"
    Image.new("RGB", (16, 16), (220, 30, 30)).save(image)
    return {**vlm_with_experts_that_matter(root), "image": image}


def oracle(model_dir: Path, image: Path | None, max_new_tokens: int) -> list[int]:
    """Greedy tokens by hand: the template rendered to text, then the processor (as training encodes
    a conversation), then generate."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    processor = AutoProcessor.from_pretrained(model_dir)
    content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": PROMPT}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    images = [Image.open(image).convert("RGB")] if image else None
    inputs = processor(
        text=[text], images=images, return_tensors="pt"
    )  # the template writes no BOS: the tokenizer does
    if "mote" in json.loads((model_dir / "config.json").read_text()):
        model = mote_convert.load_model(model_dir, mode="packed")
    else:
        model = LlavaForConditionalGeneration.from_pretrained(model_dir)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["generate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("with_image", [True, False], ids=["image", "text"])
def test_generate_gives_load_models_greedy_tokens(models: dict[str, Path], with_image: bool) -> None:
    image = models["image"] if with_image else None
    extra = ["--image", str(image)] if image else []
    got = run_json(str(models["mote"]), "--prompt", PROMPT, "--max-new-tokens", "12", *extra)
    want = oracle(models["mote"], image, 12)
    assert got["kind"] == "mote" and got["tokens"] == want and len(want) == 12
    dense = run_json(str(models["dense"]), "--prompt", PROMPT, "--max-new-tokens", "12", *extra)
    assert dense["kind"] == "dense" and dense["tokens"] == oracle(models["dense"], image, 12)
    assert dense["tokens"] != got["tokens"]  # the experts answer: not the dense fallback


def test_streamed_text_is_the_tokens_text(models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    args = [str(models["mote"]), "--prompt", PROMPT, "--image", str(models["image"]), "--max-new-tokens", "10"]
    tokens = run_json(*args)["tokens"]
    result = runner.invoke(app, ["generate", *args])
    assert result.exit_code == 0, result.output
    text = AutoTokenizer.from_pretrained(models["mote"]).decode(tokens, skip_special_tokens=True)
    assert result.stdout.rstrip("\n") == text
    assert "10 new tokens" in result.stderr and "mote model" in result.stderr


def test_generate_takes_a_hub_repo_id(models: dict[str, Path], offline_cache: Path) -> None:
    hub_cache(offline_cache, "org/tiny-mote", models["mote"])
    got = run_json("org/tiny-mote", "--prompt", PROMPT, "--max-new-tokens", "6")
    assert got["tokens"] == run_json(str(models["mote"]), "--prompt", PROMPT, "--max-new-tokens", "6")["tokens"]


def test_generate_errors_are_one_line(models: dict[str, Path], tmp_path: Path) -> None:
    mote = str(models["mote"])
    assert_one_line_error(runner.invoke(app, ["generate", mote, "-p", "x", "--image", "nope.png"]), 3, "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["generate", mote, "-p", "x", "--image", str(tmp_path / "bad.png")])
    assert_one_line_error(result, 14, "bad.png")
    assert_one_line_error(runner.invoke(app, ["generate", mote, "-p", "x", "--max-new-tokens", "0"]), 2)
    assert_one_line_error(runner.invoke(app, ["generate", str(tmp_path / "missing"), "-p", "x"]), 3)
    bare = build_tiny_llava(tmp_path / "no-processor")
    assert_one_line_error(runner.invoke(app, ["generate", str(bare), "-p", "x"]), 3, "tokenizer")
