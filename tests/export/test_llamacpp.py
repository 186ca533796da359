"""The exported GGUF in llama.cpp itself (llama-cpp-python): its logits against this project's own
packed model on the same tokens, and an image prompt through llama.cpp's multimodal library."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch

import mote_convert
from mote_convert.export import export_gguf
from mote_convert.tiny import TINY_VOCAB_WITH_PROCESSOR, build_tiny_llava, build_tiny_processor

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = pytest.mark.llamacpp
SEQ, SEQS = 32, 4


def _train_briefly(path: Path, out: Path) -> Path:
    """Teach the tiny dense model to continue runs of consecutive ids (40 AdamW steps), so that its
    next-token predictions are confident: top-1 agreement then measures the runtime, not ties."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        starts = torch.randint(3, 300 - SEQ, (8, 1), generator=g)
        ids = starts + torch.arange(SEQ)
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.to(torch.bfloat16).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llamacpp")
    random = build_tiny_llava(
        root / "random", hidden_size=256, intermediate_size=512, vocab_size=TINY_VOCAB_WITH_PROCESSOR
    )
    dense = _train_briefly(random, root / "dense")
    build_tiny_processor(dense)
    mote_convert.upcycle(dense, root / "mote")
    out = {"root": root, "mote": root / "mote"}
    for kind in ("tq2_0", "tq1_0"):
        out[kind] = root / f"mote-{kind}.gguf"
        export_gguf(root / "mote", out[kind], expert_type=kind, mmproj=root / f"mmproj-{kind}.gguf")
    return out


def _tokens() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    seqs = []
    for _ in range(SEQS):
        start = int(torch.randint(3, 300 - SEQ, (1,), generator=g))
        seq = list(range(start, start + SEQ))
        seq[SEQ // 2] = int(torch.randint(3, 300, (1,), generator=g))  # one surprise in each
        seqs.append(seq)
    return seqs


@pytest.mark.parametrize("kind", ["tq2_0", "tq1_0"])
def test_llamacpp_logits_agree_with_the_packed_model(exported: dict[str, Path], kind: str) -> None:
    model = mote_convert.load_model(exported["mote"], mode="packed")
    llm = llama_cpp.Llama(model_path=str(exported[kind]), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    agree, cosines = [], []
    for seq in _tokens():
        llm.reset()
        llm.eval(seq)
        theirs = torch.tensor(np.array(llm.scores[:SEQ]), dtype=torch.float32)
        with torch.no_grad():
            ours = model(input_ids=torch.tensor([seq])).logits[0].float()
        agree += (theirs.argmax(-1) == ours.argmax(-1)).tolist()
        cosines += torch.nn.functional.cosine_similarity(theirs, ours, dim=-1).tolist()
    assert len(agree) >= 64
    top1 = sum(agree) / len(agree)
    assert top1 >= 0.95, top1
    assert min(cosines) >= 0.999, min(cosines)  # tighter than the 0.99: the mapping is exact


def test_image_prompt_runs_end_to_end(exported: dict[str, Path]) -> None:
    from llama_cpp.llama_chat_format import Llava15ChatHandler
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), (220, 30, 30), dtype=np.uint8)).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    handler = Llava15ChatHandler(clip_model_path=str(exported["root"] / "mmproj-tq2_0.gguf"), verbose=False)
    llm = llama_cpp.Llama(
        model_path=str(exported["tq2_0"]), chat_handler=handler, n_ctx=256, verbose=False, n_threads=2
    )
    reply = llm.create_chat_completion(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": uri}},
                    {"type": "text", "text": "What color is this?"},
                ],
            }
        ],
        max_tokens=4,
        temperature=0,
    )
    # the image went in as the projector's 16 embeddings (4 x 4 patches of 16 x 16 pixels), then text came out
    assert reply["usage"]["prompt_tokens"] > 16 and reply["usage"]["completion_tokens"] >= 1


def test_llamacpp_tokenizes_as_the_hf_tokenizer_does(exported: dict[str, Path]) -> None:
    """The exported vocabulary in llama.cpp's own tokenizer: the same ids as transformers' for plain,
    spaced, punctuated and non-ASCII (byte-fallback) text."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported["mote"])
    llm = llama_cpp.Llama(model_path=str(exported["tq2_0"]), vocab_only=True, verbose=False)
    for text in ("What color is this?", "hello  world, again!", "red\ngreen\tblue", "héllo ☃ 颜色"):
        expected = tokenizer(text)["input_ids"]
        assert (
            llm.tokenize(text.encode("utf-8"), add_bos=expected[:1] == [tokenizer.bos_token_id], special=False)
            == expected
        ), text
