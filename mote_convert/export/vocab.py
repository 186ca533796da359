"""The tokenizer of a checkpoint as llama.cpp reads it, from ``tokenizer.json``.

Two kinds, chosen by what ``tokenizer.json`` holds (llama.cpp's ``tokenizer.ggml.model``):

* ``llama``: byte-fallback BPE (Llama 2, Mistral, LLaVA-1.5): tokens, scores and types from gguf's
  ``LlamaHfVocab``;
* ``gpt2``: byte-level BPE (Llama 3, Qwen2 / 2.5 / 3, SmolLM, GPT-2): the vocabulary as the byte-level
  strings of ``tokenizer.json``, its merges, and the pre-tokenizer name llama.cpp implements
  (:mod:`mote_convert.pretokenizers`). Added tokens are control tokens when special and user-defined
  otherwise, as llama.cpp's own converter types them.

Both pad the vocabulary to the embedding's rows (``[PADn]``, unused) and carry the special ids and
the chat template (gguf's ``SpecialVocab``). Anything else is refused, naming what it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mote_convert.errors import (
    CorruptCheckpointError,
    FormatError,
    InputNotFoundError,
    MoteError,
    UnsupportedArchitectureError,
)
from mote_convert.export.gguf_file import GgufPlan
from mote_convert.pretokenizers import PRE_TOKENIZERS, identify, pre_tokenizer_steps

# the normalizers llama.cpp's byte-level tokenizer agrees with (Qwen2's NFC changes nothing in text
# that is already NFC, which is what llama.cpp is given in practice)
NORMALIZERS = (None, "NFC")


def _entries_llama(root: Path, tokenizer: dict[str, Any]) -> tuple[list[tuple[bytes, float, int]], dict[str, Any]]:
    import gguf

    return list(gguf.LlamaHfVocab(root).all_tokens()), {}


def _entries_gpt2(root: Path, tokenizer: dict[str, Any]) -> tuple[list[tuple[bytes, float, int]], dict[str, Any]]:
    import gguf

    pre = identify(tokenizer.get("pre_tokenizer"))
    if pre is None:
        steps = pre_tokenizer_steps(tokenizer.get("pre_tokenizer"))
        raise UnsupportedArchitectureError(
            f"{root}: this byte-level BPE tokenizer's pre-tokenizer is none that llama.cpp implements "
            f"({'; '.join(' '.join(s) for s in steps) or 'none'}); known: "
            + ", ".join(f"{p.name} ({p.models})" for p in PRE_TOKENIZERS)
        )
    normalizer = tokenizer.get("normalizer")
    kind = normalizer.get("type") if isinstance(normalizer, dict) else normalizer
    if kind not in NORMALIZERS:
        raise UnsupportedArchitectureError(
            f"{root}: llama.cpp's byte-level tokenizer does not normalize text as this one does ({kind})"
        )
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    added = {item["id"]: item for item in tokenizer.get("added_tokens") or []}
    size = max([*vocab.values(), *added]) + 1
    text: dict[int, str] = {i: t for t, i in vocab.items()}
    entries = []
    for i in range(size):
        if i in added:  # its own text, unmapped: llama.cpp matches control and user tokens as text
            token_type = gguf.TokenType.CONTROL if added[i].get("special", False) else gguf.TokenType.USER_DEFINED
            entries.append((added[i]["content"].encode("utf-8"), 0.0, token_type))
        elif i in text:
            entries.append((text[i].encode("utf-8"), 0.0, gguf.TokenType.NORMAL))
        else:
            entries.append((f"[PAD{i}]".encode(), 0.0, gguf.TokenType.UNUSED))
    return entries, {"add_tokenizer_pre": pre.name}


# tokenizer.ggml.model -> what reads its entries; which one a tokenizer.json is: _kind
KINDS: dict[str, Callable[[Path, dict[str, Any]], tuple[list[tuple[bytes, float, int]], dict[str, Any]]]] = {
    "llama": _entries_llama,
    "gpt2": _entries_gpt2,
}


def _kind(root: Path, tokenizer: dict[str, Any]) -> str:
    model = tokenizer.get("model") if isinstance(tokenizer.get("model"), dict) else {}
    decoder = tokenizer.get("decoder") if isinstance(tokenizer.get("decoder"), dict) else {}
    if model.get("type") == "BPE" and model.get("byte_fallback", False):
        return "llama"
    if model.get("type") == "BPE" and decoder.get("type") == "ByteLevel":
        return "gpt2"
    raise UnsupportedArchitectureError(
        f"{root}: GGUF export supports BPE tokenizers, byte-fallback (Llama 2, Mistral) or byte-level (Llama 3, "
        f"Qwen2, SmolLM); this tokenizer.json's model is {model.get('type')!r} with decoder {decoder.get('type')!r}"
    )


def plan_vocab(root: Path, n_vocab: int, plan: GgufPlan) -> str:
    """Add the tokenizer's keys to ``plan`` (padded to ``n_vocab`` rows); returns its kind."""
    import gguf

    path = root / "tokenizer.json"
    if not path.is_file():
        raise InputNotFoundError(f"{root}: no tokenizer.json; GGUF export carries the model's tokenizer.json")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))  # valid JSON: check_side_files said so
    if not isinstance(tokenizer, dict):
        raise FormatError(f"{path}: must hold a JSON object")
    kind = _kind(root, tokenizer)
    try:
        entries, extra = KINDS[kind](root, tokenizer)
        special = gguf.SpecialVocab(root, load_merges=kind == "gpt2", n_vocab=n_vocab)  # ids, merges, template
    except MoteError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # gguf's words for "not this kind of tokenizer"
        raise UnsupportedArchitectureError(f"{root}: GGUF export cannot read this {kind} tokenizer: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - transformers and tokenizers refuse bad files with any kind, even a bare Exception
        raise CorruptCheckpointError(
            f"{root}: transformers cannot load the tokenizer ({type(exc).__name__}: {exc})"
        ) from exc
    if len(entries) > n_vocab:
        raise FormatError(f"{root}: the tokenizer has {len(entries)} tokens, the embedding only {n_vocab} rows")
    if kind == "gpt2" and not special.merges:
        raise FormatError(f"{root}: this byte-level BPE tokenizer.json has no merges")
    tokens = [t for t, _, _ in entries]
    scores = [s for _, s, _ in entries]
    types = [k for _, _, k in entries]
    for i in range(len(tokens), n_vocab):  # rows the tokenizer never produces, as llama.cpp pads them
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0 if kind == "llama" else 0.0)
        types.append(gguf.TokenType.UNUSED)
    plan.add("add_tokenizer_model", kind)
    for key, value in extra.items():
        plan.add(key, value)
    plan.add("add_token_list", tokens)
    if kind == "llama":
        plan.add("add_token_scores", scores)
    plan.add("add_token_types", types)
    plan.kv.append(special.add_to_gguf)
    return kind
