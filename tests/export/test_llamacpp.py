"""The exported GGUF in llama.cpp itself (llama-cpp-python): its logits against this project's own
packed model on the same tokens, and an image prompt through llama.cpp's multimodal library."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import mote_convert
from mote_convert.errors import UnsupportedArchitectureError
from mote_convert.export import export_gguf
from mote_convert.tiny import (
    BYTE_LEVEL_STYLES,
    TINY_VOCAB_WITH_PROCESSOR,
    build_tiny_llava,
    build_tiny_processor,
    tiny_byte_level_tokenizer,
    tiny_tokenizer,
)
from tests.helpers import distinct_experts

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


def _trained_llava(root: Path, *, tokenizer: str = "llama", **text: Any) -> Path:
    """A tiny LLaVA (hidden 256; ``text``: build_tiny_llava's text options) briefly trained, with its
    processor (``tokenizer``: the tokenizer style): ``root / "dense"``."""
    random = build_tiny_llava(
        root / "random", hidden_size=256, intermediate_size=512, vocab_size=TINY_VOCAB_WITH_PROCESSOR, **text
    )
    return build_tiny_processor(_train_briefly(random, root / "dense"), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llamacpp")
    dense = _trained_llava(root)
    mote_convert.upcycle(dense, root / "mote")
    out = {"root": root, "mote": root / "mote"}
    for kind in ("tq2_0", "tq1_0"):
        out[kind] = root / f"mote-{kind}.gguf"
        export_gguf(root / "mote", out[kind], expert_type=kind, mmproj=root / f"mmproj-{kind}.gguf")
    return out


# family -> (text model type, tokenizer style): each text architecture the export maps, with the
# tokenizer kind its real models ship (Llama 2 / Mistral: byte-fallback; Llama 3, Qwen2: byte-level)
# Llama 3.1's RoPE scaling, its original context shortened so that it rescales most frequencies here
# (llama.cpp reads it as rope_freqs only in its dense llama architecture)
LLAMA31_ROPE = {
    "rope_parameters": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
}
FAMILIES = {
    "llama": ("llama", "llama"),
    "llama3": ("llama", "llama-bpe"),
    "mistral": ("mistral", "llama"),
    "qwen2": ("qwen2", "qwen2"),
    "qwen3": ("qwen3", "qwen2"),
}


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Per family, built on first use: a briefly trained dense model and its MoTE checkpoint whose
    experts differ, route decisively and weigh enough that a dense-only export gives other logits;
    both exported."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, dict[str, Path]] = {}

    def get(family: str) -> dict[str, Path]:
        if family not in built:
            text, style = FAMILIES[family]
            d = root / family
            dense = _trained_llava(d, tokenizer=style, text_model_type=text)
            latent = mote_convert.upcycle(dense, d / "latent", latent=True).output
            distinct = distinct_experts(latent, d / "distinct", router_scale=40.0, expert_scale=4.0)
            mote = mote_convert.pack(distinct, d / "mote").output
            export_gguf(mote, d / "mote.gguf")
            export_gguf(dense, d / "dense.gguf")
            built[family] = {"mote": mote, "mote.gguf": d / "mote.gguf", "dense.gguf": d / "dense.gguf"}
        return built[family]

    return get


def _agreement(gguf: Path, model: Any) -> tuple[float, float, int, float]:
    """llama.cpp's logits of ``gguf`` against ``model``'s on the same tokens: top-1 agreement, mean
    cosine, the number of positions and the lowest cosine."""
    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=64, logits_all=True, verbose=False, n_threads=2)
    agree, cosines = [], []
    for seq in _tokens():
        llm.reset()
        llm.eval(seq)
        theirs = torch.tensor(np.array(llm.scores[:SEQ]), dtype=torch.float32)
        with torch.no_grad():
            ours = model(input_ids=torch.tensor([seq])).logits[0].float()
        agree += (theirs.argmax(-1) == ours.argmax(-1)).tolist()
        cosines += torch.nn.functional.cosine_similarity(theirs, ours, dim=-1).tolist()
    llm.close()
    return sum(agree) / len(agree), sum(cosines) / len(cosines), len(agree), min(cosines)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_computes_in_llamacpp_as_the_packed_model(families: Any, family: str) -> None:
    """Every text architecture the export maps, in llama.cpp against load_model(mode="packed"); the
    dense model's export, the experts left out, must not pass the same check."""
    built = families(family)
    model = mote_convert.load_model(built["mote"], mode="packed")
    top1, cosine, positions, _ = _agreement(built["mote.gguf"], model)
    assert positions >= 64
    assert top1 >= 0.95 and cosine >= 0.99, (family, top1, cosine)
    dense_top1, dense_cosine, _, _ = _agreement(built["dense.gguf"], model)
    assert dense_top1 < 0.95 or dense_cosine < 0.99, (family, dense_top1, dense_cosine)


# what llama.cpp's tokenizer must split as transformers does: scripts, digits, contractions, spaces
MULTILINGUAL = (
    "What color is this?",
    "hello  world, again!",
    "red\ngreen\tblue",
    "héllo ☃ 颜色 12345 it's",
    "Привет, мир! 🎨 x=3.14",
    "Numbers 1234567 and 2026-12-05;\n\n  def f(x):\n    return x ** 2",
    "I'LL SEE, you've 'em",
    "مرحبا بالعالم. नमस्ते 안녕하세요 こんにちは",
)


@pytest.mark.parametrize("style", ["llama", *BYTE_LEVEL_STYLES])
def test_llamacpp_tokenizes_multilingual_text_as_transformers_does(
    exported: dict[str, Path], tmp_path: Path, style: str
) -> None:
    """Each tokenizer kind, the byte-level ones under each pre-tokenizer llama.cpp implements: the
    exported vocabulary in llama.cpp's own tokenizer gives transformers' ids, BOS included where the
    tokenizer adds one, and decodes them back to the text."""
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "mote"
    shutil.copytree(exported["mote"], model)
    tokenizer = tiny_tokenizer() if style == "llama" else tiny_byte_level_tokenizer(style)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (model / name).unlink(missing_ok=True)
    tokenizer.save_pretrained(model)
    export_gguf(model, tmp_path / "m.gguf")
    tokenizer = AutoTokenizer.from_pretrained(model)
    llm = llama_cpp.Llama(model_path=str(tmp_path / "m.gguf"), vocab_only=True, verbose=False)
    for text in MULTILINGUAL:
        expected = tokenizer(text)["input_ids"]
        bos = expected[:1] == [tokenizer.bos_token_id]
        assert bos == (style in ("llama", "llama-bpe")), (style, expected[:1])
        got = llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False)
        assert got == expected, (style, text)
        decoded = llm.detokenize(got[int(bos) :]).decode("utf-8")  # sentencepiece-style keeps its prefix space
        assert decoded == (" " + text if style == "llama" else text), (style, text)


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
    top1, _, positions, lowest = _agreement(exported[kind], model)
    assert positions >= 64
    assert top1 >= 0.95, top1
    assert lowest >= 0.999, lowest  # tighter than the 0.99: the mapping is exact


def _image_prompt(gguf: Path, mmproj: Path, rgb: np.ndarray, question: str) -> dict[str, int]:
    """A chat completion in llama.cpp with ``rgb`` as a PNG and ``question``: its token usage."""
    from llama_cpp.llama_chat_format import Llava15ChatHandler
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    handler = Llava15ChatHandler(clip_model_path=str(mmproj), verbose=False)
    llm = llama_cpp.Llama(model_path=str(gguf), chat_handler=handler, n_ctx=512, verbose=False, n_threads=2)
    content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": question}]
    reply = llm.create_chat_completion(messages=[{"role": "user", "content": content}], max_tokens=4, temperature=0)
    return reply["usage"]


def test_image_prompt_runs_end_to_end(exported: dict[str, Path]) -> None:
    red = np.full((16, 16, 3), (220, 30, 30), dtype=np.uint8)
    usage = _image_prompt(exported["tq2_0"], exported["root"] / "mmproj-tq2_0.gguf", red, "What color is this?")
    # the image went in as the projector's 16 embeddings (4 x 4 patches of 16 x 16 pixels), then text came out
    assert usage["prompt_tokens"] > 16 and usage["completion_tokens"] >= 1


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


def _types(path: Path) -> dict[str, str]:
    import gguf

    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}


def _data(path: Path) -> dict[str, bytes]:
    import gguf

    return {t.name: bytes(t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("level", ["q4_0", "q4_k_m", "q8_0"])
def test_quantize_gives_the_rest_llamacpps_types_for_the_dense_model_and_keeps_the_experts(
    families: Any, tmp_path: Path, level: str
) -> None:
    """--quantize LEVEL: every tensor but the routed experts has the type llama.cpp's own quantizer
    gives the dense model's file at LEVEL (the dense FFN's for the shared expert), the experts are the
    unquantized export's bytes, and the file still computes the packed model's predictions."""
    built = families("qwen2")
    out = tmp_path / "m.gguf"
    result = export_gguf(built["mote"], out, quantize=level)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{level.upper()}")
    dense = tmp_path / "dense.gguf"
    assert llama_cpp.llama_model_quantize(str(built["dense.gguf"]).encode(), str(dense).encode(), params) == 0
    ours, theirs = _types(out), _types(dense)
    experts = {n for n in ours if "_exps." in n}
    assert experts and all(ours[n] == "TQ2_0" for n in experts)
    for name, kind in ours.items():
        if name in experts or "ffn_gate_inp" in name:
            continue
        assert kind == theirs[name.replace("_shexp", "")], (name, kind)
    assert set(theirs) - {n.replace("_shexp", "") for n in ours} == set()
    unquantized = _data(built["mote.gguf"])
    assert all(_data(out)[n] == unquantized[n] for n in experts)  # kept bit for bit
    assert result.files[0].types == {k.lower(): v for k, v in _count(ours).items()}
    assert any("quantized by llama.cpp" in note for note in result.notes)
    top1, cosine, _, _ = _agreement(out, mote_convert.load_model(built["mote"], mode="packed"))
    assert top1 >= 0.8 and cosine >= 0.95, (top1, cosine)


def _count(types: dict[str, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind in types.values():
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def test_llamacpp_quantizer_refuses_to_requantize_the_experts_without_overrides(families: Any, tmp_path: Path) -> None:
    """What docs/deploy.md says of llama-quantize run on a MoTE file as on a dense one."""
    from mote_convert.export.quantize import _captured_log

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    with _captured_log(llama_cpp) as log:
        rc = llama_cpp.llama_model_quantize(
            str(families("qwen2")["mote.gguf"]).encode(), str(tmp_path / "x.gguf").encode(), params
        )
    assert rc != 0 and "requantizing from type tq2_0 is disabled" in "".join(log)


def _idefics3_tokenizer() -> Any:
    """SmolVLM's kind of tokenizer (byte-level, SmolLM's pre-tokenizer) with the tokens llama.cpp's
    mtmd puts around Idefics3 images ("\\n\\n", <fake_token_around_image>, <global-img>, <row_r_col_c>)."""
    tokenizer = tiny_byte_level_tokenizer("smollm")
    tokenizer.add_tokens(["\n\n"])
    specials = ["<fake_token_around_image>", "<global-img>"] + [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
    tokenizer.add_tokens(specials, special_tokens=True)
    return tokenizer


def _build_vision(family: str, root: Path) -> tuple[Path, str]:
    """A tiny dense model of a vision family (hidden 256 text, tokenizer beside it) and its image size."""
    import transformers

    if family == "llava":
        dense = build_tiny_llava(
            root / "dense", hidden_size=256, intermediate_size=512, vocab_size=TINY_VOCAB_WITH_PROCESSOR
        )
        return build_tiny_processor(dense), 16
    if family == "mistral3":
        return _build_mistral3(root), 32
    tokenizer = _idefics3_tokenizer()
    text = transformers.LlamaConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
    )
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32)
    kind = {"idefics3": "Idefics3", "smolvlm": "SmolVLM"}[family]
    config = getattr(transformers, f"{kind}Config")(
        text_config=text.to_dict(),
        vision_config={**vision, "patch_size": 4},
        image_token_id=len(tokenizer) - 1,
        scale_factor=2,
    )
    torch.manual_seed(0)
    getattr(transformers, f"{kind}ForConditionalGeneration")(config).save_pretrained(root / "dense")
    tokenizer.save_pretrained(root / "dense")
    return root / "dense", 32


def _build_mistral3(root: Path) -> Path:
    """A tiny Mistral 3 (Pixtral vision tower, patch merger; a Mistral text model attending to
    everything, as Mistral Small 3.1's does) with Llama 3-style tokens and Pixtral's image tokens."""
    import transformers

    tokenizer = tiny_byte_level_tokenizer("llama-bpe")
    tokenizer.add_tokens(["[IMG]", "[IMG_BREAK]", "[IMG_END]"], special_tokens=True)
    text = transformers.MistralConfig(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        sliding_window=None,
    )
    vision = transformers.PixtralVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=4,
        head_dim=8,
        hidden_act="silu",
    )
    config = transformers.Mistral3Config(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=2,
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    transformers.Mistral3ForConditionalGeneration(config).save_pretrained(root / "dense")
    tokenizer.save_pretrained(root / "dense")
    return root / "dense"


def _mtmd_image_embeddings(gguf: Path, mmproj: Path, rgb: np.ndarray) -> list[np.ndarray]:
    """What llama.cpp's multimodal library (mtmd) feeds the language model for ``rgb``: the
    embeddings of each image chunk it makes (an Idefics3 image is an overview and its tiles)."""
    import ctypes

    from llama_cpp import mtmd_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=512, verbose=False, n_threads=2)
    params = mtmd_cpp.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings = False, 2, False
    ctx = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
    assert ctx is not None, "mtmd did not load the mmproj"
    data = np.ascontiguousarray(rgb, dtype=np.uint8)
    bitmap = mtmd_cpp.mtmd_bitmap_init(rgb.shape[1], rgb.shape[0], data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
    text = mtmd_cpp.mtmd_input_text()
    marker = mtmd_cpp.mtmd_default_marker()
    text.text, text.text_len, text.add_special, text.parse_special = marker, len(marker), False, True
    chunks = mtmd_cpp.mtmd_input_chunks_init()
    out = []
    try:
        assert (
            mtmd_cpp.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd_cpp.mtmd_bitmap_p_ctypes * 1)(bitmap), 1) == 0
        )
        for i in range(mtmd_cpp.mtmd_input_chunks_size(chunks)):
            chunk = mtmd_cpp.mtmd_input_chunks_get(chunks, i)
            if mtmd_cpp.mtmd_input_chunk_get_type(chunk) != mtmd_cpp.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                continue
            assert mtmd_cpp.mtmd_encode_chunk(ctx, chunk) == 0
            n = mtmd_cpp.mtmd_input_chunk_get_n_tokens(chunk)
            flat = np.ctypeslib.as_array(mtmd_cpp.mtmd_get_output_embd(ctx), shape=(n * llm.n_embd(),))
            out.append(flat.reshape(n, llm.n_embd()).copy())
    finally:
        mtmd_cpp.mtmd_input_chunks_free(chunks)
        mtmd_cpp.mtmd_bitmap_free(bitmap)
        mtmd_cpp.mtmd_free(ctx)
        llm.close()
    return out


def _hf_image_features(dense: Path, family: str, rgb: np.ndarray) -> np.ndarray:
    """transformers' own image features of ``rgb`` (what its model puts in the image tokens' place)."""
    import transformers

    kind = {"llava": "Llava", "idefics3": "Idefics3", "smolvlm": "SmolVLM", "mistral3": "Mistral3"}[family]
    model = getattr(transformers, f"{kind}ForConditionalGeneration").from_pretrained(dense, dtype=torch.float32)
    pixels = torch.tensor(rgb).permute(2, 0, 1).float() / 255
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    with torch.no_grad():
        if family == "llava":
            features = model.model.get_image_features(pixel_values=((pixels - mean) / std)[None])
        elif family == "mistral3":
            size = torch.tensor([list(rgb.shape[:2])])
            features = model.model.get_image_features(pixel_values=((pixels - mean) / std)[None], image_sizes=size)
            features = getattr(features, "pooler_output", features)
            features = features[0] if isinstance(features, (tuple, list)) else features
            # Pixtral's layout: each row of merged patches, then the [IMG_BREAK] token's embedding
            side = int(features.shape[-2] ** 0.5)
            rows = features.reshape(side, side, -1)
            brk = model.model.language_model.embed_tokens.weight[_token(dense, "[IMG_BREAK]")]
            features = torch.cat([torch.cat([rows[r], brk[None]]) if r < side - 1 else rows[r] for r in range(side)])
        else:
            features = model.model.get_image_features(pixel_values=((pixels - 0.5) / 0.5)[None, None])
    features = getattr(features, "pooler_output", features)
    features = features[0] if isinstance(features, (tuple, list)) else features
    return features.reshape(-1, features.shape[-1]).numpy()


def _token(model: Path, token: str) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model).convert_tokens_to_ids(token)


@pytest.mark.parametrize("family", ["llava", "idefics3", "smolvlm", "mistral3"])
def test_each_vision_family_mmproj_gives_transformers_image_features_and_answers_an_image_prompt(
    tmp_path: Path, family: str
) -> None:
    """The mmproj in llama.cpp's mtmd: the image embeddings it hands the language model are
    transformers' image features (every chunk: an Idefics3 image is an overview and tiles), and an
    image prompt runs end to end through the MoTE model."""

    dense, size = _build_vision(family, tmp_path)
    mote = mote_convert.upcycle(dense, tmp_path / "mote").output
    export_gguf(mote, tmp_path / "m.gguf", mmproj=tmp_path / "mm.gguf")
    rgb = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    theirs = _mtmd_image_embeddings(tmp_path / "m.gguf", tmp_path / "mm.gguf", rgb)
    ours = _hf_image_features(dense, family, rgb)
    assert theirs
    for embeddings in theirs:
        assert embeddings.shape == ours.shape
        if family == "llava":
            # this llama.cpp build's clip puts LLaVA's CLS token after the patches and drops the first token:
            # its image tokens are transformers' patches 1..N-1, then one more (docs/deploy.md)
            a, b = embeddings[:-1], ours[1:]
        else:
            a, b = embeddings, ours
        cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        assert cosine.min() >= (0.9 if family == "llava" else 0.9999), (family, cosine.min())

    usage = _image_prompt(tmp_path / "m.gguf", tmp_path / "mm.gguf", rgb, "Colour?")
    image_tokens = sum(len(e) for e in theirs)
    assert usage["prompt_tokens"] > image_tokens and usage["completion_tokens"] >= 1


def test_llama31_rope_scaling_exports_exactly_for_the_dense_model_and_is_refused_for_mote(tmp_path: Path) -> None:
    """Llama 3.1 / 3.2's RoPE scaling becomes llama.cpp's rope_freqs (from transformers' own llama3
    frequencies): the dense model's llama.cpp logits are transformers'; its MoTE checkpoint is refused,
    naming why (the deepseek architecture does not read rope_freqs)."""
    from transformers import LlavaForConditionalGeneration

    dense = _trained_llava(tmp_path, tokenizer="llama-bpe", text_options=LLAMA31_ROPE)
    export_gguf(dense, tmp_path / "dense.gguf")
    model = LlavaForConditionalGeneration.from_pretrained(dense, dtype=torch.float32)
    top1, cosine, positions, _ = _agreement(tmp_path / "dense.gguf", model)
    # 0.9974 without the scaling: the mapping is exact, so the bar is far above the 0.99
    assert positions >= 64 and top1 >= 0.95 and cosine >= 0.9999, (top1, cosine)
    mote = mote_convert.upcycle(dense, tmp_path / "mote").output
    with pytest.raises(UnsupportedArchitectureError, match="rope_freqs tensor, which its deepseek architecture"):
        export_gguf(mote, tmp_path / "mote.gguf")
